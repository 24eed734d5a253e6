"""The eslint quality column for JavaScript answers: on-demand install into the shared cache, counts on real
sources, the per-100-lines metric, the Markdown/HTML columns, and the "–" + manifest note when eslint cannot run.

Tests marked slow npm-install eslint 9 once into FMGGUF_CACHE (about 10 s); later runs reuse it (~1 s each).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fmgguf.bench.html_report import render_html
from fmgguf.bench.lint import RULES, JsLinter
from fmgguf.bench.metrics import summarize
from fmgguf.bench.reports import comparison_markdown, summary_markdown
from fmgguf.settings import load_settings

HAS_NODE = bool(shutil.which("node"))
needs_node = pytest.mark.skipif(not HAS_NODE, reason="node is not installed")
needs_npm = pytest.mark.skipif(not (HAS_NODE and shutil.which("npm")), reason="node/npm are not installed")

SLOPPY = """function chunk(arr, size) {
  if (size == 0) return missing;
  const out = [];
  return out;
  console.log("never");
}
"""


def _js_records(findings: list[int | None], loc: int = 20) -> list[dict]:
    return [{"task_id": f"js{i}", "category": "javascript", "language": "javascript", "sample": 0,
             "outcome": "passed", "detail": "", "gen": None,
             "quality": {"loc": loc, "extracted": True, "eslint_findings": n}} for i, n in enumerate(findings)]


def test_eslint_rate_per_100_lines_and_the_markdown_column() -> None:
    s = summarize(_js_records([2, 1, None]), 1, {"model": "m", "quant": "Q4_K_M",
                                                 "lint": {"eslint": {"available": True, "version": "9.1.0",
                                                                     "reason": None, "rules": list(RULES)}}})
    # the unparsable sample (None) is left out of both the findings and the lines
    assert s.quality["javascript"].eslint_findings_per_100_loc == pytest.approx(100 * 3 / 40)
    md = summary_markdown(s)
    assert "eslint findings/100 LOC" in md and "| javascript | 3 |" in md
    row = [ln for ln in md.splitlines() if ln.startswith("| javascript | 3 |")][-1]  # after the category table
    assert row.rstrip().endswith("| 7.5 |")
    assert "eslint 9.1.0 rules: no-undef" in md
    assert "eslint/100 LOC" in comparison_markdown([s]) and "7.5" in comparison_markdown([s])
    assert "eslint findings/100 LOC" in render_html([s])


def test_no_eslint_means_a_dash_and_a_reason() -> None:
    s = summarize(_js_records([None, None]), 1, {"model": "m", "lint": {"eslint": {
        "available": False, "reason": "node not found on PATH", "version": None, "rules": []}}})
    assert s.quality["javascript"].eslint_findings_per_100_loc is None
    md = summary_markdown(s)
    row = [ln for ln in md.splitlines() if ln.startswith("| javascript |")][-1]
    assert row.rstrip().endswith("| – |")
    assert "eslint column is –: node not found on PATH." in md


def test_linter_without_node_reports_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    linter = JsLinter(load_settings().replace(shared_cache=tmp_path / "cache"))
    st = linter.status()
    assert not st.available and "node not found" in st.reason
    assert linter.findings([SLOPPY], ["chunk"]) == [None]
    assert not (tmp_path / "cache" / "eslint").exists()


@needs_node
def test_offline_without_a_cached_eslint_never_fails_the_run(tmp_path: Path) -> None:
    from fmgguf.bench.runner import ModelBenchmarker

    settings = load_settings().replace(shared_cache=tmp_path / "cache", offline=True)
    linter = JsLinter(settings)
    st = linter.status()
    assert not st.available and st.reason.startswith("offline mode")
    s = ModelBenchmarker(settings).run_reference(languages=["javascript"])
    assert s.pass_at_1 == 1.0  # the run itself is unaffected
    assert s.lint["eslint"]["available"] is False and "offline" in s.lint["eslint"]["reason"]
    assert s.quality["javascript"].eslint_findings_per_100_loc is None
    assert "eslint column is –: offline mode" in summary_markdown(s)


@needs_npm
def test_failed_npm_install_is_a_reason_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # real npm against a registry nobody serves (loopback), with an empty npm cache and no retries
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    linter = JsLinter(load_settings().replace(shared_cache=tmp_path / "cache"))
    st = linter.status()
    assert not st.available and st.reason.startswith("npm install eslint@9 failed: ECONNREFUSED")
    assert linter.status() is st  # not retried at once
    assert [p.name for p in (tmp_path / "cache" / "eslint").iterdir()] == [".install.lock"]  # no half install
    assert linter.findings([SLOPPY]) == [None]


@pytest.fixture(scope="module")
def linter() -> JsLinter:
    if not (HAS_NODE and shutil.which("npm")):
        pytest.skip("node/npm are not installed")
    lint = JsLinter(load_settings())
    st = lint.status()
    assert st.available, st.reason
    return lint


@pytest.mark.slow
@needs_npm
def test_eslint_is_installed_once_into_the_shared_cache(linter: JsLinter) -> None:
    st = linter.status()
    assert st.version and st.version.startswith("9.")
    assert linter.install_dir.parent == Path(load_settings().shared_cache) / "eslint"
    assert (linter.install_dir / ".complete").exists() and linter.config_path.exists()
    assert JsLinter(load_settings()).status().available  # a second linter reuses the install


@pytest.mark.slow
@needs_npm
def test_undefined_name_and_loose_equality_are_findings(linter: JsLinter) -> None:
    [msgs] = linter.messages([SLOPPY], ["chunk"])
    rules = sorted(m["ruleId"] for m in msgs)
    assert rules == ["eqeqeq", "no-undef", "no-unreachable"]  # `chunk` is the entry point: not "unused"
    disabled = "/* eslint-disable */\n" + SLOPPY  # inline directives cannot hide findings
    helper = SLOPPY + "function helper(x) { const y = 1; return x; }\n"
    assert linter.findings([SLOPPY, disabled, "function chunk( {\n", helper], ["chunk"]) == [3, 3, None, 5]


@pytest.mark.slow
@needs_npm
def test_reference_javascript_answers_get_counts(linter: JsLinter) -> None:
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.bench.tasks import builtin_tasks

    tasks = [t for t in builtin_tasks() if t.language == "javascript"]
    counts = linter.findings([t.source(t.reference) for t in tasks], [t.entry_point for t in tasks])
    assert len(tasks) >= 4 and counts == [0] * len(tasks)  # the references are clean code
    # the wrong answers are wrong in behaviour, not in style: lint finds nothing (it never measures correctness)
    wrong = linter.findings([t.source(t.wrong or "") for t in tasks], [t.entry_point for t in tasks])
    assert wrong == [0] * len(tasks)
    # ... while the same check does count a sloppy answer
    assert linter.findings([SLOPPY], ["chunk"]) == [3]
    s = ModelBenchmarker(load_settings()).run_reference(languages=["javascript"])
    assert s.lint["eslint"]["available"] is True
    rate = s.quality["javascript"].eslint_findings_per_100_loc
    assert rate == 0.0  # checked samples, all clean (None would mean nothing was checked)
    md = summary_markdown(s)
    assert "eslint findings/100 LOC" in md and f"{rate:.1f} |" in md
