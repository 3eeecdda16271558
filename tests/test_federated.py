"""`luodi federated`: the Dirichlet split, FedAvg (Flower) of a table app's MLP into a normal run, and its errors.

The table is synthetic (a known rule plus noise), so the tests need no dataset and their accuracy bar is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("flwr", reason="federated learning needs Flower: pip install --no-deps flwr (docs/federated.md)")

from luodi import api  # noqa: E402
from luodi.cli import app as cli  # noqa: E402
from luodi.data.federated_split import dirichlet_shards, iid_shards, label_skew  # noqa: E402
from luodi.errors import BadRequest  # noqa: E402


def synthetic_table(path: Path, rows: int = 1600, seed: int = 0) -> Path:
    """Income-like rows: two numbers and a category decide the label (with 5 % of labels flipped)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    hours = rng.integers(10, 70, rows)
    job = rng.choice(["clerk", "manager", "engineer", "driver"], rows)
    score = 0.05 * (age - 45) + 0.06 * (hours - 40) + np.where(job == "manager", 1.2, 0) - np.where(job == "driver",
                                                                                                   1.0, 0)
    label = np.where(score + rng.normal(0, 0.3, rows) > 0, "high", "low")
    flip = rng.random(rows) < 0.05
    label[flip] = np.where(label[flip] == "high", "low", "high")
    pd.DataFrame({"age": age, "hours": hours, "job": job, "income": label}).to_csv(path, index=False)
    return path


def app_config(tmp_path: Path, name: str = "fed-income", model: str = "mlp") -> dict:
    return {
        "name": name, "task": "tabular",
        "data": {"path": str(synthetic_table(tmp_path / "table.csv")), "format": "csv",
                 "columns": {"label": "income"}, "split": {"valid": 0.25, "seed": 0, "stratify": True}},
        "model": {"type": model, "options": {"hidden": [32, 16], "mlp_lr": 0.01}},
        "train": {"epochs": 20, "batch_size": 64, "seed": 0},
        "evaluate": {"metrics": ["accuracy"]},
    }


# ---- the split ---------------------------------------------------------------------------------------------

def test_dirichlet_split_covers_every_row_once_and_is_label_skewed():
    labels = np.repeat(["a", "b", "c"], [900, 600, 500])
    skewed = dirichlet_shards(labels, 10, alpha=0.1, seed=3)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(len(labels)))  # each row exactly once
    assert all(len(s) >= 1 for s in skewed)
    near_iid = dirichlet_shards(labels, 10, alpha=1000.0, seed=3)
    iid = iid_shards(len(labels), 10, seed=3)
    assert sorted(np.concatenate(iid).tolist()) == list(range(len(labels)))
    assert max(len(s) for s in iid) - min(len(s) for s in iid) <= 1
    # small alpha: clients see very different class mixes; large alpha and iid: close to the whole table's
    assert label_skew(labels, skewed) > 0.4
    assert label_skew(labels, near_iid) < 0.1 and label_skew(labels, iid) < 0.1
    # seeded: the same split again, another seed another split
    again = dirichlet_shards(labels, 10, alpha=0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))
    other = dirichlet_shards(labels, 10, alpha=0.1, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(skewed, other, strict=True))


def test_split_refuses_impossible_requests():
    labels = np.array(["a", "b"] * 5)
    with pytest.raises(BadRequest, match="--clients"):
        dirichlet_shards(labels, 11, alpha=0.5, seed=0)
    with pytest.raises(BadRequest, match="--non-iid"):
        dirichlet_shards(labels, 2, alpha=0.0, seed=0)
    with pytest.raises(BadRequest, match="--clients"):
        iid_shards(10, 0, seed=0)


# ---- training -----------------------------------------------------------------------------------------------

def test_federated_run_reaches_centralized_quality_and_predicts(tmp_path):
    cfg = app_config(tmp_path)
    lines: list[str] = []
    run = api.federated(cfg, clients=5, rounds=6, alpha=0.5, log=lines.append)
    assert run.status == "done"
    summary = json.loads((run.path / "federated.json").read_text())
    assert summary["clients"] == 5 and summary["rounds"] == 6 and summary["alpha"] == 0.5
    assert summary["strategy"].startswith("FedAvg")
    assert [h["round"] for h in summary["per_round"]] == list(range(7))  # round 0: the initial weights
    assert summary["per_round"][0]["accuracy"] < summary["per_round"][-1]["accuracy"]
    assert sum(summary["shard_rows"]) == 1200  # the training split, shared out whole
    central = summary["centralized"]["accuracy"]
    assert central > 0.85  # the rule is learnable (5 % label noise)
    assert run.metrics["accuracy"] >= 0.95 * central, summary
    assert any(line.startswith("round 6/6") for line in lines)
    # a normal run: the same files as `luodi train`, loadable, predicts, evaluates
    for name in ("config.yaml", "preprocess.json", "mlp.safetensors", "metrics.json", "report.html",
                 "manifest.json"):
        assert (run.path / name).exists(), name
    out = api.predict("fed-income", [{"age": 60, "hours": 65, "job": "manager"},
                                     {"age": 20, "hours": 15, "job": "driver"}])
    assert [o["label"] for o in out] == ["high", "low"]
    ev = api.evaluate("fed-income")
    assert ev["metrics"]["accuracy"] == pytest.approx(run.metrics["accuracy"], abs=1e-9)


