"""`fmgguf fit`, `fmgguf inspect`, `fmgguf doctor`: memory plans, GGUF headers, the machine.

Nothing here imports llama_cpp: devices come from ggml through ctypes, headers from our parser,
and the compute buffer from llama.cpp's dry run in a child process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fmgguf.cli._common import (
    AppContext,
    console,
    context_warning,
    emit_json,
    human_bytes,
    human_count,
    json_option,
    pass_app,
    rpc_option,
    speculative_option,
    trained_context,
)

if TYPE_CHECKING:
    from rich.console import Console

    from fmgguf.catalog.schema import ModelCard
    from fmgguf.runtime.gguf.gguf_info import GGUFSummary
    from fmgguf.runtime.plan.fit import DraftSource, FitPlan


def _is_file(target: str) -> bool:
    return target.endswith(".gguf") or Path(target).is_file()


def _local_path(app: AppContext, card_id: str, quant: str) -> Path | None:
    """The verified local file of a catalog model, or None when it is not downloaded."""
    from fmgguf.download import ModelDownloader
    from fmgguf.errors import FmggufError

    try:
        return ModelDownloader(settings=app.settings, catalog=app.catalog).model_path(card_id, quant)
    except FmggufError:
        return None


def _parse_ctx(ctx: str | None) -> int | str | None:
    from fmgguf.errors import InvalidRequestError

    if ctx is None or ctx == "auto":
        return ctx
    text = ctx.strip().lower()
    try:
        value = int(text[:-1]) * 1024 if text.endswith("k") else int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise InvalidRequestError(f"--ctx {ctx!r} is not a context length", fix="give a number like 16384, or auto")
    return value


# --- fit -----------------------------------------------------------------------------------------------
@click.command("fit")
@click.argument("target")
@click.option("--quant", "-q", help="Only this quantization (default: every quant the model has).")
@click.option("--vram", help="Plan for this much free GPU memory (e.g. 8GB, 0 for none) instead of probing.")
@click.option("--ctx", "ctx", help="Context length, or `auto` to shrink it until the model fits the GPU.")
@click.option("--kv-quant", is_flag=True, help="Allow a q8_0/q4_0 KV cache (with flash attention) to fit.")
@click.option("--flash-attn", is_flag=True, help="Plan with flash attention on.")
@click.option("--type-k", default="f16", show_default=True, help="KV cache K type (f16, q8_0, q4_0).")
@click.option("--type-v", default="f16", show_default=True, help="KV cache V type (needs --flash-attn if quantized).")
@click.option("--no-measure", is_flag=True, help="Skip llama.cpp's dry run (compute buffer from a formula).")
@rpc_option
@speculative_option
@json_option
@pass_app
def fit_cmd(app: AppContext, target: str, quant: str | None, vram: str | None, ctx: str | None, kv_quant: bool,
            flash_attn: bool, type_k: str, type_v: str, no_measure: bool, as_json: bool) -> None:
    """Will TARGET (a catalog id or a .gguf file) fit this machine, and how: GPU layers, context, KV type.

    With --rpc the plan spreads layers over the workers too; a worker that cannot be reached is planned
    from its budget (HOST@48GB) alone, so a plan can be made before the machines are set up. With
    --speculative draft (or draft:ID) the draft model's memory is counted beside the model's."""
    from fmgguf.errors import CatalogError
    from fmgguf.runtime.plan.fit import plan_for_card, plan_for_file
    from fmgguf.runtime.rpc.rpc import parse_workers
    from fmgguf.settings import parse_size

    settings = app.settings
    vram_bytes = parse_size(vram, "--vram") if vram is not None else None
    n_ctx = _parse_ctx(ctx) or settings.default_ctx
    workers = parse_workers(settings.rpc)
    common = dict(n_ctx=n_ctx, settings=settings, vram=vram_bytes, type_k=type_k.lower(), type_v=type_v.lower(),
                  flash_attn=flash_attn or type_v.lower() not in ("f16", "f32", "bf16"), kv_quant=kv_quant,
                  workers=workers, need_workers=False)
    plans: dict[str, FitPlan] = {}
    trained: dict[str, int | None] = {}
    if _is_file(target):
        common["draft"] = _fit_draft(app, None)
        plans[Path(target).name] = plan_for_file(target, measure=not no_measure, **common)
        trained[Path(target).name] = trained_context(target)
        title = Path(target).name
    else:
        card, q = app.catalog.resolve(target)
        common["draft"] = _fit_draft(app, card)
        quants = [quant] if quant else ([q] if ":" in target else list(card.variants))
        for qq in quants:
            local = _local_path(app, card.id, qq)
            try:
                if local is not None:
                    plans[qq] = plan_for_file(local, measure=not no_measure, **common)
                    trained[qq] = trained_context(local)
                else:
                    plans[qq] = plan_for_card(card, qq, **common)
                    trained[qq] = card.arch.context_length if card.arch else None
            except CatalogError as exc:  # one quant without catalog numbers must not hide the others
                if len(quants) == 1:
                    raise
                click.echo(f"warning: {qq} not planned: {exc.message}", err=True)
        if not plans:
            raise CatalogError(f"no quant of {card.id} can be planned from the catalog",
                               fix=f"download one (`fmgguf pull {card.id}`) and plan from the file")
        title = card.id
    warnings = _context_warnings(plans, trained)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        emit_json({"target": title, "plans": {k: p.as_dict() for k, p in plans.items()}, "warnings": warnings})
        return
    _render_plans(title, plans)


def _fit_draft(app: AppContext, card: ModelCard | None) -> DraftSource | None:
    """The draft model the ``speculative`` setting brings (fmgguf.runtime.plan.fit.DraftSource), or None."""
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime.draft_pick import fit_draft

    return fit_draft(app.settings.speculative, card, app.catalog,
                     ModelDownloader(settings=app.settings, catalog=app.catalog))


def _context_warnings(plans: dict[str, FitPlan], trained: dict[str, int | None]) -> list[str]:
    """One line per distinct (context, trained context) pair where the plan's context is the longer."""
    out: list[str] = []
    for name, plan in plans.items():
        line = context_warning(plan.n_ctx, trained.get(name))
        if line and line not in out:
            out.append(line)
    return out


