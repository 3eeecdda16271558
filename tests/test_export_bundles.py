"""`luodi export` bundles of speech-recognition (the CNN ensemble with its log-mel / cepstral features as data, or
the pretrained speech embedding and its regression head), token-classification (encoder layers + tagger,
tokenizer.json), anomaly-detection (the autoencoder) and recommendation (the towers): each bundle's predict.py, run
in a clean interpreter that imports nothing of luodi, answers what luodi answers (speech: also for wav files at
other rates, stereo, 8-bit and 24-bit, which it resamples as luodi does; tokens: the same entity spans); the
isolation forest, which has no bundle, is refused naming model.type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_optimize_families as families
import test_task_conformance as conformance
import yaml

from luodi import api
from luodi.apps.export import export
from luodi.apps.optimize import optimize
from luodi.errors import ConfigError


def run_bundle(bundle: Path, lines: list[str]) -> list[dict]:
    """predict.py in a clean interpreter (-I: no user site, no PYTHONPATH, not the repository's folder)."""
    proc = subprocess.run([sys.executable, "-I", str(bundle / "predict.py")], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=300, cwd=bundle.parent)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def other_formats(d: Path) -> list[str]:
    """Held-out recordings re-written as a client might send them: 16 kHz stereo int16, 11025 Hz 8-bit, 24-bit."""
    import wave

    from scipy.io import wavfile
    from scipy.signal import resample_poly

    paths = []
    for k, src in enumerate(sorted((d / "wav").glob("*_bob_*.wav"))[::3]):
        x, path = wavfile.read(src)[1] / 32768, d / f"other-{k}.wav"
        if k % 3 == 0:
            y = resample_poly(x, 2, 1)
            wavfile.write(path, 16000, (np.stack([y, 0.5 * y], 1) * 32767).astype(np.int16))
        elif k % 3 == 1:
            wavfile.write(path, 11025, (resample_poly(x, 11025, 8000) * 127 + 128).clip(0, 255).astype(np.uint8))
        else:
            with wave.open(str(path), "wb") as f:
                f.setnchannels(1)
                f.setsampwidth(3)
                f.setframerate(8000)
                f.writeframes((x * 2**23).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
        paths.append(str(path))
    return paths


SPEECH = {  # two feature settings: every numpy step of the bundle is exercised by one of them
    "lifter-trim-resize-tta": {"trim_db": 20, "floor_db": 40, "lifter": 8, "tta_speeds": [0.9, 1.0, 1.1]},
    "cepstra-cmvn-pad": {"cepstra": 8, "normalize": "cmvn", "fit": "pad"},
}


@pytest.mark.parametrize("variant", list(SPEECH))
def test_speech_bundle_predicts_like_luodi(variant, tmp_path):
    cfg, _ = families.speech(tmp_path)
    cfg["model"]["options"].update(SPEECH[variant])
    name = f"bundle-speech-{variant}"
    app = {"name": name, "task": "speech-recognition", **cfg, "train": {**cfg["train"], "epochs": 3, "seed": 0}}
    base = api.train(app, progress=False)
    versions = [base.version]
    if variant == "cepstra-cmvn-pad":  # an optimized (ONNX) run ships its own graph
        versions.append(optimize(app, "onnx", version=base.version)["run"]["version"])
    wavs = [str(p) for p in sorted((tmp_path / "wav").glob("*_bob_*.wav"))] + other_formats(tmp_path)
    for v in versions:
        bundle = tmp_path / f"bundle-{v}"
        res = export(app, bundle, version=v)
        assert set(res["files"]) == {"README.md", "model.onnx", "predict.py", "preprocess.json"}
        assert "onnxruntime numpy" in (bundle / "README.md").read_text()
        got = run_bundle(bundle, wavs)
        want = api.predict(name, [{"path": w} for w in wavs], version=v)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want, strict=True)) < 1e-4


def test_speech_embedding_bundle_predicts_like_luodi(tmp_path):
    """model.type speech-embedding: the pretrained network's two graphs and the regression head, with test-time
    speeds; the app's rate (8 kHz) is not the network's (16 kHz), so both resamplings run."""
    cfg, _ = families.speech(tmp_path)
    app = {"name": "bundle-speech-embedding", "task": "speech-recognition", **cfg,
           "model": {"type": "speech-embedding", "options": {"sample_rate": 8000, "tta_speeds": [0.9, 1.0, 1.1]}}}
    api.train(app, progress=False)
    wavs = [str(p) for p in sorted((tmp_path / "wav").glob("*_bob_*.wav"))] + other_formats(tmp_path)
    res = export(app, tmp_path / "bundle")
    assert set(res["files"]) == {"README.md", "embedding_model.onnx", "head.json", "melspectrogram.onnx",
                                 "predict.py"}
    got = run_bundle(tmp_path / "bundle", wavs)
    want = api.predict(app["name"], [{"path": w} for w in wavs])
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want, strict=True)) < 1e-4


def check_token_bundle(app: dict | str, name: str, bundle: Path, texts: list[str], version: str | None = None) -> list:
    """predict.py's entities are what luodi answers for each text sent alone (one request per text)."""
    res = export(app, bundle, version=version)
    assert set(res["files"]) == {"README.md", "encoder.onnx", "predict.py", "tagger.onnx", "tags.json",
                                 "tokenizer.json"}
    got = run_bundle(bundle, texts)
    want = [api.predict(name, [{"text": t}], version=version)[0] for t in texts]
    spans = [[(e["label"], e["start"], e["end"], e["text"]) for e in o["entities"]] for o in want]
    assert [[(e["label"], e["start"], e["end"], e["text"]) for e in o["entities"]] for o in got] == spans
    scores = [(g["score"], w["score"]) for o, p in zip(got, want, strict=True)
              for g, w in zip(o["entities"], p["entities"], strict=True)]
    assert max((abs(a - b) for a, b in scores), default=0.0) <= 2e-4  # (rounded to 4 places by both)
    return spans


