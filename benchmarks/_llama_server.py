"""llama.cpp's own ``llama-server``, the comparison anchor for the benchmarks.

Built once from the llama.cpp vendored in the pinned llama-cpp-python sdist (the same source as the
wheel fmgguf runs on): CMake, CPU only, Release, static, no curl/OpenSSL/web-UI download, and on
x86-64 without AMX (the Makefile's reason: VMs that report AMX without enabling it die with SIGILL).
The binary is cached under ``<shared_cache>/llama-server-<version>/bin/llama-server``; the build
runs under a file lock and appears by one atomic rename, so concurrent benchmarks share one build.

    binary = ensure_llama_server()                  # minutes the first time, then instant
    with LlamaServer(binary, ["-m", gguf, "-c", "4096"]) as srv:
        httpx.post(srv.url + "/infill", json=...)
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from fmgguf.convert.sdist import SDIST_VERSION, ensure_sdist, file_lock, shared_cache

_VENDOR = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def server_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    return shared_cache(cache_dir) / f"llama-server-{SDIST_VERSION}"


def _cmake_args(src: Path, build: Path) -> list[str]:
    flags = NO_AMX if platform.machine().lower() in ("x86_64", "amd64") else ""
    return [
        "cmake", "-S", str(src), "-B", str(build), "-G", "Ninja" if shutil.which("ninja") else "Unix Makefiles",
        "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TOOLS=ON", "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF",
        f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
    ]


def _extract_vendor(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(_VENDOR) and "/.git" not in m.name[len(_VENDOR) - 1:]]
        tar.extractall(dest, members=members, filter="data") if sys.version_info >= (3, 12) else tar.extractall(dest, members=members)
    return dest / _VENDOR


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.run(["nice", "-n", "10", *cmd], stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"building llama-server failed ({cmd[0]} exit {rc}); last lines of {log}:\n{tail}")


def ensure_llama_server(cache_dir: str | os.PathLike[str] | None = None, jobs: int | None = None) -> Path:
    """The cached ``llama-server`` binary, built first if missing (takes minutes on 2 cores)."""
    root = server_dir(cache_dir)
    binary = root / "bin" / "llama-server"
    if binary.is_file():
        return binary
    with file_lock(root):
        if binary.is_file():
            return binary
        tarball = ensure_sdist(cache_dir)
        root.parent.mkdir(parents=True, exist_ok=True)
        log = root.parent / f"llama-server-{SDIST_VERSION}.build.log"
        log.write_text("")
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".llama-server-{SDIST_VERSION}-") as tmp:
            src = _extract_vendor(tarball, Path(tmp) / "src")
            build = Path(tmp) / "build"
            _run(_cmake_args(src, build), log)
            _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs or os.cpu_count() or 2)], log)
            built = build / "bin" / "llama-server"
            staged = Path(tmp) / "out"
            (staged / "bin").mkdir(parents=True)
            shutil.copy2(built, staged / "bin" / "llama-server")
            (staged / "BUILD_INFO").write_text(" ".join(_cmake_args(Path("<src>"), Path("<build>"))) + "\n")
            if root.exists():
                shutil.rmtree(root)
            os.replace(staged, root)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """A ``llama-server`` process on a loopback port: started, waited for (/health), stopped.

    ``args`` are llama-server's own flags (``-m FILE`` at least); host and port are added here.
    Its output goes to ``log`` (a temp file by default) so a failed start can say why.
    """

    def __init__(self, binary: Path, args: list[str], *, port: int | None = None,
                 startup_timeout_s: float = 300.0, log: Path | None = None) -> None:
        self.binary = binary
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self.log = log or Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaServer:
        out = self.log.open("wb")
        self.proc = subprocess.Popen([str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode} while starting:\n{self._tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama-server did not report healthy within {self.startup_timeout_s:.0f} s:\n{self._tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    print(ensure_llama_server())
