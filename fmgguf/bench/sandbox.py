"""Run one untrusted program in its own process, its own temp dir, its own uid, with no network.

Nothing is ever ``exec``'d in the runner. Each call to :meth:`Sandbox.run` starts one process
group in a fresh directory, with a minimal environment, stdin from /dev/null, rlimits (CPU,
address space, file size, open files, processes, no core), and kills the whole group at a
wall-clock deadline. As root it also

* moves the child into a new network namespace (only a downed loopback: no connection works),
* drops to an unprivileged uid of its own (one uid per concurrent slot, so RLIMIT_NPROC — which
  root ignores — holds, one sandbox's fork bomb cannot starve another, and files of the caller,
  e.g. a home directory of mode 700, cannot be read),
* kills every process of that uid after the run (also ones that left the process group).

Not root: the uid cannot change, so the candidate can read what the caller can read; the network
is cut only when unprivileged user namespaces are allowed (``capabilities()`` says which).
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fmgguf.bench.isolation import (
    _SLOTS,
    INNER_WORKDIR,
    MAX_SLOTS,
    PRIVATE_TMP_DIRS,
    SAFE_PATH,
    UID_BASE,
    _checked_unshare,
    _chown_tree,
    _kill_uid,
    _private_tmp,
    _uid_live_pids,
    capabilities,
    find_tool,
)
from fmgguf.errors import SandboxError

__all__ = ["INNER_WORKDIR", "MAX_SLOTS", "UID_BASE", "Limits", "RunResult", "Sandbox", "_uid_live_pids",
           "capabilities", "find_tool"]

@dataclass(frozen=True)
class Limits:
    """Per-run resource limits."""

    timeout_s: float = 10.0
    memory_bytes: int = 1024**3
    file_bytes: int = 10 * 1024**2
    open_files: int = 64
    processes: int = 64
    #: size of each private tmpfs (/tmp, /var/tmp, /dev/shm) where a mount namespace is available
    tmp_bytes: int = 64 * 1024**2
    #: bytes of stdout/stderr kept; past ``output_kill_bytes`` the run is killed
    output_keep_bytes: int = 64 * 1024
    output_kill_bytes: int = 4 * 1024**2

    def replace(self, **kw: object) -> Limits:
        from dataclasses import replace

        return replace(self, **kw)  # type: ignore[arg-type]


@dataclass
class RunResult:
    """What happened to one sandboxed process."""

    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    output_exceeded: bool = False
    signal: int | None = None
    max_rss_bytes: int | None = None
    extra: dict = field(default_factory=dict)


def _own_process_count() -> int:
    me = os.getuid()
    n = 0
    try:
        with os.scandir("/proc") as it:
            for entry in it:
                if entry.name.isdigit():
                    try:
                        if entry.stat().st_uid == me:
                            n += int(next((ln.split()[1] for ln in open(f"/proc/{entry.name}/status")  # noqa: SIM115
                                           if ln.startswith("Threads:")), "1"))
                    except (OSError, ValueError):
                        continue
    except OSError:
        return 4096
    return n


def _set_limits(lim: Limits, as_bytes: int | None, nproc: int) -> None:
    def clamp(res: int, soft: int, hard: int | None = None) -> None:
        _, cur_hard = resource.getrlimit(res)
        hard = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))

    cpu = int(lim.timeout_s) + 1
    clamp(resource.RLIMIT_CPU, cpu, cpu + 1)
    if as_bytes:
        clamp(resource.RLIMIT_AS, as_bytes)
    clamp(resource.RLIMIT_FSIZE, lim.file_bytes)
    clamp(resource.RLIMIT_NOFILE, lim.open_files)
    clamp(resource.RLIMIT_CORE, 0)
    clamp(resource.RLIMIT_NPROC, nproc)


class Sandbox:
    """Runs programs under :class:`Limits`; thread-safe (each run takes its own uid slot)."""

    def __init__(self, limits: Limits | None = None, *, isolate_network: bool = True) -> None:
        self.limits = limits or Limits()
        self.caps = capabilities()
        self.isolate_network = isolate_network and self.caps["network_isolated"]

    # -- work dirs ---------------------------------------------------------------------------
    def make_workdir(self, files: dict[str, str | bytes]) -> Path:
        work = Path(tempfile.mkdtemp(prefix="fmgguf-sbx-"))
        for name, content in files.items():
            p = work / name
            (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)  # type: ignore[operator]
        return work

    def remove_workdir(self, work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)

    # -- running -----------------------------------------------------------------------------
    def run(self, argv: list[str], workdir: Path, *, limits: Limits | None = None, memory_bytes: int | None = -1,
            env: dict[str, str] | None = None, writable: bool = False) -> RunResult:
        """Run ``argv`` in ``workdir``; never raises for what the program does.

        ``memory_bytes``: -1 = ``limits.memory_bytes``; None = no address-space limit.
        ``writable``: the program may write into ``workdir`` (a compiler's output). Otherwise, where a
        mount namespace is available, ``workdir`` is read-only to it and it writes only to its private
        tmpfs /tmp (HOME and TMPDIR point there), so the total it can write is capped.
        """
        lim = limits or self.limits
        as_bytes = lim.memory_bytes if memory_bytes == -1 else memory_bytes
        drop = self.caps["drop_privileges"]
        uid = _SLOTS.get() if drop else None
        try:
            private = bool(self.caps.get("private_tmp")) and not writable
            if uid is not None:
                _chown_tree(workdir, 0 if private else uid)
            return self._run(argv, workdir, lim, as_bytes, uid, env, private)
        finally:
            if uid is not None:
                _kill_uid(uid)
                _SLOTS.put(uid)

    def _run(self, argv: list[str], workdir: Path, lim: Limits, as_bytes: int | None, uid: int | None,
             env: dict[str, str] | None, private: bool) -> RunResult:
        netns = self.caps["netns_flags"] if self.isolate_network else 0
        home = "/tmp" if private else str(workdir)
        mounts = [(d.encode(), f"size={lim.tmp_bytes},mode=1777".encode()) for d in PRIVATE_TMP_DIRS
                  if os.path.isdir(d)] if private else []
        workdir_b = str(workdir).encode()
        # RLIMIT_NPROC counts every process (and thread) of the uid: with our own uid (not root) the
        # caller's existing ones count too, so the budget is added on top of them
        nproc = lim.processes if uid is not None else lim.processes + _own_process_count()
        base_env = {"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
                    "OMP_NUM_THREADS": "1"}
        base_env.update(env or {})

        def preexec() -> None:  # runs in the child between fork and exec
            if netns:
                _checked_unshare(netns)
            if mounts:
                # the work dir (under /tmp, which the tmpfs covers) shows at INNER_WORKDIR, read-only to
                # the sandbox user (it is root's, 755/644)
                _private_tmp(mounts, keep=workdir_b)
            _set_limits(lim, as_bytes, nproc)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.umask(0o077)

        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=workdir, env=base_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec,  # noqa: PLW1509
                                    close_fds=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxError(f"cannot start {argv[0]}: {exc}", fix="check that the tool is installed") from exc
        out, err, timed_out, exceeded, waited = _collect(proc, start + lim.timeout_s, lim)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status, rusage = waited or os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        duration = time.monotonic() - start
        sig = -proc.returncode if proc.returncode < 0 else None
        return RunResult(returncode=proc.returncode, stdout=out.decode("utf-8", "replace"),
                         stderr=err.decode("utf-8", "replace"), duration_s=duration, timed_out=timed_out and not waited,
                         output_exceeded=exceeded, signal=sig, max_rss_bytes=rusage.ru_maxrss * 1024)


def _collect(proc: subprocess.Popen, deadline: float, lim: Limits) -> tuple[bytes, bytes, bool, bool, tuple | None]:
    """Read both pipes until the process exits (or EOF, or the deadline); keep the first bytes, kill on a flood.

    Returns (stdout, stderr, timed_out, output_exceeded, wait4 result if the process already exited).
    A child that outlives its parent and keeps the pipes open does not hold the run: once the main
    process is gone, whatever is already in the pipes is read for a moment more and the rest is killed.
    """
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    total = 0
    sel = selectors.DefaultSelector()
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    timed_out = exceeded = False
    waited = None
    grace_until = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if waited is None:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    waited = (pid, status, rusage)
                    grace_until = now + 0.05
            if grace_until is not None and now >= grace_until:
                break
            left = deadline - now
            if left <= 0:
                timed_out = True
                break
            step = min(left, 0.05 if waited is None else grace_until - now)  # type: ignore[operator]
            for key, _ in sel.select(timeout=max(step, 0.001)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                if len(buf) < lim.output_keep_bytes:
                    buf += chunk[: lim.output_keep_bytes - len(buf)]
                total += len(chunk)
            if total > lim.output_kill_bytes:
                exceeded = True
                break
    finally:
        sel.close()
        for f in bufs:
            f.close()
    if waited is None:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            waited = (pid, status, rusage)
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, exceeded, waited


