"""luodi optimize for token classification (NER): the frozen encoder under the tagger becomes an ONNX graph of the
layers the tagger reads (float32, then int8 with the float32 fallback), measured against the torch run, and PII
detection can read names through the optimized run."""

from __future__ import annotations

import pytest
import yaml

from luodi import api
from luodi.apps.optimize import optimize
from luodi.apps.registry import get_run, verify_manifest

OPTIMIZE = {"calibration_rows": 48, "latency_rows": 10, "throughput_rows": 32}
TEXTS = ["Peter Blackburn met officials of the European Commission in Brussels on Tuesday .",
         "Germany 's representative to the European Union said on Wednesday that Bonn was ready ."]


@pytest.fixture(scope="module")
def ner_app(datasets_dir, tmp_path_factory):
    """A CoNLL-2003 slice (the first ~250 sentences of eng.train), one small tagger over MiniLM layers 5 and 6."""
    folder = tmp_path_factory.mktemp("optimize-ner")
    lines = (datasets_dir / "conll2003/eng.train").read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if not line.strip()][250]
    (folder / "ner.txt").write_text("\n".join(lines[:cut]) + "\n")
    app = {"name": "opt-ner", "task": "token-classification",
           "data": {"path": str(folder / "ner.txt"), "format": "conll", "split": {"valid": 0.25, "seed": 0}},
           "model": {"source": "bundled:minilm-l6", "options": {"layers": [5, 6], "hidden": 32}},
           "train": {"epochs": 3, "lr": 0.003, "batch_size": 16}, "evaluate": {"metrics": ["f1"]},
           "optimize": OPTIMIZE}
    path = folder / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    return {"yaml": str(path), "base": api.train(str(path), progress=False)}


def test_onnx_then_int8_encoder_agree_with_torch(ner_app):
    base = ner_app["base"].version
    res = optimize(ner_app["yaml"], "onnx", version=base)
    onnx_version = res["run"]["version"]
    opt = res["table"]["rows"]["optimized"]
    assert opt["agreement"] >= 0.99  # the same encoder, as a graph
    assert abs(opt["quality"] - res["table"]["rows"]["baseline"]["quality"]) <= 0.01
    stored = get_run("opt-ner", onnx_version)
    verify_manifest(stored.path)
    assert (stored.path / "encoder.onnx").exists()
    torch_out = api.predict("opt-ner", [{"text": t} for t in TEXTS], version=base)
    onnx_out = api.predict("opt-ner", [{"text": t} for t in TEXTS], version=onnx_version)
    assert api.load_predictor("opt-ner", onnx_version).task.features is not None
    assert [[(e["label"], e["start"]) for e in o["entities"]] for o in onnx_out] == \
        [[(e["label"], e["start"]) for e in o["entities"]] for o in torch_out]

    res = optimize(ner_app["yaml"], "int8", version=onnx_version)
    assert res["methods"] == ["onnx", "int8"]
    details, table = res["details"], res["table"]
    assert details["met"] and details["quality_drop"] <= 0.003 + 1e-9  # optimize.max_quality_drop's default
    if "kept" not in details:
        stored = get_run("opt-ner", res["run"]["version"])
        assert (stored.path / "encoder-int8.onnx").exists() and not (stored.path / "encoder.onnx").exists()
        assert table["rows"]["optimized"]["size_mb"] < table["rows"]["baseline"]["size_mb"]
    assert table["rows"]["optimized"]["agreement"] >= 0.9


def test_refused_methods_name_the_field(ner_app):
    from luodi.errors import ConfigError

    with pytest.raises(ConfigError, match="this app offers: onnx, int8") as e:
        optimize(ner_app["yaml"], "distill")
    assert e.value.param == "method"
