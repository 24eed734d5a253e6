"""`fmgguf serve`: the bind rule, the banner, and a bad port — without loading any model."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli
from fmgguf.errors import ConfigError
from fmgguf.server.runner import banner, bind_socket, check_bind, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "not-a-host.invalid"])
def test_non_loopback_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_non_loopback_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="without an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "a-long-enough-key")
    check_bind("127.0.0.1", None)
    with pytest.raises(ConfigError, match="shorter than 8"):
        check_bind("0.0.0.0", "short")


def test_banner_says_whether_a_key_is_needed() -> None:
    assert "API key required" in banner("0.0.0.0", 8000, "k" * 10)
    assert "this machine only; no API key" in banner("127.0.0.1", 8000, None)
    assert "http://[::1]:8000/models" in banner("::1", 8000, None)


def test_cli_refuses_non_loopback_without_key_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to listen on 0.0.0.0 without an API key"), proc.stderr
    assert "--api-key" in lines[0]


def test_port_in_use_is_a_clear_error() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()


def test_serve_help_lists_options() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for opt in ("--host", "--port", "--api-key", "--model"):
        assert opt in result.output
