"""Robustness of text and speech apps: the word-substitution attack (black box, budgeted, near neighbours) and
the waveform attack through the log-mel path rebuilt in torch; both reach `luodi audit`'s Robustness section."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from luodi.audit.robustness import section, speech_model, speech_numbers, text_numbers
from luodi.config import AppConfig, validate_app
from luodi.data.audio import mel_filterbank, utterance_features
from luodi.errors import ConfigError
from luodi.evaluate import speech_attacks as sa
from luodi.evaluate import text_attacks as ta
from luodi.evaluate.robustness import art_adversarial, art_classifier
from luodi.tasks import task_for

# --- text --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_app(datasets_dir, tmp_path_factory):
    """A TF-IDF intent classifier on six banking77 intents (40 texts each), trained in a second."""
    raw = {
        "name": "t-robust",
        "task": "text-classification",
        "data": {"path": str(datasets_dir / "banking77/train.csv"), "columns": {"label": "category"}},
        "model": {"options": {"features": ["tfidf"]}},
    }
    task = task_for(validate_app(raw))
    df = task.read(None)
    df = df[df.label.isin(sorted(df.label.unique())[:6])].groupby("label").head(40).reset_index(drop=True)
    train = df.groupby("label").head(30)
    valid = df.drop(train.index).reset_index(drop=True)
    task.fit(train.reset_index(drop=True), valid, tmp_path_factory.mktemp("t-run"), progress=False)
    return task, valid


def toy_neighbours() -> ta.Neighbours:
    vocab = ["card", "cards", "deck", "lost", "losing", "missing", "blue"]
    table = np.array([[1, 0.1, 0], [1, 0.2, 0], [0.8, 0.5, 0], [0, 1, 0.1], [0, 1, 0.2], [0.1, 1, 0.3], [0, 0, 1]])
    return ta.Neighbours.from_table(vocab, table, k=2, min_cosine=0.5)


def test_neighbours_are_close_whole_words_in_the_words_case():
    nb = toy_neighbours()
    assert nb.of("card") == ["cards", "deck"] and nb.of("Lost") == ["Losing", "Missing"]
    assert nb.of("refund") == []  # not a whole word of the vocabulary: never replaced
    full = ta.Neighbours.from_table(["[CLS]", "##ing", "ok", "a", "go"], np.eye(5))
    assert full.words == ["ok", "go"]  # no special tokens, word pieces or single letters


def test_greedy_attack_respects_the_budget_and_needs_only_answers():
    """A keyword 'model': the label is 'lost' while a text says lost/losing; the attack must swap that word,
    and never more words than the budget allows."""

    def probe(texts, truths):
        labels = np.array(["lost" if ("lost" in t or "losing" in t) else "other" for t in texts], dtype=object)
        return labels, np.array([0.9 if lab == y else 0.1 for lab, y in zip(labels, truths, strict=True)])

    texts = ["I lost my card", "my card is lost and the card is blue", "blue card", "my card"]
    truths = ["lost", "lost", "other", "lost"]  # the last one is already wrong
    out = ta.attack_texts(probe, texts, truths, toy_neighbours(), 0.3)
    assert out[0].fooled_after == 1 and out[0].at(0.1)[0] == "I missing my card"  # 'losing' keeps the label
    assert out[2].fooled_after is None and out[3].fooled_after == 0
    for a in out:
        for share in (0.1, 0.2, 0.3):
            text, _, changes = a.at(share)
            assert ta.changed_words(a.text, text) == len(changes) <= ta.budget(a.n_words, share)
    rows = ta.curve(out, [0.0, 0.1])
    assert rows[0]["accuracy"] == 0.75 and rows[1]["accuracy"] == 0.25
    assert ta.marked(out[0], 0.1) == "I [lost -> missing] my card"
    with pytest.raises(ConfigError, match="eps"):
        ta.attack_texts(probe, texts, truths, toy_neighbours(), 1.5)


def test_text_app_under_word_substitution(text_app):
    task, valid = text_app
    n = text_numbers(task, valid, 0.2)
    assert n["n"] == len(valid) and n["robust_accuracy"] <= n["clean_accuracy"]
    accs = [r["accuracy"] for r in n["curve"]]
    assert n["curve"][0]["eps"] == 0.0 and accs == sorted(accs, reverse=True)  # a larger budget never helps
    assert n["similarity"]["n"] > 0 and 0.5 < n["similarity"]["mean"] <= 1.0
    for ex in n["examples"]:
        assert ex["attacked_label"] != ex["label"] and "->" in ex["attacked"]
        parts = ex["changed"].split()  # "1 of 9 words"
        changed, words = int(parts[0]), int(parts[2])
        assert 1 <= changed <= ta.budget(words, 0.2)


def test_audit_section_for_a_text_app_is_measured(text_app):
    task, valid = text_app
    s = section(SimpleNamespace(task=task, config=task.config), None, valid, attack="pgd", eps=0.1, attack_rows=30)
    assert s.status == "ok" and s.numbers["attack"] == "word-substitution" and s.numbers["n"] == 30
    assert "<img" in s.html and "word substitution" in s.note


def test_an_untrained_text_app_is_skipped_saying_why():
    cfg = validate_app({"name": "t", "task": "text-classification", "data": {"path": "x.csv"}})
    s = section(SimpleNamespace(task=task_for(cfg), config=cfg), None, None)
    assert s.status == "skipped" and "not trained" in s.note


# --- speech ------------------------------------------------------------------------------------------------

SR = 8000


def tone(label: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SR * 0.4 * rng.uniform(0.7, 1.3))) / SR
    f = 300 + 150 * label
    x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t + rng.uniform(0, 6))
    x = x * rng.uniform(0.2, 0.8) * np.hanning(len(t)) + rng.normal(0, 0.02, len(t))
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def speech_app(tmp_path_factory):
    d = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob", "cyd"):
        for label in range(4):
            for i in range(8):
                wavfile.write(d / f"{label}_{speaker}_{i}.wav", SR, tone(label, rng))
    cfg = AppConfig.model_validate(
        {
            "name": "tones-robust",
            "task": "speech-recognition",
            "data": {"path": str(d), "format": "wav-dir", "split": {"speaker": "cyd"}},
            "model": {
                "type": "cnn",
                "options": {
                    "n_mels": 24,
                    "hop_ms": 16,
                    "frames": 24,
                    "trim_db": 20,
                    "floor_db": 40,
                    "fit": "resize",
                    "width": 8,
                    "ensemble": 2,
                },
            },
            "train": {"epochs": 4, "lr": 0.01, "batch_size": 16},
        }
    )
    torch.manual_seed(0)
    task = task_for(cfg)
    train, valid = task.split(task.read(None))
    task.fit(train, valid, Path(tmp_path_factory.mktemp("tones-run")), progress=False)
    return task, train, valid.subset(range(0, len(valid), 2))  # 16 recordings, every label


def test_torch_log_mel_path_matches_the_served_features(speech_app):
    task, _, valid = speech_app
    o = sa.FeatureOptions(SR, task.n_mels, task.frames, task.hop_ms, **task.feature_options)
    feats = sa.WaveFeatures(o, mel_filterbank(SR, 256, task.n_mels))
    rows, mask = sa.pack(valid.waves)
    back = sa.unpack(rows)
    for w, b in zip(valid.waves, back, strict=True):
        assert len(w) == len(b) and np.allclose(w, b, atol=1e-6)
    served = task.features(valid.waves)
    got = torch.stack([feats(torch.from_numpy(w)) for w in valid.waves]).detach().numpy()
    assert np.abs(served - got).max() < 1e-4
    assert mask.sum() == sum(len(w) for w in valid.waves)  # padding and the two slots never move
    x = torch.from_numpy(valid.waves[0]).requires_grad_(True)
    feats(x).sum().backward()
    assert float(x.grad.abs().sum()) > 0  # gradients reach the samples
    for extra in ({"lifter": 10, "normalize": "cmvn"}, {"cepstra": 12, "fit": "pad", "trim_db": 0.0}):
        o2 = sa.FeatureOptions(**{**o.__dict__, **extra})
        twin = sa.WaveFeatures(o2, mel_filterbank(SR, 256, task.n_mels))
        ref = utterance_features(
            valid.waves[1],
            SR,
            o2.n_mels,
            o2.frames,
            o2.hop_ms,
            o2.trim_db,
            o2.normalize,
            o2.fit,
            o2.cepstra,
            o2.lifter,
            o2.floor_db,
        )
        assert np.abs(twin(torch.from_numpy(valid.waves[1])).detach().numpy() - ref).max() < 1e-4


def test_waveform_attack_lowers_accuracy_within_the_eps_ball(speech_app):
    task, train, valid = speech_app
    n = speech_numbers(task, train, valid, "pgd", 0.05, curve_eps=(), steps=5)
    assert n["clean_accuracy"] > 0.6 and n["robust_accuracy"] <= n["clean_accuracy"]
    assert n["robust_accuracy"] < n["clean_accuracy"]
    assert n["curve"][0]["eps"] == 0.0 and n["snr_db"] > 0
    model, _ = speech_model(task, train)
    rows, mask = sa.pack(valid.waves)
    y = task.need().targets(valid.labels).numpy()
    art = art_classifier(model, 4, (rows.shape[1],), (-1.0, 1.0))
    adv = art_adversarial(art, "fgsm", rows, y, 0.05, mask=mask)
    assert np.abs(adv - rows).max() <= 0.05 + 1e-6 and np.all(adv[mask == 0] == rows[mask == 0])
    for w, a in zip(valid.waves, sa.unpack(adv), strict=True):
        assert len(a) == len(w) and np.abs(a - w).max() <= 0.05 * np.abs(w).max() + 1e-5


def test_audit_section_for_a_speech_app_is_measured(speech_app):
    task, train, valid = speech_app
    s = section(SimpleNamespace(task=task, config=task.config), train, valid, attack="fgsm", eps=0.03)
    assert s.status == "ok" and s.numbers["eps"] == 0.03 and "<img" in s.html and "waveform" in s.note
