"""The typed result of one benchmark run: :class:`BenchSummary` and the blocks it is made of.

Every reader (the CLI, the reports, the HTML page, the server) reads these fields; dicts exist only at
the JSON edges: :meth:`BenchSummary.as_dict` writes ``summary.json`` and the ``--json``/HTTP bodies
(the same layout as before the type existed), :meth:`BenchSummary.from_dict` reads it back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from fmgguf._util import JsonObject, json_float, json_int, json_list, json_number, json_object, json_str


@dataclass(frozen=True)
class PassBlock:
    """pass@k over a set of tasks, with the 95% bootstrap interval of pass@1."""

    pass_at: Mapping[int, float]
    ci95: tuple[float, float]
    tasks: int
    solved: int
    points_per_task: float | None = None

    @property
    def pass_at_1(self) -> float:
        return self.pass_at.get(1, 0.0)

    def as_dict(self) -> JsonObject:
        return {**{f"pass@{k}": v for k, v in sorted(self.pass_at.items())}, "ci95": list(self.ci95),
                "tasks": self.tasks, "solved": self.solved, "points_per_task": self.points_per_task}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> PassBlock:
        ks = {int(k.removeprefix("pass@")): json_float(v) for k, v in d.items() if k.startswith("pass@")}
        lo, hi = json_list(d.get("ci95")) or (0.0, 0.0)
        return cls(ks, (json_float(lo), json_float(hi)), json_int(d.get("tasks") or 0),
                   json_int(d.get("solved") or 0), json_number(d.get("points_per_task")))


@dataclass(frozen=True)
class Dist:
    """Median, 90th percentile and mean of one measure (None when nothing was measured)."""

    median: float | None = None
    p90: float | None = None
    mean: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"median": self.median, "p90": self.p90, "mean": self.mean}

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> Dist:
        d = d or {}
        return cls(json_number(d.get("median")), json_number(d.get("p90")), json_number(d.get("mean")))


@dataclass(frozen=True)
class Speed:
    """Generation speed over a run's samples."""

    ttft_s: Dist = Dist()
    decode_tokens_per_s: Dist = Dist()
    e2e_s: Dist = Dist()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    throughput_tokens_per_s: float | None = None

    def as_dict(self) -> JsonObject:
        return {"ttft_s": self.ttft_s.as_dict(), "decode_tokens_per_s": self.decode_tokens_per_s.as_dict(),
                "e2e_s": self.e2e_s.as_dict(), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "throughput_tokens_per_s": self.throughput_tokens_per_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> Speed:
        d = d or {}
        return cls(Dist.from_dict(json_object(d.get("ttft_s"))), Dist.from_dict(json_object(d.get("decode_tokens_per_s"))),
                   Dist.from_dict(json_object(d.get("e2e_s"))), json_int(d.get("prompt_tokens") or 0),
                   json_int(d.get("completion_tokens") or 0), json_number(d.get("throughput_tokens_per_s")))


@dataclass(frozen=True)
class LanguageQuality:
    """Code-quality columns of one language (separate columns, never one score; None = not measured)."""

    samples: int
    parses_rate: float | None = None
    extracted_rate: float | None = None
    gxx_warnings_total: int | None = None
    gxx_warnings_per_sample: float | None = None
    ruff_findings_per_100_loc: float | None = None
    eslint_findings_per_100_loc: float | None = None

    #: the columns only one language has: written to JSON only for that language
    _OWN = {"gxx_warnings_total": "cpp", "gxx_warnings_per_sample": "cpp",
            "ruff_findings_per_100_loc": "python", "eslint_findings_per_100_loc": "javascript"}

    def as_dict(self, language: str) -> JsonObject:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if self._OWN.get(f.name, language) == language}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> LanguageQuality:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls) if f.name in d})  # type: ignore[arg-type]  # the JSON form's values


