"""The model manager: the models resident here, switched, queued, generated from, unloaded.

It decides *what* to load and *how* (path from the downloader, validation by the GGUF reader,
offload and context from the fit plan) and serialises every use of the engines: concurrent
callers queue first-come-first-served (``max_queue`` waiting, then :class:`BusyError`), a stream
holds its turn until it ends. Several models may be resident (``max_loaded``, the memory the fit
plan measures, least-recently-used eviction, ``pinned``, a keep-alive per model and per request;
see :mod:`fmgguf.runtime.runner.supervisor`). ``switch_model``/``load_file`` keep the seed's
meaning: the new model replaces the selected one and becomes the one used without ``model=``.

Isolation ("process", the default from settings): each model lives in its own runner process
(:mod:`fmgguf.runtime.runner`), so a llama.cpp abort kills only that runner; the call in flight gets
:class:`RunnerCrashedError`, the next one starts the runner again, three crashes in a row mark the
model broken. "inprocess" keeps llama.cpp in this process. Measured on 2 shared CPU cores with the
bench-size tiny model (``benchmarks/bench_runner.py``): tokens/s through a runner 0.99x in-process,
time to first token ~10 ms either way (a plain prompt is tokenized in the runner with the stream
request), a switch ~+0.25 s (the runner's interpreter start and llama_cpp import), the parent's RSS
flat over 20 loads and unloads; a one-shot ``fmgguf run`` ~+0.2 s. Hence "process" by default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf.errors import ContextOverflowError, InvalidRequestError, ModelNotLoadedError, RunnerCrashedError
from fmgguf.runtime.drafting import check_mode
from fmgguf.runtime.generation import GenerationResult, GenerationStream, PromptText, Turnstile
from fmgguf.runtime.loading import LoadedModel, SwitchResult
from fmgguf.runtime.runner.residency import IdleWatcher, LoadSpec, Resident
from fmgguf.runtime.runner.supervisor import Supervisor

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog, ModelCard
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)

_LOAD_KEYS = ("n_ctx", "n_gpu_layers", "flash_attn", "type_k", "type_v", "n_threads", "tensor_split",
              "main_gpu", "split_mode", "progress", "rpc")
ISOLATIONS = ("process", "inprocess")
Build = Callable[[Any, Resident], tuple[Any, list[str]]]


class ModelManager:
    """Loads models and answers generate/chat/FIM requests against them, thread-safely.

    ``isolation``/``max_loaded`` default to the settings; ``validator(path, cache) -> FileFacts``
    checks a file before llama.cpp sees it (:func:`fmgguf.runtime.loading.validate`).
    """

    def __init__(self, settings: "Settings | None" = None, catalog: "Catalog | None" = None,
                 downloader: Any = None, *, max_queue: int = 8, keep_alive: float | None = None,
                 queue_timeout: float | None = None, isolation: str | None = None,
                 max_loaded: int | None = None, validator: Callable[[Path, dict], Any] | None = None) -> None:
        if settings is None:
            from fmgguf.settings import load_settings

            settings = load_settings()
        isolation = isolation or settings.isolation
        if isolation not in ISOLATIONS:
            raise InvalidRequestError(f"isolation {isolation!r} is unknown", fix="use process or inprocess")
        self._settings = settings
        self._catalog = catalog
        self._downloader = downloader
        self._turn = Turnstile(max_queue)
        self.queue_timeout = queue_timeout
        self.sup = Supervisor(settings, isolation=isolation, keep_alive=float(
            settings.keep_alive if keep_alive is None else keep_alive),
            max_loaded=max_loaded or settings.max_loaded_models, **({"validator": validator} if validator else {}))
        self._idle = IdleWatcher(self, lambda m: m.sup.sweep(m._try_turn, m._turn.release))

    # --- collaborators (built on first use) --------------------------------------------------
    @property
    def settings(self) -> "Settings":
        return self._settings

    @settings.setter
    def settings(self, value: "Settings") -> None:
        self._settings = self.sup.settings = value

    @property
    def catalog(self) -> "Catalog":
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog

    @catalog.setter
    def catalog(self, value: "Catalog") -> None:
        """A fresh catalog (the server's hot reload); resident models stay loaded."""
        self._catalog = value

    @property
    def downloader(self) -> Any:
        if self._downloader is None:
            from fmgguf.download import ModelDownloader

            self._downloader = ModelDownloader(self.settings, catalog=self.catalog)
        return self._downloader

    @property
    def isolation(self) -> str:
        return self.sup.isolation

    @property
    def keep_alive(self) -> float:
        return self.sup.keep_alive

    @keep_alive.setter
    def keep_alive(self, value: float) -> None:
        self.sup.keep_alive = float(value)

    @property
    def max_queue(self) -> int:
        return self._turn.max_waiting

    @property
    def queue_depth(self) -> int:
        """Callers waiting for a model (not counting the one using it)."""
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
        from fmgguf.errors import FmggufError

        try:
            return bool(self.downloader.is_model_downloaded(model_id, quant))
        except (FmggufError, OSError):  # a listing must not fail on one odd entry
            return False

    def current_model(self) -> LoadedModel | None:
        """The selected model (the one used without ``model=``), if it is loaded."""
        r = self.sup.selected_resident()
        return r.snapshot(True) if r is not None else None

    def loaded(self) -> list[LoadedModel]:
        """Every resident model, least recently used first."""
        return self.sup.snapshots()

    @property
    def runner_restarts(self) -> int:
        """Runners started again after a crash by this manager."""
        return self.sup.restarts

    def broken(self) -> dict[str, Any]:
        """key -> crash record of the models marked broken (three runner crashes in a row)."""
        return self.sup.health.broken()

    # --- loading -----------------------------------------------------------------------------
    def switch_model(self, model_id: str, quant: str | None = None, **options: Any) -> SwitchResult:
        """Load catalog model ``model_id`` (``id`` or ``id:QUANT``) in place of the selected one."""
        spec = self._catalog_spec(model_id if ":" in model_id or not quant else f"{model_id}:{quant}")
        return SwitchResult.of(self._load(spec, options, select=True, replace=True).info)

    def load_file(self, path: str | Path, model_id: str | None = None, card: "ModelCard | None" = None,
                  **options: Any) -> SwitchResult:
        """Load a local GGUF (a tiny test model, an imported file) in place of the selected one."""
        p = Path(path)
        mid = model_id or (card.id if card else p.stem)
        spec = LoadSpec(key=mid, path=p, model_id=mid, quant=None, card=card)
        return SwitchResult.of(self._load(spec, options, select=True, replace=True).info)

    def ensure_loaded(self, ref: str, *, keep_alive: float | None = None, pinned: bool = False,
                      **options: Any) -> LoadedModel:
        """Make ``ref`` ("id", "id:QUANT", a resident key or a .gguf path) resident beside the others
        (evicting the least recently used unpinned models if needed); the selected model stays selected."""
        _check_options(options)
        self._acquire()
        resident = None
        try:
            resident = self._resident(ref, keep_alive, options, pinned=pinned)
            return resident.snapshot(resident.key == self.sup.selected)
        finally:
            self._done(resident)

    def select(self, ref: str, **options: Any) -> LoadedModel:
        """Make ``ref`` the selected model, loading it beside the others if it is not resident (unlike
        :meth:`switch_model`, the previously selected model stays resident until evicted)."""
        _check_options(options)
        self._acquire()
        resident = None
        try:
            resident = self._resident(ref, None, options)
            sup = self.sup
            with sup.lock:
                sup.selected, sup.selected_spec, sup.restart_selected = resident.key, resident.spec, False
            return resident.snapshot(True)
        finally:
            self._done(resident)

    def _spec(self, ref: str) -> LoadSpec:
        """A catalog model ("id", "id:QUANT"), or a local .gguf file (its key is the file's stem)."""
        p = Path(ref).expanduser()
        if ref.endswith(".gguf") and p.is_file():
            return LoadSpec(key=p.stem, path=p, model_id=p.stem, quant=None)
        return self._catalog_spec(ref)

    def _catalog_spec(self, ref: str) -> LoadSpec:
        card, q = self.catalog.resolve(ref)
        path = Path(self.downloader.model_path(card.id, q))  # NotDownloadedError says `fmgguf pull ID`
        return LoadSpec(key=f"{card.id}:{q}", path=path, model_id=card.id, quant=q, card=card)

    def _load(self, spec: LoadSpec, options: Mapping[str, Any], **how: Any) -> Resident:
        _check_options(options)
        self._acquire()
        resident = None
        try:
            resident = self.sup.load(spec, options, **how)
            return resident
        finally:
            self._done(resident)

    def _resident(self, ref: str, keep_alive: float | None, options: Mapping[str, Any],
                  pinned: bool = False) -> Resident:
        """The resident model ``ref`` (loaded now if it is not); call holding the turn."""
        r = self.sup.find(ref)
        spec = r.spec if r is not None else self._spec(ref)
        r = r or self.sup.find(spec.key)
        if r is not None and any(k != "progress" and r.spec.options.get(k) != v for k, v in options.items()):
            self.sup.unload(r)  # asked for with other load options (a longer context...): load it again
            r = None
        if r is not None and not _alive(r):
            self.sup.crashed(r.spec, r.engine.runner.crashed("idle"), r)
            r = None
        if r is None:
            r = self.sup.load(spec, options, select=False, replace=False, keep_alive=keep_alive, pinned=pinned)
        if pinned:
            r.pinned = True
        if keep_alive is not None:
            r.keep_alive = float(keep_alive)
        return r

    def _selected(self, keep_alive: float | None) -> Resident:
        """The selected model, started again if its runner died; call holding the turn."""
        sup = self.sup
        r = sup.selected_resident()
        if r is not None and not _alive(r):
            sup.crashed(r.spec, r.engine.runner.crashed("idle"), r)
            r = None
        if r is None and sup.restart_selected and sup.selected_spec is not None:
            r = sup.load(sup.selected_spec, sup.selected_spec.options, select=True, replace=False)
        if r is None:
            raise ModelNotLoadedError("no model is loaded", fix="load one first: `switch_model(ID)` / `fmgguf run ID`")
        if keep_alive is not None:
            r.keep_alive = float(keep_alive)
        return r

    def unload(self, ref: str | None = None) -> bool:
        """Unload ``ref`` (None: every model), waiting for a running generation; True if one was loaded."""
        self._acquire()
        try:
            if ref is None:
                return self.sup.unload_all()
            r = self.sup.find(ref)
            return self.sup.unload(r) if r is not None else False
        finally:
            self._done(None)

    def drop_missing(self) -> list[str]:
        """Unload the models whose file is gone or whose catalog entry was removed (hot catalog)."""
        gone = []
        for info in self.loaded():
            r = self.sup.find(info.key)
            if r is None:
                continue
            missing = not r.spec.path.exists() or (r.spec.card is not None and r.spec.model_id not in self.catalog)
            if missing:
                gone.append(info.key)
                self.unload(info.key)
                log.info("unloaded %s: its file or catalog entry was removed", info.key)
        return gone

    def close(self) -> None:
        """Unload everything and stop the idle watcher (the manager can still be used)."""
        self.unload()
        self._idle.stop()

    # --- generation --------------------------------------------------------------------------
    def generate_text(self, prompt: str, max_tokens: int | None = 256, temperature: float = 0.2,
                      top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
                      stream: bool = False, *, model: str | None = None, keep_alive: float | None = None,
                      **sampling: Any) -> GenerationResult | GenerationStream:
        """Complete ``prompt`` with ``model`` (None: the selected one); ``stream=True`` returns a
        :class:`GenerationStream`, which holds the turn until it is exhausted, cancelled or closed."""
        def build(engine: Any, _r: Resident) -> tuple[Any, list[str]]:
            if getattr(engine, "tokenizes_in_stream", False):  # a runner: one round trip, not two
                return PromptText(prompt, engine.add_bos), []
            return engine.tokenize(prompt, add_bos=engine.add_bos, special=True), []
        return self._generate(build, max_tokens, temperature, top_p, stop, seed, stream, sampling, model, keep_alive)

    def chat(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None = 256, temperature: float = 0.2,
             top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
             stream: bool = False, *, model: str | None = None, keep_alive: float | None = None,
             **sampling: Any) -> GenerationResult | GenerationStream:
        """Answer chat ``messages`` with the model's own template (GGUF, else the catalog family)."""
        from fmgguf.runtime.prompts import normalize_messages, render_chat

        msgs = normalize_messages(messages)

        def build(engine: Any, r: Resident) -> tuple[list[int], list[str]]:
            family = r.spec.card.chat_template if r.spec.card is not None else None
            prompt = render_chat(msgs, template=engine.chat_template, family=family,
                                 bos_text=engine.bos_text, eos_text=engine.eos_text)
            return engine.tokenize(prompt.text, add_bos=engine.add_bos, special=True), list(prompt.stop)
        return self._generate(build, max_tokens, temperature, top_p, stop, seed, stream, sampling, model, keep_alive)

    def fill_in_middle(self, prefix: str, suffix: str, max_tokens: int | None = 256, temperature: float = 0.2,
                       top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
                       stream: bool = False, *, model: str | None = None, keep_alive: float | None = None,
                       **sampling: Any) -> GenerationResult | GenerationStream:
        """Generate the code between ``prefix`` and ``suffix`` (refused where the model can't)."""
        from fmgguf.runtime.prompts import build_fim_tokens, resolve_fim_tokens

        def build(engine: Any, r: Resident) -> tuple[list[int], list[str]]:
            card = r.spec.card
            if card is not None and card.fim is not None and not card.fim.supported:
                resolve_fim_tokens(gguf_ids={}, lookup=lambda _t: None, card_fim=card.fim, model_name=card.id)
            fim = resolve_fim_tokens(gguf_ids=dict(r.info.fim_ids) or _gguf_fim_ids(engine),
                                     lookup=engine.special_token_id, card_fim=card.fim if card else None,
                                     vocab_ids=engine.fim_token_ids(), model_name=r.info.id)
            pre = engine.tokenize(prefix, add_bos=False, special=False) if prefix else []
            suf = engine.tokenize(suffix, add_bos=False, special=False) if suffix else []
            return build_fim_tokens(pre, suf, fim, engine.bos_id if engine.add_bos else None), []
        return self._generate(build, max_tokens, temperature, top_p, stop, seed, stream, sampling, model, keep_alive)

    def _generate(self, build: Build, max_tokens: int | None, temperature: float, top_p: float,
                  stop: Sequence[str] | str | None, seed: int | None, stream: bool, sampling: Mapping[str, Any],
                  model: str | None, keep_alive: float | None) -> GenerationResult | GenerationStream:
        from fmgguf.runtime.engine import GenerationStats

        allowed = {"top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "priority", "constraint",
                   "speculative"}
        if set(sampling) - allowed:
            raise InvalidRequestError(f"unknown option(s): {', '.join(sorted(set(sampling) - allowed))}",
                                      fix=f"use max_tokens, temperature, top_p, stop, seed, {', '.join(sorted(allowed))}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        sampling = {**sampling, "speculative": check_mode(sampling.get("speculative") or self.settings.speculative)}
        started = time.perf_counter()
        self._acquire()
        resident = None
        try:
            resident = self._selected(keep_alive) if model is None else self._resident(model, keep_alive, {})
            engine = resident.engine
            try:
                tokens, extra_stops = build(engine, resident)
            except RunnerCrashedError as exc:
                self.sup.crashed(resident.spec, exc, resident)
                raise
            if isinstance(tokens, list) and len(tokens) >= engine.n_ctx:  # (a PromptText is checked by the engine)
                raise ContextOverflowError(
                    f"the prompt is {len(tokens)} tokens but the context window is {engine.n_ctx}",
                    fix="shorten the prompt or load the model with a larger n_ctx (--ctx)")
            stats = GenerationStats(started=started)
            cancel = threading.Event()
            pieces = self._guard(resident, engine.stream(tokens, stats, max_tokens=max_tokens, temperature=temperature,
                                                         top_p=top_p, stop=stops + extra_stops, seed=seed,
                                                         cancel=cancel, **sampling))
        except BaseException:
            self._done(resident)
            raise
        info = resident.info

        def finish(text: str) -> GenerationResult:
            end = stats.finished_at or time.perf_counter()
            first = stats.first_token_at or end
            n = stats.completion_tokens
            rate = (n - 1) / (end - first) if n > 1 and end > first else (n / (end - started) if end > started else 0.0)
            return GenerationResult(text=text, prompt_tokens=stats.prompt_tokens, completion_tokens=n,
                                    ttft_s=round(first - started, 6), tokens_per_s=round(rate, 3),
                                    total_s=round(end - started, 6), finish_reason=stats.finish_reason or "cancelled",
                                    model_id=info.id, quant=info.quant, cached_tokens=stats.cached_tokens,
                                    drafted_tokens=stats.drafted_tokens, accepted_tokens=stats.accepted_tokens)

        used = resident
        gs = GenerationStream(pieces, finish, lambda: self._done(used), cancel)
        return gs if stream else gs.consume()

    def _guard(self, resident: Resident, pieces: Iterator[str]) -> Iterator[str]:
        """``pieces``, with a runner crash counted (and the dead runner dropped) on its way to the caller."""
        try:
            yield from pieces
        except RunnerCrashedError as exc:
            self.sup.crashed(resident.spec, exc, resident)
            raise
        self.sup.succeeded(resident)

    # --- the turn, and idle unload ------------------------------------------------------------
    def _acquire(self) -> None:
        self._turn.acquire(timeout=self.queue_timeout)

    def _try_turn(self) -> bool:
        return self._turn.acquire(blocking=False)

    def _done(self, resident: Resident | None) -> None:
        with self.sup.lock:
            if resident is not None:
                self.sup.residents.touch(resident)
            watch = self.sup.residents.next_expiry() is not None
        self._turn.release()
        if watch:
            self._idle.poke()


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - set(_LOAD_KEYS)
    if unknown:
        raise InvalidRequestError(f"unknown load option(s): {', '.join(sorted(unknown))}",
                                  fix=f"use {', '.join(_LOAD_KEYS)}")


def _alive(r: Resident) -> bool:
    return bool(getattr(r.engine, "alive", True))


def _gguf_fim_ids(engine: Any) -> dict[str, int]:
    out = {}
    for role, keys in (("pre", ("fim_pre", "prefix")), ("suf", ("fim_suf", "suffix")), ("mid", ("fim_mid", "middle"))):
        for k in keys:
            v = engine.metadata.get(f"tokenizer.ggml.{k}_token_id")
            if v is not None and str(v).lstrip("-").isdigit() and int(v) >= 0:
                out[role] = int(v)
                break
    return out


_default: dict[tuple, ModelManager] = {}
_default_lock = threading.Lock()


def get_model_manager(settings: "Settings | None" = None, *, isolation: str | None = None) -> ModelManager:
    """The manager for ``settings`` (read from the environment when None) and ``isolation``: one per
    distinct pair in this process, built on first use."""
    if settings is None:
        from fmgguf.settings import load_settings

        settings = load_settings()
    key = (settings, isolation or settings.isolation)
    with _default_lock:
        manager = _default.get(key)
        if manager is None:
            manager = _default[key] = ModelManager(settings, isolation=key[1])
        return manager
