"""The root `fmgguf` command: lazy sub-command loading and the one error → exit-code handler.

Sub-commands live in their own modules and are imported only when used, so `fmgguf list`
never imports llama_cpp or huggingface_hub.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from fmgguf import __version__

#: command name -> "module:attribute" (each module owns one concern)
COMMANDS: dict[str, str] = {
    # catalog
    "list": "fmgguf.cli.catalog_cmds:list_cmd",
    "search": "fmgguf.cli.catalog_cmds:search_cmd",
    "info": "fmgguf.cli.catalog_cmds:info_cmd",
    "catalog": "fmgguf.cli.catalog_cmds:catalog_group",
    # downloads and the local store
    "pull": "fmgguf.cli.store_cmds:pull_cmd",
    "ls": "fmgguf.cli.store_cmds:ls_cmd",
    "verify": "fmgguf.cli.store_cmds:verify_cmd",
    "rm": "fmgguf.cli.store_cmds:rm_cmd",
    "du": "fmgguf.cli.store_cmds:du_cmd",
    "export": "fmgguf.cli.store_cmds:export_cmd",
    "import": "fmgguf.cli.store_cmds:import_cmd",
    "import-gguf": "fmgguf.cli.store_cmds:import_gguf_cmd",
    # runtime
    "inspect": "fmgguf.cli.runtime_fit_cmds:inspect_cmd",
    "fit": "fmgguf.cli.runtime_fit_cmds:fit_cmd",
    "doctor": "fmgguf.cli.runtime_fit_cmds:doctor_cmd",
    "run": "fmgguf.cli.runtime_cmds:run_cmd",
    "chat": "fmgguf.cli.runtime_cmds:chat_cmd",
    "fim": "fmgguf.cli.runtime_cmds:fim_cmd",
    # benchmarks
    "bench": "fmgguf.cli.bench_cmds:bench_cmd",
    "compare": "fmgguf.cli.bench_cmds:compare_cmd",
    # server and tools
    "serve": "fmgguf.cli.serve_cmd:serve_cmd",
    "mirror": "fmgguf.cli.mirror_cmd:mirror_group",
    "worker": "fmgguf.cli.worker_cmd:worker_cmd",
    "connect": "fmgguf.cli.connect_cmd:connect_cmd",
    "convert": "fmgguf.cli.convert_cmd:convert_cmd",
    "demo": "fmgguf.cli.demo_cmd:demo_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _importable(COMMANDS[name]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _importable(target):
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


def _importable(target: str) -> bool:
    module = target.partition(":")[0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "-V", "--version", prog_name="fmgguf")
@click.option("--offline", is_flag=True, help="Touch no network (same as HF_HUB_OFFLINE=1).")
@click.option("-v", "--verbose", count=True,
              help="More log output; -v also shows llama.cpp's log (always kept in FMGGUF_HOME/logs/llama.cpp.log), "
                   "-vv its debug lines.")
@click.pass_context
def cli(ctx: click.Context, offline: bool, verbose: int) -> None:
    """fmgguf: open code models on your own machine, verified, fitted to your GPU, benchmarked."""
    from fmgguf.cli._common import AppContext

    ctx.obj = AppContext(offline=offline, verbose=verbose)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every fmgguf error into one line and an exit code."""
    from fmgguf.errors import FmggufError, exit_code_for

    try:
        rv = cli.main(args=argv, prog_name="fmgguf", standalone_mode=False)
    except FmggufError as exc:
        if "--json" in (argv if argv is not None else sys.argv[1:]):
            import json

            click.echo(json.dumps({**exc.to_dict(), "exit_code": exit_code_for(exc)}))
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exit_code_for(exc))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug of ours: still one line, with a way to see more
        import logging
        import os

        logging.getLogger("fmgguf").debug("internal error", exc_info=True)
        if os.environ.get("FMGGUF_TRACEBACK"):
            raise
        click.echo(f"error: internal error {type(exc).__name__}: {exc} — please report it; "
                   "FMGGUF_TRACEBACK=1 shows the traceback", err=True)
        sys.exit(1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


if __name__ == "__main__":
    main()
