"""Each attack on the sandbox is contained and classified (the tests also run as root)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from fmgguf.bench.executors import Executor
from fmgguf.bench.sandbox import MAX_SLOTS, UID_BASE, Limits, Sandbox, _uid_live_pids, capabilities
from fmgguf.bench.tasks import Task

ROOT = os.geteuid() == 0


def _task(language: str = "python", timeout: float = 3.0) -> Task:
    tests = {"python": "def check(candidate):\n    pass\n", "javascript": "", "cpp": "", "sql": ""}[language]
    return Task(id=f"attack_{language}", language=language, prompt="-", tests=tests, reference="", wrong="",
                entry_point="print", time_limit_s=timeout)


@pytest.fixture(scope="module")
def ex() -> Executor:
    return Executor(Sandbox(Limits(timeout_s=3.0, memory_bytes=512 * 1024**2)))


def _no_sandbox_processes_left() -> bool:
    if not ROOT:
        return True
    time.sleep(0.05)
    return not any(_uid_live_pids(UID_BASE + i) for i in range(MAX_SLOTS))


def test_normal_program_passes(ex: Executor) -> None:
    r = ex.execute(_task(), "x = 1\n")
    assert r.outcome == "passed", r


@pytest.mark.parametrize("language,code", [
    ("python", "while True:\n    pass\n"),
    ("javascript", "for (;;) {}\n"),
    ("cpp", "volatile int spin = 1;\nstruct Spin { Spin() { while (spin) {} } } spin_forever;\n"),
])
def test_infinite_loop_times_out(ex: Executor, language: str, code: str) -> None:
    t0 = time.monotonic()
    r = ex.execute(_task(language, timeout=2.0), code)
    assert r.outcome == "timeout", r
    assert time.monotonic() - t0 < 2.0 + (30 if language == "cpp" else 3)
    assert _no_sandbox_processes_left()


def test_sleeping_program_is_killed_at_the_wall_clock_deadline(ex: Executor) -> None:
    t0 = time.monotonic()
    r = ex.execute(_task(timeout=1.5), "import time\ntime.sleep(60)\n")
    assert r.outcome == "timeout" and time.monotonic() - t0 < 4


def test_fork_bomb_is_contained(ex: Executor) -> None:
    code = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    t0 = time.monotonic()
    r = ex.execute(_task(timeout=2.0), code)
    assert r.outcome in ("timeout", "error"), r
    assert time.monotonic() - t0 < 10
    assert _no_sandbox_processes_left()
    # the machine still runs programs afterwards
    assert ex.execute(_task(), "x = 1\n").passed


@pytest.mark.skipif(not ROOT, reason="as non-root RLIMIT_NPROC counts all the user's processes; "
                                     "the uid-per-slot containment needs root")
def test_fork_bomb_hits_the_process_limit_as_root(ex: Executor) -> None:
    code = ("import os, sys\nn = 0\nfor _ in range(500):\n    try:\n        pid = os.fork()\n    except OSError:\n"
            "        break\n    if pid == 0:\n        import time; time.sleep(30); os._exit(0)\n    n += 1\n"
            "print('forked', n, file=sys.stderr)\nassert n < 500, n\n")
    r = ex.execute(_task(timeout=5.0), code)
    assert r.outcome == "passed", r  # fork failed before 500 children: the limit held even as root
    assert _no_sandbox_processes_left()


@pytest.mark.parametrize("language,code", [
    ("python", "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n"),
    ("javascript", "const keep = [];\nwhile (true) keep.push(new Array(1e6).fill(1.5));\n"),
    ("cpp", "#include <new>\nstruct Hog { Hog() { std::vector<std::vector<char>> v; "
            "for (;;) v.emplace_back(64 << 20, 1); } } hog;\n"),
])
def test_memory_bomb_is_classified_as_memory(ex: Executor, language: str, code: str) -> None:
    r = ex.execute(_task(language, timeout=10.0), code)
    assert r.outcome == "memory", r


def test_the_address_space_limit_holds(ex: Executor) -> None:
    """Not only the label: inside the sandbox the limit is set, and allocation stops below it (bounded
    to 2 GiB, so a sandbox without the limit fails this test instead of eating the machine)."""
    code = ("import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
            "assert 0 < soft <= 512 * 1024**2 and 0 < hard <= 512 * 1024**2, (soft, hard)\n"
            "blocks = []\n"
            "try:\n"
            "    while len(blocks) < 40:\n"
            "        blocks.append(bytearray(50 * 1024 * 1024))\n"
            "except MemoryError:\n"
            "    pass\n"
            "assert len(blocks) * 50 < 512, len(blocks)\n")
    r = ex.execute(_task(timeout=10.0), code)
    assert r.outcome == "passed", r


def test_disk_filling_write_is_stopped(ex: Executor) -> None:
    code = ("import os\nf = open(os.path.join(os.environ['TMPDIR'], 'fill.bin'), 'wb')\n"
            "while True:\n    f.write(b'x' * 65536)\n")
    t0 = time.monotonic()
    r = ex.execute(_task(timeout=10.0), code)
    assert r.outcome == "error" and "file size" in r.detail, r
    assert time.monotonic() - t0 < 5


@pytest.mark.skipif(not capabilities()["private_tmp"], reason="no mount namespace here: disk use is capped per file "
                                                                 "(RLIMIT_FSIZE) only, not in total")
def test_many_files_hit_the_private_tmpfs_cap(ex: Executor) -> None:
    import glob

    before = set(glob.glob("/tmp/*")) | set(glob.glob("/var/tmp/*")) | set(glob.glob("/dev/shm/*"))
    code = ("import os\ni = 0\nwhile True:\n"
            "    for d in ('/tmp', '/var/tmp', '/dev/shm'):\n"
            "        with open(f'{d}/f{i}', 'wb') as f:\n            f.write(b'x' * (8 << 20))\n    i += 1\n")
    t0 = time.monotonic()
    r = ex.execute(_task(timeout=10.0), code)
    assert r.outcome == "error" and "disk space" in r.detail, r
    assert time.monotonic() - t0 < 8
    after = set(glob.glob("/tmp/*")) | set(glob.glob("/var/tmp/*")) | set(glob.glob("/dev/shm/*"))
    leaked = [p for p in after - before if os.path.basename(p).startswith("f") and os.stat(p).st_uid >= UID_BASE]
    assert leaked == []  # nothing the sandbox wrote is left on the host
    # and the program's own dir is read-only to it
    r = ex.execute(_task(), "open('here.txt', 'w').write('x')\n")
    assert r.outcome == "error" and "PermissionError" in r.detail, r


def test_workdir_is_removed(ex: Executor) -> None:
    r = ex.execute(_task(), "import os\nprint(os.getcwd())\nimport sys; sys.stdout.flush()\n")
    assert r.passed
    sbx = ex.sandbox
    work = sbx.make_workdir({"a.txt": "x"})
    sbx.remove_workdir(work)
    assert not work.exists()


@pytest.mark.skipif(not capabilities()["network_isolated"],
                    reason="no network namespace on this machine: sandboxed code can reach the network here")
def test_network_connect_fails(ex: Executor) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\n"
    r = ex.execute(_task(), code)
    srv.setblocking(False)
    got = []
    try:  # a completed connection would wait in the backlog even without accept() running
        got.append(srv.accept())
    except BlockingIOError:
        pass
    # the listener works: the caller itself can connect
    probe = socket.create_connection(("127.0.0.1", port), timeout=2)
    srv.setblocking(True)
    srv.settimeout(2)
    conn, _ = srv.accept()
    conn.close()
    probe.close()
    srv.close()
    assert r.outcome == "error" and "unreachable" in r.detail.lower() + r.stderr_tail.lower(), r
    assert got == [], "the sandboxed program reached the loopback listener"


@pytest.mark.skipif(not ROOT, reason="not root: the sandbox cannot change uid, so it can read what the caller reads")
@pytest.mark.parametrize("where", ["home", "tmp"])
def test_secret_in_home_dir_is_unreadable(ex: Executor, tmp_path, monkeypatch, where: str) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    # "home": under the real home dir's cache (not covered by the private /tmp: only the uid drop
    # protects it); "tmp": under /tmp (also hidden by the private tmpfs where there is one)
    base = Path.home() / ".cache" if where == "home" else tmp_path
    base.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="fmgguf-secret-", dir=base))
    try:
        os.chmod(home, 0o700)
        secret = home / "secret.txt"
        secret.write_text("TOP-SECRET-TOKEN")
        os.chmod(secret, 0o644)
        monkeypatch.setenv("HOME", str(home))
        code = f"import os\nprint(os.environ.get('HOME'))\nprint(open({str(secret)!r}).read())\n"
        r = ex.execute(_task(), code)
        assert r.outcome == "error", r
        assert ("PermissionError" in r.detail) or (where == "tmp" and "FileNotFoundError" in r.detail), r
        assert "TOP-SECRET" not in r.stderr_tail
        r2 = ex.execute(_task(), "import os\nassert os.environ['HOME'] != " + repr(str(home)) + "\n")
        assert r2.passed, r2
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not ROOT, reason="not root: the sandbox runs as the caller's uid and could signal it")
def test_killing_the_parent_fails(ex: Executor) -> None:
    me = os.getpid()
    code = (f"import os, signal\nfor pid in (os.getppid(), {me}):\n    os.kill(pid, signal.SIGKILL)\n")
    r = ex.execute(_task(), code)
    assert os.getpid() == me  # we are still here
    assert r.outcome == "error" and "PermissionError" in r.detail, r
    code2 = "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n"
    r2 = ex.execute(_task(), code2)
    assert r2.outcome == "error", r2


def test_output_flood_is_capped_and_killed(ex: Executor) -> None:
    t0 = time.monotonic()
    r = ex.execute(_task(timeout=10.0), "while True:\n    print('x' * 4096)\n")
    assert r.outcome == "error" and "output limit" in r.detail, r
    assert time.monotonic() - t0 < 5
    assert len(r.stderr_tail) <= 1000


def test_escaped_daemon_child_is_killed(ex: Executor) -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n")
    t0 = time.monotonic()
    r = ex.execute(_task(timeout=5.0), code)
    assert r.outcome == "passed" and time.monotonic() - t0 < 3, r
    assert _no_sandbox_processes_left()


def test_minimal_environment_and_no_stdin(ex: Executor, monkeypatch) -> None:
    monkeypatch.setenv("FMGGUF_SECRET_VAR", "leak")
    code = ("import os, sys\nassert 'FMGGUF_SECRET_VAR' not in os.environ\nassert sys.stdin.read() == ''\n"
            "import resource\nassert resource.getrlimit(resource.RLIMIT_CORE)[1] == 0\n")
    assert ex.execute(_task(), code).passed
