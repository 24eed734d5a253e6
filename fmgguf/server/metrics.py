"""/metrics in Prometheus' text format: requests, tokens, time to first token, tokens/s, the queue,
the resident models and runner restarts. Counted in-process (no client library needed)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmgguf.server.dialects.core import Outcome
    from fmgguf.server.state import ServerState

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPS_BUCKETS = (1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{edge:g}"}} {n}' for edge, n in zip(self.buckets, self.counts, strict=True)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        tail = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{tail} {self.total:.6f}", f"{name}_count{tail} {self.count}"]
        return out


class Metrics:
    """What the server counts; one per app (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.generations: Counter[tuple[str, str]] = Counter()
        self.tokens: Counter[str] = Counter()
        self.ttft: dict[str, Histogram] = {}
        self.tps: dict[str, Histogram] = {}
        self.superseded = 0
        #: generations that started from a KV state restored from the host-RAM prompt cache
        self.prompt_cache_hits = 0
        #: runner crashes that reached a request (the runner is started again on the next one)
        self.runner_crashes = 0

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, int(status))] += 1

    def observe(self, dialect: str, outcome: "Outcome") -> None:
        with self._lock:
            self.generations[(dialect, outcome.finish_reason)] += 1
            self.tokens["prompt"] += outcome.prompt_tokens
            self.tokens["completion"] += outcome.completion_tokens
            self.tokens["cached"] += outcome.cached_tokens
            self.tokens["restored"] += outcome.restored_tokens
            if outcome.restored_tokens:
                self.prompt_cache_hits += 1
            self.tokens["drafted"] += outcome.drafted_tokens
            self.tokens["accepted"] += outcome.accepted_tokens
            self.ttft.setdefault(dialect, Histogram(TTFT_BUCKETS)).observe(outcome.ttft_s)
            if outcome.completion_tokens > 1:
                self.tps.setdefault(dialect, Histogram(TPS_BUCKETS)).observe(outcome.tokens_per_s)

    def failed(self, dialect: str, exc: BaseException | None = None) -> None:
        from fmgguf.errors import RunnerCrashedError

        with self._lock:
            self.generations[(dialect, "error")] += 1
            if isinstance(exc, RunnerCrashedError):
                self.runner_crashes += 1

    def render(self, state: "ServerState") -> str:
        manager = state.manager_if_built
        models = manager.loaded() if manager is not None else []
        restarts = manager.runner_restarts if manager is not None else self.runner_crashes
        broken = len(manager.broken()) if manager is not None else 0
        waiting = state.gate.queue_depth + sum(m.waiting for m in models)
        with self._lock:
            out = _help("fmgguf_requests_total", "counter", "HTTP requests by method, route and status")
            out += [f'fmgguf_requests_total{{method="{m}",route="{_esc(r)}",status="{s}"}} {n}'
                    for (m, r, s), n in sorted(self.requests.items())]
            out += _help("fmgguf_generations_total", "counter", "finished generations by API dialect and finish reason")
            out += [f'fmgguf_generations_total{{dialect="{d}",finish="{f}"}} {n}'
                    for (d, f), n in sorted(self.generations.items())]
            out += _help("fmgguf_tokens_total", "counter", "tokens: prompt, completion, prompt tokens reused from the "
                         "KV cache (cached), of those the ones restored from the host-RAM prompt cache (restored), and "
                         "speculative decoding's drafted tokens and those accepted")
            out += [f'fmgguf_tokens_total{{kind="{k}"}} {self.tokens.get(k, 0)}'
                    for k in ("prompt", "completion", "cached", "restored", "drafted", "accepted")]
            out += _help("fmgguf_prompt_cache_hits_total", "counter",
                         "generations that started from a KV state restored from the host-RAM prompt cache")
            out.append(f"fmgguf_prompt_cache_hits_total {self.prompt_cache_hits}")
            out += _help("fmgguf_time_to_first_token_seconds", "histogram", "seconds from request to first token")
            for d, h in sorted(self.ttft.items()):
                out += h.lines("fmgguf_time_to_first_token_seconds", f'dialect="{d}"')
            out += _help("fmgguf_tokens_per_second", "histogram", "generation speed after the first token")
            for d, h in sorted(self.tps.items()):
                out += h.lines("fmgguf_tokens_per_second", f'dialect="{d}"')
            out += _help("fmgguf_superseded_total", "counter", "requests cancelled by a newer one from the same client")
            out.append(f"fmgguf_superseded_total {self.superseded}")
        out += _help("fmgguf_queue_depth", "gauge", "generation requests waiting for their turn")
        out.append(f"fmgguf_queue_depth {waiting}")
        out += _help("fmgguf_busy", "gauge", "1 while a generation or load runs")
        out.append(f"fmgguf_busy {int(state.gate.busy)}")
        out += _help("fmgguf_loaded_models", "gauge", "models resident in memory")
        out.append(f"fmgguf_loaded_models {len(models)}")
        out += [f'fmgguf_model_loaded{{model="{_esc(m.id)}",quant="{_esc(m.quant or "")}"}} 1' for m in models]
        out += _help("fmgguf_model_streams", "gauge", "generations running on each resident model, and waiting for it")
        out += [f'fmgguf_model_streams{{model="{_esc(m.key)}",what="{w}"}} {n}'
                for m in models for w, n in (("active", m.active), ("waiting", m.waiting))]
        out += _help("fmgguf_runner_restarts_total", "counter",
                     "model runner processes restarted after a crash (crashes that reached a request)")
        out.append(f"fmgguf_runner_restarts_total {restarts}")
        out += _help("fmgguf_models_broken", "gauge", "models whose runner crashed three times in a row")
        out.append(f"fmgguf_models_broken {broken}")
        return "\n".join(out) + "\n"


def _help(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _esc(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
