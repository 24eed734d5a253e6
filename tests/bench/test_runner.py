"""The runner end to end on a real tiny llama.cpp model: generation, sandboxed execution, JSONL resume,
fit-plan skips, and `fmgguf bench TINY --quant both` + `fmgguf compare` producing Markdown, JSON and HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow

TASKS = ["py_run_length", "js_chunk", "sql_no_orders", "fim_py_fibonacci"]


QUANTS = ("F16", "Q4_K_M", "Q8_0")


@pytest.fixture(scope="module")
def tiny_files() -> dict[str, Path]:
    pytest.importorskip("llama_cpp")
    from fmgguf.tiny.tiny_cards import tiny_repo_files

    return tiny_repo_files("tiny-bench", quants=QUANTS)


def _quantized_generation_works(files: dict[str, Path]) -> str | None:
    """None, or why llama.cpp cannot run the quantized tiny files here (e.g. SIGILL in its AMX kernels)."""
    from fmgguf.errors import EngineError
    from fmgguf.testing.smoke import smoke_generate

    try:
        smoke_generate(files["tiny-bench-Q8_0.gguf"], n_tokens=2)
    except EngineError as exc:
        if "SIGILL" in str(exc):
            return f"this llama.cpp build cannot run Q8_0/Q4_K_M on this CPU: {exc}"
        raise
    return None


@pytest.fixture
def tiny_in_catalog(tiny_files, isolated_home, monkeypatch):
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.download import ModelDownloader
    from fmgguf.settings import load_settings
    from fmgguf.testing.hub_server import HubServer
    from fmgguf.tiny.tiny_cards import tiny_card

    card = tiny_card("tiny-bench", quants=QUANTS)
    repo = next(iter(card["variants"].values()))["repo"]
    with HubServer({repo: tiny_files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        settings = load_settings()
        add_user_entry(settings, card)
        dl = ModelDownloader(settings)
        for q in QUANTS:
            dl.download_model("tiny-bench", q)
        yield settings


def test_benchmark_model_streams_records_and_resumes(tiny_in_catalog) -> None:
    from fmgguf.bench.run_store import RunStore
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.runtime import ModelManager

    settings = tiny_in_catalog
    mgr = ModelManager(settings)
    bm = ModelBenchmarker(settings, manager=mgr)
    seen: list[tuple[int, int]] = []
    s = bm.benchmark_model("tiny-bench", "F16", tasks=TASKS, max_tokens=16, progress=lambda d, t, _: seen.append((d, t)))
    assert s.status == "done" and s.overall.tasks == len(TASKS)
    assert seen and seen[-1] == (len(TASKS), len(TASKS))
    store = RunStore(Path(s.run_dir))
    recs = store.load()
    assert {r["task_id"] for r in recs} == set(TASKS)
    assert all(r["outcome"] in ("passed", "failed", "error", "compile_error", "timeout", "memory", "skipped")
               for r in recs)
    gen = next(r["gen"] for r in recs if r["gen"])
    assert gen["completion_tokens"] >= 1 and gen["ttft_s"] > 0
    assert s.speed.decode_tokens_per_s.median and s.model_memory_bytes
    eslint = s.lint["eslint"]  # js_chunk is in the run: the manifest says whether eslint could lint it
    js = next(r for r in recs if r["task_id"] == "js_chunk")
    assert "eslint_findings" in js["quality"] if eslint["available"] else eslint["reason"]
    # an interrupted run resumes: drop the last record (and leave a half-written line), run again
    lines = store.records_path.read_text().splitlines()
    store.records_path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    s2 = bm.benchmark_model("tiny-bench", "F16", tasks=TASKS, max_tokens=16)
    assert s2.resumed == len(TASKS) - 1 and s2.overall.tasks == len(TASKS)
    assert len(store.load()) == len(TASKS)
    # the seed's API: benchmark_multiple_models + generate_comparison_report (resumes: nothing to generate)
    import asyncio

    many = asyncio.run(bm.benchmark_multiple_models({"tiny-bench": {"quant": "F16", "tasks": TASKS, "max_tokens": 16}}))
    assert many["tiny-bench"].resumed == len(TASKS)
    report = bm.generate_comparison_report(many)
    assert "tiny-bench F16" in report["markdown"] and report["rows"][0]["tasks"] == len(TASKS)
    assert report["html"].startswith("<!doctype html>")
    mgr.close()


def test_models_that_do_not_fit_are_skipped(tiny_in_catalog) -> None:
    from fmgguf.bench.runner import ModelBenchmarker

    tight = tiny_in_catalog.replace(ram_margin=10**15)  # leave "no" RAM free: nothing fits
    s = ModelBenchmarker(tight).benchmark_model("tiny-bench", "Q8_0", tasks=TASKS[:1])
    assert s.status == "skipped" and "needs" in s.reason and "RAM" in s.reason


def test_cli_bench_both_quants_then_compare(tiny_in_catalog, tiny_files, tmp_path: Path) -> None:
    from fmgguf.cli.main import cli

    why = _quantized_generation_works(tiny_files)
    if why:
        pytest.skip(why)

    runner = CliRunner()
    res = runner.invoke(cli, ["bench", "tiny-bench", "--quant", "both", "--tasks", ",".join(TASKS),
                              "--max-tokens", "16", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    runs = data["runs"]
    assert [r["quant"] for r in runs] == ["Q4_K_M", "Q8_0"] and all(r["status"] == "done" for r in runs)
    for r in runs:
        d = Path(r["run_dir"])
        assert (d / "summary.json").is_file() and (d / "report.md").is_file() and (d / "report.html").is_file()
    out = tmp_path / "cmp.html"
    res = runner.invoke(cli, ["compare", runs[0]["run_id"], runs[1]["run_id"], "--html", str(out)])
    assert res.exit_code == 0, res.output
    assert "tiny-bench Q4_K_M" in res.output and "tiny-bench Q8_0" in res.output
    page = out.read_text()
    assert "Q4_K_M vs Q8_0" in page and "<svg" in page and "https://" not in page
    res = runner.invoke(cli, ["compare", runs[0]["run_id"], "--json"])
    assert json.loads(res.output)["runs"][0]["quant"] == "Q4_K_M"


def test_cli_bench_and_compare_on_the_plain_cpu_path(tiny_in_catalog, tmp_path: Path) -> None:
    """The same CLI flow with the F16 file (llama.cpp's plain CPU kernels), which runs on every CPU."""
    from fmgguf.cli.main import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["bench", "tiny-bench", "--quant", "F16", "--tasks", "py_run_length,cpp_lcm_of",
                              "--max-tokens", "16"])
    assert res.exit_code == 0, res.output
    assert "pass@1" in res.output and "tiny-bench-F16-builtin-n1" in res.output
    out = tmp_path / "one.html"
    res = runner.invoke(cli, ["compare", "tiny-bench-F16-builtin-n1", "--html", str(out)])
    assert res.exit_code == 0, res.output
    assert "<svg" in out.read_text()


def test_cli_both_quants_reports_a_missing_quant_as_skipped(tiny_files, isolated_home) -> None:
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.cli.main import cli
    from fmgguf.settings import load_settings
    from fmgguf.tiny.tiny_cards import tiny_card

    add_user_entry(load_settings(), tiny_card("tiny-f16only", quants=("F16",)))
    res = CliRunner().invoke(cli, ["bench", "tiny-f16only", "--quant", "both", "--tasks", "py_run_length", "--json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.output)["runs"]
    assert [(r["quant"], r["status"]) for r in runs] == [("Q4_K_M", "skipped"), ("Q8_0", "skipped")]
    assert all(r["reason"] for r in runs)
