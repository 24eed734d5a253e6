"""`fmgguf bench` on the real model: the builtin suite's Python tasks and a HumanEval slice run end to
end (generation, sandboxed execution, report). A 135M model's score has no target: the figures are
printed (pytest -s) and only the harness's own facts are checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

#: the builtin suite's Python tasks (py_*) and the first five HumanEval problems
SLICES = {"builtin": ["--tasks", "py_*"], "humaneval": ["--tasks", ",".join(f"HumanEval/{i}" for i in range(5))]}


@pytest.mark.parametrize("suite", list(SLICES))
def test_bench_runs_the_real_model_end_to_end(real_path: Path, suite: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "bench", "smollm2-135m-instruct", "--quant", "Q4_1",
                           "--gguf", str(real_path), "--suite", suite, *SLICES[suite], "--max-tokens", "160",
                           "--json"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(proc.stdout)["runs"][0]
    assert run["status"] == "done", run.get("reason")
    assert run["chat_template"], "an instruct model is benchmarked through its chat template"
    overall, speed = run["overall"], run["speed"]
    assert overall["tasks"] == (6 if suite == "builtin" else 5)
    assert 0.0 <= overall["pass@1"] <= 1.0
    outcomes = run["outcomes"]
    assert sum(outcomes.values()) == overall["tasks"]  # every answer was executed and judged
    assert speed["completion_tokens"] > 0 and speed["decode_tokens_per_s"]["median"] > 0
    print(f"\n{suite}: pass@1 {overall['pass@1']:.1%} on {overall['tasks']} tasks, outcomes {outcomes}, "
          f"decode {speed['decode_tokens_per_s']['median']:.1f} tokens/s, first token {speed['ttft_s']['median']:.2f} s")
