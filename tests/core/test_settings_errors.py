from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf import errors
from fmgguf.settings import Settings, parse_size


def test_env_overrides_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("keep_alive: 60\nmax_rate: 10MB\ndefault_quant: Q8_0\n")
    env = {"FMGGUF_HOME": str(tmp_path / "h"), "FMGGUF_CONFIG": str(cfg), "FMGGUF_KEEP_ALIVE": "5"}
    s = Settings.load(env=env)
    assert s.keep_alive == 5.0  # env beats the file
    assert s.max_rate == 10_000_000  # from the file, parsed
    assert s.default_quant == "Q8_0"
    assert s.home == tmp_path / "h"
    assert s.catalog_file == tmp_path / "h" / "catalog.yaml"



@pytest.mark.parametrize(("env_name", "key", "file_value", "env_value", "expected"), [
    ("HF_ENDPOINT", "hf_endpoint", "http://file-mirror:8090", "http://env-mirror:8091", "http://env-mirror:8091"),
    ("FMGGUF_CATALOG", "catalog_file", "/from/file/catalog.yaml", "/from/env/catalog.yaml", Path("/from/env/catalog.yaml")),
    ("FMGGUF_DEFAULT_QUANT", "default_quant", "Q8_0", "Q4_K_M", "Q4_K_M"),
])
def test_env_beats_the_config_file_for_each_string_setting(tmp_path: Path, env_name: str, key: str, file_value: str,
                                                           env_value: str, expected: object) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"{key}: {file_value}\n")
    base = {"FMGGUF_HOME": str(tmp_path / "h"), "FMGGUF_CONFIG": str(cfg)}
    from_file = Settings.load(env=base)
    assert getattr(from_file, key) == (Path(file_value) if isinstance(expected, Path) else file_value)
    assert getattr(Settings.load(env={**base, env_name: env_value}), key) == expected

def test_hf_variables_are_honoured(tmp_path: Path) -> None:
    env = {"FMGGUF_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:5000/", "HF_TOKEN": "t0k",
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    s = Settings.load(env=env)
    assert s.hf_endpoint == "http://127.0.0.1:5000"
    assert s.hf_token == "t0k" and "t0k" not in repr(s)
    assert s.offline is True
    assert s.hub_cache == tmp_path / "hf" / "hub"


def test_seed_config_default_model(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text('models:\n  default_provider: "qwen"\n  default_model: "qwen2.5-coder-7b-instruct"\n')
    s = Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_CONFIG": str(cfg)})
    assert s.default_model == "qwen2.5-coder-7b-instruct"


@pytest.mark.parametrize("text", ["not: [valid", "- a list\n- at top\n"])
def test_bad_config_file_is_one_line_error(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    with pytest.raises(errors.ConfigError) as info:
        Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_CONFIG": str(cfg)})
    assert "\n" not in str(info.value) and str(cfg) in str(info.value)


def test_bad_env_value(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="FMGGUF_OFFLINE"):
        Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_OFFLINE": "maybe"})
    with pytest.raises(errors.ConfigError, match="size"):
        Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_MAX_RATE": "fast"})


@pytest.mark.parametrize(("text", "expected"), [("8GB", 8_000_000_000), ("512MiB", 512 * 2**20), ("1.5G", int(1.5 * 2**30)),
                                                ("2000", 2000), ("200MB/s", 200_000_000), (None, None)])
def test_parse_size(text: str | None, expected: int | None) -> None:
    assert parse_size(text) == expected


def test_nothing_read_at_import() -> None:
    import subprocess
    import sys

    code = ("import os, fmgguf, fmgguf.settings, fmgguf.catalog, fmgguf.errors, fmgguf.cli.main;"
            "import sys; bad=[m for m in ('llama_cpp','huggingface_hub','rich','fastapi') if m in sys.modules];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"FMGGUF_HOME": "/nonexistent/\x01bad", "PATH": "/usr/bin"}).stdout
    assert out.strip() == "[]"


def test_error_table_is_total_and_consistent() -> None:
    table = errors.error_table()
    names = {row[0] for row in table}
    for klass in errors.FmggufError.__subclasses__():
        assert klass.__name__ in names, klass
    for _name, code, status, _doc in table:
        assert code != 0 and 400 <= status < 600
    assert errors.http_status_for(errors.UnknownModelError("x")) == 404
    assert errors.http_status_for(errors.IntegrityError("x")) == 502
    assert errors.exit_code_for(errors.IntegrityError("x")) != errors.exit_code_for(errors.DownloadError("x"))
    assert errors.exit_code_for(KeyboardInterrupt()) == 130


def test_error_message_is_one_line_with_fix() -> None:
    err = errors.NotDownloadedError("model x is not\n downloaded", fix="run fmgguf pull x")
    assert str(err) == "model x is not downloaded — run fmgguf pull x"
    assert err.to_dict()["fix"] == "run fmgguf pull x"


def test_parallel_is_one_setting_from_file_env_and_override(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("parallel: 3\n")
    base = {"FMGGUF_HOME": str(tmp_path / "h"), "FMGGUF_CONFIG": str(cfg)}
    assert Settings.load(env=base).parallel == 3
    assert Settings.load(env={**base, "FMGGUF_PARALLEL": "6"}).parallel == 6
    assert Settings.load(env={**base, "FMGGUF_PARALLEL": "6"}, parallel=2).parallel == 2
    for bad in ("0", "65"):
        with pytest.raises(errors.ConfigError, match="FMGGUF_PARALLEL"):
            Settings.load(env={**base, "FMGGUF_PARALLEL": bad})


def test_speculative_settings(tmp_path: Path) -> None:
    base = {"FMGGUF_HOME": str(tmp_path)}
    s = Settings.load(env={**base, "FMGGUF_SPECULATIVE": "draft:/Models/Draft.gguf", "FMGGUF_DRAFT_P_MIN": "0.5",
                           "FMGGUF_DRAFT_MIN_GAIN": "0"})
    assert (s.speculative, s.draft_p_min, s.draft_min_gain) == ("draft:/Models/Draft.gguf", 0.5, 0.0)  # a path keeps its case
    assert Settings.load(env={**base, "FMGGUF_SPECULATIVE": "DRAFT"}).speculative == "draft"
    for env, what in ((("FMGGUF_SPECULATIVE", "warp"), "not a mode"), (("FMGGUF_DRAFT_P_MIN", "1.5"), "probability"),
                      (("FMGGUF_DRAFT_P_MIN", "sure"), "bad setting"), (("FMGGUF_DRAFT_MIN_GAIN", "-1"), "out of range")):
        with pytest.raises(errors.ConfigError, match=what):
            Settings.load(env={**base, env[0]: env[1]})
