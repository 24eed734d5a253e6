"""The /models page in headless Chromium (Debian's package) driven by Playwright: load, filter,
download a tiny model from the loopback mirror and watch progress reach 100%, select it, generate,
compare two models, and work it by keyboard. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "server"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
GEN_QUANT = "F16"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_entries: Any, live_server: Any) -> Iterator[Any]:
    """A live server whose hub is throttled (so progress is visible), with tiny-qwen already downloaded."""
    from fmgguf.server.app import create_app
    from fmgguf.testing.hub_server import HubServer

    with HubServer(tiny_entries[1], throttle=10_000_000) as hub:
        settings = _settings(tmp_path_factory.mktemp("browser"), hub.endpoint, tiny_entries[0])
        app = create_app(settings)
        app.state.fmgguf.downloader.download_model("tiny-qwen", GEN_QUANT)
        with live_server(app) as live:
            yield live
        if app.state.fmgguf.manager_if_built is not None:
            app.state.fmgguf.manager.close()


def _settings(root: Path, endpoint: str, cards: list[dict]) -> Any:
    import os

    import yaml

    from fmgguf.settings import Settings

    root.mkdir(parents=True, exist_ok=True)
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": cards}), encoding="utf-8")
    shared = Path(os.environ.get("FMGGUF_CACHE") or Path.home() / ".cache" / "fmgguf")
    return Settings.load(env={}, home=root / "home", config_file=root / "config.yaml", catalog_file=catalog,
                         hf_endpoint=endpoint, hub_cache=root / "hub", shared_cache=shared, keep_alive=0.0)


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_models_page_end_to_end(browser: Any, site: Any) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(site.url) else external.append(req.url))
    page.goto(site.url + "/models")

    # 1. the catalog loads: built-in models plus the two tiny ones
    page.wait_for_selector("article.model[data-model-id='tiny-llama']")
    total = page.locator("article.model").count()
    assert total >= 22
    assert f"{total} of {total} models" in page.inner_text("#count")
    _shot(page, "01-catalog")

    # 2. filter: family 'tiny', then FIM only
    page.select_option("#family", "tiny")
    assert page.locator("article.model:visible").count() == 2
    page.fill("#q", "llama")
    assert page.locator("article.model:visible").count() == 1
    page.fill("#q", "")
    page.check("#f-local")
    visible = page.locator("article.model:visible")
    assert visible.count() == 1 and visible.get_attribute("data-model-id") == "tiny-qwen"
    page.uncheck("#f-local")
    _shot(page, "02-filtered")

    # 3. download tiny-llama and watch the progress reach 100%
    card = page.locator("article.model[data-model-id='tiny-llama']")
    assert card.locator(".state").inner_text() == "not downloaded"
    card.locator("select.quant").select_option(GEN_QUANT)
    card.locator("button.download").click()
    seen: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = float(card.locator("progress").get_attribute("value") or 0)
        if card.locator(".progress-box").is_visible():
            seen.append(value)
        if "100%" in card.locator(".progress-text").inner_text() and card.locator(".state").inner_text() == "ready":
            break
        if 20 < value < 80 and not (ARTIFACTS / "03-downloading.png").exists():
            _shot(page, "03-downloading")
        time.sleep(0.1)
    assert "100%" in card.locator(".progress-text").inner_text()
    assert any(0 < v < 100 for v in seen), f"no intermediate progress seen: {seen[:20]}"
    assert card.locator(".state").inner_text() == "ready"
    assert "Downloaded and verified" in card.locator(".note").inner_text()
    _shot(page, "04-downloaded")

    # 4. select it: the card and the status bar say loaded
    card.locator("button.select").click()
    page.wait_for_function("document.querySelector(\"article[data-model-id='tiny-llama'] .state\").dataset.s === 'loaded'",
                           timeout=60000)
    page.wait_for_function("document.querySelector('#status').dataset.loaded === 'tiny-llama'", timeout=10000)
    assert "Loaded: tiny-llama" in page.inner_text("#status")
    _shot(page, "05-selected")

    # 5. generate in the playground: text streams in, then the stats line
    page.fill("#prompt", "int main() {")
    page.fill("#max-tokens", "24")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#gen-stats').textContent.includes('tok/s')", timeout=60000)
    assert page.inner_text("#output").strip()
    assert "tokens" in page.inner_text("#gen-stats")
    page.locator("#playground").scroll_into_view_if_needed()
    _shot(page, "06-generated")

    # 6. compare the two tiny models side by side
    page.locator("article.model[data-model-id='tiny-qwen'] input.compare").check()
    card.locator("input.compare").check()
    page.wait_for_selector("#compare-table table")
    heads = page.locator("#compare-table thead th").all_inner_texts()
    assert len(heads) == 3 and any("qwen2" in h for h in heads) and any("llama" in h for h in heads)
    assert "Parameters" in page.inner_text("#compare-table")
    page.locator("#compare").scroll_into_view_if_needed()
    _shot(page, "07-compare")

    # 7. keyboard: '/' jumps to search, Tab walks into the controls
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "family"

    assert not errors, errors
    assert not external, f"the page fetched something off this server: {external}"
    page.close()


def test_page_asks_for_the_api_key(browser: Any, tmp_path: Path, tiny_entries: Any, live_server: Any) -> None:
    from fmgguf.server.app import create_app

    key = "browser-key-123"
    app = create_app(_settings(tmp_path / "auth", "http://127.0.0.1:9", tiny_entries[0]), api_key=key)
    with live_server(app) as live:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(live.url + "/models")
        page.wait_for_selector("#auth:not([hidden])")
        assert page.evaluate("document.activeElement.id") == "api-key"
        page.keyboard.type(key)
        page.keyboard.press("Enter")
        page.wait_for_selector("article.model[data-model-id='tiny-qwen']")
        assert page.locator("#auth").is_hidden()
        _shot(page, "08-api-key")
        page.close()
