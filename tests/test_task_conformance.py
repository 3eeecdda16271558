"""Every task family keeps the same contract (luodi.tasks.base.Task), checked on tiny data made here:
train (fit returns nothing, the caller scores), predict, a freshly loaded run predicts the same, evaluate gives
finite numbers, and a bad record is a BadRequest naming its field."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from luodi import api
from luodi.config import validate_app
from luodi.errors import BadRequest
from luodi.tasks import TASKS, task_for

Case = tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], str]  # model/data config, records, bad, field


def tabular(d: Path) -> Case:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=120), rng.normal(size=120)
    color = rng.choice(["red", "blue"], 120)
    df = pd.DataFrame({"x1": x1, "x2": x2, "color": color, "y": np.where(x1 > 0, "yes", "no")})
    df.to_csv(d / "t.csv", index=False)
    cfg = {
        "data": {"path": str(d / "t.csv"), "columns": {"label": "y"}},
        "model": {"type": "lightgbm", "options": {"n_estimators": 30, "min_child_samples": 3}},
    }
    records = [{"x1": 2.0, "x2": 0.1, "color": "red"}, {"x1": -2.0, "x2": -0.3, "color": "blue"}]
    return cfg, records, {"x1": 1.0, "color": "red"}, "x2"


def anomaly(d: Path) -> Case:
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 4)) + rng.normal(scale=0.05, size=(300, 4))
    odd = rng.normal(size=(20, 4)) * 3
    df = pd.DataFrame(np.vstack([normal, odd]), columns=["f0", "f1", "f2", "f3"])
    df["kind"] = ["normal"] * 300 + ["odd"] * 20
    df.to_csv(d / "a.csv", index=False)
    cfg = {
        "data": {"path": str(d / "a.csv"), "columns": {"label": "kind"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": "isolation-forest", "options": {"trees": 30, "max_samples": 64}},
    }
    records = df.drop(columns="kind").iloc[[0, 310]].to_dict("records")
    return cfg, records, {"f0": 1.0, "f2": 0.0, "f3": 0.0}, "f1"


def recommendation(d: Path) -> Case:
    rng = np.random.default_rng(2)
    users, items = np.nonzero(rng.random((30, 25)) < 0.5)
    taste = rng.normal(size=30)[users] * rng.normal(size=25)[items]
    rating = np.clip(np.round(3 + taste + rng.normal(0, 0.3, len(users))), 1, 5)
    pd.DataFrame({"user_id": users, "item_id": items, "rating": rating}).to_csv(d / "r.csv", index=False)
    cfg = {
        "data": {"path": str(d / "r.csv"), "split": {"valid": 0.2, "seed": 0}},
        "model": {"type": "bpmf", "options": {"factors": 2, "iterations": 20, "burn_in": 5, "thin": 2}},
    }
    return cfg, [{"user_id": "3", "k": 4}, {"user_id": "1", "item_id": "2"}], {"k": 3}, "user_id"


def text_classification(d: Path) -> Case:
    rows = [(f"my card payment {w} failed", "card") for w in ("was", "has", "just", "again", "today", "twice")]
    rows += [(f"how do I {w} money to a friend", "transfer") for w in ("send", "move", "wire", "pay", "give", "get")]
    pd.DataFrame(rows * 2, columns=["text", "label"]).to_csv(d / "x.csv", index=False)
    cfg = {
        "data": {"path": str(d / "x.csv"), "split": {"valid": 0.25, "seed": 0}},
        "model": {"source": "bundled:minilm-l6", "options": {"max_length": 16, "tfidf_weight": 0.5}},
    }
    return cfg, [{"text": "my card payment failed"}, {"text": "send money to my friend"}], {"txt": "hi"}, "text"


def token_classification(d: Path) -> Case:
    sentences = [
        [("Anna", "B-PER"), ("lives", "O"), ("in", "O"), ("Paris", "B-LOC")],
        [("Bob", "B-PER"), ("visited", "O"), ("Rome", "B-LOC"), ("today", "O")],
        [("Carl", "B-PER"), ("left", "O"), ("Berlin", "B-LOC")],
    ]
    text = "\n\n".join("\n".join(f"{w} NN O {t}" for w, t in s) for s in sentences * 4)
    (d / "ner.txt").write_text(text + "\n")
    cfg = {
        "data": {"path": str(d / "ner.txt"), "split": {"valid": 0.25, "seed": 0}},
        "model": {
            "source": "bundled:minilm-l6",
            "options": {"layers": [6], "hidden": 16, "char_dim": 4, "char_filters": 4, "max_length": 32},
        },
    }
    return cfg, [{"text": "Anna lives in Rome"}], {"txt": "Anna"}, "text"


def text_generation(d: Path) -> Case:
    lines = [
        "Hello , how are you ? __eou__ I am fine , thanks . __eou__",
        "Where is the bank ? __eou__ It is next to the station . __eou__",
        "Can I pay by card ? __eou__ Yes , of course . __eou__",
        "What time is it ? __eou__ It is five o'clock . __eou__",
    ]
    (d / "dialogues.txt").write_text("\n".join(lines) + "\n")
    cfg = {
        "data": {"path": str(d / "dialogues.txt"), "split": {"valid": 0.5, "seed": 0}},
        "model": {
            "source": "bundled:smollm2-135m-instruct",
            "type": "lora",
            "options": {"r": 2, "alpha": 4, "max_length": 96, "max_new_tokens": 4, "system": "Be brief."},
        },
        "train": {"epochs": 1, "batch_size": 2, "lr": 0.001},
    }
    return cfg, [{"text": "Hello , how are you ?"}], {"messages": []}, "text"


def image_classification(d: Path) -> Case:
    from PIL import Image

    rng = np.random.default_rng(3)
    for label, level in (("dark", 40), ("bright", 210)):
        (d / "img" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(level + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(d / "img" / label / f"{i}.png")
    cfg = {
        "data": {"path": str(d / "img"), "format": "image-folder", "split": {"valid": 0.25, "seed": 0}},
        "model": {"type": "cnn", "options": {"width": 4, "size": [8, 8], "channels": 1}},
        "train": {"batch_size": 8, "lr": 0.01},
    }
    return cfg, [{"path": str(d / "img" / "dark" / "0.png")}], {"picture": "x"}, "image"


def speech_recognition(d: Path) -> Case:
    from scipy.io import wavfile

    rng = np.random.default_rng(4)
    (d / "wav").mkdir()
    for speaker in ("ann", "bob"):
        for label in (0, 1):
            for i in range(5):
                t = np.arange(int(8000 * rng.uniform(0.25, 0.35))) / 8000
                wave = np.sin(2 * np.pi * (300 + 300 * label) * t) * np.hanning(len(t)) + rng.normal(0, 0.02, len(t))
                wavfile.write(d / "wav" / f"{label}_{speaker}_{i}.wav", 8000, (wave * 20000).astype(np.int16))
    cfg = {
        "data": {"path": str(d / "wav"), "format": "wav-dir", "split": {"speaker": "bob"}},
        "model": {
            "type": "cnn",
            "options": {"n_mels": 16, "hop_ms": 16, "frames": 16, "fit": "resize", "width": 4},
        },
        "train": {"batch_size": 8, "lr": 0.01},
    }
    return cfg, [{"path": str(d / "wav" / "1_bob_0.wav")}], {"sound": "x"}, "audio"


FAMILIES: dict[str, Callable[[Path], Case]] = {
    "tabular": tabular,
    "anomaly-detection": anomaly,
    "recommendation": recommendation,
    "text-classification": text_classification,
    "token-classification": token_classification,
    "text-generation": text_generation,
    "image-classification": image_classification,
    "speech-recognition": speech_recognition,
}


def test_every_trainable_task_is_checked():
    assert set(FAMILIES) == set(TASKS)


def finite_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), metrics
    return numbers


@pytest.mark.parametrize("task", list(FAMILIES))
def test_task_contract(task, tmp_path):
    cfg, records, bad, field = FAMILIES[task](tmp_path)
    name = f"conf-{task}"
    app = {"name": name, "task": task, **cfg, "train": {"epochs": 2, "seed": 0, **cfg.get("train", {})}}
    run = api.train(app, progress=False)
    assert run.status == "done"
    valid = finite_numbers(run.metrics)
    first = api.predict(name, records)
    assert len(first) == len(records) and all(isinstance(r, dict) and r for r in first)

    loaded = task_for(validate_app(app))  # a fresh task reading the stored run
    loaded.load(run.path)
    assert loaded.predict(records) == first

    again = finite_numbers(api.evaluate(name, report=False)["metrics"])
    shared = set(valid) & set(again) - {"train_seconds"}
    assert shared and all(again[k] == pytest.approx(valid[k], abs=1e-6) for k in shared)

    with pytest.raises(BadRequest) as err:
        api.predict(name, [bad])
    assert err.value.param == field and field in err.value.message