def _render_plans(title: str, plans: dict[str, FitPlan]) -> None:
    from rich.table import Table

    table = Table(title=f"fit: {title}", box=None, header_style="bold", title_justify="left")
    table.add_column("")
    for name in plans:
        table.add_column(name, justify="right")

    def row(label: str, fn: Callable[[FitPlan], str]) -> None:
        table.add_row(label, *[fn(p) for p in plans.values()])

    remote = any(d.kind == "RPC" for p in plans.values() for d in p.devices)
    row("plan", lambda p: f"[bold]{p.label}[/bold]")
    row("offloaded layers" if remote else "GPU layers", lambda p: f"{p.n_gpu_layers} of {p.n_layers}")
    row("context", lambda p: str(p.n_ctx))
    row("KV cache type", lambda p: p.type_k if p.type_k == p.type_v else f"{p.type_k}/{p.type_v}")
    row("flash attention", lambda p: "on" if p.flash_attn else "off")
    row("weights", lambda p: human_bytes(p.estimate.weights_total))
    row("KV cache", lambda p: human_bytes(p.estimate.kv_total))
    if any(p.draft_bytes for p in plans.values()):
        row("draft model", lambda p: f"{human_bytes(p.draft_bytes)} ({'GPU' if p.draft_gpu_layers else 'RAM'})"
            if p.draft_bytes else "-")
    row("slots", lambda p: f"{p.parallel} + FIM lane, each up to {p.n_ctx} (one shared KV cache)")
    row("CPU threads", lambda p: f"{p.threads.n_threads} ({'setting' if p.threads.source == 'setting' else 'cores'})"
        if p.threads else "-")
    row("compute buffer", lambda p: f"{human_bytes(p.estimate.compute)}"
        + (" (measured)" if p.estimate.compute_source == "dry-run" else " (formula)"))
    row("devices needed / budget" if remote else "VRAM needed / free",
        lambda p: f"{human_bytes(p.vram_needed)} / {human_bytes(p.vram_free)}")
    row("RAM needed / free", lambda p: f"{human_bytes(p.ram_needed)} / {human_bytes(p.ram_free)}")
    row("tensor split", lambda p: ",".join(f"{x:g}" for x in p.tensor_split) if p.tensor_split else "-")
    row("from", lambda p: {"file": "the local file", "header": "the hub header (Range)",
                           "catalog": "catalog numbers"}.get(p.source, p.source))
    con = console()
    con.print(table)
    for name, p in plans.items():
        if any(d.kind == "RPC" for d in p.devices):
            _render_devices(con, name, p)
    for name, p in plans.items():
        for note in p.notes:
            con.print(f"  {name}: {note}")


def _render_devices(con: Console, name: str, plan: FitPlan) -> None:
    """Where each layer range goes across the workers, the local GPUs and this machine's RAM."""
    from rich.table import Table

    table = Table(title=f"{name}: layers per device (llama.cpp order; tensor split "
                        f"{','.join(f'{x:g}' for x in plan.tensor_split or []) or '-'})",
                  box=None, header_style="bold", title_justify="left")
    for col, just in (("device", "left"), ("kind", "left"), ("layers", "right"), ("blocks", "left"),
                      ("needs", "right"), ("budget", "right"), ("budget from", "left")):
        table.add_column(col, justify=just)
    source = {"budget": "--rpc @BUDGET", "rpc": "worker reports", "psutil": "available RAM", "ggml": "free VRAM",
              "nvml": "free VRAM (NVML)", "override": "--vram"}
    for d in plan.devices:
        table.add_row(d.name, d.kind, str(d.layers), d.layer_range, human_bytes(d.needed), human_bytes(d.free),
                      source.get(d.memory_source, d.memory_source))
    con.print(table)


