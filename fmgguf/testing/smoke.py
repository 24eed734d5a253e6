"""Load a GGUF in llama.cpp and generate a few tokens, in a child process.

Raw llama.cpp can abort (SIGABRT, SIGILL) on a bad file or an unsupported CPU path; running the
check in a child process turns that into an error we can report instead of a dead test runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fmgguf.errors import EngineError

_SCRIPT = r"""
import json, sys
from fmgguf.runtime.engine.llama_lib import lib
llama_cpp = lib()
path, n_tokens, prompt, ngl = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
llm = llama_cpp.Llama(path, n_ctx=256, n_batch=64, n_threads=2, n_gpu_layers=ngl, verbose=False, seed=0)
toks = llm.tokenize(prompt.encode(), add_bos=True, special=False)
out = []
for tok in llm.generate(toks, temp=0.0, top_k=1, reset=True):
    out.append(int(tok))
    if len(out) >= n_tokens:
        break
meta = llm.metadata
print(json.dumps({"prompt_tokens": toks, "tokens": out, "n_vocab": llm.n_vocab(),
                  "text": llm.detokenize(out).decode("utf-8", errors="replace"),
                  "file_type": meta.get("general.file_type"), "chat_template": meta.get("tokenizer.chat_template")}))
"""


def smoke_generate(path: str | os.PathLike[str], n_tokens: int = 6, prompt: str = "def add(a, b):",
                   n_gpu_layers: int = 0, timeout: float = 180.0) -> dict:
    """Greedy-generate ``n_tokens`` from ``path`` in a fresh interpreter; returns what it saw.

    Raises :class:`EngineError` with the exit status (signal name) and the log tail on failure.
    """
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(Path(path)), str(n_tokens), prompt, str(n_gpu_layers)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        rc = proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.Signals._value2member_map_ else f"rc {rc}"
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:]) or "no output"
        raise EngineError(f"llama.cpp failed on {Path(path).name} ({how}): {tail}",
                          fix="check the file with `fmgguf inspect` and the llama-cpp-python build")
    return json.loads(proc.stdout.strip().splitlines()[-1])
