"""luodi optimize --method prune on a small real text app: attention heads and feed-forward channels of the
fine-tuned MiniLM are cut out (the matrices shrink), the run reloads its pruned shapes from disk, predicts like
its base, and exports to ONNX (uneven heads per layer) for int8; apps without a fine-tuned encoder are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import banking_slice_app, tfidf_only_variant

from luodi import api
from luodi.apps.optimize import optimize
from luodi.apps.registry import get_run
from luodi.errors import ConfigError

OPTIMIZE = {"calibration_rows": 64, "latency_rows": 20, "throughput_rows": 64}
MINILM_LAYER_PARAMETERS = 6 * 1_774_464  # MiniLM-L6's transformer layers (its token embeddings are not pruned)


@pytest.fixture(scope="module")
def text_app(datasets_dir, tmp_path_factory):
    """A banking77 slice (6 intents x 30 texts): MiniLM fine-tuned (top 2 layers, 2 epochs), the frozen-encoder
    head and TF-IDF, mixed."""
    options = {"features": ["finetune", "embeddings", "tfidf"], "finetune_layers": 2, "max_length": 48,
               "head_weights": {"finetune": 0.7, "embeddings": 0.15, "tfidf": 0.15}}
    return banking_slice_app(datasets_dir, tmp_path_factory.mktemp("prune"), "prune-bank6", options,
                             optimize=OPTIMIZE)


def _layer_parameters(task) -> int:
    from luodi.tasks.text_prune import encoder_layer_parameters

    return sum(encoder_layer_parameters(m) for m in task.ft_model.members)


def test_pruned_run_is_smaller_reloads_and_exports(text_app):
    res = optimize(text_app["yaml"], "prune", version=text_app["base"].version,  # half (the defaults cut more)
                   overrides={"optimize.prune.epochs": 1, "optimize.prune.heads": 0.5, "optimize.prune.ffn": 0.5})
    version = res["run"]["version"]
    run = get_run("prune-bank6", version)
    assert res["methods"] == ["prune"] and not (run.path / "checkpoint").exists()
    meta = json.loads((run.path / "text_classification.json").read_text())
    shapes = meta["options"]["pruned"]
    assert len(shapes) == 1 and len(shapes[0]["heads"]) == 6 and len(shapes[0]["ffn"]) == 6
    assert sum(len(h) for h in shapes[0]["heads"]) == 36  # half of 6 x 12 heads
    assert all(h and max(h) < 12 for h in shapes[0]["heads"]) and all(w % 16 == 0 for w in shapes[0]["ffn"])
    # by default the frozen-encoder head (a whole unpruned MiniLM) is dropped; the other weights stay
    assert meta["heads"] == ["finetune", "tfidf"]
    assert meta["options"]["head_weights"] == {"finetune": 0.7, "tfidf": 0.15}
    # parameters: the transformer layers fall by about the pruned fraction (0.5 of heads and channels)
    details = res["details"]
    assert details["layer_parameters"]["before"] == MINILM_LAYER_PARAMETERS
    assert 0.45 <= details["layer_parameters_kept"] <= 0.56
    rows = res["table"]["rows"]
    frozen = 22_713_216 + 6 * 384 + 6  # the embeddings head's encoder (MiniLM-L6) and its logistic head
    pruned_away = rows["baseline"]["parameters"] - rows["optimized"]["parameters"] - frozen
    assert pruned_away == pytest.approx(0.5 * MINILM_LAYER_PARAMETERS, rel=0.1)
    assert rows["optimized"]["agreement"] >= 0.8  # one recovery epoch on 126 texts: the pruned model follows
    # the run reloads its pruned shapes from disk (a fresh process would do the same) and serves predictions
    loaded = api.load_predictor("prune-bank6", version).task
    assert _layer_parameters(loaded) == details["layer_parameters"]["after"]
    layer = loaded.ft_model.members[0].encoder.encoder.layer[0]
    assert layer.attention.self.query.out_features == 32 * len(shapes[0]["heads"][0])
    assert layer.intermediate.dense.out_features == shapes[0]["ffn"][0]
    texts = [{"text": t} for t in text_app["texts"][-40:]]
    base_out = api.predict("prune-bank6", texts, version=text_app["base"].version)
    out = api.predict("prune-bank6", texts, version=version)
    assert np.mean([a["label"] == b["label"] for a, b in zip(base_out, out, strict=True)]) >= 0.8
    # uneven heads per layer export to ONNX (int8 starts from the float32 export) and predict the same
    small = optimize(text_app["yaml"], "int8", version=version)
    assert small["methods"] == ["prune", "int8"]
    onnx = api.load_predictor("prune-bank6", small["run"]["version"]).task
    assert onnx.onnx is not None
    graph_out = api.predict("prune-bank6", texts, version=small["run"]["version"])
    same = np.mean([a["label"] == b["label"] for a, b in zip(out, graph_out, strict=True)])
    assert same >= (0.9 if not small["details"].get("kept") else 0.97)


def test_pruned_shapes_round_trip_through_onnx(tmp_path):
    """Uneven heads and widths: a pruned member exported alone gives the torch model's log-probabilities."""
    from types import SimpleNamespace

    from luodi.options.text import PrunedEncoder
    from luodi.tasks.onnx_text import INPUTS, NeuralHeads, export_heads
    from luodi.tasks.text_finetune import CosineClassifier
    from luodi.tasks.text_prune import prune_member, shapes_of
    from luodi.train.torch_loop import load_weights, save_weights

    torch.manual_seed(0)
    model = CosineClassifier("bundled:minilm-l6", 4).eval()
    texts = ["top up my card", "my card has not arrived", "what is the exchange rate", "cancel my transfer"] * 4
    kept = prune_member(model, texts, np.arange(16) % 4, 32,
                        SimpleNamespace(heads=0.6, ffn=0.7, importance="taylor"))
    shape = PrunedEncoder.model_validate(shapes_of(model, kept))
    assert len({len(h) for h in shape.heads}) > 1 or len(set(shape.ffn)) > 1  # uneven across layers
    save_weights(model, tmp_path / "w.safetensors")
    again = CosineClassifier("bundled:minilm-l6", 4, pruned=shape).eval()
    load_weights(again, tmp_path / "w.safetensors")
    batch = model.tokenize(texts[:4], 32)
    with torch.inference_mode():
        want = torch.log_softmax(model(batch), -1)
        assert torch.allclose(again(batch), model(batch), atol=1e-5)
    export_heads(NeuralHeads([again], None, []), again.tokenizer, tmp_path, 32)
    from luodi.ort import session

    feed = {k: batch[k].numpy() for k in INPUTS}
    got = session(tmp_path / "neural.onnx", 1).run(None, feed)[0]
    assert np.abs(got - want.numpy()).max() < 1e-4


