"""The web console end to end: headless Chromium (Playwright) against a real `luodi serve` (live_server).

Skips cleanly when chromium is absent (`make browser-deps` installs it). Screenshots of failed tests go to
test-artifacts/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("LUODI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 30_000  # page actions
GENERATION_MS = 300_000  # generation on a loaded, shared 2-core machine can be very slow


def _route_exists(app, path: str) -> bool:
    return path in app.openapi()["paths"]  # routers are included lazily: ask the schema, not app.routes


def need_route(live_server, path: str) -> None:
    if not _route_exists(live_server.app, path):
        pytest.skip(f"this server has no {path} route yet (its area is not installed)")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not found at {CHROMIUM}: install it with `make browser-deps` "
                    "(apt-get install chromium) or set LUODI_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, live_server, request):
    """A fresh page on the console with the live server's API key already stored (as a user would)."""
    context = browser.new_context(base_url=live_server.url)
    context.add_init_script(f"localStorage.setItem('luodi.apiKey', {live_server.key!r})")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    page_errors: list[str] = []
    pg.on("pageerror", lambda e: page_errors.append(str(e)))
    failed_before = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failed_before:  # the test failed: keep what the user saw
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not page_errors, f"uncaught errors in the console: {page_errors}"


def test_console_page_and_static_files_are_served_without_a_key(live_server):
    r = httpx.get(live_server.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/static/app.js" in r.text and "/static/style.css" in r.text
    js = httpx.get(live_server.url + "/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(live_server.url + "/static/style.css").headers["content-type"].startswith("text/css")
    # nothing outside luodi/web is reachable, and a missing file is a clear 404
    for bad in ("/static/../console.py", "/static/%2e%2e/console.py", "/static/nope.js"):
        r = httpx.get(live_server.url + bad)
        assert r.status_code == 404, bad
    # everything is local: no CDN or remote asset in the page
    assert not re.search(r"(src|href)=\"https?://", r.text + httpx.get(live_server.url + "/").text)


def test_api_key_is_entered_once_and_kept(browser, live_server):
    need_route(live_server, "/v1/models")
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    try:
        pg.goto("/")
        status = pg.locator("#auth-status")
        if live_server.app.state.luodi.settings.auth.lower() != "off":
            pg.wait_for_function("document.querySelector('#auth-status').dataset.state === 'error'")
            assert "key needed" in status.inner_text()
            assert "requires an API key" in pg.locator("#banner").inner_text()
        pg.fill("#auth-key", live_server.key)
        pg.click("#auth-save")
        pg.wait_for_function("document.querySelector('#auth-status').dataset.state === 'ok'")
        assert pg.evaluate("localStorage.getItem('luodi.apiKey')") == live_server.key
        pg.reload()  # kept across visits
        pg.wait_for_function("document.querySelector('#auth-status').dataset.state === 'ok'")
        assert pg.input_value("#auth-key") == live_server.key
    finally:
        context.close()


def test_chat_streams_a_reply(page, live_server):
    need_route(live_server, "/v1/chat/completions")
    page.goto("/#chat")
    page.wait_for_selector("#chat-model option", state="attached")
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "8")
    page.fill("#chat-input", "Name three colors.")
    page.click("#chat-send")
    reply = page.locator(".msg.assistant").last
    page.wait_for_selector(".msg.assistant[data-done='1']", timeout=GENERATION_MS)
    text = reply.locator(".text").inner_text().strip()
    assert text, "the assistant's reply is empty"
    assert int(reply.get_attribute("data-chunks")) > 1, "the reply arrived in one piece, not streamed"
    assert "completion tokens" in page.inner_text("#chat-stats")
    # a second turn carries the history and streams too
    page.fill("#chat-input", "And one more?")
    page.press("#chat-input", "Enter")  # Enter sends
    page.wait_for_function("document.querySelectorAll(\".msg.assistant[data-done='1']\").length === 2",
                           timeout=GENERATION_MS)
    assert page.locator(".msg.user").count() == 2


def test_chat_shows_the_servers_error(page, live_server):
    need_route(live_server, "/v1/chat/completions")
    page.goto("/#chat")
    page.wait_for_selector("#chat-model option", state="attached")
    page.fill("#chat-max-tokens", "99999999")  # beyond the context window: the server answers 400
    page.fill("#chat-input", "hello")
    page.click("#chat-send")
    err = page.wait_for_selector(".msg.assistant.error .error")
    assert "max_tokens" in err.inner_text() or "context" in err.inner_text()
    assert "HTTP 400" in err.inner_text()


def test_keys_create_then_revoke(page, live_server):
    need_route(live_server, "/v1/keys")
    page.on("dialog", lambda d: d.accept())
    page.goto("/#keys")
    page.wait_for_selector("#keys-table table")
    page.fill("#key-name", "console-test-key")
    page.click("#key-create")
    secret = page.wait_for_selector("#key-secret").inner_text().strip()
    assert secret.startswith("ld-")
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(live_server.base_url + "/models", headers=headers).status_code == 200
    row = page.locator("tr", has_text="console-test-key")
    assert "active" in row.inner_text()
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("tr:has-text('console-test-key') .pill.err")
    assert httpx.get(live_server.base_url + "/models", headers=headers).status_code == 401
    # a bad request shows the server's message (empty name)
    page.evaluate("document.querySelector('#key-name').required = false")
    page.fill("#key-name", "  ")
    page.click("#key-create")
    assert "name" in page.wait_for_selector("#key-created .error").inner_text()
