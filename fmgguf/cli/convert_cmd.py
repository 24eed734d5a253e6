"""`fmgguf convert`: a Hugging Face checkpoint directory → F16/Q8_0/Q4_K_M GGUFs and a catalog entry."""

from __future__ import annotations

import click

from fmgguf.cli._common import AppContext, emit_json, human_bytes, json_option, pass_app


@click.command("convert")
@click.argument("checkpoint", type=click.Path(file_okay=False, path_type=str))
@click.option("--name", required=True, help="File-name stem: writes NAME-F16.gguf, NAME-Q8_0.gguf, NAME-Q4_K_M.gguf.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True),
              help="Importance matrix from llama-imatrix (GGUF or legacy .dat) to guide quantization.")
@click.option("--model-id", help="Catalog id of the entry (default: NAME lower-cased).")
@click.option("--repo", help="Hub repo the files will be published in (default: local/MODEL_ID).")
@click.option("--quant", "quants", multiple=True, default=("Q8_0", "Q4_K_M"), show_default=True,
              help="Quantization to produce (repeat).")
@click.option("--no-install", is_flag=True, help="Do not pip-install missing converter requirements; fail instead.")
@click.option("--add", "add_to_catalog", is_flag=True, help="Also add the entry to the user catalog.")
@json_option
@pass_app
def convert_cmd(app: AppContext, checkpoint: str, name: str, out_dir: str, imatrix: str | None, model_id: str | None,
                repo: str | None, quants: tuple[str, ...], no_install: bool, add_to_catalog: bool,
                as_json: bool) -> None:
    """Convert a local Hugging Face checkpoint with llama.cpp's own converter and quantizer.

    Produces NAME-F16.gguf, NAME-Q8_0.gguf, NAME-Q4_K_M.gguf and NAME.catalog.yaml (names, sizes,
    sha256 and the architecture numbers read back from the GGUF). Re-running resumes; it never
    leaves a half-written GGUF under a final name.
    """
    from fmgguf.catalog.schema import normalize_quant
    from fmgguf.convert import convert_checkpoint

    settings = app.settings

    def say(msg: str) -> None:
        click.echo(msg, err=True)

    result = convert_checkpoint(
        checkpoint, name, out_dir, imatrix=imatrix, model_id=model_id, repo=repo,
        quants=tuple(normalize_quant(q) for q in quants), install=not (no_install or settings.offline),
        cache_dir=settings.shared_cache, echo=None if as_json else say)
    data = result.as_dict()
    data["sizes"] = {q: p.stat().st_size for q, p in result.files.items()}
    if add_to_catalog:
        from fmgguf.catalog.user import add_user_entry

        add_user_entry(settings, result.entry)
        data["added_to"] = str(settings.catalog_file)
    if as_json:
        emit_json(data)
        return
    for quant, path in result.files.items():
        state = "kept" if quant in result.skipped else "wrote"
        click.echo(f"{state:5} {path}  ({human_bytes(path.stat().st_size)})")
    click.echo(f"entry {result.entry_path}  (id {result.entry['id']})")
    if add_to_catalog:
        click.echo(f"added {result.entry['id']} to {settings.catalog_file}")
    click.echo(f"done in {result.timings.get('total', 0):.1f} s")
