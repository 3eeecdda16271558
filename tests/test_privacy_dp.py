"""Differentially private training (issue 18): `train.privacy` trains an image app with DP-SGD (Opacus), stores the
epsilon spent in the run, counts what an interrupted run spent when it resumes, and refuses what it cannot
account for. Real parts: scikit-learn's 8x8 digits, the flat CNN, Opacus' accountant."""

from __future__ import annotations

import json

import pytest

from luodi import api
from luodi.apps import predict
from luodi.audit.report import privacy_section
from luodi.errors import ConfigError


def digits_app(name: str, **train) -> dict:
    return {
        "name": name,
        "task": "image-classification",
        "data": {"format": "sklearn:digits", "split": {"valid": 0.2, "seed": 0}},
        "model": {"type": "cnn", "options": {"arch": "flat", "width": 16, "hidden": 64, "activation": "tanh"}},
        "train": {"epochs": 4, "optimizer": "sgd", "lr": 0.1, "batch_size": 64, "early_stopping": None,
                  "privacy": {"epsilon": 4.0, "max_grad_norm": 1.0}, **train},
    }


def test_private_training_spends_at_most_its_budget_and_serves():
    run = api.train(digits_app("dp-digits"), progress=False)
    spent = json.loads((run.path / "privacy.json").read_text())
    assert 0.5 * 4.0 < spent["epsilon_spent"] <= 4.0 + 1e-6 == spent["epsilon_target"] + 1e-6
    assert run.metrics["dp_epsilon"] == spent["epsilon_spent"]
    assert spent["delta"] == pytest.approx(1 / (10 * 1437)) and spent["noise_multiplier"] > 0.3
    assert spent["steps"] >= 4 * 1437 // 64 * 0.8  # Poisson batches: about epochs x rows / batch
    assert "privacy.json" in json.loads((run.path / "manifest.json").read_text())["files"]
    assert run.metrics["accuracy"] > 0.35  # 10 classes: noisy, yet far above chance
    section = privacy_section(run.path)  # what `luodi audit` shows
    assert section.status == "ok" and f"epsilon {spent['epsilon_spent']} spent of 4.0" in section.note
    predict.forget_loaded()
    task = api.load_predictor("dp-digits").task  # a fresh load: the per-example gradient hooks are gone
    valid = task.split(task.read(None))[1]
    import torch

    assert any(isinstance(m, torch.nn.Tanh) for m in task.clf.model.modules())  # model.options.activation
    assert not any(isinstance(m, torch.nn.ReLU) for m in task.clf.model.modules())
    out = task.predict([{"image": valid.x[0].tolist()}])
    assert out[0]["label"] in task.clf.meta["classes"]


def test_scattering_features_train_only_the_linear_layer_privately():
    """arch scatter (Tramer & Boneh's recipe): fixed wavelet features computed once, DP-SGD on one linear layer."""
    app = digits_app("dp-digits-scatter", lr=2.0, batch_size=128, epochs=6,
                     privacy={"epsilon": 3.0, "max_grad_norm": 0.1})
    app["model"] = {"type": "cnn", "options": {"arch": "scatter", "keep_last": True}}
    run = api.train(app, progress=False)
    spent = json.loads((run.path / "privacy.json").read_text())
    assert spent["epsilon_spent"] <= 3.0 + 1e-6
    assert run.metrics["accuracy"] > 0.8  # the flat CNN above reaches ~0.4 at epsilon 4 in as many rows
    predict.forget_loaded()
    task = api.load_predictor("dp-digits-scatter").task
    valid = task.split(task.read(None))[1]
    trained = task.clf.model.head.weight.detach().clone()
    assert sum(p.numel() for p in task.clf.model.parameters()) == trained.numel() + task.clf.model.head.bias.numel()
    out = task.predict([{"image": valid.x[i].tolist()} for i in range(20)])
    assert sum(o["label"] == y for o, y in zip(out, valid.y[:20], strict=True)) >= 14
    with pytest.raises(ConfigError, match="arch scatter") as e:
        from luodi.apps.optimize import optimize

        optimize("dp-digits-scatter", "onnx")
    assert e.value.param == "model.options.arch"


def test_a_tabular_mlp_trains_privately():
    app = {
        "name": "dp-mlp",
        "task": "tabular",
        "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target"}, "split": {"valid": 0.25}},
        "model": {"type": "mlp", "options": {"calibration": "none"}},
        "train": {"epochs": 6, "optimizer": "sgd", "lr": 0.05, "batch_size": 32, "early_stopping": None,
                  "privacy": {"epsilon": 2.0}},
    }
    run = api.train(app, progress=False)
    assert run.metrics["dp_epsilon"] <= 2.0 + 1e-6
    assert run.metrics["roc_auc"] > 0.85  # 30 standardized features, 426 rows: private and still useful


def test_a_resumed_run_counts_what_it_already_spent():
    def stop_after_two(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    app = digits_app("dp-resume")
    with pytest.raises(KeyboardInterrupt):
        api.train(app, progress=False, callbacks=[stop_after_two])
    run = api.train(app, progress=False, resume=True)
    whole = api.train(digits_app("dp-whole"), progress=False)  # the same training, never interrupted
    assert run.metrics["dp_epsilon"] == pytest.approx(whole.metrics["dp_epsilon"], rel=1e-6)
    assert run.metrics["dp_epsilon"] <= 4.0 + 1e-6


@pytest.mark.parametrize(
    "change,message",
    [
        ({"task": "tabular", "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target"}},
          "model": {"type": "lightgbm"}}, "only the MLP member trains with DP-SGD"),
        ({"task": "tabular", "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target"}},
          "model": {"type": "mlp", "options": {"inner_folds": 3}}}, "would spend the budget again"),
        ({"task": "text-classification", "data": {"path": "x.csv"}, "model": {"type": "embedding-head"}},
         "no differentially private training"),
        ({"train_extra": {"adversarial": {"method": "fgsm-rs", "eps": 0.1}}}, "adversarial"),
        ({"model": {"type": "cnn", "options": {"width": 8}}}, "arch: scatter or flat"),
    ],
)
def test_what_cannot_be_accounted_for_is_refused(change, message):
    app = digits_app("dp-refused", **change.pop("train_extra", {}))
    app.update(change)
    with pytest.raises(ConfigError, match=message) as e:
        api.train(app, progress=False)
    assert "train.privacy" in str(e.value)


def test_privacy_settings_are_checked():
    with pytest.raises(ConfigError, match="epsilon"):
        api.train(digits_app("dp-bad", privacy={"epsilon": 0}), progress=False)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        api.train(digits_app("dp-bad", privacy={"epsilon": 1, "max_grad_norm": -1}), progress=False)
