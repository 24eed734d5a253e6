"""The model manager: one loaded model at a time, switched, queued, generated from, unloaded.

It decides *what* to load and *how* (path from the downloader, validation by the GGUF reader,
offload and context from the fit plan) and serialises every use of the engine: concurrent
callers queue first-come-first-served (``max_queue`` waiting, then :class:`BusyError`), a stream
holds the model until it ends, and an idle model is unloaded after ``keep_alive`` seconds.

The engine runs in this process. Measured on CPU with the bench-size tiny models
(``benchmarks/bench_runtime.py --child``): after 20 switches RSS is within 2% of the one-model
level (``Llama.close()``, ``gc`` and glibc ``malloc_trim``), and a switch (load + 16 tokens) took
~0.3 s in-process against ~0.5 s with a fresh engine process per model (Ollama's design:
interpreter start, llama_cpp import, load), which would also add an IPC hop per streamed token.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf.errors import ContextOverflowError, FmggufError, InvalidRequestError, ModelNotLoadedError
from fmgguf.runtime.generation import GenerationResult, GenerationStream, Turnstile
from fmgguf.runtime.loading import FILE_TYPES, add_note, load_request, plan_load, start_engine, validate

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog, ModelCard
    from fmgguf.runtime.engine import Engine
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)

_LOAD_KEYS = ("n_ctx", "n_gpu_layers", "flash_attn", "type_k", "type_v", "n_threads", "tensor_split",
              "main_gpu", "split_mode", "progress")


class SwitchResult:
    """What :meth:`ModelManager.switch_model` did: the model, its quant, the plan used, load time."""

    def __init__(self, success: bool, model_id: str, quant: str | None, plan: Any, load_s: float,
                 path: Path, n_ctx: int, n_gpu_layers: int) -> None:
        self.success, self.model_id, self.quant, self.plan, self.load_s = success, model_id, quant, plan, load_s
        self.path, self.n_ctx, self.n_gpu_layers = path, n_ctx, n_gpu_layers

    def as_dict(self) -> dict[str, Any]:
        plan = self.plan.as_dict() if hasattr(self.plan, "as_dict") else self.plan
        return {"success": self.success, "model_id": self.model_id, "quant": self.quant, "plan": plan,
                "load_s": round(self.load_s, 4), "path": str(self.path), "n_ctx": self.n_ctx,
                "n_gpu_layers": self.n_gpu_layers}

    def __repr__(self) -> str:
        return f"SwitchResult({self.as_dict()!r})"


class ModelManager:
    """Loads one model at a time and answers generate/chat/FIM requests against it, thread-safely."""

    def __init__(self, settings: "Settings | None" = None, catalog: "Catalog | None" = None,
                 downloader: Any = None, *, max_queue: int = 8, keep_alive: float | None = None,
                 queue_timeout: float | None = None) -> None:
        if settings is None:
            from fmgguf.settings import load_settings

            settings = load_settings()
        self.settings = settings
        self._catalog = catalog
        self._downloader = downloader
        self._turn = Turnstile(max_queue)
        self.queue_timeout = queue_timeout
        self.keep_alive = float(settings.keep_alive if keep_alive is None else keep_alive)
        self._engine: Engine | None = None
        self._info: dict[str, Any] | None = None
        self._card: ModelCard | None = None
        self._state = threading.Lock()
        self._last_used = time.monotonic()
        self._idle = _IdleWatcher(self)
        self._facts: dict[tuple, dict[str, Any]] = {}
        self._plans: dict[tuple, Any] = {}

    # --- collaborators (built on first use) --------------------------------------------------
    @property
    def catalog(self) -> "Catalog":
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog

    @property
    def downloader(self) -> Any:
        if self._downloader is None:
            from fmgguf.download import ModelDownloader

            self._downloader = ModelDownloader(self.settings, catalog=self.catalog)
        return self._downloader

    @property
    def max_queue(self) -> int:
        return self._turn.max_waiting

    @property
    def queue_depth(self) -> int:
        """Callers waiting for the model (not counting the one using it)."""
        return self._turn.waiting

    @property
    def busy(self) -> bool:
        return self._turn.busy

    # --- what is there -----------------------------------------------------------------------
    def get_available_models(self) -> list[dict[str, Any]]:
        """Every catalog model with the quants downloaded here."""
        out = []
        for card in self.catalog.models():
            local = [q for q in card.quants if self._is_downloaded(card.id, q)]
            out.append({"id": card.id, "name": card.title, "quants": card.quants, "downloaded": local,
                        "fim": card.fim_supported, "chat": card.chat_template not in (None, "none")})
        return out

    def _is_downloaded(self, model_id: str, quant: str) -> bool:
        try:
            return bool(self.downloader.is_model_downloaded(model_id, quant))
        except Exception:  # noqa: BLE001 - a listing must not fail on one odd entry
            return False

    def current_model(self) -> dict[str, Any] | None:
        with self._state:
            return dict(self._info) if self._info else None

    # --- loading -----------------------------------------------------------------------------
    def switch_model(self, model_id: str, quant: str | None = None, **options: Any) -> SwitchResult:
        """Load catalog model ``model_id`` (``id`` or ``id:QUANT``) in place of the current one."""
        spec = model_id if ":" in model_id or not quant else f"{model_id}:{quant}"
        card, q = self.catalog.resolve(spec)
        path = Path(self.downloader.model_path(card.id, q))  # NotDownloadedError says `fmgguf pull ID`
        return self._load(path, card.id, q, card, options)

    def load_file(self, path: str | Path, model_id: str | None = None, card: "ModelCard | None" = None,
                  **options: Any) -> SwitchResult:
        """Load a local GGUF (a tiny test model, an imported file) in place of the current one."""
        p = Path(path)
        return self._load(p, model_id or (card.id if card else p.stem), None, card, options)

    def _load(self, path: Path, model_id: str, quant: str | None, card: "ModelCard | None",
              options: Mapping[str, Any]) -> SwitchResult:
        unknown = set(options) - set(_LOAD_KEYS)
        if unknown:
            raise InvalidRequestError(f"unknown load option(s): {', '.join(sorted(unknown))}",
                                      fix=f"use {', '.join(_LOAD_KEYS)}")
        progress: Callable[[str, float], None] | None = options.get("progress")
        self._acquire()
        try:
            # everything that can be refused without touching memory is checked with the old model loaded
            _report(progress, "validate", 0.0)
            facts = validate(path, self._facts)
            quant = quant or FILE_TYPES.get(facts["file_type"] if facts["file_type"] is not None else -1, "unknown")
            request = load_request(facts, options, self.settings)
            # then the old model gives its memory back, so the free RAM/VRAM the plan measures includes it
            with self._state:
                previous = self._info.get("id") if self._info else None
            self._unload_locked()
            try:
                _report(progress, "plan", 0.05)
                load_opts, plan = plan_load(path, facts, request, options, self.settings, self._plans)
                engine = start_engine(path, load_opts, plan, progress)
            except FmggufError as exc:
                if previous is not None:  # say so: the old model is gone, nothing is loaded now
                    add_note(exc, f"{previous} was unloaded to make room, so no model is loaded now")
                raise
            with self._state:
                self._engine, self._card = engine, card
                self._info = {
                    "id": model_id, "quant": quant, "path": str(path), "plan": plan,
                    "memory": engine.memory_bytes(), "buffers": engine.buffers, "n_ctx": engine.n_ctx,
                    "n_gpu_layers": load_opts.n_gpu_layers, "load_s": round(engine.load_s, 4),
                    "loaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "architecture": facts["arch"], "chat_template": bool(engine.chat_template),
                    "fim": card.fim_supported if card is not None else bool(facts["fim_ids"]) or None,
                    "fim_ids": dict(facts["fim_ids"]),
                }
            log.info("loaded %s (%s) in %.2f s: n_ctx=%d n_gpu_layers=%d", model_id, quant, engine.load_s,
                     engine.n_ctx, load_opts.n_gpu_layers)
            return SwitchResult(True, model_id, quant, plan, engine.load_s, path, engine.n_ctx,
                                load_opts.n_gpu_layers)
        finally:
            self._done()

    def unload(self) -> bool:
        """Unload the current model (waiting for a running generation); True if one was loaded."""
        self._acquire()
        try:
            return self._unload_locked()
        finally:
            self._done(touch=False)

    def _unload_locked(self) -> bool:
        with self._state:
            engine, self._engine, self._info, self._card = self._engine, None, None, None
        if engine is None:
            return False
        engine.close()
        return True

    def close(self) -> None:
        """Unload and stop the idle watcher (the manager can still be used; the watcher restarts)."""
        self.unload()
        self._idle.stop()

    # --- generation --------------------------------------------------------------------------
    def generate_text(self, prompt: str, max_tokens: int | None = 256, temperature: float = 0.2,
                      top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
                      stream: bool = False, **sampling: Any) -> GenerationResult | GenerationStream:
        """Complete ``prompt``; ``stream=True`` returns a :class:`GenerationStream`.

        A stream holds the model until it is exhausted, cancelled or closed: consume it (or use it
        as a context manager) before asking this manager for anything else from the same thread.
        """
        def build(engine: "Engine") -> tuple[list[int], list[str]]:
            return engine.tokenize(prompt, add_bos=engine.add_bos, special=True), []
        return self._generate(build, max_tokens, temperature, top_p, stop, seed, stream, sampling)

    def chat(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None = 256, temperature: float = 0.2,
             top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
             stream: bool = False, **sampling: Any) -> GenerationResult | GenerationStream:
        """Answer chat ``messages`` with the model's own template (GGUF, else the catalog family)."""
        from fmgguf.runtime.prompts import normalize_messages, render_chat

        msgs = normalize_messages(messages)

        def build(engine: "Engine") -> tuple[list[int], list[str]]:
            family = self._card.chat_template if self._card is not None else None
            prompt = render_chat(msgs, template=engine.chat_template, family=family,
                                 bos_text=engine.bos_text, eos_text=engine.eos_text)
            return engine.tokenize(prompt.text, add_bos=engine.add_bos, special=True), list(prompt.stop)
        return self._generate(build, max_tokens, temperature, top_p, stop, seed, stream, sampling)

    def fill_in_middle(self, prefix: str, suffix: str, max_tokens: int | None = 256, temperature: float = 0.2,
                       top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
                       stream: bool = False, **sampling: Any) -> GenerationResult | GenerationStream:
        """Generate the code between ``prefix`` and ``suffix`` (refused where the model can't)."""
        from fmgguf.runtime.prompts import build_fim_tokens, resolve_fim_tokens

        card = self._card
        if card is not None and card.fim is not None and not card.fim.supported:
            resolve_fim_tokens(gguf_ids={}, lookup=lambda _t: None, card_fim=card.fim, model_name=card.id)

        def build(engine: "Engine") -> tuple[list[int], list[str]]:
            info = self._info or {}
            fim = resolve_fim_tokens(gguf_ids=info.get("fim_ids") or _gguf_fim_ids(engine),
                                     lookup=engine.special_token_id, card_fim=self._card.fim if self._card else None,
                                     vocab_ids=engine.fim_token_ids(), model_name=str(info.get("id", "this model")))
            pre = engine.tokenize(prefix, add_bos=False, special=False) if prefix else []
            suf = engine.tokenize(suffix, add_bos=False, special=False) if suffix else []
            return build_fim_tokens(pre, suf, fim, engine.bos_id if engine.add_bos else None), []
        return self._generate(build, max_tokens, temperature, top_p, stop, seed, stream, sampling)

    def _generate(self, build: Callable[["Engine"], tuple[list[int], list[str]]], max_tokens: int | None,
                  temperature: float, top_p: float, stop: Sequence[str] | str | None, seed: int | None,
                  stream: bool, sampling: Mapping[str, Any]) -> GenerationResult | GenerationStream:
        from fmgguf.runtime.engine import GenerationStats

        allowed = {"top_k", "min_p", "repeat_penalty"}
        if set(sampling) - allowed:
            raise InvalidRequestError(f"unknown option(s): {', '.join(sorted(set(sampling) - allowed))}",
                                      fix=f"use max_tokens, temperature, top_p, stop, seed, {', '.join(sorted(allowed))}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        started = time.perf_counter()
        self._acquire()
        try:
            with self._state:
                engine, info = self._engine, dict(self._info or {})
            if engine is None:
                raise ModelNotLoadedError("no model is loaded", fix="load one first: `switch_model(ID)` / `fmgguf run ID`")
            tokens, extra_stops = build(engine)
            if len(tokens) >= engine.n_ctx:
                raise ContextOverflowError(
                    f"the prompt is {len(tokens)} tokens but the context window is {engine.n_ctx}",
                    fix="shorten the prompt or load the model with a larger n_ctx (--ctx)")
            stats = GenerationStats(started=started)
            cancel = threading.Event()
            pieces = engine.stream(tokens, stats, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                   stop=stops + extra_stops, seed=seed, cancel=cancel, **sampling)
        except BaseException:
            self._done()
            raise

        def finish(text: str) -> GenerationResult:
            end = stats.finished_at or time.perf_counter()
            first = stats.first_token_at or end
            n = stats.completion_tokens
            rate = (n - 1) / (end - first) if n > 1 and end > first else (n / (end - started) if end > started else 0.0)
            return GenerationResult(text=text, prompt_tokens=stats.prompt_tokens, completion_tokens=n,
                                    ttft_s=round(first - started, 6), tokens_per_s=round(rate, 3),
                                    total_s=round(end - started, 6), finish_reason=stats.finish_reason or "cancelled",
                                    model_id=info.get("id"), quant=info.get("quant"), cached_tokens=stats.cached_tokens)

        gs = GenerationStream(pieces, finish, self._done, cancel)
        return gs if stream else gs.consume()

    # --- the turn, and idle unload ------------------------------------------------------------
    def _acquire(self) -> None:
        self._turn.acquire(timeout=self.queue_timeout)

    def _done(self, touch: bool = True) -> None:
        if touch:
            self._last_used = time.monotonic()
        self._turn.release()
        if self._engine is not None and self.keep_alive > 0:
            self._idle.poke()

    def _unload_if_idle(self) -> float | None:
        """Unload when idle for keep_alive; else the seconds left (None: nothing to watch)."""
        if self._engine is None or self.keep_alive <= 0:
            return None
        left = self._last_used + self.keep_alive - time.monotonic()
        if left > 0:
            return left
        if not self._turn.acquire(blocking=False):
            return self.keep_alive  # in use: look again later
        try:
            if self._last_used + self.keep_alive - time.monotonic() > 0:
                return self._last_used + self.keep_alive - time.monotonic()
            info = self.current_model() or {}
            if self._unload_locked():
                log.info("unloaded %s after %.0f s idle", info.get("id"), self.keep_alive)
            return None
        finally:
            self._turn.release()


class _IdleWatcher:
    """One daemon thread per manager that unloads the model after keep_alive idle seconds."""

    def __init__(self, manager: ModelManager) -> None:
        self._ref = weakref.ref(manager)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def poke(self) -> None:
        with self._cond:
            self._stopped = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fmgguf-idle-unload", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            manager = self._ref()
            if manager is None:
                return
            wait = manager._unload_if_idle()
            del manager
            with self._cond:
                if self._stopped or wait is None:
                    self._thread = None
                    return
                self._cond.wait(timeout=min(wait + 0.01, 60.0))


def _report(progress: Callable[[str, float], None] | None, stage: str, fraction: float) -> None:
    if progress is not None:
        try:
            progress(stage, fraction)
        except Exception:  # noqa: BLE001
            log.debug("progress callback failed", exc_info=True)


def _gguf_fim_ids(engine: "Engine") -> dict[str, int]:
    out = {}
    for role, keys in (("pre", ("fim_pre", "prefix")), ("suf", ("fim_suf", "suffix")), ("mid", ("fim_mid", "middle"))):
        for k in keys:
            v = engine.metadata.get(f"tokenizer.ggml.{k}_token_id")
            if v is not None and str(v).lstrip("-").isdigit() and int(v) >= 0:
                out[role] = int(v)
                break
    return out


_default: dict[str, ModelManager] = {}
_default_lock = threading.Lock()


def get_model_manager(settings: "Settings | None" = None) -> ModelManager:
    """The process-wide manager (built on first call; ``settings`` only matter then)."""
    with _default_lock:
        if "manager" not in _default:
            _default["manager"] = ModelManager(settings)
        return _default["manager"]