def test_token_bundle_with_a_bilstm_context(tmp_path):
    cfg, *_ = conformance.token_classification(tmp_path)
    cfg["model"]["options"]["context"] = "lstm"
    app = {"name": "bundle-ner-lstm", "task": "token-classification", **cfg, "train": {"epochs": 8, "lr": 0.01}}
    api.train(app, progress=False)
    texts = ["Anna lives in Rome", "Bob visited Paris today", "Carl left Berlin, then Anna left Rome.",
             "nothing here", "... !", "Ünïcode Ærø lives in São-Paulo's 2nd district"]
    assert any(check_token_bundle(app, "bundle-ner-lstm", tmp_path / "bundle", texts))


def test_token_bundle_on_conll_predicts_like_luodi(datasets_dir, tmp_path):
    """A CoNLL-2003 slice (250 training sentences), the conv tagger over MiniLM layers 5 and 6; its held-out
    sentences through the bundle of the torch run and of the ONNX run."""
    lines = (datasets_dir / "conll2003/eng.train").read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if not line.strip()][250]
    (tmp_path / "ner.txt").write_text("\n".join(lines[:cut]) + "\n")
    app = {"name": "bundle-ner", "task": "token-classification",
           "data": {"path": str(tmp_path / "ner.txt"), "format": "conll", "split": {"valid": 0.25, "seed": 0}},
           "model": {"source": "bundled:minilm-l6", "options": {"layers": [5, 6], "hidden": 32}},
           "train": {"epochs": 3, "lr": 0.003, "batch_size": 16}, "optimize": families.OPTIMIZE}
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    base = api.train(str(path), progress=False)
    task = api.load_predictor("bundle-ner", base.version).task
    texts = [r["text"] for r in task.records_of(task.split(task.read())[1])][:40]
    spans = check_token_bundle(str(path), "bundle-ner", tmp_path / "torch", texts, base.version)
    assert sum(map(len, spans)) >= 10  # (a tagger that finds entities: the comparison is not of empty lists)
    onnx = optimize(str(path), "onnx", version=base.version)["run"]["version"]
    check_token_bundle(str(path), "bundle-ner", tmp_path / "onnx", texts, onnx)


def test_anomaly_bundle_scores_like_luodi(tmp_path):
    """The autoencoder over standardized numbers and a one-hot category (missing cells in both), from the torch
    run and from its ONNX run; the isolation forest has no bundle (the error names model.type)."""
    df = families.anomaly_table(tmp_path)
    df["site"] = np.where(np.arange(len(df)) % 3 == 0, "north", "south")
    df.loc[::17, "f1"] = np.nan
    df.loc[::23, "site"] = None
    df.to_csv(tmp_path / "a.csv", index=False)
    app = {"name": "bundle-anomaly", "task": "anomaly-detection",
           "data": {"path": str(tmp_path / "a.csv"), "columns": {"label": "kind"}, "split": {"valid": 0.3, "seed": 0}},
           "model": {"type": "autoencoder", "options": {"ae_hidden": [8, 2]}},
           "train": {"epochs": 5, "batch_size": 32, "lr": 0.01, "seed": 0}, "optimize": families.OPTIMIZE}
    base = api.train(app, progress=False)
    rows = df.drop(columns="kind").iloc[::7]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    records = pd.read_csv(tmp_path / "rows.csv").to_dict("records")
    for v in (base.version, optimize(app, "onnx", version=base.version)["run"]["version"]):
        bundle = tmp_path / f"bundle-{v}"
        res = export(app, bundle, version=v)
        assert set(res["files"]) == {"README.md", "model.onnx", "predict.py", "preprocess.json"}
        got = run_bundle(bundle, (tmp_path / "rows.csv").read_text().splitlines())
        want = api.predict("bundle-anomaly", records, version=v)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert {w["label"] for w in want} == {"normal", "attack"}
        assert max(abs(g["anomaly_score"] - w["anomaly_score"]) for g, w in zip(got, want, strict=True)) < 1e-5
    forest = {**app, "name": "bundle-iforest", "model": {"type": "isolation-forest", "options": {"trees": 10}}}
    api.train(forest, progress=False)
    with pytest.raises(ConfigError, match="autoencoder detector alone") as err:
        export(forest, tmp_path / "forest")
    assert err.value.param == "model.type"


def test_recommendation_bundle_answers_like_luodi(tmp_path):
    """Top-k lists (seen items left out or not, an unknown user's cold-start list) and pair ratings (unknown user
    or item) from the numpy run and from its ONNX run."""
    cfg, records = families.recommendation(tmp_path)
    records += [{"user_id": 12, "k": 1000}, {"user_id": "0", "item_id": 3}]
    app = {"name": "bundle-recommender", "task": "recommendation", **cfg, "train": {"seed": 0},
           "optimize": families.OPTIMIZE}
    base = api.train(app, progress=False)
    for v in (base.version, optimize(app, "onnx", version=base.version)["run"]["version"]):
        bundle = tmp_path / f"bundle-{v}"
        res = export(app, bundle, version=v)
        assert set(res["files"]) == {"README.md", "recommender.onnx", "predict.py", "preprocess.json"}
        got = run_bundle(bundle, [json.dumps(r) for r in records])
        want = api.predict("bundle-recommender", records, version=v)
        assert families.same(want, got), (want, got)
