"""One self-contained HTML page (inline CSS + inline SVG charts, no script, no CDN) comparing runs."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable

from fmgguf.bench.reports import ComparisonRow, comparison_markdown, comparison_rows
from fmgguf.bench.summary import BenchSummary

_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, f: str = "{:.2f}") -> str:
    return "–" if x is None else f.format(x)


def _gib(n: int | None) -> float | None:
    """Bytes as a number of GiB for the charts and the GiB column (None when unknown or zero)."""
    return n / 1024**3 if n else None


def _bars(title: str, groups: list[str], series: list[tuple[str, list[float | None]]], unit: str = "",
          vmax: float | None = None, fmt: str = "{:.1f}", labels: list[list[str]] | None = None,
          axis: bool = True) -> str:
    """A grouped vertical bar chart as inline SVG; each bar carries its value (``labels`` overrides the text)."""
    width, height, left, bottom, top = 760, 300, 50, 60, 30
    plot_w, plot_h = width - left - 20, height - bottom - top
    vals = [v for _, vs in series for v in vs if v is not None]
    vmax = vmax or (max(vals) * 1.15 if vals and max(vals) > 0 else 1.0)
    n_groups = max(1, len(groups))
    group_w = plot_w / n_groups
    bar_w = max(4.0, (group_w * 0.8) / max(1, len(series)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_esc(title)}"><title>{_esc(title)}</title>',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{_esc(title)}</text>']
    for i in range(5 if axis else 1):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                     f'{_esc(fmt.format(vmax * i / 4))}{_esc(unit)}</text>')
    for gi, g in enumerate(groups):
        x0 = left + gi * group_w + group_w * 0.1
        for si, (name, vs) in enumerate(series):
            v = vs[gi] if gi < len(vs) else None
            if v is None:
                continue
            h = plot_h * min(v, vmax) / vmax
            x = x0 + si * bar_w
            text = labels[si][gi] if labels else f"{fmt.format(v)}{unit}"
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                         f'fill="{_COLORS[si % len(_COLORS)]}"><title>{_esc(name)} · {_esc(g)}: '
                         f'{_esc(text)}</title></rect>')
            if bar_w >= 14:
                parts.append(f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{top + plot_h - h - 3:.1f}" font-size="9" '
                             f'text-anchor="middle">{_esc(text)}</text>')
        parts.append(f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" font-size="11" '
                     f'text-anchor="middle">{_esc(g)}</text>')
    lx = left
    for si, (name, _) in enumerate(series):
        parts.append(f'<rect x="{lx}" y="{height - 22}" width="12" height="12" fill="{_COLORS[si % len(_COLORS)]}"/>'
                     f'<text x="{lx + 16}" y="{height - 12}" font-size="11">{_esc(name)}</text>')
        lx += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[ComparisonRow]) -> str:
    cats = sorted({c for r in rows for c in r.by_category})
    head = ["run", "pass@1", "95% CI", *cats, "TTFT s", "decode tok/s", "E2E s", "model memory GiB",
            "ruff findings/100 LOC", "eslint findings/100 LOC"]
    out = ["<table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        if r.skipped:
            out.append(f"<tr><td>{_esc(r.run)}</td><td colspan='{len(head) - 1}'>skipped: "
                       f"{_esc(r.reason)}</td></tr>")
            continue
        cells = [r.run, _pct(r.pass_at_1), f"{_pct(r.ci95[0])}–{_pct(r.ci95[1])}",
                 *[_pct(r.by_category.get(c)) for c in cats], _num(r.ttft_s, "{:.3f}"),
                 _num(r.decode_tokens_per_s, "{:.1f}"), _num(r.e2e_s), _num(_gib(r.model_memory_bytes)),
                 _num(r.ruff_findings_per_100_loc, "{:.1f}"), _num(r.eslint_findings_per_100_loc, "{:.1f}")]
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _charts(done: list[ComparisonRow]) -> list[str]:
    cats = sorted({c for r in done for c in r.by_category})
    charts = [_bars("pass@1 by category (%)", ["overall", *cats],
                    [(r.run, [100 * r.pass_at_1, *[100 * r.by_category[c] if c in r.by_category else None
                                                   for c in cats]]) for r in done],
                    unit="%", vmax=100.0, fmt="{:.0f}")]
    if any(r.decode_tokens_per_s for r in done):
        charts.append(_bars("decode speed (tokens/s, median)", [r.run for r in done],
                            [("tokens/s", [r.decode_tokens_per_s for r in done])]))
    if any(r.model_memory_bytes for r in done):
        charts.append(_bars("model memory (GiB)", [r.run for r in done],
                            [("GiB", [_gib(r.model_memory_bytes) or 0.0 for r in done])], fmt="{:.2f}"))
    by_model: dict[str, dict[str, ComparisonRow]] = defaultdict(dict)
    for r in done:
        if r.quant:
            by_model[r.model][r.quant] = r
    for model, qs in by_model.items():
        if "Q4_K_M" in qs and "Q8_0" in qs:
            charts.append(_quant_pair_chart(model, [("Q4_K_M", qs["Q4_K_M"]), ("Q8_0", qs["Q8_0"])]))
    return charts


def _quant_pair_chart(model: str, pair: list[tuple[str, ComparisonRow]]) -> str:
    metrics: list[tuple[str, Callable[[ComparisonRow], float | None], str]] = [
        ("pass@1", lambda r: 100 * r.pass_at_1, "{:.1f}%"),
        ("decode tokens/s", lambda r: r.decode_tokens_per_s, "{:.1f}"),
        ("time to first token s", lambda r: r.ttft_s, "{:.3f}"),
        ("model memory GiB", lambda r: _gib(r.model_memory_bytes), "{:.2f}")]
    rel: list[list[float | None]] = [[] for _ in pair]
    text: list[list[str]] = [[] for _ in pair]
    for _, get, f in metrics:
        vals = [get(r) for _, r in pair]
        top = max((v for v in vals if v is not None), default=0) or 1.0
        for i, v in enumerate(vals):
            rel[i].append(None if v is None else 100 * v / top)
            text[i].append("–" if v is None else f.format(v))
    return _bars(f"{model}: Q4_K_M vs Q8_0 (bar height relative to the larger of the two)",
                 [m[0] for m in metrics], [(q, rel[i]) for i, (q, _) in enumerate(pair)],
                 vmax=100.0, labels=text, axis=False)


def render_html(runs: list[BenchSummary], title: str = "fmgguf benchmark comparison") -> str:
    rows = comparison_rows(runs)
    done = [r for r in rows if not r.skipped]
    charts = _charts(done) if done else []
    n = max((r.tasks for r in done), default=0)
    note = (f"One task = {100 / n:.1f} points of pass@1; differences inside the 95% bootstrap intervals are noise. "
            "Code-quality counts are separate columns in each run's report, never one score.") if n else ""
    md = _esc(comparison_markdown(runs))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }} .wide {{ overflow-x: auto; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f3f3f3; }} svg {{ display: block; margin: 1.5em 0; }} .note {{ color: #555; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; }}
</style></head><body>
<h1>{_esc(title)}</h1>
<div class="wide">{_table(rows)}</div>
<p class="note">{_esc(note)}</p>
{''.join(charts)}
<details><summary>Markdown</summary><pre>{md}</pre></details>
</body></html>
"""
