"""The RPC worker process: ``python -m fmgguf.runtime.rpc.rpc_worker HOST:PORT THREADS CACHE_DIR|- DEVICES|-``.

It serves the named ggml devices (``CPU``, ``CUDA0``, ... comma-separated; ``-``: every GPU, else the
CPU) with llama.cpp's own RPC server from the same library the client uses (so both always speak
the same protocol version): ``ggml_backend_rpc_start_server``, which blocks. First it prints one line
``WORKER_DEVICES: [json]`` (name, description, kind, free, total per device) for the parent to show.
`fmgguf worker` runs this in a child process; nothing here imports llama_cpp.
"""

from __future__ import annotations

import json
import sys

DEVICES_MARK = "WORKER_DEVICES:"


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent (`fmgguf worker`) dies, so no worker is orphaned."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write(__doc__.splitlines()[0] + "\n")
        return 2
    endpoint, threads, cache_dir, wanted = argv
    _die_with_parent()
    from fmgguf.runtime.hw.devices import default_worker_devices, ggml_devices, rpc_serve, rpc_supported

    if not rpc_supported():
        sys.stderr.write("error: this llama.cpp build has no RPC backend — reinstall with `make install` "
                         "(it builds llama-cpp-python with -DGGML_RPC=on)\n")
        return 3
    devices = {d.name.lower(): d for d in ggml_devices()}
    names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted != "-" else default_worker_devices()
    chosen = []
    for name in names:
        dev = devices.get(name.lower())
        if dev is None:
            sys.stderr.write(f"error: no device named {name!r} here — use one of: "
                             f"{', '.join(d.name for d in devices.values())}\n")
            return 2
        chosen.append(dev)
    print(DEVICES_MARK + json.dumps([{"name": d.name, "description": d.description, "kind": d.kind,
                                      "free": d.free, "total": d.total} for d in chosen]), flush=True)
    why = rpc_serve(endpoint, [d.name for d in chosen], int(threads), None if cache_dir == "-" else cache_dir)
    sys.stdout.flush()
    sys.stderr.write(f"error: {why}\n")
    return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
