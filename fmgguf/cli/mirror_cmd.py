"""`fmgguf mirror serve DIR|BUNDLE`: serve models to machines without internet, as a hub mirror."""

from __future__ import annotations

import click

from fmgguf._util import human_bytes
from fmgguf.cli._common import AppContext, pass_app


@click.group("mirror")
def mirror_group() -> None:
    """A read-only hub mirror on the LAN: other machines set HF_ENDPOINT to it and `fmgguf pull`."""


@mirror_group.command("serve")
@click.argument("source", type=click.Path(exists=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --api-key.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 = any free port; the banner says which).")
@click.option("--api-key", default=None, metavar="KEY",
              help="Require 'Authorization: Bearer KEY' (clients set HF_TOKEN=KEY); needed off loopback.")
@pass_app
def serve_cmd(app: AppContext, source: str, host: str, port: int, api_key: str | None) -> None:
    """Serve SOURCE read-only: an export bundle (folder or .tar), a hub cache, or a folder of ORG/NAME/FILE.

    A catalog entry pinned to a revision SOURCE has no history for is served at that revision too, for
    the files whose sha256 matches the catalog's pin (the banner lists them)."""
    from fmgguf.mirror.server import MirrorServer
    from fmgguf.mirror.sources import honour_catalog_pins, load_source
    from fmgguf.server.runner import check_bind

    check_bind(host, api_key)  # before hashing anything: a refused bind is one line, at once
    repos = load_source(source)
    pins = honour_catalog_pins(repos, app.catalog)
    server = MirrorServer(repos, host=host, port=port, api_key=api_key).bind()
    for repo_id, repo in sorted(repos.items()):
        size = sum(f.size for f in repo.files.values())
        click.echo(f"  {repo_id}: {len(repo.files)} file(s), {human_bytes(size)} at {repo.commit[:12]}", err=True)
        for pin in (p for p in pins if p.repo == repo_id):
            click.echo(f"    and at the catalog's pinned revision {pin.revision[:12]} for {pin.entry} "
                       f"({', '.join(pin.files)}: sha256 matches the catalog pin)", err=True)
    access = "API key required: clients set HF_TOKEN=KEY" if api_key else "no API key: this machine only"
    click.echo(f"fmgguf mirror serving {source} on {server.endpoint} (read-only; {access})\n"
               f"  on each client: HF_ENDPOINT={server.endpoint} fmgguf pull ID", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
