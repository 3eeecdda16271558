"""The web console end to end: headless Chromium (Playwright) against a real `luodi serve` (live_server).

Skips cleanly when chromium is absent (`make browser-deps` installs it). Screenshots of failed tests go to
test-artifacts/.
"""

from __future__ import annotations

import os
import re
import socket
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
    # every frame runs init scripts: skip the sandboxed report frame, which has no storage
    context.add_init_script(
        f"if (window === window.top) localStorage.setItem('luodi.apiKey', {live_server.key!r})")
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


def test_every_console_module_is_served_as_javascript_and_runs_cleanly(page, live_server):
    """The page loads app.js as an ES module; browsers refuse a module served without a JavaScript type."""
    from luodi.serve.console import WEB_DIR

    scripts: dict[str, str] = {}
    console_errors: list[str] = []
    page.on("response", lambda r: scripts.__setitem__(r.url.rsplit("/", 1)[-1], r.headers["content-type"])
            if r.url.endswith(".js") else None)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto("/#keys")
    page.wait_for_function("document.querySelector('#auth-status').dataset.state === 'ok'")
    page.wait_for_selector("#keys-table table, #keys-table .empty")
    assert page.locator("script[type=module][src='/static/app.js']").count() == 1
    assert set(scripts) == {p.name for p in WEB_DIR.glob("*.js")}  # every module is used, none is missing
    assert all(ctype.startswith("text/javascript") for ctype in scripts.values()), scripts
    assert not console_errors


def test_api_key_is_entered_once_and_kept(browser, live_server):
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


def test_chat_stop_cancels_the_generation(page, live_server):
    page.goto("/#chat")
    page.wait_for_selector("#chat-model option", state="attached")
    page.fill("#chat-max-tokens", "400")
    page.fill("#chat-input", "Write a long story about a lighthouse keeper.")
    page.click("#chat-send")
    page.wait_for_function("Number(document.querySelector('.msg.assistant')?.dataset.chunks) >= 1",
                           timeout=GENERATION_MS)
    page.click("#chat-stop")
    page.wait_for_selector(".msg.assistant[data-done='1']")
    assert page.inner_text("#chat-stats") == "stopped"
    assert page.is_enabled("#chat-send") and not page.is_enabled("#chat-stop")
    engine = live_server.app.state.luodi.engine
    if engine is not None:  # the server cancelled the sequence when the browser hung up
        for _ in range(100):
            if engine.stats()["running"] == 0:
                break
            page.wait_for_timeout(200)
        assert engine.stats()["running"] == 0


def test_chat_shows_the_servers_error(page, live_server):
    page.goto("/#chat")
    page.wait_for_selector("#chat-model option", state="attached")
    page.fill("#chat-max-tokens", "99999999")  # beyond the context window: the server answers 400
    page.fill("#chat-input", "hello")
    page.click("#chat-send")
    err = page.wait_for_selector(".msg.assistant.error .error")
    assert "max_tokens" in err.inner_text() or "context" in err.inner_text()
    assert "HTTP 400" in err.inner_text()


def test_keys_create_then_revoke(page, live_server):
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


KB_DOC = """Zorblax customer handbook.

The Zorblax home battery comes with a warranty of seven years from the date of installation.
Owners can reach the Zorblax support desk every weekday between 8 am and 6 pm.
Firmware updates are installed automatically at night when the battery is idle.
"""


