"""Markdown (terminal) renderings of run summaries, and the comparison rows the table and the HTML share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from fmgguf._util import JsonObject, human_bytes
from fmgguf.bench.summary import BenchSummary
from fmgguf.errors import BenchError


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _gib(n: int | None) -> str:
    return human_bytes(n or None, "–")


def label(s: BenchSummary) -> str:
    return s.label


def summary_markdown(s: BenchSummary) -> str:
    """One run as Markdown."""
    if s.skipped or s.overall is None:
        return f"## {s.label}\n\nSkipped: {s.reason}\n"
    ov = s.overall
    lo, hi = ov.ci95
    n = ov.tasks
    lines = [f"## {s.label} — suite {s.suite}", "",
             f"pass@1 **{_pct(ov.pass_at_1)}** (95% bootstrap CI {_pct(lo)}–{_pct(hi)}) on {n} tasks, "
             f"{s.samples} sample(s) each; one task = {100 / max(n, 1):.1f} points"
             + (" (20 tasks = 5 points each)." if n == 20 else "."), ""]
    ks = [k for k in sorted(ov.pass_at) if k != 1]
    if ks:
        lines += [", ".join(f"pass@{k} {_pct(ov.pass_at[k])}" for k in ks), ""]
    lines += ["| category | tasks | pass@1 | 95% CI |", "|---|---:|---:|---|"]
    for cat, b in s.by_category.items():
        lines.append(f"| {cat} | {b.tasks} | {_pct(b.pass_at_1)} | {_pct(b.ci95[0])}–{_pct(b.ci95[1])} |")
    lines += ["", "Outcomes: " + ", ".join(f"{k} {v}" for k, v in s.outcomes.items()), ""]
    if s.fim:
        lines += ["| FIM category | answers | exact match | overran the gap |", "|---|---:|---:|---:|"]
        lines += [f"| {c} | {f.samples} | {_pct(f.exact_match_rate)} | {_pct(f.overrun_rate)} |" for c, f in s.fim.items()]
        lines.append("")
    lines += _speed_lines(s)
    lines += _quality_lines(s)
    failed = [t for t in s.tasks if t.c < t.n]
    if failed:
        lines += ["", "| task | outcome | detail |", "|---|---|---|"]
        for t in failed[:40]:
            outcome = ", ".join(f"{k} {v}" for k, v in t.outcomes.items())
            lines.append(f"| {t.task_id} | {outcome} | {t.detail.replace('|', '/')[:90]} |")
    return "\n".join(lines) + "\n"


def _speed_lines(s: BenchSummary) -> list[str]:
    sp = s.speed
    if sp.ttft_s.median is None:
        return []
    return ["| speed | median | p90 |", "|---|---:|---:|",
            f"| time to first token (s) | {_num(sp.ttft_s.median, '{:.3f}')} | {_num(sp.ttft_s.p90, '{:.3f}')} |",
            f"| decode tokens/s | {_num(sp.decode_tokens_per_s.median, '{:.1f}')} | "
            f"{_num(sp.decode_tokens_per_s.p90, '{:.1f}')} |",
            f"| end-to-end latency (s) | {_num(sp.e2e_s.median)} | {_num(sp.e2e_s.p90)} |", "",
            f"Tokens: {sp.prompt_tokens} prompt, {sp.completion_tokens} completion. "
            f"Model memory {_gib(s.model_memory_bytes)}, peak process RSS {_gib(s.peak_rss_bytes)}.", ""]


def _quality_lines(s: BenchSummary) -> list[str]:
    lines = ["Code quality (separate columns, not a score; lint counts measure style and risk, not correctness):", "",
             "| language | samples | parses/compiles | code block found | g++ -Wall -Wextra warnings/sample "
             "| ruff findings/100 LOC | eslint findings/100 LOC |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for lang, q in s.quality.items():
        lines.append(f"| {lang} | {q.samples} | {_pct(q.parses_rate)} | {_pct(q.extracted_rate)} | "
                     f"{_num(q.gxx_warnings_per_sample)} | {_num(q.ruff_findings_per_100_loc, '{:.1f}')} | "
                     f"{_num(q.eslint_findings_per_100_loc, '{:.1f}')} |")
    eslint = s.lint.get("eslint")
    if eslint:
        lines += ["", f"eslint {eslint.get('version')} rules: {', '.join(eslint.get('rules') or [])}."
                  if eslint.get("available") else f"eslint column is –: {eslint.get('reason')}."]
    return lines


@dataclass(frozen=True)
class ComparisonRow:
    """One run's line in a comparison (the table, the HTML charts, ``compare --json``)."""

    run: str
    status: str
    model: str
    quant: str | None
    suite: str | None = None
    reason: str | None = None
    tasks: int = 0
    pass_at_1: float = 0.0
    ci95: tuple[float, float] = (0.0, 0.0)
    by_category: Mapping[str, float] = field(default_factory=dict)
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    e2e_s: float | None = None
    model_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    ruff_findings_per_100_loc: float | None = None
    eslint_findings_per_100_loc: float | None = None

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    def as_dict(self) -> JsonObject:
        if self.skipped:
            return {"run": self.run, "status": "skipped", "reason": self.reason}
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("reason", "pass_at_1")}
        return {**d, "pass@1": self.pass_at_1, "ci95": list(self.ci95), "by_category": dict(self.by_category)}


