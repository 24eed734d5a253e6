"""The one settings object, and the only module that reads environment variables.

Precedence: explicit keyword arguments > environment (``FMGGUF_*``, plus the standard ``HF_*``
variables) > the YAML config file > defaults. Nothing is read at import time: call
:func:`load_settings` (or :meth:`Settings.load`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmgguf._util import JsonObject
from fmgguf.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean", fix=f"set {name} to 1 or 0")


def parse_size(text: str | int | float | None, name: str = "size") -> int | None:
    """'8GB', '512MiB', '1.5G', '2000000' -> bytes. GB/MB are decimal, GiB/MiB binary; 'G' alone is binary."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().replace(" ", "")
    units = {
        "": 1, "b": 1,
        "k": 1024, "kb": 1000, "kib": 1024,
        "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
        "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
        "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
    }
    m = re.match(r"^([0-9.]*)([A-Za-z/]*)$", s)
    num, unit = (m.group(1), m.group(2).lower().removesuffix("/s")) if m else ("", "?")
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or value < 0:
        raise ConfigError(f"{name} {text!r} is not a size", fix="write it like 8GB, 512MiB or 1.5G")
    return int(value * units[unit])


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fmgguf", appauthor=False))


def _default_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("fmgguf", appauthor=False))


def _default_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("fmgguf", appauthor=False))


def _default_hub_cache(env: Mapping[str, str]) -> Path:
    # The standard huggingface_hub layout, computed without importing huggingface_hub.
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


@dataclass(frozen=True)
class Settings:
    """Everything fmgguf can be configured with. Build it with :meth:`load`."""

    #: where fmgguf keeps its own state: locks, manifests, benchmark runs, tiny models
    home: Path
    #: the YAML config file (may not exist)
    config_file: Path
    #: the user catalog merged over the built-in one (may not exist)
    catalog_file: Path
    #: the huggingface_hub cache the GGUF files live in (standard layout, so `hf cache` sees them)
    hub_cache: Path
    #: rebuildable downloads shared by every FMGGUF_HOME: vocab files, the llama-cpp-python sdist,
    #: tiny test models, converter scripts (FMGGUF_CACHE; default: the platform's cache dir)
    shared_cache: Path = Path(".")
    #: the hub or mirror endpoint (HF_ENDPOINT)
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str | None = field(default=None, repr=False)
    #: nothing touches the network (HF_HUB_OFFLINE / FMGGUF_OFFLINE / --offline)
    offline: bool = False
    #: bandwidth cap for pulls in bytes/s (None = unlimited)
    max_rate: int | None = None
    #: transient-error retries per file
    download_retries: int = 5
    #: memory left free on each GPU when planning offload (llama.cpp's default is 1 GiB)
    vram_margin: int = 1024**3
    #: memory left free in RAM when planning
    ram_margin: int = 512 * 1024**2
    #: VRAM to assume instead of probing (for planning on another machine), bytes
    vram_override: int | None = None
    #: seconds a loaded model stays loaded without use (0 = forever)
    keep_alive: float = 300.0
    #: where llama.cpp runs: "process" (one supervised runner process per loaded model: an abort
    #: kills only that runner) or "inprocess" (FMGGUF_ISOLATION)
    isolation: str = "process"
    #: models resident at once; loading one more evicts the least recently used unpinned model
    #: (FMGGUF_MAX_LOADED_MODELS; the fit plan's memory check can evict earlier)
    max_loaded_models: int = 3
    #: requests one loaded model serves at once (slots of its context, continuous batching;
    #: FMGGUF_PARALLEL, 1..64); more wait in the model's queue, and a FIM lane slot comes on top
    parallel: int = 4
    #: default context length when the caller gives none
    default_ctx: int = 4096
    #: host RAM per loaded model for saved KV states of earlier prompts, so an agent's next turn or
    #: next conversation starts from its cached system prompt (FMGGUF_PROMPT_CACHE_BYTES; 0 = off)
    prompt_cache_bytes: int = 1024**3
    #: the model `fmgguf run`/`serve` use when none is named
    default_model: str | None = None
    default_quant: str = "Q4_K_M"
    #: CPU threads llama.cpp computes with, for generation and prompt processing (FMGGUF_THREADS,
    #: ``threads:`` in the config file, --threads; None = llama.cpp's own default, one per usable core)
    n_threads: int | None = None
    #: speculative decoding by default: "off", "ngram" (drafts looked up in the prompt and output),
    #: "draft" (the catalog's draft model for the model) or "draft:<model id or .gguf path>"
    #: (FMGGUF_SPECULATIVE, ``speculative:`` in the config file, --speculative)
    speculative: str = "off"
    #: a draft model's draft ends before a token it gives less probability than this (FMGGUF_DRAFT_P_MIN,
    #: llama-server's --draft-p-min)
    draft_p_min: float = 0.75
    #: a draft model drafts only where its measured costs promise this speed-up; 0 drafts always
    #: (FMGGUF_DRAFT_MIN_GAIN; see fmgguf/runtime/engine/draft_costs.py)
    draft_min_gain: float = 1.05
    #: RPC workers models are split across: "HOST[:PORT][@BUDGET],..." (FMGGUF_RPC / --rpc; None = local only)
    rpc: str | None = None
    #: benchmark sandbox defaults
    bench_timeout: float = 10.0
    bench_memory: int = 1024**3
    bench_workers: int = 2
    log_level: str = "WARNING"
    #: the raw config file content, for sections other modules own (e.g. the seed `models:` block)
    raw_config: Mapping[str, object] = field(default_factory=dict, repr=False, compare=False)

    # --- derived paths -----------------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        """fmgguf's own records about downloaded models (locks, verification records)."""
        return self.home / "store"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def bench_dir(self) -> Path:
        return self.home / "bench"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    # --- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = dict(os.environ if env is None else env)
        home, config_dir, config_file = _locations(env, overrides)
        raw = _read_config(config_file)
        values = _from_config(raw, {f.name for f in dataclasses.fields(cls)})
        values.update(_from_env(env, values))
        values.update({k: v for k, v in overrides.items() if v is not None})

        values["home"] = Path(values.get("home") or home or _default_home()).expanduser()
        values["config_file"] = config_file
        values["catalog_file"] = Path(values.get("catalog_file") or config_dir / "catalog.yaml").expanduser()
        values["hub_cache"] = Path(values.get("hub_cache") or _default_hub_cache(env)).expanduser()
        values["shared_cache"] = Path(values.get("shared_cache") or env.get("FMGGUF_CACHE") or _default_cache()).expanduser()
        values["raw_config"] = raw
        return cls(**_coerce(values))


