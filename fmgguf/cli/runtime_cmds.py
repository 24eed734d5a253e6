"""`fmgguf run`, `fmgguf chat`, `fmgguf fim`: load a model and generate from it.

MODEL is a catalog id (``id`` or ``id:QUANT``; it must be downloaded: `fmgguf pull ID`) or the path
of a local .gguf file.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from fmgguf.cli._common import (
    AppContext,
    context_warning,
    emit_json,
    json_option,
    pass_app,
    rpc_option,
    speculative_option,
    trained_context,
)

if TYPE_CHECKING:
    from fmgguf.errors import InsufficientMemoryError
    from fmgguf.runtime.engine.generation import GenerationResult, GenerationStream
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.runtime.runner.loading import SwitchResult

F = TypeVar("F", bound=Callable[..., object])


def _load_options(f: F) -> F:
    options = [
        click.option("--quant", "-q", default=None, help="Quantization (default: the catalog's default)."),
        click.option("--ctx", "n_ctx", default=None, help="Context length in tokens, or 'auto' (fit plan)."),
        click.option("--gpu-layers", "n_gpu_layers", default="auto", show_default=True,
                     help="Layers to offload to the GPU, or 'auto' (fit plan)."),
        click.option("--threads", "n_threads", type=click.IntRange(1, 1024), default=None,
                     help="CPU threads llama.cpp computes with (default: FMGGUF_THREADS, else one per usable core)."),
        click.option("--max-tokens", "-n", type=int, default=512, show_default=True,
                     help="Most tokens to generate (at least 1)."),
        click.option("--temperature", "-t", type=float, default=0.2, show_default=True,
                     help="Sampling temperature, 0 (greedy) to 2."),
        click.option("--top-p", type=float, default=0.95, show_default=True, help="Nucleus sampling, above 0 up to 1."),
        click.option("--seed", type=int, default=None, help="Sampling seed (repeatable output)."),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
        rpc_option,
        speculative_option,
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _int_or_auto(value: str | None, name: str) -> int | str | None:
    if value in (None, "auto"):
        return value
    try:
        return int(value)
    except ValueError:
        from fmgguf.errors import InvalidRequestError

        raise InvalidRequestError(f"{name} {value!r} is not a number", fix=f"give {name} as a number or 'auto'") from None


def _manager_for(app: AppContext, model: str, quant: str | None, n_ctx: str | None, n_gpu_layers: str,
                 n_threads: int | None, quiet: bool) -> tuple[ModelManager, SwitchResult]:
    """A manager with ``model`` loaded (a catalog id, or a local .gguf path).

    "loading…" shows only on a terminal and is erased before the outcome, so a failure is one line.
    """
    from fmgguf.errors import InsufficientMemoryError
    from fmgguf.runtime.manager import ModelManager

    opts = {"n_ctx": _int_or_auto(n_ctx, "--ctx"), "n_gpu_layers": _int_or_auto(n_gpu_layers, "--gpu-layers"),
            "n_threads": n_threads}
    path = Path(model).expanduser()
    is_file = model.endswith(".gguf") or path.is_file()
    manager = ModelManager(app.settings, catalog=None if is_file else app.catalog, keep_alive=0)
    live = not quiet and _stderr_is_tty()
    if live:
        click.echo(f"loading {model}…", err=True, nl=False)
    try:
        if is_file:
            result = manager.load_file(path, **opts)
        else:
            result = manager.switch_model(model, quant=quant, **opts)
    except InsufficientMemoryError as exc:
        _reword_memory_fix(app, exc, model, quant, is_file)
        raise
    finally:
        if live:
            click.echo("\r\033[K", err=True, nl=False)
    if not quiet:
        label = result.plan.label if result.plan is not None else f"{result.n_gpu_layers} GPU layers"
        click.echo(f"loaded {result.model_id} ({result.quant}) in {result.load_s:.2f} s — {label}, "
                   f"context {result.n_ctx}", err=True)
    warnings = _context_warnings(result)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    return manager, dataclasses.replace(result, warnings=tuple(warnings))


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _reword_memory_fix(app: AppContext, exc: InsufficientMemoryError, model: str, quant: str | None, is_file: bool) -> None:
    """No "use a smaller quant" where there is none: a file path, or already the catalog's smallest."""
    from fmgguf.errors import FmggufError

    smallest = is_file
    if not is_file:
        try:
            card, q = app.catalog.resolve(model if ":" in model or not quant else f"{model}:{quant}")
            sizes = {k: v.size or v.approx_size or 0 for k, v in card.variants.items()}
            smallest = sizes.get(q, 0) <= min(sizes.values())
        except FmggufError:  # an unknown id or quant: only the wording of the fix is at stake
            smallest = False
    if smallest and exc.fix and "smaller quant" in exc.fix:
        what = "a file has no smaller quant" if is_file else "this is already the smallest quant"
        exc.fix = f"{what}: use a shorter context (--ctx) or free memory; `fmgguf fit {model}` shows the numbers"
        exc.args = (exc.one_line(),)


