"""Tabular anonymization (issue 18): k-anonymity and distinct l-diversity by Mondrian generalization, checked by
counting the released table itself (and by pycanon where it is installed), its errors, and `luodi anonymize`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from luodi.cli import app
from luodi.errors import BadRequest, ConfigError
from luodi.privacy.anonymize import anonymize, anonymize_config, check


def people(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 90, n),
        "zip": rng.choice([f"{z:05d}" for z in rng.integers(10000, 99999, 40)], n),
        "sex": rng.choice(["F", "M"], n),
        "visits": rng.poisson(3, n),  # not a quasi-identifier: kept as it is
        "diagnosis": rng.choice(["flu", "asthma", "diabetes", "none"], n, p=[0.4, 0.2, 0.1, 0.3]),
    })


@pytest.mark.parametrize("k,l", [(5, 1), (10, 2), (25, 3)])
def test_every_group_has_k_rows_and_l_diagnoses(k, l):  # noqa: E741
    df = people()
    cfg = anonymize_config({"quasi": ["age", "zip", "sex"], "k": k, "l": l, "sensitive": "diagnosis"})
    out = anonymize(df, cfg)
    released = out.frame
    sizes = released.groupby(["age", "zip", "sex"]).size()
    assert sizes.min() >= k and out.report["k_reached"] == sizes.min()
    assert released.groupby(["age", "zip", "sex"])["diagnosis"].nunique().min() >= l
    assert check(released, ["age", "zip", "sex"], "diagnosis") == {"k": int(sizes.min()), "l": out.report["l_reached"]}
    assert out.report["classes"] > len(df) // (4 * k)  # generalized, not collapsed into a few huge groups
    assert 0 < out.report["ncp"] < 0.8
    pd.testing.assert_series_equal(released["visits"], df["visits"])  # other columns untouched
    pd.testing.assert_series_equal(released["diagnosis"], df["diagnosis"])
    for age, orig in zip(released["age"], df["age"], strict=True):  # each range holds the true value
        lo, _, hi = str(age).partition("-")
        assert float(lo) <= orig <= float(hi or lo)
    for z, orig in zip(released["zip"], df["zip"], strict=True):
        assert orig in z.split("|")


def test_larger_k_loses_more_information():
    df = people()
    cfgs = [anonymize_config({"quasi": ["age", "zip", "sex"], "k": k}) for k in (3, 10, 50)]
    loss = [anonymize(df, cfg).report["ncp"] for cfg in cfgs]
    assert loss[0] < loss[1] < loss[2]


def test_pycanon_agrees():
    anonymity = pytest.importorskip("pycanon.anonymity", reason="pycanon not installed (make install adds it)")
    out = anonymize(people(), anonymize_config({"quasi": ["age", "zip", "sex"], "k": 10, "l": 2,
                                               "sensitive": "diagnosis"}))
    assert anonymity.k_anonymity(out.frame, ["age", "zip", "sex"]) == out.report["k_reached"] >= 10
    assert anonymity.l_diversity(out.frame, ["age", "zip", "sex"], ["diagnosis"]) == out.report["l_reached"] >= 2


def test_missing_values_suppression_and_errors():
    df = people()
    df.loc[:5, "age"] = np.nan  # 6 rows without a number: suppressed
    df.loc[10:20, "zip"] = None  # a missing category is a category of its own
    out = anonymize(df, anonymize_config({"quasi": ["age", "zip"], "k": 5}))
    assert out.report["suppressed"] == 6 and len(out.frame) == len(df) - 6
    assert out.frame["zip"].str.contains("(missing)", regex=False).any()
    with pytest.raises(BadRequest, match="max_suppression"):
        anonymize(df, anonymize_config({"quasi": ["age"], "k": 5, "max_suppression": 0.005}))
    with pytest.raises(BadRequest, match="'agee' not in the table; it has: age") as e:
        anonymize(df, anonymize_config({"quasi": ["agee"], "k": 5}))
    assert e.value.param == "quasi"
    with pytest.raises(BadRequest, match="lower k or l"):
        anonymize(df.iloc[30:38], anonymize_config({"quasi": ["age"], "k": 10}))
    with pytest.raises(BadRequest, match="lower k or l"):
        anonymize(df, anonymize_config({"quasi": ["age"], "k": 5, "l": 5, "sensitive": "sex"}))
    with pytest.raises(ConfigError, match="'k'.*greater than or equal to 2"):
        anonymize_config({"quasi": ["age"], "k": 1})
    with pytest.raises(ConfigError, match="needs `sensitive`"):
        anonymize_config({"quasi": ["age"], "l": 2})
    with pytest.raises(ConfigError, match="both sensitive and a quasi-identifier"):
        anonymize_config({"quasi": ["age", "sex"], "sensitive": "sex"})


def test_cli_writes_the_released_table(tmp_path):
    src, out = tmp_path / "people.csv", tmp_path / "released.parquet"
    people().to_csv(src, index=False)
    args = ["anonymize", str(src), "--quasi", "age,zip,sex", "--k", "10", "--l", "2", "--sensitive", "diagnosis",
            "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    report = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
    released = pd.read_parquet(out)
    assert report["k_reached"] >= 10 and check(released, ["age", "zip", "sex"], "diagnosis")["k"] >= 10
    assert len(released) == 600
    bad = CliRunner().invoke(app, [*args[:2], "--quasi", "age,postcode", "--out", str(out)])
    assert bad.exit_code == 2 and "'postcode' not in the table" in " ".join(bad.output.split())
    folder = CliRunner().invoke(app, [*args[:-1], str(tmp_path)])
    assert folder.exit_code == 2 and "is a folder" in " ".join(folder.output.split())
