"""speech-recognition task: wav folders, speaker split, log-mel CNN learning, pretrained speech embeddings,
persistence, inputs, errors."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.io import wavfile

from luodi.config import AppConfig, load_app_config
from luodi.data.audio import (
    fit_frames,
    log_mel,
    mel_filterbank,
    speed_perturb,
    trim_silence,
    utterance_features,
)
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.tasks import task_for

REPO = Path(__file__).resolve().parents[1]
SLOW = pytest.mark.skipif(os.environ.get("LUODI_SLOW") != "1", reason="slow: set LUODI_SLOW=1")
SR = 8000


def tone(label: int, rng: np.random.Generator, seconds: float = 0.4) -> np.ndarray:
    """A 'word' per class: two harmonics whose pitch depends on the label, with random loudness and noise."""
    t = np.arange(int(SR * seconds * rng.uniform(0.7, 1.3))) / SR
    f = 300 + 150 * label
    x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t + rng.uniform(0, 6))
    x = x * rng.uniform(0.2, 0.8) * np.hanning(len(t)) + rng.normal(0, 0.02, len(t))
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob", "cyd"):
        for label in range(4):
            for i in range(8):
                wavfile.write(d / f"{label}_{speaker}_{i}.wav", SR, tone(label, rng))
    return d


def speech_config(path: Path, **split) -> AppConfig:
    return AppConfig.model_validate(
        {
            "name": "tones",
            "task": "speech-recognition",
            "data": {"path": str(path), "format": "wav-dir", "split": split or {"speaker": "cyd"}},
            "model": {
                "type": "cnn",
                "options": {
                    "n_mels": 24,
                    "hop_ms": 16,
                    "frames": 24,
                    "trim_db": 20,
                    "floor_db": 40,
                    "normalize": "mean",
                    "fit": "resize",
                    "width": 8,
                },
            },
            "train": {
                "epochs": 4,
                "lr": 0.01,
                "batch_size": 16,
                "augment": {"speed": [0.97], "shift": [0.1, 0.0], "time_mask": 4, "mixup": 0.2},
            },
        }
    )


def fit_on_split(cfg: AppConfig, run_dir: Path, **fit) -> tuple:
    """Read, split and fit an app's task; returns (task, validation data)."""
    task = task_for(cfg)
    tr, va = task.split(task.read(None))
    task.fit(tr, va, run_dir, **({"progress": False} | fit))
    return task, va


@pytest.fixture(scope="module")
def trained(tone_dir, tmp_path_factory):
    task = task_for(speech_config(tone_dir))
    tr, va = task.split(task.read(None))
    task.fit(tr, va, tmp_path_factory.mktemp("speech-run"), progress=False)
    return task, tr, va