@dataclass(frozen=True)
class TaskScore:
    """One task's samples: n generated, c passed, the outcomes and the first failure's detail."""

    task_id: str
    language: str
    n: int
    c: int
    pass_at_1: float
    outcomes: Mapping[str, int]
    category: str | None = None
    detail: str = ""
    ttft_s: float | None = None
    tokens_per_s: float | None = None

    def as_dict(self) -> JsonObject:
        return {"task_id": self.task_id, "category": self.category, "language": self.language, "n": self.n,
                "c": self.c, "pass@1": self.pass_at_1, "outcomes": dict(self.outcomes), "detail": self.detail,
                "ttft_s": self.ttft_s, "tokens_per_s": self.tokens_per_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> TaskScore:
        return cls(str(d["task_id"]), str(d["language"]), json_int(d["n"]), json_int(d["c"]),
                   json_float(d.get("pass@1") or 0.0),
                   {k: json_int(v) for k, v in json_object(d.get("outcomes")).items()}, json_str(d.get("category")),
                   json_str(d.get("detail")) or "", json_number(d.get("ttft_s")), json_number(d.get("tokens_per_s")))


@dataclass(frozen=True)
class FimScore:
    """Fill-in-the-middle answers of one category: how often the middle was exactly the removed code, and
    how often it ran past the gap (more lines than the gap had); see :mod:`fmgguf.bench.infill`."""

    samples: int
    exact_match_rate: float
    overrun_rate: float

    def as_dict(self) -> JsonObject:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> FimScore:
        return cls(json_int(d.get("samples") or 0), json_float(d.get("exact_match_rate") or 0.0),
                   json_float(d.get("overrun_rate") or 0.0))


_BLOCKS = ("overall", "by_category", "speed", "quality", "tasks", "fim")


@dataclass(frozen=True)
class BenchSummary:
    """One model × quant benchmark run (or a reference self-check, ``kind="reference"``).

    ``status`` is "done", or "skipped" with the ``reason`` (the model does not fit, is not downloaded…);
    a skipped run has no score blocks.
    """

    model: str
    quant: str | None = None
    status: str = "done"
    reason: str | None = None
    kind: str = "model"
    suite: str | None = None
    run_id: str | None = None
    run_dir: str | None = None
    samples: int = 1
    overall: PassBlock | None = None
    by_category: Mapping[str, PassBlock] = field(default_factory=dict)
    outcomes: Mapping[str, int] = field(default_factory=dict)
    speed: Speed = Speed()
    quality: Mapping[str, LanguageQuality] = field(default_factory=dict)
    tasks: tuple[TaskScore, ...] = ()
    #: fill-in-the-middle measures by category (FIM tasks with a reference middle only)
    fim: Mapping[str, FimScore] = field(default_factory=dict)
    # --- how the run went
    started: str | None = None
    finished: str | None = None
    wall_s: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    resumed: int | None = None
    load_s: float | None = None
    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    model_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    chat_template: bool | None = None
    # --- the machine and harness it ran on (free-form records, shown as they are)
    host: Mapping[str, object] = field(default_factory=dict)
    sandbox: Mapping[str, object] = field(default_factory=dict)
    limits: Mapping[str, object] = field(default_factory=dict)
    lint: Mapping[str, object] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str | None]:
        """(model, quant): what tells two runs of one model apart."""
        return (self.model, self.quant)

    @property
    def label(self) -> str:
        return self.model + (f" {self.quant}" if self.quant else "")

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    @property
    def pass_at_1(self) -> float | None:
        return self.overall.pass_at_1 if self.overall else None

    def as_dict(self) -> JsonObject:
        """The JSON form (``summary.json``, ``--json``, HTTP): blocks as nested dicts, pass@k as "pass@k"."""
        out: JsonObject = {}
        for f in dataclasses.fields(self):
            if f.name in _BLOCKS:
                continue
            value = getattr(self, f.name)
            if f.name == "quant" or (value is not None and value != {}):
                out[f.name] = dict(value) if isinstance(value, Mapping) else value
        if self.skipped:
            return out
        return {**out, "overall": self.overall.as_dict() if self.overall else None,
                "by_category": {c: b.as_dict() for c, b in self.by_category.items()},
                "outcomes": dict(self.outcomes), "speed": self.speed.as_dict(),
                "quality": {lang: q.as_dict(lang) for lang, q in self.quality.items()},
                "tasks": [t.as_dict() for t in self.tasks],
                **({"fim": {c: f.as_dict() for c, f in self.fim.items()}} if self.fim else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> BenchSummary:
        """A summary read back from its JSON form; keys this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)} - set(_BLOCKS)
        plain = {k: v for k, v in d.items() if k in names}
        overall = json_object(d.get("overall"))
        return cls(**plain,  # type: ignore[arg-type]  # the plain fields, as the JSON form holds them
                   overall=PassBlock.from_dict(overall) if overall else None,
                   by_category={c: PassBlock.from_dict(json_object(b)) for c, b in json_object(d.get("by_category")).items()},
                   speed=Speed.from_dict(json_object(d.get("speed"))),
                   quality={lang: LanguageQuality.from_dict(json_object(q))
                            for lang, q in json_object(d.get("quality")).items()},
                   tasks=tuple(TaskScore.from_dict(json_object(t)) for t in json_list(d.get("tasks"))),
                   fim={c: FimScore.from_dict(json_object(f)) for c, f in json_object(d.get("fim")).items()})
