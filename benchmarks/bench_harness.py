"""Harness speed: the built-in suite's reference solutions on 2 workers, and the sandbox's per-task overhead.

Prints `name: ratio X (target ...)` lines, each against a baseline measured in this run; exits 1 when a
target is missed.

* sandbox_overhead_python: (sandboxed trivial Python task) / (bare `python3 -c pass`), both per run, with the
  extra milliseconds; target: under 50 ms extra per Python task.
* reference_suite_2_workers: wall time of all reference solutions on 2 workers / the same run serially;
  target: ratio <= 0.85 (the pool must actually overlap work).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import time_call  # noqa: E402


def main() -> int:
    from fmgguf.bench.executors import Executor
    from fmgguf.bench.tasks import Task, builtin_tasks

    ex = Executor(timeout_s=20)
    py = ex.sandbox.caps["python"]
    ok = True

    bare = time_call(lambda: subprocess.run([py, "-c", "pass"], check=True), 15)
    trivial = Task(id="trivial", language="python", prompt="-", tests="def check(c):\n    pass\n", reference="x = 1\n",
                   wrong="", entry_point="print")
    r = ex.execute(trivial, trivial.reference)
    assert r.passed, r
    sandboxed = time_call(lambda: ex.execute(trivial, trivial.reference), 15)
    extra_ms = (sandboxed - bare) * 1000
    passed = extra_ms < 50
    ok &= passed
    print(f"sandbox_overhead_python: ratio {sandboxed / bare:.2f} ({extra_ms:.1f} ms extra per task: "
          f"{sandboxed * 1000:.1f} ms vs bare python3 -c pass {bare * 1000:.1f} ms) "
          f"(target < 50 ms extra) {'OK' if passed else 'MISSED'}")

    tasks = builtin_tasks()
    jobs = [(t, t.reference) for t in tasks]
    ex.execute_many(jobs, workers=2)  # warm-up: page cache, compiler, node
    results: list = []
    best = {1: float("inf"), 2: float("inf")}
    for workers in (1, 2, 1, 2):  # interleaved, best of two each: fairer on a shared machine
        t0 = time.perf_counter()
        results += ex.execute_many(jobs, workers=workers)
        best[workers] = min(best[workers], time.perf_counter() - t0)
    t_serial, t_par = best[1], best[2]
    serial = par = results
    all_pass = all(x.passed for x in serial + par)
    ratio = t_par / t_serial
    passed = ratio <= 0.85 and all_pass
    ok &= passed
    print(f"reference_suite_2_workers: ratio {ratio:.2f} ({len(tasks)} tasks: {t_par:.2f} s on 2 workers vs "
          f"{t_serial:.2f} s serial; all pass: {all_pass}) (target <= 0.85) {'OK' if passed else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