def test_kb_create_upload_and_ask_with_citation(page, live_server, tmp_path):
    page.on("dialog", lambda d: d.accept())
    doc = tmp_path / "zorblax-handbook.txt"
    doc.write_text(KB_DOC, encoding="utf-8")
    page.goto("/#kb")
    page.wait_for_selector("#kb-list")
    page.fill("#kb-name", "console-kb")
    page.click("#kb-create")
    page.wait_for_selector("#kb-list li.selected[data-kb='console-kb']")
    page.set_input_files("#kb-files", str(doc))
    page.click("#kb-upload")
    assert "added 1" in page.wait_for_selector("#kb-upload-result", timeout=GENERATION_MS).inner_text()
    row = page.wait_for_selector("#kb-docs tr[data-source$='zorblax-handbook.txt']")
    assert "indexed" in row.inner_text()
    # uploading the same file again is recognised as unchanged
    page.set_input_files("#kb-files", str(doc))
    page.click("#kb-upload")
    page.wait_for_function("document.querySelector('#kb-upload-result')?.innerText.includes('unchanged')")
    page.wait_for_selector("#kb-docs tbody tr")
    assert page.locator("#kb-docs tbody tr").count() == 1

    page.fill("#kb-question", "How long is the warranty of the Zorblax home battery?")
    page.fill("#kb-max-tokens", "16")
    page.click("#kb-ask")
    answer = page.wait_for_selector("#kb-answer-text[data-done='1']", timeout=GENERATION_MS)
    assert answer.get_attribute("data-found") == "true", answer.inner_text()
    assert answer.inner_text().strip()
    citation = page.wait_for_selector("#kb-citations .citation").inner_text()
    assert "zorblax-handbook.txt" in citation and "seven years" in citation

    # an unrelated question is answered "not found", without inventing anything
    page.fill("#kb-question", "Who painted the Mona Lisa?")
    page.click("#kb-ask")
    answer = page.wait_for_selector("#kb-answer-text[data-done='1']", timeout=GENERATION_MS)
    assert answer.get_attribute("data-found") == "false"
    assert "not found" in answer.inner_text().lower()

    page.click("#kb-delete")
    page.wait_for_selector("#kb-list li[data-kb='console-kb']", state="detached")


def test_kb_bad_input_shows_the_servers_message(page, live_server):
    page.goto("/#kb")
    page.wait_for_selector("#kb-list")
    page.fill("#kb-name", "Not A Valid Name!")
    page.click("#kb-create")
    err = page.wait_for_selector("#panel .error").inner_text()
    assert "name" in err and "HTTP 4" in err


TINY_APP = """
name: console-diagnosis
task: tabular
description: Breast-cancer diagnosis, a small model for the console tests.
data:
  format: sklearn:breast_cancer
  columns: {label: target, positive: malignant}
  split: {valid: 0.25, seed: 0, stratify: true}
model:
  type: lightgbm
  options: {n_estimators: 40, num_leaves: 8}
train: {seed: 0}
evaluate:
  metrics: [roc_auc, accuracy]
"""


@pytest.fixture(scope="module")
def trained_app(live_server, tmp_path_factory):
    """A small tabular app trained in the server's LUODI_HOME (the same Python API `luodi train` uses)."""
    from luodi import api

    path = tmp_path_factory.mktemp("apps") / "console-diagnosis.yaml"
    path.write_text(TINY_APP, encoding="utf-8")
    try:
        return api.load_predictor("console-diagnosis").run
    except Exception:  # noqa: BLE001 - not trained yet in this home
        return api.train(path, progress=False)


