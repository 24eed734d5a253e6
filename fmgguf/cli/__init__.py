"""The `fmgguf` command line (click). One file per command group; `main.py` is the root."""
