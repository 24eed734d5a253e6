"""The isolation primitives behind :mod:`fmgguf.bench.sandbox`: namespaces, private tmpfs mounts,
per-slot uids, process clean-up, and the once-probed capabilities of this machine."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
#: where the work dir appears inside a sandbox that has a private /tmp (bind-mounted, owned by root)
INNER_WORKDIR = "/tmp/work"
#: the world-writable places that get a fresh, size-capped tmpfs in the sandbox's mount namespace
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
#: uids handed to sandboxed processes when running as root: one per concurrent slot
UID_BASE = 61000
MAX_SLOTS = 64
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


class _SlotPool:
    """Hands out sandbox uids, exclusive across threads *and* processes (a flock per uid), so two
    runners on one machine (a benchmark and a test run) never share a uid: neither the process
    limit nor the kill-everything-of-this-uid clean-up can touch the other's programs."""

    def __init__(self, n: int, lock_dir: str = "/tmp/fmgguf-sandbox-uids") -> None:
        self.n = n
        self.lock_dir = lock_dir
        self._held: dict[int, int] = {}
        self._cond = threading.Condition()

    def get(self) -> int:
        import fcntl

        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        start = os.getpid() % self.n
        with self._cond:
            while True:
                # a uid that still has processes, zombies included (a killed fork bomb's children wait
                # to be reaped by init), would start the next program with its process limit used up
                busy = _uids_in_use(UID_BASE, UID_BASE + self.n)
                for i in range(self.n):
                    uid = UID_BASE + (start + i) % self.n
                    if uid in self._held or uid in busy:
                        continue
                    fd = os.open(os.path.join(self.lock_dir, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        os.close(fd)
                        continue
                    self._held[uid] = fd
                    return uid
                self._cond.wait(0.05)  # every uid is in use (here or in another process)

    def put(self, uid: int) -> None:
        with self._cond:
            fd = self._held.pop(uid, None)
            if fd is not None:
                os.close(fd)  # closing drops the flock
            self._cond.notify()


_SLOTS = _SlotPool(MAX_SLOTS)
_CAPS: dict | None = None
_CAPS_LOCK = threading.Lock()


def _world_usable(path: Path) -> bool:
    """Can an unprivileged user execute ``path`` (every parent dir o+x, the file o+rx)?"""
    try:
        path = path.resolve()
        if not (path.stat().st_mode & stat.S_IXOTH and path.stat().st_mode & stat.S_IROTH):
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def find_tool(name: str, *, need_world: bool) -> str | None:
    """The first ``name`` on a safe PATH (and the caller's PATH) usable by the sandbox user."""
    dirs = SAFE_PATH.split(":") + [d for d in os.environ.get("PATH", "").split(":") if d]
    for d in dirs:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK) and (not need_world or _world_usable(p)):
            return str(p.resolve())
    return None


def _probe_unshare(flags: int) -> bool:
    try:
        r = subprocess.run(["/bin/true"], preexec_fn=lambda: _checked_unshare(flags), timeout=10,  # noqa: PLW1509
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _probe_private_tmp() -> bool:
    opts = [(d.encode(), b"size=1m,mode=1777") for d in PRIVATE_TMP_DIRS if os.path.isdir(d)]
    try:
        r = subprocess.run(["/bin/true"], preexec_fn=lambda: _private_tmp(opts), timeout=10,  # noqa: PLW1509
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _private_tmp(mounts: list[tuple[bytes, bytes]], keep: bytes | None = None) -> None:
    """In the child: a new mount namespace with a fresh size-capped tmpfs on each world-writable dir.

    ``keep``: a directory (usually under /tmp) to show at INNER_WORKDIR and chdir into.
    """
    _checked_unshare(CLONE_NEWNS)
    if _mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate / failed")
    dfd = os.open(keep, os.O_RDONLY | os.O_DIRECTORY) if keep else None
    for target, opts in mounts:
        if _mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
            raise OSError(ctypes.get_errno(), f"tmpfs on {target!r} failed")
    if dfd is not None:
        os.mkdir(INNER_WORKDIR, 0o755)
        if _mount(f"/proc/self/fd/{dfd}".encode(), INNER_WORKDIR.encode(), None, MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), "bind mount of the work dir failed")
        os.close(dfd)
        os.chdir(INNER_WORKDIR)


def _checked_unshare(flags: int) -> None:
    if _unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def capabilities() -> dict:
    """What isolation this machine gives (probed once): root drop, network namespace, tools."""
    global _CAPS
    with _CAPS_LOCK:
        if _CAPS is None:
            root = os.geteuid() == 0
            netns_flags = CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET
            netns = _probe_unshare(netns_flags)
            private_tmp = root and _probe_private_tmp()
            _CAPS = {
                "root": root,
                "drop_privileges": root,
                "network_isolated": netns,
                "netns_flags": netns_flags if netns else 0,
                "private_tmp": private_tmp,
                "python": find_tool("python3", need_world=root),
                "node": find_tool("node", need_world=root),
                "gxx": find_tool("g++", need_world=root),
                "notes": [] if netns else ["no network namespace here: sandboxed code can reach the network"],
            }
            if not root:
                _CAPS["notes"].append("not root: sandboxed code runs as the calling user (can read its files)")
            if not private_tmp:
                _CAPS["notes"].append("no mount namespace: disk use is capped per file (RLIMIT_FSIZE), not in total")
    return dict(_CAPS)


def _chown_tree(path: Path, uid: int) -> None:
    """Give ``path`` to ``uid`` (mode 700), or with uid 0 make it root's and read-only to others (755/644)."""
    os.chown(path, uid, uid)
    os.chmod(path, 0o700 if uid else 0o755)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chown(p, uid, uid, follow_symlinks=False)
            if not uid and not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, 0o755 if (name in dirs or mode & stat.S_IXUSR) else 0o644)


def _kill_uid(uid: int) -> None:
    """SIGKILL every live process of ``uid``, also ones that left the process group."""
    if not _uid_live_pids(uid):
        return

    def become() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    kill_bin = "/bin/kill" if os.path.exists("/bin/kill") else shutil.which("kill")
    for _ in range(5):
        if kill_bin:  # kill(-1) as the uid reaches exactly that uid's processes (and the killer itself)
            subprocess.run([kill_bin, "-9", "-1"], preexec_fn=become, stdin=subprocess.DEVNULL,  # noqa: PLW1509
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        else:
            for pid in _uid_live_pids(uid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.01)
        if not _uid_live_pids(uid):
            return


def _uids_in_use(lo: int, hi: int) -> set[int]:
    """Uids in [lo, hi) that own any process (zombies included)."""
    out: set[int] = set()
    try:
        with os.scandir("/proc") as it:
            for entry in it:
                if entry.name.isdigit():
                    try:
                        uid = entry.stat().st_uid
                    except OSError:
                        continue
                    if lo <= uid < hi:
                        out.add(uid)
    except OSError:
        pass
    return out


def _uid_live_pids(uid: int) -> list[int]:
    """Pids of ``uid`` that are not zombies (read from /proc)."""
    pids = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return pids
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(entry.name))
    return pids
