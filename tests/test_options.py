"""Typed model.options (luodi.options): validated with the app by its task, documented in the config schema,
kept as written so stored configs and their fingerprints do not change; removed keys in stored configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from luodi.config import AppConfig, config_fingerprint, load_app_config, model_options, validate_app
from luodi.errors import ConfigError
from luodi.options import OPTIONS, TabularOptions
from luodi.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
APPS = sorted(
    p for p in [*REPO.glob("examples/*.yaml"), *REPO.glob("luodi/demo/*.yaml")] if "task:" in p.read_text()
)


def test_every_trainable_task_has_typed_options_with_descriptions():
    assert set(OPTIONS) == set(TASKS)
    for task, model in OPTIONS.items():
        missing = [k for k, f in model.model_fields.items() if not f.description]
        assert not missing, f"{task}: fields without a description: {missing}"
        assert model.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("path", APPS, ids=lambda p: p.name)
def test_examples_and_demos_validate(path):
    cfg = load_app_config(path)
    if cfg.task in OPTIONS:
        assert isinstance(model_options(cfg), OPTIONS[cfg.task])


def test_options_are_checked_with_the_app_and_name_the_key():
    base = {"name": "opts", "task": "tabular"}
    for options, message in (
        ({"num_leaves": 1}, r"'model\.options\.num_leaves': Input should be greater than or equal to 2 \(got 1\)"),
        ({"num_leave": 7}, r"unknown key 'model\.options\.num_leave' — expected one of n_estimators, num_leaves"),
        ({"calibration": "platt"}, r"'model\.options\.calibration': Input should be 'sigmoid', 'isotonic' or 'none'"),
        ({"svm_gamma": "wide"}, r"'model\.options\.svm_gamma': must be scale, auto or a positive number"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_app({**base, "model": {"options": options}})
    # the assistant's definition is the app's top-level `options`; its model.options stay free-form
    assert validate_app({"name": "a", "task": "assistant", "model": {"options": {"x": 1}}}).model.options == {"x": 1}


def test_the_dump_keeps_options_as_written_and_tasks_read_defaults():
    cfg = validate_app({"name": "opts", "task": "tabular", "model": {"options": {"num_leaves": 7}}})
    assert cfg.model_dump()["model"]["options"] == {"num_leaves": 7}  # no defaults filled in
    opts = model_options(cfg)
    assert isinstance(opts, TabularOptions) and opts.num_leaves == 7 and opts.n_estimators == 500


def test_schema_has_one_options_branch_per_task():
    schema = AppConfig.model_json_schema()
    branches = {b["if"]["properties"]["task"]["const"]: b["then"] for b in schema["allOf"]}
    assert set(branches) == set(OPTIONS)
    ref = branches["tabular"]["properties"]["model"]["properties"]["options"]["$ref"]
    tabular = schema["$defs"][ref.rsplit("/", 1)[1]]["properties"]
    assert tabular["num_leaves"]["minimum"] == 2 and "leaves" in tabular["num_leaves"]["description"]


STORED = """\
name: fp
task: tabular
description: ''
data: {path: x.csv, format: null, columns: {label: y}, split: {valid: 0.2, seed: 1}, options: {}}
model: {source: null, type: lightgbm, options: {num_leaves: 7}}
train: {epochs: 10, lr: 0.001, batch_size: 32, max_wait_ms: 0.0, early_stopping: 3, seed: 0, class_weights: none,
  resample: none, augment: {}, max_minutes: null, refit: false, output_dir: null}
tune: {space: {train.lr: [0.01, 0.1]}, sampler: tpe, trials: 20, folds: 1, metric: null, direction: maximize}
evaluate: {metrics: [], goal: null}
serve: {route: null, batch_size: 32, max_wait_ms: 0.0}
options: {}
"""


def test_stored_config_with_removed_keys_loads_with_its_old_fingerprint(tmp_path):
    """A config.yaml stored before train.max_wait_ms and serve.route were removed still loads, and its
    fingerprint (which resumes tune / cv) is the one the previous release (commit cc03e4b, which had
    serve.route but no longer train.max_wait_ms) computed for it."""
    stored = tmp_path / "config.yaml"
    stored.write_text(STORED)
    cfg = load_app_config(stored)
    assert "route" not in cfg.model_dump()["serve"] and "max_wait_ms" not in cfg.model_dump()["train"]
    assert config_fingerprint(cfg, ignore=("tune.trials",), sampler="tpe", folds=1) == "221e1ca6c8e8cec3"
    moved = yaml.safe_load(STORED)
    moved["serve"]["route"] = "/v1/fp"
    with pytest.raises(ConfigError, match="'serve.route' was removed: nothing read it; delete it"):
        validate_app(moved)
