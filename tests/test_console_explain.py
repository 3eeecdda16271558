"""The console's explanation views in headless Chromium against a real `luodi serve` (live_server): an uploaded
image explained as a heat map over it, a recording as a bar strip over time, a JSON record's heat map.

Skips cleanly when chromium or playwright is absent (`make browser-deps`). Screenshots of failed tests go to
test-artifacts/.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("LUODI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SR = 8000

IMAGE_APP = {
    "name": "console-digits",
    "task": "image-classification",
    "data": {"format": "sklearn:digits", "split": {"valid": 0.25, "seed": 0}},
    "model": {"type": "cnn", "options": {"width": 8}},
    "train": {"epochs": 3, "lr": 0.01, "batch_size": 32},
}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found at {CHROMIUM}: install it with `make browser-deps` or set LUODI_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, live_server, request):
    """A fresh console page with the live server's API key stored; uncaught page errors fail the test."""
    context = browser.new_context(base_url=live_server.url)
    context.add_init_script(f"if (window === window.top) localStorage.setItem('luodi.apiKey', {live_server.key!r})")
    context.set_default_timeout(60_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    failed_before = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failed_before:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the console: {errors}"


def trained(cfg: dict) -> None:
    """Train `cfg` in the server's LUODI_HOME unless it is there already."""
    from luodi import api

    try:
        api.load_predictor(cfg["name"])
    except Exception:  # noqa: BLE001 - not trained yet in this home
        api.train(cfg, progress=False)


def open_app(page, name: str) -> None:
    page.goto("/#apps")
    page.wait_for_selector(f"#apps-table tr[data-app='{name}']").click()
    page.wait_for_selector("#app-files")


def colored_pixels(page, selector: str) -> dict[str, int]:
    """How many of the canvas's pixels lean red (towards) and blue (against)."""
    return page.eval_on_selector(
        selector,
        """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let red = 0, blue = 0;
                 for (let i = 0; i < d.length; i += 4) {
                   if (d[i] > d[i + 2] + 30) red++; if (d[i + 2] > d[i] + 30) blue++; }
                 return {red, blue}; }""",
    )


def test_uploaded_image_is_explained_as_a_heat_map_over_it(page, live_server, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    trained(IMAGE_APP)
    img = load_digits().images[-1] / 16.0
    png = tmp_path / "digit.png"
    Image.fromarray((img * 255).astype(np.uint8)).resize((64, 64), Image.NEAREST).save(png)
    open_app(page, "console-digits")
    page.set_input_files("#app-files", str(png))
    page.check("#app-explain")
    page.click("#app-predict-files")
    row = page.wait_for_selector("#app-file-predictions tbody tr")
    assert "digit.png" in row.inner_text() and "block" in row.inner_text()  # the top blocks, in words
    canvas = page.wait_for_selector("#app-file-predictions canvas.explain-heat[data-drawn='image']")
    assert canvas.get_attribute("data-cells") == "8x8"  # an 8x8 digit keeps its own pixels
    box = canvas.bounding_box()
    assert box["width"] > 100 and box["height"] > 100
    colors = colored_pixels(page, "#app-file-predictions canvas.explain-heat")
    assert colors["red"] > 0 and colors["red"] + colors["blue"] > 500  # attributions drawn over the image
    # the JSON form with "explain" ticked draws the same grid above the answer
    page.fill("#app-input", '{"image": ' + str(img.round(3).tolist()) + "}")
    page.click("#app-predict")
    page.wait_for_selector("#app-output canvas.explain-heat[data-drawn='image']")  # the request's pixels
    assert '"explanation"' in page.inner_text("#app-prediction")


def test_uploaded_recording_is_explained_as_a_strip_over_time(page, live_server, tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "tones"
    root.mkdir()

    def word(label: int) -> np.ndarray:
        t = np.arange(int(SR * 0.4)) / SR
        x = np.sin(2 * np.pi * (300 + 200 * label) * t) * np.hanning(len(t)) * rng.uniform(0.3, 0.8)
        x = np.concatenate([np.zeros(2000), x, np.zeros(1600)]) + rng.normal(0, 0.01, len(t) + 3600)
        return (x * 32767).astype(np.int16)

    for speaker in ("ann", "bob"):
        for label in range(2):
            for i in range(6):
                wavfile.write(root / f"{label}_{speaker}_{i}.wav", SR, word(label))
    trained(
        {
            "name": "console-tones",
            "task": "speech-recognition",
            "data": {"path": str(root), "format": "wav-dir", "split": {"speaker": "bob"}},
            "model": {"type": "cnn", "options": {"n_mels": 16, "hop_ms": 16, "frames": 40, "trim_db": 20, "width": 4}},
            "train": {"epochs": 2, "batch_size": 8},
        }
    )
    wav = tmp_path / "one.wav"
    buf = io.BytesIO()
    wavfile.write(buf, SR, word(1))
    wav.write_bytes(buf.getvalue())
    open_app(page, "console-tones")
    page.set_input_files("#app-files", str(wav))
    page.check("#app-explain")
    page.click("#app-predict-files")
    canvas = page.wait_for_selector("#app-file-predictions canvas.explain-strip[data-drawn='frames']")
    assert 3 <= int(canvas.get_attribute("data-frames")) <= 40
    caption = page.inner_text("#app-file-predictions figcaption")
    assert " s … " in caption and "top:" in caption  # the time axis and the top segments
    colors = colored_pixels(page, "#app-file-predictions canvas.explain-strip")
    assert colors["red"] + colors["blue"] > 50