def _context_warnings(result: SwitchResult) -> list[str]:
    """A warning when the context is longer than the one the model was trained with."""
    line = context_warning(result.n_ctx, trained_context(result.path))
    return [line] if line else []


def _check_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    """Refuse sampling options out of range (one line, exit 2) before anything is loaded."""
    from fmgguf.errors import InvalidRequestError

    if max_tokens < 1:
        raise InvalidRequestError(f"--max-tokens {max_tokens} is not a token count", fix="give 1 or more")
    if not 0.0 <= temperature <= 2.0:
        raise InvalidRequestError(f"--temperature {temperature:g} is out of range", fix="give 0 (greedy) to 2")
    if not 0.0 < top_p <= 1.0:
        raise InvalidRequestError(f"--top-p {top_p:g} is out of range", fix="give a value above 0, up to 1")


def _stream_out(stream: GenerationStream) -> GenerationResult:
    """Print a GenerationStream as it comes; Ctrl-C cancels it cleanly."""
    try:
        for piece in stream:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
        click.echo("")
        raise
    click.echo("")
    return stream.result


def _timings_line(res: GenerationResult) -> str:
    note = {"context": " — stopped: the context window is full (use --ctx)", "length": " — stopped at --max-tokens",
            "cancelled": " — cancelled"}.get(res.finish_reason, "")
    fim = {"suffix": " — the middle ended where the suffix begins", "indent": " — the middle ended at a dedent out "
           "of the cursor's block"}.get(res.stop_reason or "", "")
    return (f"{res.prompt_tokens} prompt + {res.completion_tokens} tokens, first token {res.ttft_s * 1000:.0f} ms, "
            f"{res.tokens_per_s:.1f} tokens/s{_drafts(res)}{note}{fim}")


def _drafts(res: GenerationResult) -> str:
    if not res.drafted_tokens:
        return ""
    return f", {res.accepted_tokens}/{res.drafted_tokens} drafted tokens accepted"


def _gen_kwargs(max_tokens: int, temperature: float, top_p: float, seed: int | None, stop: tuple[str, ...]) -> dict:
    _check_sampling(max_tokens, temperature, top_p)
    return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
            "seed": seed, "stop": list(stop) or None}


@click.command("run")
@click.argument("model")
@click.argument("prompt")
@_load_options
@click.option("--raw", is_flag=True, help="Complete PROMPT as plain text, even on an instruct model.")
@json_option
@pass_app
def run_cmd(app: AppContext, model: str, prompt: str, quant: str | None, n_ctx: str | None, n_gpu_layers: str,
            n_threads: int | None, max_tokens: int, temperature: float, top_p: float, seed: int | None,
            stop: tuple[str, ...], raw: bool, as_json: bool) -> None:
    """Answer PROMPT with MODEL, streamed ('-' reads the prompt from stdin).

    An instruct/chat model with a chat template gets PROMPT as a user message in its template
    (like `fmgguf chat`, one turn); a base model, or --raw, completes PROMPT as plain text."""
    kw = _gen_kwargs(max_tokens, temperature, top_p, seed, stop)
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        from fmgguf.errors import InvalidRequestError

        raise InvalidRequestError("the prompt is empty", fix="give some text, or '-' with the text on stdin")
    manager, loaded = _manager_for(app, model, quant, n_ctx, n_gpu_layers, n_threads, quiet=as_json)
    try:
        chat = _wants_chat(app, model, quant, manager, loaded, raw)

        def generate(**extra: bool) -> GenerationResult | GenerationStream:
            if chat:
                return manager.chat([{"role": "user", "content": prompt}], **kw, **extra)
            return manager.generate_text(prompt, **kw, **extra)

        if as_json:
            res = generate()
            emit_json({**res.as_dict(), "mode": "chat" if chat else "raw", "load": loaded.as_dict(),
                       "warnings": list(loaded.warnings)})
            return
        res = _stream_out(generate(stream=True))
        click.echo(_timings_line(res), err=True)
    finally:
        manager.unload()


def _wants_chat(app: AppContext, model: str, quant: str | None, manager: ModelManager, loaded: SwitchResult, raw: bool) -> bool:
    """The chat-or-raw rule of fmgguf.runtime.prompt.chat_mode, from the card (catalog id) or the file's names."""
    from fmgguf.errors import FmggufError
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.runtime.prompt.chat_mode import gguf_names, wants_chat

    if raw:
        return False
    current = manager.current_model()
    has_template = bool(current is not None and current.chat_template)
    card = None
    if not (model.endswith(".gguf") or Path(model).expanduser().is_file()):
        card, _ = app.catalog.resolve(model if ":" in model or not quant else f"{model}:{quant}")
    try:
        names = gguf_names(Path(loaded.path).name, read_gguf(loaded.path).metadata)
    except FmggufError:
        names = [Path(loaded.path).name]
    return wants_chat(has_template=has_template, card=card, names=names)


