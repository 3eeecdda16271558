"""luodi optimize / export on a tiny MNIST app: the CNN as float32 ONNX and static int8, measured against the
torch run, served like any run, checked against PyTorch; an exported bundle's predict.py run in a clean
subprocess predicts what luodi predicts from the same png files; structured pruning (whole conv channels out,
then a recovery on the unpruned CNN's predictions) makes a smaller run that loads, serves and exports to ONNX."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from luodi import api
from luodi.apps.export import export
from luodi.apps.optimize import optimize
from luodi.apps.registry import get_run, verify_manifest
from luodi.data.images import read_idx
from luodi.errors import BadRequest, ConfigError

OPTIMIZE = {"calibration_rows": 64, "latency_rows": 20, "throughput_rows": 64, "max_quality_drop": 0.02,
            "prune": {"image": {"epochs": 12}, "batch_size": 16}}  # (400 training images: more recovery steps)
APP = "opt-mnist"


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def mnist_app(datasets_dir, tmp_path_factory):
    """The first 600 MNIST test images (400 train, 200 valid), a width-8 CNN trained for 8 epochs."""
    import yaml

    folder = tmp_path_factory.mktemp("optimize-image")
    src = datasets_dir / "mnist"
    images = read_idx(src / "t10k-images-idx3-ubyte.gz")[:600]
    _write_idx(folder / "small-images-idx3-ubyte.gz", images)
    _write_idx(folder / "small-labels-idx1-ubyte.gz", read_idx(src / "t10k-labels-idx1-ubyte.gz")[:600])
    app = {
        "name": APP,
        "task": "image-classification",
        "data": {"path": str(folder), "format": "idx", "split": {"valid": 200, "shuffle": False},
                 "options": {"images": "small-images-idx3-ubyte.gz", "labels": "small-labels-idx1-ubyte.gz"}},
        "model": {"type": "cnn", "options": {"width": 8, "dropout": 0.1}},
        "train": {"epochs": 8, "lr": 0.01, "batch_size": 32},
        "evaluate": {"metrics": ["accuracy"]},
        "optimize": OPTIMIZE,
    }
    path = folder / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    base = api.train(str(path), progress=False)
    pngs = []
    for i in range(560, 580):  # validation images as png files, as a client would send them
        from PIL import Image

        pngs.append(str(folder / f"digit{i}.png"))
        Image.fromarray(images[i]).save(pngs[-1])
    return {"yaml": str(path), "base": base, "pngs": pngs}


def test_onnx_run_agrees_with_torch_and_is_served(mnist_app):
    base_version = mnist_app["base"].version
    res = optimize(mnist_app["yaml"], "onnx", version=base_version)
    check = res["details"]["float32_vs_torch"]
    assert check["agreement"] >= 0.99 and check["max_abs_diff"] < 1e-4, check
    rows = res["table"]["rows"]
    assert rows["optimized"]["agreement"] >= 0.99
    assert abs(rows["optimized"]["quality"] - rows["baseline"]["quality"]) <= 0.005
    assert rows["optimized"]["parameters"] > 1000 and rows["optimized"]["p50_ms"] > 0
    run = get_run(APP, res["run"]["version"])
    verify_manifest(run.path)
    assert (run.path / "model.onnx").exists() and not (run.path / "model.safetensors").exists()
    assert json.loads((run.path / "image_classifier.json").read_text())["runtime"]["precision"] == "float32"
    records = [{"image": p} for p in mnist_app["pngs"]]
    torch_out = api.predict(APP, records, version=base_version)
    onnx_out = api.predict(APP, records, version=run.version)
    assert [o["label"] for o in onnx_out] == [t["label"] for t in torch_out]
    assert max(abs(o["score"] - t["score"]) for o, t in zip(onnx_out, torch_out, strict=True)) < 1e-4
    with pytest.raises(BadRequest, match="no gradients"):
        api.load_predictor(APP, run.version).task.explain(records[:1])
    mnist_app["onnx_version"] = run.version


def test_int8_keeps_the_bound_or_says_why(mnist_app):
    res = optimize(mnist_app["yaml"], "int8", version=mnist_app["base"].version)
    assert res["methods"] == ["int8"]
    details = res["details"]
    assert details["float32_vs_torch"]["agreement"] >= 0.99
    run = get_run(APP, res["run"]["version"])
    graphs = sorted(p.name for p in run.path.glob("*.onnx"))
    if details.get("kept"):  # int8 over the bound or measured slower on this CPU: float32 kept, and said so
        assert graphs == ["model.onnx"] and "float32" in details["kept"]
    else:
        assert details["met"] and details["quality_drop"] <= OPTIMIZE["max_quality_drop"]
        assert set(details["batch1_ms"]) == {"float32", "int8"}
        assert graphs == ["model-int8.onnx"]
        assert details["int8_vs_torch"]["agreement"] >= 0.9
        rows = res["table"]["rows"]
        assert rows["optimized"]["size_mb"] < rows["baseline"]["size_mb"]
        assert rows["optimized"]["agreement"] >= 0.9
        records = [{"image": p} for p in mnist_app["pngs"]]
        served = api.predict(APP, records, version=run.version)
        assert [s["label"] for s in served] == [
            o["label"] for o in api.load_predictor(APP, run.version).task.predict(records)
        ]
        with pytest.raises(ConfigError, match="already int8"):
            optimize(mnist_app["yaml"], "int8", version=run.version)


def test_exported_bundle_predicts_like_luodi(mnist_app, tmp_path):
    version = mnist_app.get("onnx_version") or mnist_app["base"].version
    for v, name in ((mnist_app["base"].version, "torch"), (version, "onnx")):
        bundle = tmp_path / name
        res = export(mnist_app["yaml"], bundle, version=v)
        assert set(res["files"]) == {"README.md", "labels.json", "model.onnx", "predict.py"}
        assert len((bundle / "predict.py").read_text().splitlines()) <= 40
        proc = subprocess.run(  # a clean interpreter that imports nothing of luodi
            [sys.executable, "-I", str(bundle / "predict.py")], input="\n".join(mnist_app["pngs"]) + "\n",
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        got = [json.loads(line) for line in proc.stdout.splitlines()]
        want = api.predict(APP, [{"image": p} for p in mnist_app["pngs"]], version=v)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want, strict=True)) < 1e-4


def test_fp16_halves_the_cnn_and_agrees(mnist_app):
    res = optimize(mnist_app["yaml"], "fp16", version=mnist_app["base"].version)
    assert res["details"]["float16_vs_float32"]["agreement"] >= 0.99
    run = get_run(APP, res["run"]["version"])
    assert sorted(p.name for p in run.path.glob("*.onnx")) == ["model-fp16.onnx"]
    assert res["table"]["rows"]["optimized"]["agreement"] >= 0.99
    with pytest.raises(ConfigError, match="already float16"):
        optimize(mnist_app["yaml"], "int8", version=run.version)


def test_unknown_method_names_the_offer(mnist_app):
    with pytest.raises(ConfigError, match="--method 'distill'.*offers: onnx, int8, fp16, prune"):
        optimize(mnist_app["yaml"], "distill")


@pytest.fixture(scope="module")
def pruned(mnist_app):
    """`optimize --method prune` with the defaults (half the channels of every conv) on the tiny app's CNN."""
    return optimize(mnist_app["yaml"], "prune", version=mnist_app["base"].version)