# --- inspect -------------------------------------------------------------------------------------------
@click.command("inspect")
@click.argument("target")
@click.option("--quant", "-q", help="Which quantization of a catalog model.")
@json_option
@pass_app
def inspect_cmd(app: AppContext, target: str, quant: str | None, as_json: bool) -> None:
    """The GGUF header of TARGET (a file, or a catalog id: local file, else the hub header by Range).

    Offline, or with the hub out of reach, a catalog id shows what the catalog card knows instead."""
    from fmgguf.errors import DownloadError, OfflineError
    from fmgguf.runtime.gguf.gguf_file import file_problems, read_gguf
    from fmgguf.runtime.prompt.fim_rule import card_verdict, fim_verdict

    if _is_file(target):
        info = read_gguf(target, check=False)  # a lying file is shown, with its problems
        verdict = fim_verdict(None, name=Path(target).name, path=Path(target))
    else:
        card, q = app.catalog.resolve(target)
        q = quant or q
        v = card.variant(q)
        local = _local_path(app, card.id, q)
        verdict = card_verdict(card, app.settings)
        if local is not None:
            info = read_gguf(local, check=False)
        else:
            from fmgguf.runtime.gguf.remote_header import read_remote_gguf

            try:
                info = read_remote_gguf(app.settings, v.repo, v.files[0].name, v.revision)
            except (OfflineError, DownloadError) as exc:
                _inspect_from_card(card, q, exc.message, as_json)
                return
    summary = info.summary()
    # what llama.cpp would refuse or abort on, as {field, message} rows (empty: loadable)
    problems = [{"field": p.field, "message": p.message} for p in file_problems(info)]
    summary["problems"] = problems
    summary["fim"], summary["fim_reason"] = verdict.able, verdict.reason  # the one FIM rule
    if as_json:
        emit_json(summary)
    else:
        _render_header(summary)
    if problems:
        from fmgguf.errors import GGUFError, exit_code_for

        raise click.exceptions.Exit(exit_code_for(GGUFError("invalid GGUF")))


def _render_header(summary: GGUFSummary) -> None:
    con = console()
    con.print(f"[bold]{summary['path']}[/bold]  GGUF v{summary['gguf_version']}, {human_bytes(summary['file_size'])}")
    pairs = [("architecture", summary["architecture"]), ("name", summary["name"] or "-"),
             ("parameters", human_count(summary["n_params"])), ("layers", summary["n_layer"]),
             ("embedding", summary["n_embd"]), ("heads", summary["n_head"]), ("vocabulary", summary["n_vocab"]),
             ("context (trained)", summary["context_length"]), ("tensors", summary["n_tensors"]),
             ("weights", human_bytes(summary["tensor_bytes"])),
             ("chat template", "yes" if summary["chat_template"] else "no"),
             ("FIM tokens", ", ".join(f"{k}={v}" for k, v in summary["fim_tokens"].items()) or "none"),
             ("fill-in-the-middle", f"{'yes' if summary['fim'] else 'no'}: {summary['fim_reason']}")]
    for k, v in pairs:
        con.print(f"  {k:<18} {v}")
    con.print("  quant mix:")
    for t, row in summary["quant_mix"].items():
        con.print(f"    {t:<8} {row['tensors']:>5} tensors  {human_bytes(row['bytes']):>10}")
    if summary["problems"]:
        con.print("[bold red]problems[/bold red] (llama.cpp would refuse or abort on this file):", markup=True)
        for p in summary["problems"]:
            con.print(f"  {p['field']} {p['message']}", markup=False, highlight=False)


def _fim_reason(card: ModelCard) -> str:
    from fmgguf.runtime.prompt.fim_rule import fim_verdict

    return fim_verdict(card).reason