def _locations(env: Mapping[str, str], overrides: Mapping[str, object]) -> tuple[Path | None, Path, Path]:
    """The home (None = the default), the config directory and the config file, from env and overrides."""
    config_dir = Path(env["FMGGUF_CONFIG_DIR"]).expanduser() if env.get("FMGGUF_CONFIG_DIR") else None
    home = Path(env["FMGGUF_HOME"]).expanduser() if env.get("FMGGUF_HOME") else None
    if overrides.get("home") is not None:
        home = Path(str(overrides["home"]))
    if config_dir is None:
        # With FMGGUF_HOME set, keep everything in one place (tests and portable installs).
        config_dir = home if home is not None else _default_config_dir()
    config_file = Path(env["FMGGUF_CONFIG"]).expanduser() if env.get("FMGGUF_CONFIG") else config_dir / "config.yaml"
    if overrides.get("config_file") is not None:
        config_file = Path(str(overrides["config_file"]))
    return home, config_dir, config_file


def _from_config(raw: Mapping[str, object], known: set[str]) -> dict[str, object]:
    """The settings the config file gives (``threads:`` is ``n_threads``; the seed's ``models:`` block
    names the default model)."""
    values = {k: v for k, v in raw.items() if k in known and k not in ("raw_config", "config_file")}
    if raw.get("threads") is not None and "n_threads" not in values:
        values["n_threads"] = raw["threads"]
    models_block = raw.get("models")
    if isinstance(models_block, dict) and models_block.get("default_model") and "default_model" not in values:
        values["default_model"] = models_block["default_model"]
    return values


#: environment variable -> setting, where a non-empty value simply replaces the config file's
_ENV_KEYS = (
    ("FMGGUF_CATALOG", "catalog_file"), ("HF_ENDPOINT", "hf_endpoint"), ("FMGGUF_DEFAULT_MODEL", "default_model"),
    ("FMGGUF_DEFAULT_QUANT", "default_quant"), ("FMGGUF_LOG_LEVEL", "log_level"), ("FMGGUF_RPC", "rpc"),
    ("FMGGUF_ISOLATION", "isolation"), ("FMGGUF_SPECULATIVE", "speculative"),
    ("FMGGUF_DRAFT_P_MIN", "draft_p_min"), ("FMGGUF_DRAFT_MIN_GAIN", "draft_min_gain"),
    ("FMGGUF_MAX_LOADED_MODELS", "max_loaded_models"),
    ("FMGGUF_PARALLEL", "parallel"), ("FMGGUF_MAX_RATE", "max_rate"), ("FMGGUF_VRAM", "vram_override"),
    ("FMGGUF_PROMPT_CACHE_BYTES", "prompt_cache_bytes"), ("FMGGUF_KEEP_ALIVE", "keep_alive"),
    ("FMGGUF_THREADS", "n_threads"), ("FMGGUF_CTX", "default_ctx"), ("FMGGUF_VRAM_MARGIN", "vram_margin"),
    ("FMGGUF_BENCH_TIMEOUT", "bench_timeout"), ("FMGGUF_BENCH_WORKERS", "bench_workers"),
)