def test_student_of_a_pruned_encoder_names_the_unpruned_heads(tmp_path):
    """distill from a pruned member: the student keeps 2 of its layers, cuts more heads and channels, and its
    shapes still name the unpruned encoder's heads, so the run rebuilds it at load."""
    from types import SimpleNamespace

    from luodi.options.optimize import DistillConfig
    from luodi.options.text import PrunedEncoder, TextClassificationOptions
    from luodi.tasks.text_finetune import CosineClassifier, distill
    from luodi.tasks.text_prune import prune_member, shapes_of
    from luodi.train.torch_loop import load_weights, save_weights

    torch.manual_seed(0)
    texts = ["top up my card", "my card has not arrived", "what is the exchange rate", "cancel my transfer"] * 4
    y = np.arange(16) % 4
    start = CosineClassifier("bundled:minilm-l6", 4).eval()
    kept = prune_member(start, texts, y, 32, SimpleNamespace(heads=0.5, ffn=0.5, importance="magnitude"))
    previous = PrunedEncoder.model_validate(shapes_of(start, kept))
    teacher = np.log(np.full((16, 4), 0.25, dtype=np.float32))
    cut = DistillConfig(layers=[2, 4], heads=0.5, ffn=0.5, epochs=1, batch_size=8, importance_rows=16)
    opts = TextClassificationOptions(features=["finetune"], max_length=32)
    student, shape = distill(texts, y, teacher, start, opts=opts, distill_opts=cut, run_dir=tmp_path,
                             previous=previous, progress=False)
    shape = PrunedEncoder.model_validate(shape)
    had = sum(len(previous.heads[i]) for i in (2, 4))
    assert len(shape.heads) == 2 and abs(sum(len(h) for h in shape.heads) - had / 2) <= 1
    assert all(set(h) <= set(previous.heads[i]) for h, i in zip(shape.heads, (2, 4), strict=True))
    assert sum(shape.ffn) <= 0.5 * sum(previous.ffn[i] for i in (2, 4)) + 32
    save_weights(student, tmp_path / "w.safetensors")
    again = CosineClassifier("bundled:minilm-l6", 4, layers=[2, 4], pruned=shape).eval()
    load_weights(again, tmp_path / "w.safetensors")
    batch = student.tokenize(texts[:4], 32)
    with torch.inference_mode():
        assert torch.allclose(again(batch), student.eval()(batch), atol=1e-5)


def test_prune_needs_a_finetuned_encoder(text_app):
    path = tfidf_only_variant(text_app, "prune-tfidf")
    with pytest.raises(ConfigError, match="model.options.features"):
        optimize(path, "prune")
    with pytest.raises(ConfigError, match="optimize.prune.features"):
        optimize(text_app["yaml"], "prune", version=text_app["base"].version,
                 overrides={"optimize.prune.features": ["tfidf"]})