def test_sgd_clients_train_with_scaffold_and_match_centralized(tmp_path):
    """With SGD clients the default strategy is SCAFFOLD: FedAvg plus control variates against client drift."""
    cfg = app_config(tmp_path, name="fed-scaffold")
    cfg["train"]["optimizer"] = "sgd"
    cfg["model"]["options"]["mlp_lr"] = 0.1
    run = api.federated(cfg, clients=5, rounds=5, alpha=0.3, local_epochs=3)
    summary = json.loads((run.path / "federated.json").read_text())
    assert summary["strategy"].startswith("SCAFFOLD")
    assert all(np.isfinite(h["valid_loss"]) for h in summary["per_round"])
    assert summary["per_round"][-1]["valid_loss"] < summary["per_round"][0]["valid_loss"]
    assert run.metrics["accuracy"] >= 0.95 * summary["centralized"]["accuracy"], summary


def test_scaffold_refuses_dp_and_adamw_naming_the_option(tmp_path):
    from luodi.errors import ConfigError

    cfg = app_config(tmp_path, name="fed-scaffold-bad")  # AdamW clients (the default optimizer)
    with pytest.raises(ConfigError, match="--strategy"):
        api.federated(cfg, clients=2, rounds=1, strategy="scaffold", centralized=False)
    with pytest.raises(BadRequest, match="--strategy"):
        api.federated(cfg, clients=2, rounds=1, strategy="fedprox", centralized=False)
    cfg["train"]["optimizer"] = "sgd"
    cfg["train"]["privacy"] = {"epsilon": 2.0}
    with pytest.raises(ConfigError, match="--strategy scaffold needs plain SGD"):
        api.federated(cfg, clients=2, rounds=1, strategy="scaffold", dp=True, centralized=False)


def test_federated_dp_reports_each_clients_epsilon_within_budget(tmp_path):
    cfg = app_config(tmp_path, name="fed-dp")
    cfg["train"]["privacy"] = {"epsilon": 2.0}
    cfg["train"]["optimizer"] = "sgd"
    cfg["model"]["options"]["mlp_lr"] = 0.1
    run = api.federated(cfg, clients=3, rounds=2, dp=True, centralized=False)
    summary = json.loads((run.path / "federated.json").read_text())
    assert summary["strategy"].startswith("FedAvg")  # SGD clients, but DP-SGD: no SCAFFOLD correction
    spent = summary["privacy"]
    assert len(spent["epsilon_per_client"]) == 3
    assert all(1.0 < e <= 2.0 * 1.02 for e in spent["epsilon_per_client"]), spent  # spends most, not more
    assert run.metrics["dp_epsilon"] == spent["epsilon_max"]
    assert run.metrics["accuracy"] > 0.6


# ---- errors -------------------------------------------------------------------------------------------------

def _cli(tmp_path: Path, cfg: dict, *args: str):
    import yaml

    f = tmp_path / "app.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(cli, ["federated", str(f), *args])


@pytest.mark.parametrize(("args", "named"), [
    (["--clients", "0"], "--clients"),
    (["--non-iid", "-1"], "--non-iid"),
    (["--rounds", "0"], "--rounds"),
    (["--clients", "5000"], "--clients"),  # more clients than training rows
])
def test_bad_options_exit_2_naming_the_option(tmp_path, args, named):
    r = _cli(tmp_path, app_config(tmp_path, name="fed-bad"), *args, "--no-centralized")
    assert r.exit_code == 2, r.output
    assert named in r.output


def test_unsupported_apps_are_refused_naming_the_field(tmp_path):
    r = _cli(tmp_path, app_config(tmp_path, name="fed-lgb", model="lightgbm"))
    assert r.exit_code == 2 and "model.type" in r.output and "mlp" in r.output
    cfg = app_config(tmp_path, name="fed-dp-missing")
    r = _cli(tmp_path, cfg, "--dp")
    assert r.exit_code == 2 and "train.privacy" in r.output
    cfg["model"]["options"]["inner_folds"] = 3
    r = _cli(tmp_path, cfg)
    assert r.exit_code == 2 and "model.options.inner_folds" in r.output