def _from_env(env: Mapping[str, str], values: Mapping[str, object]) -> dict[str, object]:
    """The settings the environment gives, over ``values`` (the config file's)."""
    out: dict[str, object] = {key: env[name] for name, key in _ENV_KEYS if env.get(name)}
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        out["hf_token"] = token
    for name in ("HF_HUB_OFFLINE", "FMGGUF_OFFLINE"):
        if env.get(name) is not None and env.get(name) != "":
            offline = out.get("offline", values.get("offline"))
            out["offline"] = offline is True or _bool(name, env[name])
    return out


def _read_config(path: Path) -> JsonObject:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path}{line} is not valid YAML", fix="fix the file or move it away") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level", fix="write it as `key: value` lines")
    return data


def _coerce(values: dict[str, object]) -> dict[str, object]:
    out = dict(values)
    try:
        for key in ("max_rate", "vram_margin", "ram_margin", "vram_override", "bench_memory", "prompt_cache_bytes"):
            if key in out and out[key] is not None:
                out[key] = parse_size(out[key], key)
        for key in ("download_retries", "default_ctx", "bench_workers", "n_threads", "max_loaded_models", "parallel"):
            if key in out and out[key] is not None:
                out[key] = int(out[key])
        for key in ("keep_alive", "bench_timeout", "draft_p_min", "draft_min_gain"):
            if key in out and out[key] is not None:
                out[key] = float(out[key])
        if "offline" in out and isinstance(out["offline"], str):
            out["offline"] = _bool("offline", out["offline"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad setting value: {exc}", fix="check the config file and FMGGUF_* variables") from None
    if out.get("isolation") not in (None, "process", "inprocess"):
        raise ConfigError(f"isolation {out['isolation']!r} is unknown", fix="set FMGGUF_ISOLATION to process or inprocess")
    if out.get("max_loaded_models") is not None and int(out["max_loaded_models"]) < 1:
        raise ConfigError("max_loaded_models must be at least 1", fix="set FMGGUF_MAX_LOADED_MODELS to 1 or more")
    if out.get("n_threads") is not None and int(out["n_threads"]) < 1:
        raise ConfigError(f"threads {out['n_threads']} is not a thread count",
                          fix="set FMGGUF_THREADS (or threads: in the config file) to 1 or more, or leave it unset")
    if out.get("parallel") is not None and not 1 <= int(out["parallel"]) <= 64:
        raise ConfigError(f"parallel {out['parallel']} is out of range", fix="set FMGGUF_PARALLEL to 1..64")
    if out.get("draft_p_min") is not None and not 0.0 <= float(out["draft_p_min"]) <= 1.0:
        raise ConfigError(f"draft_p_min {out['draft_p_min']} is not a probability",
                          fix="set FMGGUF_DRAFT_P_MIN (or draft_p_min: in the config file) to 0..1")
    if out.get("draft_min_gain") is not None and not 0.0 <= float(out["draft_min_gain"]) <= 100.0:
        raise ConfigError(f"draft_min_gain {out['draft_min_gain']} is out of range",
                          fix="set FMGGUF_DRAFT_MIN_GAIN to 0 (always draft) or a speed-up such as 1.05")
    if out.get("speculative") is not None:
        mode = speculative_mode(str(out["speculative"]))
        if mode is None:
            raise ConfigError(f"speculative {out['speculative']!r} is not a mode",
                              fix="set FMGGUF_SPECULATIVE (or speculative: in the config file) to off, ngram, draft "
                                  "(the catalog's draft model) or draft:<model id>")
        out["speculative"] = mode
    if out.get("hf_endpoint"):
        out["hf_endpoint"] = str(out["hf_endpoint"]).rstrip("/")
    return out


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and config file, with ``overrides`` on top."""
    return Settings.load(**overrides)


def speculative_mode(value: str | None) -> str | None:
    """``value`` as a speculative decoding mode: off | ngram | draft | draft:<model id or .gguf path>
    (the id keeps its case: a path may need it); None when it is none of them."""
    text = (value or "").strip()
    low = text.lower()
    if low in ("", "none", "false", "0", "off"):
        return "off"
    if low in ("ngram", "draft"):
        return low
    if low.startswith("draft:") and text[6:].strip():
        return "draft:" + text[6:].strip()
    return None
