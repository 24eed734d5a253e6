"""Markdown (terminal) and JSON-ready renderings of run summaries."""

from __future__ import annotations

import json
from pathlib import Path

from fmgguf._util import human_bytes
from fmgguf.errors import BenchError


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _gib(n: int | None) -> str:
    return human_bytes(n or None, "–")


def label(s: dict) -> str:
    return f"{s.get('model')}" + (f" {s['quant']}" if s.get("quant") else "")


def summary_markdown(s: dict) -> str:
    """One run as Markdown."""
    if s.get("status") == "skipped":
        return f"## {label(s)}\n\nSkipped: {s.get('reason')}\n"
    ov = s["overall"]
    lo, hi = ov["ci95"]
    n = ov["tasks"]
    lines = [f"## {label(s)} — suite {s.get('suite')}", "",
             f"pass@1 **{_pct(ov['pass@1'])}** (95% bootstrap CI {_pct(lo)}–{_pct(hi)}) on {n} tasks, "
             f"{s.get('samples', 1)} sample(s) each; one task = {100 / max(n, 1):.1f} points"
             + (" (20 tasks = 5 points each)." if n == 20 else "."), ""]
    ks = [k for k in ov if k.startswith("pass@") and k != "pass@1"]
    if ks:
        lines += [", ".join(f"{k} {_pct(ov[k])}" for k in ks), ""]
    lines += ["| category | tasks | pass@1 | 95% CI |", "|---|---:|---:|---|"]
    for cat, b in s["by_category"].items():
        lines.append(f"| {cat} | {b['tasks']} | {_pct(b['pass@1'])} | {_pct(b['ci95'][0])}–{_pct(b['ci95'][1])} |")
    lines += ["", "Outcomes: " + ", ".join(f"{k} {v}" for k, v in s["outcomes"].items()), ""]
    sp = s.get("speed") or {}
    if sp.get("ttft_s", {}).get("median") is not None:
        lines += ["| speed | median | p90 |", "|---|---:|---:|",
                  f"| time to first token (s) | {_num(sp['ttft_s']['median'], '{:.3f}')} | {_num(sp['ttft_s']['p90'], '{:.3f}')} |",
                  f"| decode tokens/s | {_num(sp['decode_tokens_per_s']['median'], '{:.1f}')} | {_num(sp['decode_tokens_per_s']['p90'], '{:.1f}')} |",
                  f"| end-to-end latency (s) | {_num(sp['e2e_s']['median'])} | {_num(sp['e2e_s']['p90'])} |", "",
                  f"Tokens: {sp.get('prompt_tokens')} prompt, {sp.get('completion_tokens')} completion. "
                  f"Model memory {_gib(s.get('model_memory_bytes'))}, peak process RSS {_gib(s.get('peak_rss_bytes'))}.", ""]
    lines += ["Code quality (separate columns, not a score; lint counts measure style and risk, not correctness):", "",
              "| language | samples | parses/compiles | code block found | g++ -Wall -Wextra warnings/sample "
              "| ruff findings/100 LOC | eslint findings/100 LOC |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for lang, q in (s.get("quality") or {}).items():
        lines.append(f"| {lang} | {q['samples']} | {_pct(q.get('parses_rate'))} | {_pct(q.get('extracted_rate'))} | "
                     f"{_num(q.get('gxx_warnings_per_sample'))} | {_num(q.get('ruff_findings_per_100_loc'), '{:.1f}')} | "
                     f"{_num(q.get('eslint_findings_per_100_loc'), '{:.1f}')} |")
    eslint = (s.get("lint") or {}).get("eslint")
    if eslint:
        lines += ["", f"eslint {eslint.get('version')} rules: {', '.join(eslint.get('rules') or [])}."
                  if eslint.get("available") else f"eslint column is –: {eslint.get('reason')}."]
    failed = [t for t in s.get("tasks", []) if t["c"] < t["n"]]
    if failed:
        lines += ["", "| task | outcome | detail |", "|---|---|---|"]
        for t in failed[:40]:
            outcome = ", ".join(f"{k} {v}" for k, v in t["outcomes"].items())
            lines.append(f"| {t['task_id']} | {outcome} | {(t.get('detail') or '').replace('|', '/')[:90]} |")
    return "\n".join(lines) + "\n"


def comparison_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for s in runs:
        if s.get("status") == "skipped":
            rows.append({"run": label(s), "status": "skipped", "reason": s.get("reason")})
            continue
        ov, sp = s["overall"], s.get("speed") or {}
        rows.append({"run": label(s), "model": s.get("model"), "quant": s.get("quant"), "suite": s.get("suite"),
                     "status": s.get("status", "done"), "tasks": ov["tasks"], "pass@1": ov["pass@1"], "ci95": ov["ci95"],
                     "by_category": {c: b["pass@1"] for c, b in s["by_category"].items()},
                     "ttft_s": (sp.get("ttft_s") or {}).get("median"),
                     "decode_tokens_per_s": (sp.get("decode_tokens_per_s") or {}).get("median"),
                     "e2e_s": (sp.get("e2e_s") or {}).get("median"),
                     "model_memory_bytes": s.get("model_memory_bytes"), "peak_rss_bytes": s.get("peak_rss_bytes"),
                     "ruff_findings_per_100_loc": _quality_value(s, "python", "ruff_findings_per_100_loc"),
                     "eslint_findings_per_100_loc": _quality_value(s, "javascript", "eslint_findings_per_100_loc")})
    return rows


def _quality_value(s: dict, lang: str, key: str) -> float | None:
    return ((s.get("quality") or {}).get(lang) or {}).get(key)


def comparison_markdown(runs: list[dict]) -> str:
    rows = comparison_rows(runs)
    cats = sorted({c for r in rows for c in (r.get("by_category") or {})})
    head = ["run", "pass@1", "95% CI", *cats, "TTFT s", "decode tok/s", "E2E s", "model memory", "ruff/100 LOC",
            "eslint/100 LOC"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] == "skipped":
            out.append(f"| {r['run']} | skipped: {r['reason']} |" + " |" * (len(head) - 2))
            continue
        cells = [r["run"], _pct(r["pass@1"]), f"{_pct(r['ci95'][0])}–{_pct(r['ci95'][1])}",
                 *[_pct(r["by_category"].get(c)) for c in cats], _num(r["ttft_s"], "{:.3f}"),
                 _num(r["decode_tokens_per_s"], "{:.1f}"), _num(r["e2e_s"]), _gib(r["model_memory_bytes"]),
                 _num(r.get("ruff_findings_per_100_loc"), "{:.1f}"), _num(r.get("eslint_findings_per_100_loc"), "{:.1f}")]
        out.append("| " + " | ".join(cells) + " |")
    n = max((r.get("tasks") or 0 for r in rows), default=0)
    if n:
        out += ["", f"One task = {100 / n:.1f} points of pass@1; differences inside the 95% intervals are noise."]
    return "\n".join(out) + "\n"


def load_run(ref: str, bench_dir: Path) -> dict:
    """A summary from a run id (under bench_dir), a run folder or a summary.json path."""
    p = Path(ref)
    for cand in (p, p / "summary.json", bench_dir / ref / "summary.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise BenchError(f"{cand} is not valid JSON", fix="rerun the benchmark") from exc
    known = sorted(d.name for d in bench_dir.iterdir() if (d / "summary.json").exists()) if bench_dir.is_dir() else []
    raise BenchError(f"no benchmark run {ref!r}", fix=f"use one of: {', '.join(known) or 'none yet — run fmgguf bench ID'}")