def test_prune_makes_a_smaller_run_that_loads_and_serves(mnist_app, pruned):
    """Half the channels of every conv out, a recovery on the unpruned CNN's predictions: fewer parameters and
    MACs, the widths stored in the run's JSON, rebuilt from disk, served, and close to the base's quality."""
    res = pruned
    assert res["methods"] == ["prune"]
    details = res["details"]
    assert details["convs"]["before"] == [8, 8, 16, 16, 32] and details["convs"]["after"] == [4, 4, 8, 8, 16]
    assert details["macs"]["after"] < 0.35 * details["macs"]["before"]
    rows = res["table"]["rows"]
    assert rows["optimized"]["parameters"] < 0.4 * rows["baseline"]["parameters"]
    assert rows["optimized"]["quality"] >= rows["baseline"]["quality"] - 0.08, rows
    assert rows["optimized"]["agreement"] >= 0.75 and details["teacher_agreement_train"] >= 0.8
    run = get_run(APP, res["run"]["version"])
    verify_manifest(run.path)
    meta = json.loads((run.path / "image_classifier.json").read_text())
    assert meta["pruned"] == {"convs": [4, 4, 8, 8, 16], "hidden": None}
    assert not (run.path / "checkpoint").exists()
    predictor = api.load_predictor(APP, run.version)  # rebuilt from the stored widths, weights read over them
    assert predictor.task.parameter_count() == rows["optimized"]["parameters"]
    records = [{"image": p} for p in mnist_app["pngs"]]
    served = api.predict(APP, records, version=run.version)
    assert [s["label"] for s in served] == [o["label"] for o in predictor.task.predict(records)]
    assert predictor.task.explain(records[:1])[0]["explanation"]["method"] == "integrated-gradients"