def test_apps_list_runs_report_and_predict(page, live_server, trained_app, tmp_path):
    page.goto("/#apps")
    row = page.wait_for_selector("#apps-table tr[data-app='console-diagnosis']")
    assert "tabular" in row.inner_text() and "roc_auc" in row.inner_text()
    row.click()
    run = page.wait_for_selector(f"#app-runs tr[data-version='{trained_app.version}']")
    assert "done" in run.inner_text()
    run.query_selector("button").click()  # the run's HTML report, fetched with the key
    frame = page.wait_for_selector("#app-report-frame").content_frame()
    frame.wait_for_selector("body")
    assert "roc_auc" in frame.inner_text("body").lower() or "roc auc" in frame.inner_text("body").lower()
    # the predict form is pre-filled with an example record of the app's input schema
    page.click("#app-predict")
    pred = page.wait_for_selector("#app-prediction").inner_text()
    assert '"label"' in pred and '"version"' in pred
    # a malformed record gets the server's 422 naming the field
    page.fill("#app-input", '{"mean radius": "not a number"}')
    page.click("#app-predict")
    err = page.wait_for_selector("#app-output .error").inner_text()
    assert "mean radius" in err and "HTTP 422" in err
    # files: a CSV of records uploaded, one row per prediction, with each record's main effects when asked
    from sklearn.datasets import load_breast_cancer

    csv = tmp_path / "patients.csv"
    load_breast_cancer(as_frame=True).data.head(3).to_csv(csv, index=False)
    page.set_input_files("#app-files", str(csv))
    page.check("#app-explain")
    page.click("#app-predict-files")
    rows = page.wait_for_selector("#app-file-predictions").query_selector_all("tbody tr")
    assert len(rows) == 3 and all("patients.csv" in r.inner_text() for r in rows)
    assert all(r.query_selector_all("td")[3].inner_text().strip() for r in rows)  # effects shown


def test_apps_serve_an_earlier_version_and_follow_latest_again(page, live_server, trained_app, tmp_path):
    """The runs table marks the served run; Serve pins an earlier one (admin key), Follow latest unpins."""
    from luodi import api

    path = tmp_path / "console-diagnosis.yaml"
    path.write_text(TINY_APP, encoding="utf-8")
    newer = api.train(path, progress=False)
    page.goto("/#apps")
    page.wait_for_selector("#apps-table tr[data-app='console-diagnosis']").click()
    newest = page.wait_for_selector(f"#app-runs tr[data-version='{newer.version}']")
    assert "served" in newest.inner_text() and "pinned" not in newest.inner_text()
    page.click(f"#app-runs tr[data-version='{trained_app.version}'] button.serve")
    page.wait_for_selector(f"#app-runs tr[data-version='{trained_app.version}'] .served")
    assert "served (pinned)" in page.inner_text(f"#app-runs tr[data-version='{trained_app.version}']")
    row = page.wait_for_selector("#apps-table tr[data-app='console-diagnosis']")
    assert trained_app.version in row.inner_text()  # the apps table shows the version now served
    assert api.load_predictor("console-diagnosis").run.version == trained_app.version
    page.click("#app-follow-latest")
    page.wait_for_selector(f"#app-runs tr[data-version='{newer.version}'] .served")
    assert api.load_predictor("console-diagnosis").run.version == newer.version

def test_apps_runs_table_shows_how_a_version_was_optimized(page, live_server, trained_app, tmp_path):
    """An optimized version (`luodi optimize`) says in the runs table what it was made from, its size and speed."""
    from luodi.apps.optimize import optimize

    path = tmp_path / "console-diagnosis.yaml"
    path.write_text(TINY_APP, encoding="utf-8")
    res = optimize(str(path), "onnx", version=trained_app.version)
    page.goto("/#apps")
    page.wait_for_selector("#apps-table tr[data-app='console-diagnosis']").click()
    cell = page.wait_for_selector(f"#app-runs tr[data-version='{res['run']['version']}'] .optimized").inner_text()
    assert f"onnx from {trained_app.version}" in cell and "MB" in cell and "p50" in cell
    trained = page.inner_text(f"#app-runs tr[data-version='{trained_app.version}']")
    assert "trained" in trained


