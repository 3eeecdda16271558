"""Robustness: attacks lower accuracy, eps 0 does not, table attacks stay feature-valid, adversarial training
is configured by train.adversarial, and the audit section says when it does not apply."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from luodi.audit.robustness import section
from luodi.config import AppConfig, validate_app
from luodi.errors import ConfigError
from luodi.evaluate.robustness import (
    FeatureSpace,
    adversarial_examples,
    art_accuracy,
    art_adversarial,
    art_classifier,
    fgsm_rs,
    trades_loss,
)
from luodi.tasks import task_for


def digits_config(**train) -> AppConfig:
    return AppConfig.model_validate(
        {
            "name": "digits-robust",
            "task": "image-classification",
            "data": {"format": "sklearn:digits", "split": {"valid": 0.25, "seed": 0}},
            "model": {"type": "cnn", "options": {"width": 8, "dropout": 0.1}},
            "train": {"epochs": 4, "lr": 0.01, "batch_size": 32, "early_stopping": None, **train},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    task = task_for(digits_config())
    tr, va = task.split(task.read(None))
    task.fit(tr, va, tmp_path_factory.mktemp("robust-run"), progress=False)
    return task, va


def test_fgsm_lowers_accuracy_and_eps_zero_changes_nothing(trained):
    task, va = trained
    clf = task.need()
    x, y = task.model_input(va), clf.targets(va.y).numpy()
    art = art_classifier(clf.pixel_model(), 10, tuple(x.shape[1:]), (0.0, 1.0))
    clean = art_accuracy(art, x, y)
    assert clean > 0.7, clean
    assert art_accuracy(art, art_adversarial(art, "fgsm", x, y, 0.0), y) == clean
    attacked = art_adversarial(art, "fgsm", x, y, 0.2)
    assert np.abs(attacked - x).max() <= 0.2 + 1e-6 and attacked.min() >= 0 and attacked.max() <= 1
    assert art_accuracy(art, attacked, y) < clean - 0.2


def test_audit_section_reports_the_curve_for_an_image_app(trained):
    task, va = trained
    s = section(SimpleNamespace(task=task, config=task.config), None, va, attack="fgsm", eps=0.1)
    assert s.status == "ok" and s.numbers["eps"] == 0.1
    assert [r["eps"] for r in s.numbers["curve"]][0] == 0.0
    assert s.numbers["robust_accuracy"] < s.numbers["clean_accuracy"]
    assert "<img" in s.html


def test_fgsm_rs_stays_in_the_eps_ball_and_in_pixel_range():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    adv = fgsm_rs(net, x, y, eps=0.1, alpha=0.125)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)


def test_n_fgsm_leaves_the_eps_ball_but_not_the_noise_plus_step_ball():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x, y = torch.rand(16, 1, 8, 8) * 0.5 + 0.25, torch.randint(0, 3, (16,))
    adv = adversarial_examples(net, x, y, "n-fgsm", 0.1, None, 1)
    moved = (adv - x).abs().max()
    assert 0.1 < moved <= 0.3 + 1e-6  # noise 2 eps + step eps, no projection back onto the eps-ball
    assert adv.min() >= 0 and adv.max() <= 1
    near = adversarial_examples(net, x, y, "n-fgsm", 0.1, None, 1, noise=0.5)
    assert (near - x).abs().max() <= 0.15 + 1e-6
    start = adversarial_examples(net, x, y, "fgsm-rs", 0.1, None, 1, noise=2.0)
    assert (start - x).abs().max() <= 0.1 + 1e-6  # fgsm-rs still projects, whatever its start


def test_trades_examples_stay_in_the_eps_ball_and_move_the_prediction():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    adv = adversarial_examples(net, x, y, "trades", 0.1, None, 5)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    clean = torch.softmax(net(x), 1)
    kl = lambda z: float(torch.nn.functional.kl_div(torch.log_softmax(net(z), 1), clean, reduction="sum"))  # noqa: E731
    assert kl(adv) > kl((x + (torch.rand_like(x) * 2 - 1) * 0.1).clamp(0, 1))  # beyond random noise of the same size
    same = trades_loss(net(x), net(x), y, beta=6.0)
    assert torch.isclose(same, torch.nn.functional.cross_entropy(net(x), y), atol=1e-6)  # no KL without a change
    assert float(trades_loss(net(x), net(adv), y, beta=6.0)) > float(same)


def test_trades_training_runs_on_tiny_data_and_rejects_mixup(tmp_path):
    torch.set_num_threads(1)
    adv = {"method": "trades", "eps": 0.1, "steps": 2, "beta": 3, "check_steps": 2}
    task = task_for(digits_config(epochs=2, adversarial=adv))
    task.config.model.options.update(arch="flat", hidden=32, keep_last=True)
    task = task_for(task.config)
    tr, va = task.split(task.read(None))
    task.fit(tr.subset(range(200)), va.subset(range(60)), tmp_path, progress=False)
    assert len(task.history) == 2 and all("valid_robust_accuracy" in h for h in task.history)
    m = task.evaluate(va.subset(range(60)))
    assert 0 <= m["robust_accuracy"] <= m["accuracy"] + 0.05
    from luodi.tasks.grid_cnn import GridClassifier

    clf = GridClassifier(task.need().meta)
    with pytest.raises(ConfigError, match=r"train\.adversarial\.method"):
        clf.fit(task.config.train, tr.x[:64], tr.y[:64], None, tmp_path / "mix", aug={}, label_smoothing=0,
                weight_decay=0, schedule="constant", mixup=0.2, adversarial=True, progress=False)


def test_table_perturbations_keep_categories_and_training_ranges():
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "age": rng.integers(18, 90, 200),
            "income": rng.lognormal(10, 2, 200),
            "flag": rng.integers(0, 2, 200),
            "job": rng.choice(["a", "b", "c"], 200),
        }
    )
    space = FeatureSpace.fit(train, ["age", "income", "flag"], log1p=["income"])
    assert list(space.movable) == [True, True, False]  # a 0/1 flag is a category in disguise
    rows = train.iloc[:50]
    pd.testing.assert_frame_equal(space.apply(rows, space.to_z(rows)), rows)  # nothing moved: nothing changes
    moved = space.apply(rows, space.to_z(rows) + rng.normal(0, 5, (50, 3)).astype(np.float32))
    assert moved["job"].tolist() == rows["job"].tolist()
    assert moved["flag"].tolist() == rows["flag"].tolist()
    assert not np.allclose(moved["age"], rows["age"])
    for c in ("age", "income"):
        assert moved[c].min() >= train[c].min() and moved[c].max() <= train[c].max()
    assert np.all(moved["age"] == np.round(moved["age"]))  # integer columns stay integers


def test_table_perturbations_do_not_exponentiate_plain_columns():
    train = pd.DataFrame({"amount": np.linspace(1e3, 1e5, 100), "income": np.linspace(1e3, 1e5, 100)})
    space = FeatureSpace.fit(train, ["amount", "income"], log1p=["income"])
    rows = train.iloc[:10]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # expm1 of a raw amount (1e5) would overflow
        moved = space.apply(rows, space.to_z(rows) + 0.5)
    assert np.all(moved["amount"] > rows["amount"]) and np.all(moved["income"] > rows["income"])


def test_adversarial_config_validates_and_names_the_field():
    base = {"name": "d", "task": "image-classification", "data": {"format": "sklearn:digits"}}
    ok = validate_app({**base, "train": {"adversarial": {"method": "fgsm-rs", "eps": 0.3}}})
    assert ok.train.adversarial.method == "fgsm-rs" and ok.train.adversarial.alpha is None
    with pytest.raises(ConfigError, match=r"train\.adversarial\.method"):
        validate_app({**base, "train": {"adversarial": {"method": "fgsm", "eps": 0.3}}})
    with pytest.raises(ConfigError, match=r"train\.adversarial\.eps"):
        validate_app({**base, "train": {"adversarial": {"eps": 0}}})
    nf = validate_app({**base, "train": {"adversarial": {"method": "n-fgsm", "ramp_epochs": 2.5, "noise": 1}}})
    assert nf.train.adversarial.method == "n-fgsm" and nf.train.adversarial.ramp_epochs == 2.5
    with pytest.raises(ConfigError, match=r"train\.adversarial\.ramp_epochs"):
        validate_app({**base, "train": {"adversarial": {"method": "n-fgsm", "ramp_epochs": -1}}})
    with pytest.raises(ConfigError, match=r"train\.adversarial\.noise"):
        validate_app({**base, "train": {"adversarial": {"method": "n-fgsm", "noise": 0}}})
    tr = validate_app({**base, "train": {"adversarial": {"method": "trades", "steps": 5, "beta": 3}}})
    assert tr.train.adversarial.method == "trades" and tr.train.adversarial.beta == 3
    with pytest.raises(ConfigError, match=r"train\.adversarial\.beta"):
        validate_app({**base, "train": {"adversarial": {"method": "trades", "beta": 0}}})


def test_adversarial_training_reports_robust_accuracy(tmp_path):
    torch.set_num_threads(1)
    task = task_for(digits_config(epochs=1, adversarial={"method": "fgsm-rs", "eps": 0.1, "check_steps": 2}))
    tr, va = task.split(task.read(None))
    task.fit(tr.subset(range(300)), va.subset(range(100)), tmp_path, progress=False)
    assert "valid_robust_accuracy" in task.history[-1]
    m = task.evaluate(va.subset(range(100)))
    assert 0 <= m["robust_accuracy"] <= m["accuracy"] + 0.05


def test_flat_cnn_has_no_batch_norm_and_fits_odd_sizes():
    from luodi.tasks.grid_cnn import FlatCNN

    for size in ((28, 28), (30, 31), (8, 8)):
        net = FlatCNN(1, 10, size, width=4, hidden=16)
        assert net(torch.rand(2, 1, *size)).shape == (2, 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    base = {"name": "d", "task": "image-classification", "data": {"format": "sklearn:digits"}}
    with pytest.raises(ConfigError, match=r"model\.options\.arch"):
        task_for(validate_app({**base, "model": {"options": {"arch": "resnet"}}}))


def test_n_fgsm_training_with_an_eps_ramp_runs_and_reports_robust_accuracy(tmp_path):
    torch.set_num_threads(1)
    adv = {"method": "n-fgsm", "eps": 0.1, "ramp_epochs": 1, "check_steps": 2}
    task = task_for(digits_config(epochs=2, adversarial=adv))
    task.config.model.options.update(arch="flat", hidden=32)
    task = task_for(task.config)
    tr, va = task.split(task.read(None))
    task.fit(tr.subset(range(200)), va.subset(range(60)), tmp_path, progress=False)
    assert len(task.history) == 2 and all("valid_robust_accuracy" in h for h in task.history)
    assert task.need().meta["arch"] == "flat"
    m = task.evaluate(va.subset(range(60)))
    assert 0 <= m["robust_accuracy"] <= m["accuracy"] + 0.05


def test_madry_cnn_keeping_the_last_epoch_trains_on_tiny_data(tmp_path):
    from luodi.tasks.grid_cnn import MadryCNN

    for size in ((28, 28), (30, 31), (8, 8)):
        net = MadryCNN(1, 10, size, width=4, hidden=16)
        assert net(torch.rand(2, 1, *size)).shape == (2, 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.set_num_threads(1)
    adv = {"method": "n-fgsm", "eps": 0.1, "noise": 1, "check_steps": 2}
    task = task_for(digits_config(epochs=3, adversarial=adv, early_stopping=1))
    task.config.model.options.update(arch="madry", width=4, hidden=16, keep_last=True)
    task = task_for(task.config)
    tr, va = task.split(task.read(None))
    task.fit(tr.subset(range(120)), va.subset(range(40)), tmp_path, progress=False)
    assert len(task.history) == 3  # keep_last: a fixed schedule, never stopped early by validation
    assert task.need().meta["arch"] == "madry"
    m = task.evaluate(va.subset(range(40)))
    assert 0 <= m["robust_accuracy"] <= m["accuracy"] + 0.05


def test_audit_section_is_skipped_for_a_text_app():
    cfg = validate_app({"name": "t", "task": "text-classification", "data": {"path": "x.csv"}})
    s = section(SimpleNamespace(task=task_for(cfg), config=cfg), None, None)
    assert s.status == "skipped" and "text" in s.note


def test_unknown_attack_is_a_config_error():
    with pytest.raises(ConfigError, match="attack"):
        section(SimpleNamespace(task=None), None, None, attack="cw")