def test_pruned_cnn_exports_to_onnx_that_agrees(mnist_app, pruned):
    pruned = pruned["run"]["version"]
    res = optimize(mnist_app["yaml"], "onnx", version=pruned)
    assert res["methods"] == ["prune", "onnx"]
    check = res["details"]["float32_vs_torch"]
    assert check["agreement"] >= 0.99 and check["max_abs_diff"] < 1e-4, check
    rows = res["table"]["rows"]  # the baseline here is the pruned torch run
    assert rows["optimized"]["agreement"] >= 0.99
    assert rows["optimized"]["parameters"] <= rows["baseline"]["parameters"]  # (batch norm folded)
    records = [{"image": p} for p in mnist_app["pngs"]]
    torch_out = api.predict(APP, records, version=pruned)
    onnx_out = api.predict(APP, records, version=res["run"]["version"])
    assert [o["label"] for o in onnx_out] == [t["label"] for t in torch_out]
    with pytest.raises(ConfigError, match="already ONNX") as err:
        optimize(mnist_app["yaml"], "prune", version=res["run"]["version"])
    assert err.value.param == "method"


def test_bad_prune_setting_names_the_field(mnist_app):
    with pytest.raises(ConfigError, match=r"optimize\.prune\.image\.channels") as err:
        optimize(mnist_app["yaml"], "prune", version=mnist_app["base"].version,
                 overrides={"optimize.prune.image.channels": 1.5})
    assert "less than 1" in str(err.value)


@pytest.mark.parametrize("arch", ["flat", "madry"])
def test_prune_cuts_conv_channels_and_hidden_units_of_dense_archs(arch):
    """The flat and madry CNNs lose conv channels and dense units alike, and rebuild from the stored widths."""
    from types import SimpleNamespace

    import torch

    from luodi.tasks.grid_cnn import GridClassifier, build_cnn
    from luodi.tasks.image_prune import prune_cnn, shapes_of

    meta = {"classes": list(range(10)), "channels": 1, "size": [28, 28], "width": 8, "hidden": 64, "arch": arch,
            "dropout": 0.0, "mean": 0.1, "std": 0.3}
    torch.manual_seed(0)
    clf = GridClassifier(meta)
    x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    reference = clf.proba(x)
    info = prune_cnn(clf, x, torch.as_tensor(reference.argmax(1)),
                     SimpleNamespace(importance="taylor", image=SimpleNamespace(channels=0.5, units=0.25)))
    shapes = shapes_of(clf.model)
    assert shapes == {"convs": [4, 8], "hidden": 48}
    assert info["parameters"]["after"] < 0.45 * info["parameters"]["before"]
    rebuilt = build_cnn({**meta, "pruned": shapes})
    rebuilt.load_state_dict(clf.model.state_dict())  # same shapes: the stored widths are all a load needs
    with pytest.raises(ConfigError, match="do not fit") as err:
        build_cnn({**meta, "pruned": {"convs": [4, 8, 8], "hidden": 48}})
    assert err.value.param == "pruned.convs"