@click.command("chat")
@click.argument("model")
@click.option("--system", default=None, help="A system message to start the conversation with.")
@_load_options
@pass_app
def chat_cmd(app: AppContext, model: str, system: str | None, quant: str | None, n_ctx: str | None, n_gpu_layers: str,
             n_threads: int | None, max_tokens: int, temperature: float, top_p: float, seed: int | None,
             stop: tuple[str, ...]) -> None:
    """Talk with MODEL, using its own chat template. /reset forgets, /exit (or Ctrl-D) quits."""
    kw = _gen_kwargs(max_tokens, temperature, top_p, seed, stop)
    manager, _ = _manager_for(app, model, quant, n_ctx, n_gpu_layers, n_threads, quiet=False)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = sys.stdin.isatty()
    try:
        while True:
            if interactive:
                click.echo(">>> ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if text.strip() in ("/exit", "/quit", "/bye"):
                break
            if text.strip() == "/reset":
                history = history[:1] if system else []
                click.echo("(conversation forgotten)", err=True)
                continue
            history.append({"role": "user", "content": text})
            res = _stream_out(manager.chat(history, stream=True, **kw))
            history.append({"role": "assistant", "content": res.text})
            if res.finish_reason == "context":
                click.echo("(the context window is full: /reset, or start again with a larger --ctx)", err=True)
    finally:
        manager.unload()


@click.command("fim")
@click.argument("model")
@click.option("--prefix-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File with the code before the gap ('-': stdin).")
@click.option("--suffix-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File with the code after the gap ('-': stdin).")
@click.option("--prefix", default=None, help="The code before the gap, inline.")
@click.option("--suffix", default=None, help="The code after the gap, inline.")
@_load_options
@json_option
@pass_app
def fim_cmd(app: AppContext, model: str, prefix_file: str | None, suffix_file: str | None, prefix: str | None,
            suffix: str | None, quant: str | None, n_ctx: str | None, n_gpu_layers: str, n_threads: int | None,
            max_tokens: int, temperature: float, top_p: float, seed: int | None, stop: tuple[str, ...],
            as_json: bool) -> None:
    """Fill in the middle: the code MODEL writes between a prefix and a suffix."""
    from fmgguf.errors import InvalidRequestError

    _check_fim_card(app, model, quant)
    kw = _gen_kwargs(max_tokens, temperature, top_p, seed, stop)
    if prefix_file == "-" and suffix_file == "-":
        raise InvalidRequestError("only one of --prefix-file/--suffix-file can be stdin", fix="put the other in a file")
    before = _read_part(prefix_file, prefix, "prefix")
    after = _read_part(suffix_file, suffix, "suffix")
    if before is None and after is None:
        raise InvalidRequestError("fim needs a prefix or a suffix", fix="pass --prefix-file A and/or --suffix-file B")
    manager, loaded = _manager_for(app, model, quant, n_ctx, n_gpu_layers, n_threads, quiet=as_json)
    try:
        if as_json:
            res = manager.fill_in_middle(before or "", after or "", **kw)
            emit_json({**res.as_dict(), "load": loaded.as_dict(), "warnings": list(loaded.warnings)})
            return
        res = _stream_out(manager.fill_in_middle(before or "", after or "", stream=True, **kw))
        click.echo(_timings_line(res), err=True)
    finally:
        manager.unload()


def _check_fim_card(app: AppContext, model: str, quant: str | None) -> None:
    """Refuse FIM before any download or load where the one FIM rule (fmgguf.runtime.prompt.fim_rule) says no
    from the card alone; a file, or an imported entry without a ``fim`` block, is judged by its vocabulary
    once loaded (``ModelManager.fill_in_middle`` applies the same rule)."""
    from fmgguf.runtime.prompt.fim_rule import fim_verdict, needs_vocabulary

    if model.endswith(".gguf") or Path(model).expanduser().is_file():
        return
    card, _ = app.catalog.resolve(model if ":" in model or not quant else f"{model}:{quant}")
    if not needs_vocabulary(card):
        fim_verdict(card).check()


def _read_part(path: str | None, inline: str | None, name: str) -> str | None:
    if path is None:
        return inline
    if inline is not None:
        from fmgguf.errors import InvalidRequestError

        raise InvalidRequestError(f"both --{name} and --{name}-file given", fix="use one of them")
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        from fmgguf.errors import InvalidRequestError

        raise InvalidRequestError(f"cannot read {name} file {path}: {exc}", fix="check the path") from None
