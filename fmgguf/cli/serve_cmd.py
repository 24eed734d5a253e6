"""`fmgguf serve`: the REST API, the OpenAI-compatible API and the /models page in one process."""

from __future__ import annotations

import click

from fmgguf.cli._common import AppContext, pass_app, rpc_option, speculative_option, threads_option


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --api-key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 = any free port; the banner says which).")
@click.option("--api-key", default=None, metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on /api and /v1 (needed off loopback).")
@click.option("--model", default=None, metavar="ID",
              help="Load this model before serving: a catalog id, ID:QUANT, or a local .gguf file.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="uvicorn's log level.")
@rpc_option
@threads_option
@speculative_option
@pass_app
def serve_cmd(app: AppContext, host: str, port: int, api_key: str | None, model: str | None, log_level: str) -> None:
    """Serve the model API, the OpenAI-compatible API (/v1) and the /models page."""
    from fmgguf.server.runner import check_bind

    check_bind(host, api_key)  # before anything slow: a refused bind is one line, at once
    from fmgguf.server.runner import serve

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:  # fastapi/uvicorn are the optional `server` extra
        from fmgguf.errors import ConfigError

        raise ConfigError(f"the server needs the {exc.name} package", fix="pip install 'fmgguf[server]'") from None
    serve(app.settings, host=host, port=port, api_key=api_key, model=model,
          echo=lambda text: click.echo(text, err=True), log_level=log_level)