def comparison_row(s: BenchSummary) -> ComparisonRow:
    if s.skipped or s.overall is None:
        return ComparisonRow(s.label, "skipped", s.model, s.quant, s.suite, s.reason)
    q = s.quality
    return ComparisonRow(
        s.label, s.status, s.model, s.quant, s.suite, None, s.overall.tasks, s.overall.pass_at_1, s.overall.ci95,
        {c: b.pass_at_1 for c, b in s.by_category.items()}, s.speed.ttft_s.median,
        s.speed.decode_tokens_per_s.median, s.speed.e2e_s.median, s.model_memory_bytes, s.peak_rss_bytes,
        q["python"].ruff_findings_per_100_loc if "python" in q else None,
        q["javascript"].eslint_findings_per_100_loc if "javascript" in q else None)


def comparison_rows(runs: list[BenchSummary]) -> list[ComparisonRow]:
    return [comparison_row(s) for s in runs]


def comparison_markdown(runs: list[BenchSummary]) -> str:
    rows = comparison_rows(runs)
    cats = sorted({c for r in rows for c in r.by_category})
    head = ["run", "pass@1", "95% CI", *cats, "TTFT s", "decode tok/s", "E2E s", "model memory", "ruff/100 LOC",
            "eslint/100 LOC"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.skipped:
            out.append(f"| {r.run} | skipped: {r.reason} |" + " |" * (len(head) - 2))
            continue
        cells = [r.run, _pct(r.pass_at_1), f"{_pct(r.ci95[0])}–{_pct(r.ci95[1])}",
                 *[_pct(r.by_category.get(c)) for c in cats], _num(r.ttft_s, "{:.3f}"),
                 _num(r.decode_tokens_per_s, "{:.1f}"), _num(r.e2e_s), _gib(r.model_memory_bytes),
                 _num(r.ruff_findings_per_100_loc, "{:.1f}"), _num(r.eslint_findings_per_100_loc, "{:.1f}")]
        out.append("| " + " | ".join(cells) + " |")
    n = max((r.tasks for r in rows), default=0)
    if n:
        out += ["", f"One task = {100 / n:.1f} points of pass@1; differences inside the 95% intervals are noise."]
    return "\n".join(out) + "\n"


def load_run(ref: str, bench_dir: Path) -> BenchSummary:
    """A summary from a run id (under bench_dir), a run folder or a summary.json path."""
    p = Path(ref)
    for cand in (p, p / "summary.json", bench_dir / ref / "summary.json"):
        if cand.is_file():
            try:
                return BenchSummary.from_dict(json.loads(cand.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError) as exc:
                raise BenchError(f"{cand} is not valid JSON", fix="rerun the benchmark") from exc
    known = sorted(d.name for d in bench_dir.iterdir() if (d / "summary.json").exists()) if bench_dir.is_dir() else []
    raise BenchError(f"no benchmark run {ref!r}", fix=f"use one of: {', '.join(known) or 'none yet — run fmgguf bench ID'}")