def test_log_mel_matches_a_filterbank_of_the_power_spectrum():
    fb = mel_filterbank(SR, 256, 24)
    assert fb.shape == (24, 129) and float(fb.sum(1).min()) > 0  # every band sees some frequencies
    x = np.sin(2 * np.pi * 1000 * np.arange(SR // 2) / SR).astype(np.float32)
    m = log_mel(x, SR, n_mels=24)
    peak_band = int(m.mean(1).argmax())
    centre = fb[peak_band].argmax().item() * SR / 256
    assert abs(centre - 1000) < 150  # the loudest band is the one around 1 kHz


def test_silence_trim_resize_and_speed_perturbation():
    rng = np.random.default_rng(1)
    word = tone(3, rng, 0.3).astype(np.float32) / 32767
    quiet = rng.normal(0, 1e-4, SR // 2).astype(np.float32)
    padded = np.concatenate([quiet, word, quiet])
    m = log_mel(padded, SR, 24, hop_ms=16)
    t = trim_silence(m, 30)
    assert abs(t.shape[1] - len(word) / (SR * 0.016)) <= 4 < m.shape[1] - t.shape[1]  # the silence is gone
    assert fit_frames(t, 20, "resize").shape == (24, 20) and fit_frames(t, 100, "pad").shape == (24, 100)
    assert fit_frames(t[:, :2], 20, "resize").shape == (24, 20)

    def feat(w: np.ndarray, **kw) -> np.ndarray:
        return utterance_features(w, SR, 24, 20, 16, trim_db=20, norm="mean", fit="resize", floor_db=40, **kw)

    other = tone(0, rng, 0.3).astype(np.float32) / 32767
    fast = speed_perturb(word, 1.1)
    assert abs(len(fast) - len(word) / 1.1) <= 1
    f, g, h, k = (feat(w) for w in (word, padded, fast, other))
    assert f.shape == (1, 24, 20)
    # trimmed + resized features hardly depend on the silence around a word or on speaking rate
    far = np.abs(f - k).mean()
    assert np.abs(f - g).mean() < 0.5 * far and np.abs(f - h).mean() < 0.75 * far
    mfcc = feat(word, cepstra=12)
    assert mfcc.shape == (1, 12, 20) and np.isfinite(mfcc).all()
    assert np.isfinite(feat(word, lifter=10)).all()


def test_leave_one_speaker_out_split_and_learning(trained):
    task, tr, va = trained
    assert set(va.speakers) == {"cyd"} and "cyd" not in set(tr.speakers)
    # the held-out speaker is only reported: the kept weights are those of the last epoch
    assert [h["epoch"] for h in task.history] == [1, 2, 3, 4]
    assert task.evaluate(va)["accuracy"] == pytest.approx(task.history[-1]["valid_accuracy"])
    m = task.evaluate(va)
    assert m["accuracy"] >= 0.8, m  # chance is 0.25
    assert len(m["report"]["y_true"]) == len(va)


def test_save_load_round_trip_and_input_forms(trained, tone_dir, tmp_path):
    task, _, va = trained
    task.save(tmp_path)
    again = task_for(task.config)
    again.load(tmp_path)
    f = tone_dir / "2_cyd_3.wav"
    raw = f.read_bytes()
    sr, samples = wavfile.read(f)
    recs = [
        {"path": str(f)},
        {"audio": base64.b64encode(raw).decode()},
        {"audio": samples.tolist(), "sample_rate": sr},
    ]
    out = again.predict(recs)
    assert out == task.predict(recs)
    assert out[0] == out[1] and out[0]["label"] == out[2]["label"] == "2" and out[0]["text"] == "2"
    # a 16 kHz recording of the same file is resampled to the model's 8 kHz
    buf = io.BytesIO()
    wavfile.write(buf, 16000, np.repeat(samples, 2))
    assert again.predict([{"audio": buf.getvalue()}])[0]["label"] == "2"


def test_bad_inputs_and_config_give_clear_errors(trained, tone_dir, tmp_path):
    task = trained[0]
    with pytest.raises(BadRequest, match="'audio' is missing"):
        task.predict([{"sound": "x"}])
    with pytest.raises(BadRequest, match="not a readable WAV"):
        task.predict([{"audio": base64.b64encode(b"RIFF....not a wav").decode()}])
    with pytest.raises(BadRequest, match="not found"):
        task.predict([{"path": str(tmp_path / "nope.wav")}])
    with pytest.raises(BadRequest, match="samples"):
        task.predict([{"audio": [0.1, 0.2]}])
    with pytest.raises(ConfigError, match="data.split.speaker"):
        bad = task_for(speech_config(tone_dir, speaker="zed"))
        bad.split(bad.read(None))
    with pytest.raises(ConfigError, match="no .wav files"):
        task_for(speech_config(tmp_path)).read(None)
    with pytest.raises(NotFound):
        task_for(task.config).load(tmp_path)
    cfg = speech_config(tone_dir)
    cfg.model.options["normalize"] = "zscore"
    with pytest.raises(ConfigError, match="model.options.normalize"):
        task_for(cfg)
    for key, value, match in (
        ("speed", [0.9, "fast"], "train.augment.speed"),
        ("mixup", -1, "train.augment.mixup"),
        ("pitch", 2, "train.augment.pitch"),
    ):
        cfg = speech_config(tone_dir)
        cfg.train.augment[key] = value
        with pytest.raises(ConfigError, match=match):
            fit_on_split(cfg, tmp_path)
    cfg = speech_config(tone_dir)
    cfg.model.options["tta_speeds"] = [1, 3]
    with pytest.raises(ConfigError, match="model.options.tta_speeds"):
        task_for(cfg)
    cfg = speech_config(tone_dir)
    cfg.model.options["ensemble"] = 0
    with pytest.raises(ConfigError, match="model.options.ensemble"):
        fit_on_split(cfg, tmp_path)


def test_ensemble_averages_members_and_round_trips(tone_dir, tmp_path):
    cfg = speech_config(tone_dir)
    cfg.model.options["ensemble"] = 2
    cfg.model.options["tta_speeds"] = [0.95, 1, 1.05]
    cfg.train.epochs = 3
    task = task_for(cfg)
    tr, va = task.split(task.read(None))
    task.fit(tr, va, tmp_path, progress=False)
    ens = task.clf
    assert ens is not None and len(ens.members) == 2 and ens.meta["ensemble"] == 2
    x = task.features(va.waves[:8])
    assert np.allclose(ens.proba(x), (ens.members[0].proba(x) + ens.members[1].proba(x)) / 2, atol=1e-6)
    assert not np.allclose(ens.members[0].proba(x), ens.members[1].proba(x))  # different seeds
    assert task.evaluate(va)["accuracy"] >= 0.8
    waves = va.waves[:8]
    copies = [ens.proba(task.features([speed_perturb(w, f) if f != 1 else w for w in waves])) for f in (0.95, 1, 1.05)]
    assert np.allclose(task.proba(waves), np.mean(copies, axis=0), atol=1e-6)  # test-time augmentation
    assert not np.allclose(task.proba(waves), copies[1])
    assert [h["epoch"] for h in task.history] == [1, 2, 3, 4, 5, 6]  # member 2's epochs follow member 1's
    task.save(tmp_path)
    again = task_for(cfg)
    again.load(tmp_path)
    assert again.tta_speeds == [0.95, 1.0, 1.05]
    recs = [{"path": str(tone_dir / "1_cyd_0.wav")}]
    assert again.predict(recs) == task.predict(recs)


def test_evaluate_reads_a_folder_of_wavs(trained, tone_dir):
    task = trained[0]
    data = task.read(str(tone_dir))
    assert len(data) == 96 and data.sample_rate == SR
    assert task.evaluate(data.subset(range(0, 96, 4)))["accuracy"] >= 0.8


def test_fsdd_slice_learns_above_chance(datasets_dir, tmp_path):
    cfg = load_app_config(REPO / "examples" / "spoken-digits-cnn.yaml")
    cfg.train.epochs = 3
    cfg.model.options["ensemble"] = 1  # one CNN is enough to show learning
    task = task_for(cfg)
    data = task.read(None)
    assert len(data) == 2500 and sorted(set(data.labels)) == [str(d) for d in range(10)]
    tr, va = task.split(data)
    assert set(va.speakers) == {cfg.data.split.speaker} and len(va) == 500
    task.fit(tr.subset(range(0, len(tr), 3)), None, tmp_path, progress=False)
    assert task.evaluate(va)["accuracy"] > 0.4  # chance is 0.1; an unseen speaker, 1/3 of the data, 3 epochs


@SLOW
def test_spoken_digits_cnn_example_on_an_unseen_speaker(datasets_dir, tmp_path):
    task, va = fit_on_split(load_app_config(REPO / "examples" / "spoken-digits-cnn.yaml"), tmp_path, progress=True)
    # measured 83.6 % (george left out; three CNNs, last epochs: george never picks the weights)
    assert task.evaluate(va)["accuracy"] >= 0.82


def embedding_config(path: Path, **options) -> AppConfig:
    return AppConfig.model_validate(
        {
            "name": "tones-embedding",
            "task": "speech-recognition",
            "data": {"path": str(path), "format": "wav-dir", "split": {"speaker": "cyd"}},
            "model": {"type": "speech-embedding", "options": {"c": 0.1, **options}},
        }
    )


def test_speech_embedding_head_learns_saves_and_loads(tone_dir, tmp_path):
    task = task_for(embedding_config(tone_dir))
    tr, va = task.split(task.read(None))
    assert task.sample_rate == 16000 and tr.sample_rate == 16000  # the 8 kHz files are read at the model's rate
    x = task.features(va.waves[:4])
    assert x.shape == (4, 96) and np.isfinite(x).all()
    assert not np.allclose(x[0], x[1])
    assert task.fit(tr, va, tmp_path, progress=False) is None  # callers score with evaluate
    (logged,) = task.history  # one "epoch": the fitted rows' and the validation scores
    assert logged["valid_accuracy"] == pytest.approx(task.evaluate(va)["accuracy"])
    assert logged["train_accuracy"] >= 0.9 and logged["valid_accuracy"] >= 0.7  # chance is 0.25
    task.save(tmp_path)
    assert (tmp_path / "speech_head.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    again = task_for(embedding_config(tone_dir, c=5.0, window_seconds=3))  # the saved options win
    again.load(tmp_path)
    assert (again.kind, again.window_seconds, again.sample_rate) == ("speech-embedding", 1.6, 16000)
    recs = [{"path": str(tone_dir / "2_cyd_3.wav")}, {"path": str(tone_dir / "0_cyd_1.wav")}]
    assert again.predict(recs) == task.predict(recs)
    assert abs(sum(again.predict(recs)[0]["probabilities"].values()) - 1) < 1e-3


def test_speech_embedding_refit_serves_all_speakers(tone_dir, tmp_path):
    import json

    import yaml

    from luodi import api

    cfg = embedding_config(tone_dir).model_dump(mode="json", exclude_defaults=True)
    cfg["train"] = {"refit": True}
    p = tmp_path / "tones.yaml"
    p.write_text(yaml.safe_dump(cfg))
    run = api.train(p, progress=False)
    m = json.loads((run.path / "metrics.json").read_text())
    assert (m["train_rows"], m["valid_rows"], m["refit_rows"]) == (64, 32, 96) and m["valid"]["accuracy"] >= 0.7
    served = api.predict(p, [{"path": str(tone_dir / "2_cyd_3.wav")}])[0]
    assert served["label"] == "2"  # cyd was part of the refit


def test_speech_embedding_config_errors(tone_dir, tmp_path):
    cfg = embedding_config(tone_dir)
    cfg.model.type = "rnn"
    with pytest.raises(ConfigError, match="model.type"):
        task_for(cfg)
    cfg = embedding_config(tone_dir)
    cfg.model.source = str(tmp_path)
    with pytest.raises(ConfigError, match="model.source.*melspectrogram.onnx"):
        task_for(cfg).features([np.zeros(8000, np.float32)])
    with pytest.raises(ValidationError, match="model.options.c"):  # checked with the app file
        embedding_config(tone_dir, c=0)
    with pytest.raises(ConfigError, match="window_seconds"):
        fit_on_split(embedding_config(tone_dir, window_seconds=0.2), tmp_path)
    cfg = embedding_config(tone_dir)
    cfg.train.augment["mixup"] = 0.2
    with pytest.raises(ConfigError, match="train.augment.mixup.*cnn"):
        fit_on_split(cfg, tmp_path)


def test_speech_embedding_recognises_an_unseen_fsdd_speaker(datasets_dir, tmp_path):
    cfg = load_app_config(REPO / "examples" / "spoken-digits.yaml")
    cfg.model.options["tta_speeds"] = []
    task = task_for(cfg)
    tr, va = task.split(task.read(None))
    assert set(va.speakers) == {"george"} and "george" not in set(tr.speakers)
    task.fit(tr.subset(range(0, len(tr), 2)), None, tmp_path, progress=False)  # half the training recordings
    # george never heard: 93-94 % with all four other speakers (the CNN from scratch: 83.6 %)
    m = task.evaluate(va.subset(range(0, len(va), 2)))
    assert m["accuracy"] >= 0.88
    # the strongly regularized head is under-confident; a temperature fitted on held-out training speakers
    # sharpens it (ECE on george ~0.11 without it)
    assert task.clf.meta["temperature"] < 0.8 and m["ece"] < 0.06


@SLOW
def test_spoken_digits_example_on_an_unseen_speaker(datasets_dir, tmp_path):
    task, va = fit_on_split(load_app_config(REPO / "examples" / "spoken-digits.yaml"), tmp_path, progress=True)
    assert task.evaluate(va)["accuracy"] >= 0.95  # measured 95.8 % (george left out; speed TTA)
