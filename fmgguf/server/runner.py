"""Running the app with uvicorn: the bind-address rule, the start banner, an optional model to preload."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from fmgguf.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fmgguf.settings import Settings

log = logging.getLogger("fmgguf.server")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; every other address (0.0.0.0, ::, a LAN IP) is not."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it resolves to is
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the server beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"refusing to listen on {host} without an API key: anyone on the network could use it",
                          fix="add --api-key KEY (clients send 'Authorization: Bearer KEY'), or bind 127.0.0.1")
    if api_key is not None and len(api_key) < 8:
        raise ConfigError("the API key is shorter than 8 characters", fix="use a longer --api-key")


def banner(host: str, port: int, api_key: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    if api_key:
        access = "API key required: clients send 'Authorization: Bearer KEY'"
        where = "this machine only" if is_loopback(host) else "reachable from the network"
    else:
        access, where = "no API key", "loopback: this machine only"
    return (f"fmgguf serving on {url} ({where}; {access})\n"
            f"  models page: {url}/models   OpenAI-compatible API: {url}/v1   OpenAPI schema: {url}/openapi.json")


def preload(app: "FastAPI", model: str) -> dict:
    """Load ``model`` (a catalog id, ``id:QUANT`` or a local .gguf path) before serving."""
    from pathlib import Path

    state = app.state.fmgguf
    path = Path(model).expanduser()
    if model.endswith(".gguf") and path.is_file():
        state.manager.load_file(path)
    else:
        card, quant = state.catalog.resolve(model)
        state.manager.switch_model(card.id, quant)
    return state.current() or {}


def serve(settings: "Settings", host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model: str | None = None, echo: Callable[[str], None] | None = None, log_level: str = "warning") -> None:
    """Check the bind rule, build the app, preload ``model``, then serve until interrupted."""
    import uvicorn

    from fmgguf.server.app import create_app

    check_bind(host, api_key)
    say = echo or (lambda text: print(text, file=sys.stderr, flush=True))
    app = create_app(settings, api_key=api_key)
    if model:
        info = preload(app, model)
        say(f"loaded {info.get('id', model)} {info.get('quant') or ''}".rstrip())
    sock = bind_socket(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(config)
    say(banner(host, port, api_key))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = any free port), or one clear error when the address is taken."""
    name = host.strip("[]")
    sock: socket.socket | None = None
    try:
        family = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((name, port))
        sock.listen(2048)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          fix="pick another --port, or stop what uses it") from None
    sock.set_inheritable(True)
    return sock
