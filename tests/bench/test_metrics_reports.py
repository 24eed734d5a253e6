"""pass@k, bootstrap intervals, summaries, Markdown/JSON/HTML reports and the bench/compare CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmgguf.bench.html_report import render_html
from fmgguf.bench.metrics import bootstrap_ci, pass_at_k, percentile, summarize
from fmgguf.bench.reports import comparison_markdown, load_run, summary_markdown
from fmgguf.bench.summary import BenchSummary
from fmgguf.cli.main import cli
from fmgguf.errors import BenchError


def _exact(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (10, 0, 3), (10, 10, 1), (20, 7, 10), (5, 4, 2), (1, 1, 1)])
def test_pass_at_k_matches_the_combinatorial_formula(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k))


def test_pass_at_1_is_the_fraction_correct() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(0, 0, 1) == 0.0


def test_bootstrap_interval() -> None:
    vals = [1.0] * 15 + [0.0] * 5
    lo, hi = bootstrap_ci(vals)
    assert lo < 0.75 < hi and 0.5 <= lo and hi <= 0.95
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    assert bootstrap_ci(vals) == bootstrap_ci(vals)  # deterministic (fixed seed)
    assert percentile([1, 2, 3, 4, 5], 0.9) == pytest.approx(4.6)


def _records() -> list[dict]:
    recs = []
    for i in range(4):
        for s in range(3):
            ok = (i < 2 and s == 0) or i == 0
            recs.append({"task_id": f"t{i}", "category": "python" if i < 2 else "cpp",
                         "language": "python" if i < 2 else "cpp", "sample": s,
                         "outcome": "passed" if ok else "failed", "detail": "", "compile_warnings": 1 if i >= 2 else None,
                         "gen": {"prompt_tokens": 10, "completion_tokens": 20, "ttft_s": 0.1 * (i + 1),
                                 "tokens_per_s": 50.0, "total_s": 0.5, "finish_reason": "stop"},
                         "quality": {"loc": 10, "ruff_findings": 1 if i < 2 else None, "extracted": True}})
    return recs


def test_summarize_per_category_and_pass_at_k() -> None:
    s = summarize(_records(), samples=3, meta={"model": "m", "quant": "Q8_0"})
    # t0: 3/3, t1: 1/3, t2: 0/3, t3: 0/3
    assert s.overall.pass_at_1 == pytest.approx((1 + 1 / 3) / 4)
    assert set(s.overall.pass_at) == {1} and s.overall.tasks == 4
    assert s.by_category["python"].pass_at_1 == pytest.approx((1 + 1 / 3) / 2)
    assert s.by_category["cpp"].pass_at_1 == 0.0
    assert s.outcomes["passed"] == 4 and s.outcomes["failed"] == 8
    assert s.speed.completion_tokens == 240 and s.speed.decode_tokens_per_s.median == 50.0
    assert s.quality["python"].ruff_findings_per_100_loc == pytest.approx(10.0)
    assert s.quality["cpp"].gxx_warnings_per_sample == 1.0
    # the JSON form round-trips, with the layout summary.json always had
    d = s.as_dict()
    assert d["overall"]["pass@1"] == s.overall.pass_at_1 and d["quality"]["cpp"]["gxx_warnings_total"] == 6
    assert "ruff_findings_per_100_loc" not in d["quality"]["cpp"]
    assert BenchSummary.from_dict(json.loads(json.dumps(d))) == s
    md = summary_markdown(s)
    assert "pass@1" in md and "95% bootstrap CI" in md and "one task = 25.0 points" in md


def test_html_is_self_contained_with_charts() -> None:
    a = summarize(_records(), 3, {"model": "m", "quant": "Q4_K_M", "model_memory_bytes": 2 * 1024**3})
    b = summarize(_records()[:6], 3, {"model": "m", "quant": "Q8_0", "model_memory_bytes": 3 * 1024**3})
    skipped = BenchSummary("huge", "Q8_0", status="skipped", reason="Won't fit: needs 400 GiB")
    page = render_html([a, b, skipped])
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 3
    assert "Q4_K_M vs Q8_0" in page and "Won&#x27;t fit" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", page) and "<script" not in page
    md = comparison_markdown([a, b, skipped])
    assert "m Q4_K_M" in md and "skipped" in md


def test_cli_reference_list_and_compare(tmp_path: Path, isolated_home: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["bench", "--list-tasks", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert len(listed) >= 20 and "reference" not in listed[0]
    res = runner.invoke(cli, ["bench", "--reference", "--language", "python,sql", "--json"])
    assert res.exit_code == 0, res.output
    summ = json.loads(res.output)
    assert summ["overall"]["pass@1"] == 1.0 and summ["overall"]["tasks"] == 12  # 6 python + fim_py + barrier + 4 sql
    res = runner.invoke(cli, ["bench", "--reference", "--wrong", "--language", "sql", "--json"])
    assert json.loads(res.output)["overall"]["pass@1"] == 0.0
    # compare two stored runs (written the way `bench` writes them)
    bench_dir = isolated_home / "bench"
    for name in ("ref-a", "ref-b"):
        (bench_dir / name).mkdir(parents=True)
        (bench_dir / name / "summary.json").write_text(json.dumps({**summ, "model": name}))
    html_out = tmp_path / "cmp.html"
    res = runner.invoke(cli, ["compare", "ref-a", str(bench_dir / "ref-b"), "--html", str(html_out)])
    assert res.exit_code == 0, res.output
    assert "ref-a" in res.output and "ref-b" in res.output
    assert "<svg" in html_out.read_text()
    with pytest.raises(BenchError):
        load_run("nope", bench_dir)
    res = runner.invoke(cli, ["bench"])
    assert res.exit_code != 0


def test_cli_reference_on_a_custom_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "two.jsonl"
    rows = [{"task_id": "T/0", "prompt": "def inc(x):\n", "entry_point": "inc", "canonical_solution": "    return x + 1\n",
             "test": "def check(candidate):\n    assert candidate(1) == 2\n"},
            {"task_id": "T/1", "prompt": "def dec(x):\n", "entry_point": "dec", "canonical_solution": "    return x + 1\n",
             "test": "def check(candidate):\n    assert candidate(1) == 0\n"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = CliRunner().invoke(cli, ["bench", "--reference", "--suite", str(p), "--json"])
    assert res.exit_code != 0  # one canonical solution is wrong: the self-check says so
    assert '"solved": 1' in res.output