def _inspect_from_card(card: ModelCard, quant: str, reason: str, as_json: bool) -> None:
    """What the catalog card says about the file whose header could not be read."""
    v = card.variant(quant)
    a = card.arch
    summary = {
        "source": "catalog", "header_read": False, "header_error": reason, "model_id": card.id, "quant": quant,
        "repo": v.repo, "files": [f.name for f in v.files], "file_size": v.size or v.approx_size,
        "architecture": a.name if a else None, "n_layer": a.n_layer if a else None,
        "n_embd": a.n_embd if a else None, "n_head": a.n_head if a else None,
        "n_head_kv": a.n_head_kv if a else None, "n_vocab": a.vocab if a else None,
        "context_length": a.context_length if a else None,
        "n_params": card.parameters.total if card.parameters else None,
        "chat_template": card.chat_template, "fim": card.fim_supported, "fim_reason": _fim_reason(card),
    }
    if as_json:
        emit_json(summary)
        return
    con = console()
    size = human_bytes(summary["file_size"]) if summary["file_size"] else "size unknown"
    con.print(f"[bold]{v.repo}/{v.files[0].name}[/bold]  {size} (from the catalog)")
    pairs = [("architecture", summary["architecture"] or "?"),
             ("parameters", human_count(summary["n_params"]) if summary["n_params"] else "?"),
             ("layers", summary["n_layer"] or "?"), ("embedding", summary["n_embd"] or "?"),
             ("heads", f"{summary['n_head']} (KV {summary['n_head_kv']})" if a else "?"),
             ("vocabulary", summary["n_vocab"] or "?"), ("context (trained)", summary["context_length"] or "?"),
             ("chat template", card.chat_template or "none"), ("FIM", "yes" if card.fim_supported else "no")]
    for k, val in pairs:
        con.print(f"  {k:<18} {val}")
    click.echo(f"note: the GGUF header could not be read ({reason}); these are catalog numbers — "
               f"`fmgguf pull {card.id} --quant {quant}` then inspect again reads the file, "
               f"`fmgguf info {card.id}` shows the whole card", err=True)


# --- doctor --------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _free_disk(path: Path) -> tuple[str, int | None]:
    import shutil

    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return str(p), shutil.disk_usage(p).free
    except OSError:
        return str(p), None


@click.command("doctor")
@json_option
@pass_app
def doctor_cmd(app: AppContext, as_json: bool) -> None:
    """This machine as fmgguf sees it: devices and free memory, llama.cpp backends, versions, store, disk."""
    import platform
    import sys

    from fmgguf import __version__
    from fmgguf.runtime.hw.devices import ggml_devices, llama_cpp_lib_dir, system_memory
    from fmgguf.runtime.hw.threads import choose_threads

    s = app.settings
    threads = choose_threads(s.n_threads)
    devices = ggml_devices()
    mem = system_memory(vram_override=s.vram_override)
    backends = mem.backends
    gpu_backends = [b for b in backends if b not in ("CPU", "BLAS", "RPC")]
    store = s.hub_cache
    disk_at, disk_free = _free_disk(store)
    report = {
        "fmgguf": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "llama_cpp_python": _version("llama_cpp_python") or _version("llama-cpp-python"), "gguf": _version("gguf"),
        "llama_cpp_lib": str(llama_cpp_lib_dir()) if llama_cpp_lib_dir() else None,
        "backends": backends, "gpu_offload": bool(gpu_backends),
        "devices": [d.as_dict() for d in devices], "planning_gpus": [g.as_dict() for g in mem.gpus],
        "vram_override": s.vram_override, "vram_margin": s.vram_margin,
        "ram_free": mem.ram_free, "ram_total": mem.ram_total,
        "home": str(s.home), "store": str(store), "disk_free": disk_free, "disk_checked_at": disk_at,
        "hf_endpoint": s.hf_endpoint, "offline": s.offline,
        "threads": threads.as_dict(), "parallel": s.parallel,
    }
    if as_json:
        emit_json(report)
        return
    con = console()
    con.print(f"fmgguf {report['fmgguf']}  python {report['python']}  llama-cpp-python "
              f"{report['llama_cpp_python'] or 'NOT INSTALLED'}  gguf {report['gguf'] or '-'}")
    con.print(f"llama.cpp backends: {', '.join(backends) or 'none found'}"
              + ("" if gpu_backends else "  (CPU-only build: no GPU offload)"))
    for d in devices:
        con.print(f"  {d.name:<10} {d.kind:<5} {d.description[:40]:<40} free {human_bytes(d.free)} of "
                  f"{human_bytes(d.total)}")
    if s.vram_override is not None:
        con.print(f"planning for {human_bytes(s.vram_override)} of VRAM (--vram / FMGGUF_VRAM)")
    con.print(f"RAM: {human_bytes(mem.ram_free)} available of {human_bytes(mem.ram_total)};"
              f" VRAM margin {human_bytes(s.vram_margin)}")
    con.print(f"CPU threads: {threads.label}")
    con.print(f"slots per model: {s.parallel} + a FIM lane (FMGGUF_PARALLEL)")
    con.print(f"store: {store}  ({human_bytes(disk_free)} free)")
    con.print(f"hub: {s.hf_endpoint}{'  (offline)' if s.offline else ''}")
