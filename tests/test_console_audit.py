"""The console's audit log view in headless Chromium against a real `luodi serve` (live_server): an admin key sees
the view and the row of a call just made; a user key sees neither the menu entry nor the rows.

Skips cleanly when chromium or playwright is absent (`make browser-deps`). Screenshots of failed tests go to
test-artifacts/.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("LUODI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 30_000


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


def _page(browser, live_server, key: str, errors: list[str]):
    context = browser.new_context(base_url=live_server.url)
    context.add_init_script(f"if (window === window.top) localStorage.setItem('luodi.apiKey', {key!r})")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    return context, pg


@pytest.fixture
def open_console(browser, live_server, request):
    """open_console(key) -> a page on the console with `key` stored; screenshots kept when the test fails."""
    opened: list = []
    errors: list[str] = []
    failed_before = request.session.testsfailed

    def _open(key: str):
        context, pg = _page(browser, live_server, key, errors)
        opened.append((context, pg))
        return pg

    yield _open
    for i, (context, pg) in enumerate(opened):
        if request.session.testsfailed > failed_before:
            ARTIFACTS.mkdir(exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{i}.png"), full_page=True)
        context.close()
    assert not errors, f"uncaught errors in the console: {errors}"


def test_admin_sees_the_audit_log_with_a_call_just_made(open_console, live_server):
    from luodi.keys import create_key

    caller = create_key("audit-console-caller")
    r = httpx.get(f"{live_server.base_url}/kb", headers={"Authorization": f"Bearer {caller.key}"})
    assert r.status_code == 200, r.text
    page = open_console(live_server.key)  # the live server's key is an admin key
    page.goto("/#chat")
    page.wait_for_selector("#nav-audit", state="visible")
    page.click("#nav-audit")
    row = page.locator("#audit-table tr[data-route='/v1/kb']", has_text="audit-console-caller")
    row.first.wait_for()
    cells = row.first.locator("td").all_inner_texts()
    assert cells[1] == f"audit-console-caller ({caller.prefix}…)"
    assert cells[2:4] == ["GET", "/v1/kb"] and cells[5] == "200" and float(cells[6]) >= 0
    # newest first: the ids fall down the table
    ids = [int(x) for x in page.locator("#audit-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.auditId)")]
    assert ids == sorted(ids, reverse=True)
    # "Newer rows" adds calls made since, on top
    httpx.get(f"{live_server.base_url}/tickets", headers={"Authorization": f"Bearer {caller.key}"})
    page.click("#audit-newer")
    page.locator("#audit-table tbody tr").first.wait_for()
    page.wait_for_function(
        "[...document.querySelectorAll('#audit-table tbody tr')].some(r => r.dataset.route === '/v1/tickets')")
    # one key's calls only
    page.fill("#audit-key", str(caller.id))
    page.click("#audit-refresh")
    page.wait_for_function("[...document.querySelectorAll('#audit-table tbody tr')].length === 2")
    assert set(page.locator("#audit-table tbody td:nth-child(2)").all_inner_texts()) == {
        f"audit-console-caller ({caller.prefix}…)"}


def test_user_key_does_not_see_the_audit_log(open_console, live_server):
    from luodi.keys import create_key

    if live_server.app.state.luodi.settings.auth.lower() == "off":
        pytest.skip("auth is off: every caller is an admin")
    page = open_console(create_key("audit-console-user").key)
    page.goto("/#chat")
    page.wait_for_function("document.body.dataset.admin === 'false'")
    assert page.locator("#nav-audit").is_hidden()
    page.goto("/#audit")  # typed by hand: the view says it is for admins and shows no rows
    page.wait_for_selector("#audit-admin-only")
    assert page.locator("#audit-table tr").count() == 0


def test_keys_panel_creates_a_scoped_key(open_console, live_server):
    if live_server.app.state.luodi.settings.auth.lower() == "off":
        pytest.skip("auth is off: keys are not checked")
    page = open_console(live_server.key)
    page.goto("/#keys")
    page.wait_for_selector("#keys-table table")
    page.fill("#key-name", "console-scoped-key")
    page.click("form details summary")
    page.fill("#key-apps", "only-this-app")
    page.fill("#key-routes", "chat")
    page.click("#key-create")
    secret = page.wait_for_selector("#key-secret").inner_text().strip()
    headers = {"Authorization": f"Bearer {secret}"}
    r = httpx.get(f"{live_server.base_url}/kb", headers=headers)
    assert r.status_code == 403 and "only-this-app" in r.json()["error"]["message"]
    row = page.locator("tr", has_text="console-scoped-key")
    assert "apps only-this-app · routes chat" in row.inner_text()
    page.fill("#key-name", "console-bad-scope")
    assert page.locator("#key-routes").is_visible()  # the scope fields stay open, emptied
    page.fill("#key-routes", "everything")
    page.click("#key-create")
    assert "field 'routes'" in page.wait_for_selector("#key-created .error").inner_text()


def test_admin_sees_the_security_settings(open_console, live_server):
    from luodi import rag
    from luodi.keys import create_key

    pytest.importorskip("presidio_analyzer", reason="the privacy extra is not installed")
    rag.create_kb("console-pii-kb", pii={"ner_app": None, "operator": "mask"})
    r = httpx.get(f"{live_server.base_url}/security", headers=live_server.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["server"]["guard_pii"] is None and body["server"]["auth"] == live_server.app.state.luodi.settings.auth
    assert next(k for k in body["kbs"] if k["kb"] == "console-pii-kb")["pii"]["operator"] == "mask"
    if live_server.app.state.luodi.settings.auth.lower() != "off":
        user = create_key("security-console-user").key
        r = httpx.get(f"{live_server.base_url}/security", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 403
    page = open_console(live_server.key)
    page.goto("/#audit")
    cell = page.locator("#security-settings tr[data-setting='knowledge base console-pii-kb: pii'] td").nth(1)
    cell.wait_for()
    assert cell.inner_text().startswith("on: ") and "operator=mask" in cell.inner_text()
    off = page.locator("#security-settings tr[data-setting='guard_pii'] td").nth(1).inner_text()
    assert off == "off"
