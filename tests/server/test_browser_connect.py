"""The /models page's "Connect your editor" panel in headless Chromium (Debian's package, Playwright):
it shows the FIM and chat models the server picked, one tab per editor, and settings that parse."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "server"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_connect_panel(browser: Any, served: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(served.url + "/models")
    roles = page.locator("#connect-roles")
    roles.get_by_text("autocomplete (FIM): tiny-qwen:F16").wait_for(timeout=20_000)
    assert "chat: tiny-llama:F16" in roles.inner_text()
    tabs = [t.inner_text() for t in page.locator("#connect-tabs button").all()]
    assert tabs == ["continue", "llama.vscode", "zed", "copilot", "tabby"]
    text = page.locator("#connect-text")
    cont = yaml.safe_load(text.inner_text())
    assert {m["model"] for m in cont["models"]} == {"tiny-qwen:F16", "tiny-llama:F16"}
    page.locator("#connect-tabs button", has_text="zed").click()
    zed = json.loads(text.inner_text())
    assert zed["language_models"]["ollama"]["api_url"] == served.url
    assert page.locator("#connect-tabs button", has_text="zed").get_attribute("aria-selected") == "true"
    assert "fmgguf connect zed" in page.locator("#connect-cmd").inner_text()
    page.locator("#connect-tabs button", has_text="tabby").focus()
    page.keyboard.press("Enter")  # by keyboard too
    assert 'endpoint = "' + served.url + '"' in text.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#connect").screenshot(path=str(ARTIFACTS / "connect-panel.png"))
    assert not errors, errors
    page.close()
