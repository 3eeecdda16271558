"""Explanations of image and speech apps: integrated gradients over pixels (a coarse grid and its top regions)
and over log-mel frames (each frame's effect in seconds, top segments), over the real HTTP routes (explain,
predict?explain=true, uploaded files), with completeness errors, the same 4xx as predict for bad input, and
the audit's speech branch."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from scipy.io import wavfile

from luodi import api
from luodi.errors import BadRequest

SR = 8000
BOUND = 0.05  # completeness error, relative to the logit, at the default 32 steps
ONSET = 0.25  # seconds of silence before each synthetic word


def tone(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 'word' per class (two harmonics whose pitch depends on the label) between silences."""
    t = np.arange(int(SR * 0.4 * rng.uniform(0.8, 1.2))) / SR
    f = 300 + 150 * label
    x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t + rng.uniform(0, 6))
    x = x * rng.uniform(0.3, 0.8) * np.hanning(len(t))
    x = np.concatenate([np.zeros(int(SR * ONSET)), x, np.zeros(int(SR * 0.2))]) + rng.normal(0, 0.01, len(t) + 3600)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    wavfile.write(buf, SR, x)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_app() -> dict:
    torch.set_num_threads(1)
    cfg = {
        "name": "x-media-digits",
        "task": "image-classification",
        "data": {"format": "sklearn:digits", "split": {"valid": 0.25, "seed": 0}},
        "model": {"type": "cnn", "options": {"width": 8, "dropout": 0.1}},
        "train": {"epochs": 3, "lr": 0.01, "batch_size": 32},
    }
    api.train(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def speech_app(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("media-tones")
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob"):
        for label in range(3):
            for i in range(8):
                wavfile.write(d / f"{label}_{speaker}_{i}.wav", SR, tone(label, rng))
    cfg = {
        "name": "x-media-tones",
        "task": "speech-recognition",
        "data": {"path": str(d), "format": "wav-dir", "split": {"speaker": "bob"}},
        "model": {
            "type": "cnn",
            "options": {"n_mels": 24, "hop_ms": 16, "frames": 48, "trim_db": 20, "fit": "pad", "width": 8},
        },
        "train": {"epochs": 4, "lr": 0.01, "batch_size": 16},
    }
    api.train(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def client(image_app, speech_app):
    """The server, started after the apps are trained: their typed predict routes serve predict?explain=true."""
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as c:
        yield c


def digit_images(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[-n:] / 16.0  # (n, 8, 8) in [0, 1], from the validation part


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((img * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def explained_logit(app: str, x: np.ndarray, label: str) -> tuple[float, float]:
    """The served model's logit of `label` at the input (as the model reads it) and at the all-zero baseline."""
    task = api.load_predictor(app).task
    clf = task.need()
    model = clf.pixel_model() if hasattr(clf, "pixel_model") else clf.logit_model()
    k = [str(c) for c in clf.meta["classes"]].index(str(label))
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        return float(model(xt)[0, k]), float(model(torch.zeros_like(xt))[0, k])


def test_image_explain_route_answers_a_grid_that_adds_up(client, image_app):
    name = image_app["name"]
    imgs = digit_images(3)
    r = client.post(f"/v1/apps/{name}/explain", json={"image": imgs[0].tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    ex = out["explanation"]
    assert ex["method"] == "integrated-gradients" and ex["baseline"] == "black image"
    assert ex["target"] == f"logit of '{out['label']}'" and 0 <= ex["completeness_error"] <= BOUND
    grid = np.array(ex["grid"])
    assert ex["input_size"] == [8, 8] and grid.shape == (8, 8)  # a small image keeps its own pixels
    assert 1 <= len(ex["regions"]) <= 5
    assert abs(ex["regions"][0]["effect"]) == pytest.approx(np.abs(grid).max(), rel=1e-3)
    x0, y0, x1, y1 = ex["regions"][0]["box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    logit, base = explained_logit(name, imgs[:1, None], out["label"])
    assert ex["base"] == pytest.approx(base, rel=1e-3, abs=1e-4)
    assert grid.sum() == pytest.approx(logit - base, abs=BOUND * abs(logit) + 1e-3)
    # the prediction is predict's; predict?explain=true and batches answer the same
    plain = client.post(f"/v1/apps/{name}/predict", json={"image": imgs[0].tolist()}).json()
    assert plain["label"] == out["label"] and "explanation" not in plain
    assert "XMediaDigitsPredictionItem" in client.get("/openapi.json").text  # the typed route answers
    same = client.post(f"/v1/apps/{name}/predict?explain=true", json={"image": imgs[0].tolist()}).json()
    assert same["explanation"]["grid"] == ex["grid"]
    batch = client.post(f"/v1/apps/{name}/explain", json={"inputs": [{"image": i.tolist()} for i in imgs]}).json()
    assert len(batch["outputs"]) == 3 and all(o["explanation"]["completeness_error"] <= BOUND for o in batch["outputs"])
    assert batch["outputs"][0]["explanation"]["grid"] == ex["grid"]


def test_uploaded_image_is_explained_and_bad_input_is_the_same_4xx_as_predict(client, image_app):
    name = image_app["name"]
    files = [("files", ("seven.png", png_bytes(digit_images(1)[0]), "image/png"))]
    r = client.post(f"/v1/apps/{name}/predict/files?explain=true", files=files)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["input"] == "seven.png" and len(out["explanation"]["grid"]) == 8
    bad = [("files", ("broken.png", b"not an image at all", "image/png"))]
    answers = [
        client.post(f"/v1/apps/{name}/{route}", files=bad) for route in ("predict/files", "predict/files?explain=true")
    ]
    assert [r.status_code for r in answers] == [400, 400] and answers[0].json() == answers[1].json()
    assert answers[1].json()["error"]["param"] == "image", answers[1].text
    for route in ("predict", "explain"):
        r = client.post(f"/v1/apps/{name}/{route}", json={"image": "bm90IGFuIGltYWdl"})
        assert r.status_code == 400 and "image" in r.json()["error"]["message"], r.text
        r = client.post(f"/v1/apps/{name}/{route}", json={"picture": [1, 2]})
        assert 400 <= r.status_code < 500 and "image" in r.text


def test_28_pixel_images_are_summed_into_a_7_by_7_grid():
    from luodi.evaluate.attributions import pixel_summary

    attr = np.random.default_rng(0).normal(size=(1, 28, 28))
    attr[0, 20:24, 4:8] += 5.0  # one strong block: row 5, column 1 of the 4-pixel blocks
    s = pixel_summary(attr, top=2)
    grid = np.array(s["grid"])
    assert grid.shape == (7, 7) and grid.sum() == pytest.approx(attr.sum(), rel=1e-3)
    assert (s["regions"][0]["row"], s["regions"][0]["col"]) == (5, 1) and len(s["regions"]) == 2
    assert s["regions"][0]["box"] == pytest.approx([4 / 28, 20 / 28, 8 / 28, 24 / 28], abs=1e-4)


def test_speech_explain_route_answers_frames_in_seconds(client, speech_app):
    name = speech_app["name"]
    rng = np.random.default_rng(7)
    clip = tone(2, rng)
    body = {"audio": base64.b64encode(wav_bytes(clip)).decode()}
    r = client.post(f"/v1/apps/{name}/explain", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    ex = out["explanation"]
    assert ex["method"] == "integrated-gradients" and "silence" in ex["baseline"]
    assert 0 <= ex["completeness_error"] <= BOUND and out["text"] == str(out["label"])
    t, effect = np.array(ex["time"]), np.array(ex["effect"])
    seconds = len(clip) / SR
    assert len(t) == len(effect) and 3 <= len(t) <= 48 and ex["frame_seconds"] == pytest.approx(0.016)
    assert np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] <= seconds
    # silence trimming: the kept frames are the word's, which starts ONSET seconds in
    assert ONSET - 0.1 <= t[0] <= ONSET + 0.15
    assert 1 <= len(ex["segments"]) <= 3
    seg = ex["segments"][0]
    assert t[0] - 0.01 <= seg["start"] < seg["end"] <= t[-1] + 0.01
    assert abs(seg["effect"]) == max(abs(s["effect"]) for s in ex["segments"])
    # the kept frames carry every attribution: padding equals the silent baseline
    task = api.load_predictor(name).task
    from luodi.data.audio import audio_from_value

    x = task.features([audio_from_value(body["audio"], SR)])
    logit, base = explained_logit(name, x, out["label"])
    assert effect.sum() == pytest.approx(logit - base, abs=BOUND * abs(logit) + 1e-3)
    assert ex["base"] == pytest.approx(base, rel=1e-3, abs=1e-4)
    plain = client.post(f"/v1/apps/{name}/predict", json=body).json()
    assert plain["label"] == out["label"] and plain["probabilities"] == out["probabilities"]
    files = [("files", ("two.wav", wav_bytes(clip), "audio/wav"))]
    up = client.post(f"/v1/apps/{name}/predict/files?explain=true", files=files).json()["outputs"][0]
    assert up["input"] == "two.wav" and up["explanation"]["effect"] == ex["effect"]


def test_speech_bad_input_is_the_same_4xx_as_predict(client, speech_app):
    name = speech_app["name"]
    for route in ("predict", "explain"):
        r = client.post(f"/v1/apps/{name}/{route}", json={"audio": [0.1, 0.2]})
        assert r.status_code == 400 and "audio" in r.json()["error"]["message"], r.text
    bad = [("files", ("noise.wav", b"RIFF....not a wav", "audio/wav"))]
    answers = [
        client.post(f"/v1/apps/{name}/{route}", files=bad) for route in ("predict/files", "predict/files?explain=true")
    ]
    assert [r.status_code for r in answers] == [400, 400] and answers[0].json() == answers[1].json()
    assert "wav" in answers[1].json()["error"]["message"], answers[1].text


def test_frame_times_follow_padding_and_time_stretching(speech_app):
    from luodi.tasks.speech_explain import frame_times

    task = api.load_predictor(speech_app["name"]).task
    clip = tone(0, np.random.default_rng(3)).astype(np.float32) / 32768
    times, step = frame_times(task, clip)
    kept = times[np.isfinite(times)]
    assert len(times) == 48 and step == pytest.approx(0.016) and 3 <= len(kept) < 48
    assert np.isnan(times[0]) and np.isnan(times[-1])  # centred padding around the trimmed word
    task.feature_options = {**task.feature_options, "fit": "resize"}
    try:
        stretched, step2 = frame_times(task, clip)
    finally:
        task.feature_options = {**task.feature_options, "fit": "pad"}
    assert np.isfinite(stretched).all() and stretched[0] == pytest.approx(kept[0])
    assert stretched[-1] == pytest.approx(kept[-1]) and step2 < step


def test_speech_embedding_apps_answer_400_to_explain(tmp_path):
    from luodi.config import AppConfig
    from luodi.tasks import task_for

    cfg = {"name": "e", "task": "speech-recognition", "data": {"path": str(tmp_path)}}
    cfg["model"] = {"type": "speech-embedding"}
    task = task_for(AppConfig.model_validate(cfg))
    with pytest.raises(BadRequest, match="ONNX"):
        task.explain([{"audio": [0.0] * 100}])


def test_audit_section_of_a_speech_app_plots_frames_and_completeness(speech_app):
    from luodi.audit import explanations

    task = api.load_predictor(speech_app["name"]).task
    train, valid = task.split(task.read(None))
    s = explanations.section(SimpleNamespace(task=task), train, valid)
    assert s.status in ("ok", "warning") and s.numbers["clips"] == min(20, len(valid))
    assert len(s.numbers["completeness_error"]) == 3 and "<img" in s.html
    assert s.numbers["completeness_within_1pct"] is not None and s.numbers["completeness_error_median"] <= BOUND