def test_assistant_hand_off_is_answered_from_the_queue(page, live_server):
    """Customer asks for a human -> ticket in the queue -> a human answers -> the customer's chat shows it."""
    page.goto("/#agent")
    page.click(".tabs button[data-mode='assistant']")
    page.wait_for_selector("#assistant-log .msg.assistant")  # the greeting
    page.fill("#assistant-input", "I want to talk to a human")
    page.click("#assistant-send")
    page.wait_for_selector("#assistant-info[data-action='handoff']", timeout=GENERATION_MS)
    ticket_id = re.search(r"ticket #(\d+)", page.inner_text("#assistant-info")).group(1)
    assert page.locator("#assistant-log .msg.user").last.inner_text().endswith("I want to talk to a human")

    agent_page = page.context.new_page()  # the human agent's console, beside the customer's chat
    agent_page.goto("/#tickets")
    card = agent_page.wait_for_selector(f".ticket[data-ticket-id='{ticket_id}']")
    assert "open" in card.inner_text()
    card.query_selector("summary").click()  # the conversation that led to the hand-off
    agent_page.wait_for_selector(f".ticket[data-ticket-id='{ticket_id}'] .chat-log .msg.user")
    card.query_selector(".ticket-answer").fill("Hello, this is Mia from the bank. How can I help?")
    card.query_selector(".ticket-send").click()
    card_sel = f".ticket[data-ticket-id='{ticket_id}']"
    agent_page.wait_for_selector(card_sel, state="detached")  # it left the open queue
    agent_page.click(".tabs button[data-filter='answered']")
    answered = agent_page.wait_for_selector(card_sel)
    assert "Mia" in answered.inner_text()
    # an empty answer is refused with the server's message
    answered.query_selector(".ticket-send").click()
    assert "answer" in agent_page.wait_for_selector(f"{card_sel} .error").inner_text()

    # the customer's open chat picks the human's answer up by polling
    human = page.wait_for_selector("#assistant-log .msg.human_agent")
    assert "Mia from the bank" in human.inner_text()


def test_agent_run_streams_its_trace(page, live_server):
    page.goto("/#agent")
    page.wait_for_selector("#agent-goal")
    for box in page.query_selector_all("#agent-tools .tool-use"):
        if box.get_attribute("value") != "calculator":
            box.uncheck()
    page.fill("#agent-goal", "What is 17 * 23?")
    page.fill("#agent-max-steps", "1")
    page.fill("#agent-max-seconds", "10")
    page.click("#agent-run")
    page.wait_for_selector("#agent-trace li[data-kind='start']")
    assert "calculator" in page.inner_text("#agent-trace li[data-kind='start']")
    assert page.inner_text("#agent-thread").startswith("thread th_")
    final = page.wait_for_selector("#agent-trace li[data-kind='final']", timeout=GENERATION_MS)
    assert final.inner_text().strip()
    assert page.is_enabled("#agent-run")


@pytest.fixture(scope="module")
def open_server(luodi_home):
    """A second server on the same store with LUODI_AUTH=off (a local demo); its engine loads lazily."""
    import threading
    import time

    import uvicorn

    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    settings = get_settings().model_copy(update={"auth": "off"})
    app = create_app(settings, preload=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


def test_no_key_needed_when_auth_is_off(browser, open_server):
    context = browser.new_context(base_url=open_server)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    try:
        pg.goto("/#keys")
        pg.wait_for_function("document.querySelector('#auth-status').dataset.state === 'ok'")
        assert pg.inner_text("#auth-status") == "no key needed"
        assert pg.is_hidden("#banner")
        pg.wait_for_selector("#keys-table table, #keys-table .empty")  # /v1/* answers without a key
        assert not pg.query_selector("#keys-table .error")
    finally:
        context.close()


def test_an_audited_run_shows_its_audit_page(page, live_server, trained_app):
    from luodi.audit.report import audit

    audit("console-diagnosis", trained_app.version, areas=["explanations"])
    page.goto("/#apps")
    page.wait_for_selector("#apps-table tr[data-app='console-diagnosis']").click()
    run = page.wait_for_selector(f"#app-runs tr[data-version='{trained_app.version}']")
    run.wait_for_selector("button.audit").click()  # the button appears once the run has an audit.html
    frame = page.wait_for_selector("#app-audit-frame").content_frame()
    body = frame.wait_for_selector("body").inner_text()
    assert f"Audit of console-diagnosis {trained_app.version}" in body and "Integrity" in body
