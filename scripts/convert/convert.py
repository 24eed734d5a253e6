#!/usr/bin/env python3
"""Convert a Hugging Face checkpoint to NAME-F16/Q8_0/Q4_K_M.gguf and a catalog entry.

    python scripts/convert/convert.py CHECKPOINT_DIR --name NAME --out OUTDIR [--imatrix FILE] [--model-id ID]

The same as `fmgguf convert ...` (the logic lives in fmgguf/convert/); see scripts/convert/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        import fmgguf  # noqa: F401
    except ImportError:  # run from a checkout without installing
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from fmgguf.cli.main import main

    main(["convert", *sys.argv[1:]])
