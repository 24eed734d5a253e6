"""Scores from per-sample records: unbiased pass@k, a 95% bootstrap interval, speed percentiles, quality columns.

pass@k = 1 - C(n-c, k) / C(n, k) per task (n samples, c correct), averaged over tasks (Chen et al. 2021).
The 95% interval resamples *tasks* with replacement (2000 times, fixed seed) and takes the 2.5/97.5
percentiles of the mean per-task pass@1. With N tasks one task moves the pass rate by 100/N points
(20 tasks = 5 points each), so small differences between models are noise: look at the interval.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from fmgguf.bench.executors import OUTCOMES
from fmgguf.bench.summary import BenchSummary, Dist, FimScore, LanguageQuality, PassBlock, Speed, TaskScore


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from n samples with c correct (k <= n)."""
    if n <= 0 or k <= 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): numerically stable form of 1 - C(n-c,k)/C(n,k)
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def bootstrap_ci(values: list[float], iters: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    if not values:
        return (0.0, 0.0)
    if len(values) == 1:
        return (values[0], values[0])
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(iters))
    lo = means[int(math.floor(alpha / 2 * iters))]
    hi = means[min(iters - 1, int(math.ceil((1 - alpha / 2) * iters)) - 1)]
    return (lo, hi)


def percentile(values: list[float], q: float) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    pos = (len(vals) - 1) * q
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _dist(values: Iterable[float | None]) -> Dist:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return Dist()
    return Dist(statistics.median(vals), percentile(vals, 0.9), statistics.fmean(vals))


def _pass_block(per_task: dict[str, list[dict]], ks: tuple[int, ...]) -> PassBlock:
    rates: list[float] = []
    pass_at: dict[int, float] = {}
    for k in ks:
        vals = [pass_at_k(len(rs), sum(r["outcome"] == "passed" for r in rs), k) for rs in per_task.values()]
        pass_at[k] = statistics.fmean(vals) if vals else 0.0
        if k == 1:
            rates = vals
    return PassBlock(pass_at, bootstrap_ci(rates), len(per_task),
                     sum(1 for rs in per_task.values() if any(r["outcome"] == "passed" for r in rs)),
                     100.0 / len(per_task) if per_task else None)


def _task_score(tid: str, rs: list[dict]) -> TaskScore:
    c = sum(r["outcome"] == "passed" for r in rs)
    gens = [r.get("gen") or {} for r in rs]
    return TaskScore(tid, rs[0]["language"], len(rs), c, pass_at_k(len(rs), c, 1),
                     dict(Counter(r["outcome"] for r in rs)), rs[0].get("category"),
                     next((r.get("detail") for r in rs if r["outcome"] != "passed"), "") or "",
                     _dist(g.get("ttft_s") for g in gens).median, _dist(g.get("tokens_per_s") for g in gens).median)


def _speed(records: list[dict]) -> Speed:
    gens = [r.get("gen") or {} for r in records]
    return Speed(_dist(g.get("ttft_s") for g in gens), _dist(g.get("tokens_per_s") for g in gens),
                 _dist(g.get("total_s") for g in gens), sum(int(g.get("prompt_tokens") or 0) for g in gens),
                 sum(int(g.get("completion_tokens") or 0) for g in gens), _throughput(gens))


def summarize(records: list[dict], samples: int = 1, meta: Mapping[str, object] | None = None) -> BenchSummary:
    """One model × quant summary from its records (one record per task × sample).

    ``meta`` holds the :class:`BenchSummary` fields about the run (model, quant, suite, timings…).
    """
    ks = tuple(k for k in (1, 5, 10) if k <= max(1, samples))
    per_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        per_task[r["task_id"]].append(r)
    by_cat: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for tid, rs in per_task.items():
        by_cat[rs[0].get("category") or rs[0]["language"]][tid] = rs
    outcomes = Counter(r["outcome"] for r in records)
    meta = dict(meta or {"model": "?"})
    return BenchSummary(
        **meta,
        samples=samples,
        overall=_pass_block(per_task, ks),
        by_category={cat: _pass_block(tk, ks) for cat, tk in sorted(by_cat.items())},
        outcomes={o: outcomes.get(o, 0) for o in (*OUTCOMES, "skipped") if outcomes.get(o, 0) or o in OUTCOMES},
        speed=_speed(records),
        quality=_quality(records),
        tasks=tuple(sorted((_task_score(tid, rs) for tid, rs in per_task.items()), key=lambda t: t.task_id)),
        fim=_fim(records),
    )


def _fim(records: list[dict]) -> dict[str, FimScore]:
    """Exact match and overrun rates of the FIM answers, by category."""
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        q = r.get("quality") or {}
        if "fim_exact" in q:
            by_cat[r.get("category") or r["language"]].append(q)
    return {cat: FimScore(len(qs), sum(bool(q["fim_exact"]) for q in qs) / len(qs),
                          sum(bool(q.get("fim_overrun")) for q in qs) / len(qs)) for cat, qs in sorted(by_cat.items())}


def _throughput(gens: list[dict]) -> float | None:
    total_t = sum(float(g.get("total_s") or 0) for g in gens)
    toks = sum(int(g.get("completion_tokens") or 0) for g in gens)
    return toks / total_t if total_t > 0 else None


def _quality(records: list[dict]) -> dict[str, LanguageQuality]:
    """Separate columns, never one score: parse/compile rate, g++ warnings, ruff / eslint findings per 100 lines."""
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_lang[r["language"]].append(r)
    return {lang: _language_quality(lang, rs) for lang, rs in sorted(by_lang.items())}


def _language_quality(lang: str, rs: list[dict]) -> LanguageQuality:
    parsed = [r for r in rs if r.get("outcome") != "skipped"]
    n = len(parsed)
    warns = [r["compile_warnings"] for r in parsed if r.get("compile_warnings") is not None]
    return LanguageQuality(
        samples=n,
        parses_rate=sum(r.get("outcome") != "compile_error" for r in parsed) / n if n else None,
        extracted_rate=sum(bool((r.get("quality") or {}).get("extracted", True)) for r in parsed) / n if n else None,
        gxx_warnings_total=sum(warns) if lang == "cpp" else None,
        gxx_warnings_per_sample=sum(warns) / len(warns) if lang == "cpp" and warns else None,
        ruff_findings_per_100_loc=_per_100_loc(parsed, "ruff_findings") if lang == "python" else None,
        eslint_findings_per_100_loc=_per_100_loc(parsed, "eslint_findings") if lang == "javascript" else None,
    )


def _per_100_loc(records: list[dict], key: str) -> float | None:
    """Lint findings per 100 lines over the samples the linter could check (None: it checked none)."""
    checked = [r.get("quality") or {} for r in records]
    checked = [q for q in checked if q.get(key) is not None]
    loc = sum(int(q.get("loc") or 0) for q in checked)
    return 100.0 * sum(int(q[key]) for q in checked) / loc if loc else None
