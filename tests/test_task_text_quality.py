"""Full-dataset quality of the text examples (slow: LUODI_SLOW=1). Thresholds are what the shipped
examples reach on their validation splits (see docs/text-apps.md), a little below to absorb noise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from luodi.config import load_app_config
from luodi.tasks import task_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
slow = pytest.mark.skipif(os.environ.get("LUODI_SLOW") != "1", reason="trains on full datasets: LUODI_SLOW=1")


def fit_example(name: str, datasets_dir: Path, tmp_path: Path) -> dict:
    os.environ["LUODI_DATASETS"] = str(datasets_dir)
    task = task_for(load_app_config(EXAMPLES / f"{name}.yaml"))
    train, valid = task.split(task.read(None))
    task.fit(train, valid, tmp_path, progress=False)
    return task.evaluate(valid)


@slow
@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "metric", "at_least"),
    [
        ("spam-filter", "accuracy", 0.985),
        ("banking-intents", "accuracy", 0.93),
        ("clinc-intents", "in_scope_accuracy", 0.955),
        ("clinc-intents", "oos_recall", 0.60),
        ("entity-extraction", "f1", 0.88),
    ],
)
def test_example_quality(example, metric, at_least, datasets_dir, tmp_path):
    assert fit_example(example, datasets_dir, tmp_path)[metric] >= at_least


@slow
@pytest.mark.slow
def test_dialogue_style_lowers_perplexity(datasets_dir, tmp_path):
    m = fit_example("dialogue-style", datasets_dir, tmp_path)
    assert m["perplexity_reduction"] >= 0.20
