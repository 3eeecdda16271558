"""The one validation splitter (luodi.data.split) and the typed data.split (luodi.config.SplitConfig)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from luodi.config import SplitConfig, apply_overrides, config_fingerprint, validate_app
from luodi.data.split import held_out, split_frame, split_indices
from luodi.errors import ConfigError


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.random(n), "y": rng.integers(0, 3, n), "kind": rng.choice(["a", "b", "c"], n)})


def test_split_frame_draws_the_rows_scikit_learn_draws_and_holds_out_listed_values():
    df = frame()
    tr, va = split_frame(df, {"valid": 0.25, "seed": 3, "holdout": {"kind": ["c"]}}, "y")
    rest = df[df.kind != "c"]
    want_tr, want_va = train_test_split(rest, test_size=0.25, random_state=3, stratify=rest.y)
    assert tr.equals(want_tr.reset_index(drop=True))  # same rows, same order as before the one splitter
    assert va.equals(pd.concat([want_va, df[df.kind == "c"]]).reset_index(drop=True))
    assert "c" not in set(tr.kind)


def test_split_indices_counts_fractions_order_and_stratification():
    labels = np.array(["a"] * 80 + ["b"] * 20)
    tr, va = split_indices(100, SplitConfig(valid=0.1, seed=0), labels)
    assert len(va) == 10 and sorted([*tr, *va]) == list(range(100))
    assert list(labels[va]).count("b") == 2  # stratified: the 80/20 mix is kept
    tr2, va2 = split_indices(100, SplitConfig(valid=0.1, seed=0), labels)
    assert (va == va2).all() and (tr == tr2).all()  # seeded
    assert not set(split_indices(100, SplitConfig(valid=0.1, seed=1), labels)[1]) == set(va)
    _, va = split_indices(100, SplitConfig(valid=15, shuffle=False))
    assert list(va) == list(range(85, 100))  # shuffle: false holds out the last rows
    assert len(split_indices(101, SplitConfig(valid=0.1))[1]) == 11  # fractions round up like scikit-learn
    assert list(held_out([False, True, False, True])[1]) == [1, 3]


def test_split_indices_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.split.valid"):
        split_indices(10, SplitConfig(valid=10))
    with pytest.raises(ConfigError, match="data.split.speaker"):
        split_frame(frame(), {"speaker": "cyd"}, "y")  # a key table apps do not read
    with pytest.raises(ConfigError, match="data.split.valid"):
        split_frame(frame(), {"valid": -1}, "y")


def test_split_config_dumps_only_the_keys_the_app_file_sets():
    raw = {"name": "a", "task": "tabular", "data": {"split": {"valid": 2000, "shuffle": False}}}
    cfg = validate_app(raw)
    assert cfg.model_dump()["data"]["split"] == {"valid": 2000, "shuffle": False}  # 2000 stays an int
    assert cfg.data.split.model_fields_set == {"valid", "shuffle"}
    assert cfg.data.split.seed == 0 and cfg.data.split.stratify  # defaults still apply when read
    default = validate_app({"name": "a", "task": "tabular"})
    assert default.model_dump()["data"]["split"] == {"valid": 0.1, "seed": 0}
    moved = apply_overrides(default, {"data.split.seed": 1})
    assert moved.data.split.seed == 1 and config_fingerprint(moved) != config_fingerprint(default)
    with pytest.raises(ConfigError, match="data.split.vaild"):
        validate_app({"name": "a", "task": "tabular", "data": {"split": {"vaild": 0.2}}})
