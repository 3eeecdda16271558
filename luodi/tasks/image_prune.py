"""Structured pruning of an image app's CNN (`luodi optimize APP.yaml --method prune`).

Whole output channels of every conv layer (and whole units of the dense hidden layer of the flat / madry
archs) are removed with torch-pruning (Fang et al., 2023, "DepGraph"): its dependency graph cuts each channel
everywhere it is used (the conv's filter, its batch norm, the next conv's input slice, a flattened dense
layer's columns), so every tensor is really smaller and a CPU does less work. Masks or unstructured sparsity
would keep the dense tensors, and the time, unchanged: they are not offered.

Ranking (`optimize.prune.importance`), per layer: `taylor` is |gradient x weight| summed over each channel's
parameters on training images (the first-order estimate of the loss change if it is removed; Molchanov et al.,
2019), `magnitude` the L1 norm of its weights. Each conv layer loses `optimize.prune.image.channels` of its channels
(a uniform ratio: the time of every stage shrinks alike), the dense hidden layer `optimize.prune.image.units`; the
input and the classes stay.

Recovery: the pruned CNN is trained again, on the training images with the app's augmentation, on
alpha * T^2 * KL(unpruned CNN || pruned) + (1 - alpha) * CE(labels) through the shared loop
(luodi.train.torch_loop); the teacher sees the same augmented batch.

Storage: the pruned widths go into the run's image_classifier.json as `pruned` {convs, hidden}; loading builds
those shapes (grid_cnn.build_cnn) and reads the safetensors weights over them (no pickle, and no torch-pruning
needed to serve).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi.errors import ConfigError
from luodi.tasks.grid_cnn import GridClassifier, augment_batch, training_threads
from luodi.train.torch_loop import CHECKPOINT_DIR, LoopConfig, train_loop


def check_prunable(clf: Any, config: Any) -> GridClassifier:
    """The run's torch CNN, or a ConfigError naming what stands in the way."""
    if not isinstance(clf, GridClassifier):
        precision = clf.meta.get("runtime", {}).get("precision", "ONNX")
        raise ConfigError(f"--method prune works on the torch CNN; this run is already ONNX ({precision}): prune "
                          "the version it was optimized from (--version), then add onnx / int8", param="method")
    if clf.meta.get("arch") == "scatter":
        raise ConfigError("model.options.arch scatter learns one linear layer over fixed wavelet features: there "
                          "are no channels to prune; prune a cnn, flat or madry model", param="model.options.arch")
    if config.train.privacy is not None:
        raise ConfigError("train.privacy: the recovery fine-tune of --method prune reads the training images "
                          "without DP-SGD and would void the run's privacy guarantee", param="train.privacy")
    return clf


def convs_of(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


def hidden_of(model: nn.Module) -> nn.Linear | None:
    """The dense hidden layer (flat / madry archs), or None (cnn: global pooling straight into the classes)."""
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    return linears[0] if len(linears) > 1 else None


def shapes_of(model: nn.Module) -> dict[str, Any]:
    """What grid_cnn.build_cnn rebuilds a pruned CNN from: every conv's output channels, the hidden units."""
    hidden = hidden_of(model)
    return {"convs": [int(c.out_channels) for c in convs_of(model)],
            "hidden": int(hidden.out_features) if hidden is not None else None}


def prune_cnn(clf: GridClassifier, x: np.ndarray, y: torch.Tensor, prune_opts: Any) -> dict[str, Any]:
    """Remove channels (and hidden units) of clf.model in place, ranked on the images x (labels y); returns the
    MACs and parameters before and after (torch-pruning's count at one image)."""
    import torch_pruning as tp

    model = clf.model.eval()
    example = torch.zeros(1, clf.meta["channels"], *clf.meta["size"])
    classes = [m for m in model.head if isinstance(m, nn.Linear)][-1]
    hidden = hidden_of(model)
    ratios = {hidden: prune_opts.image.units} if hidden is not None else {}
    if prune_opts.importance == "taylor":
        importance = tp.importance.GroupTaylorImportance()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=1)
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=prune_opts.image.channels,
                                  pruning_ratio_dict=ratios, ignored_layers=[classes])
    if prune_opts.importance == "taylor":  # gradients of the loss on training images, accumulated in .grad
        model.zero_grad(set_to_none=True)
        xs = torch.from_numpy(x)
        for i in range(0, len(xs), 64):
            F.cross_entropy(model(clf.normalize(xs[i : i + 64])), y[i : i + 64], reduction="sum").backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    return {"macs": {"before": int(macs0), "after": int(macs1)},
            "parameters": {"before": int(params0), "after": int(params1)}}


def recover(student: nn.Module, teacher: nn.Module, clf: GridClassifier, x: np.ndarray, y: torch.Tensor, *,
            kd: Any, lr: float, aug: dict[str, Any], weight_decay: float, checkpoints: Path,
            progress: bool = True) -> None:
    """Train the pruned `student` on alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels), on
    augmented training batches (the teacher sees the same batch); the last epoch's weights are kept (no
    validation data: nothing here is chosen on held-out images)."""
    teacher.eval()
    t, alpha = kd.temperature, kd.alpha
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), y),
                                         batch_size=kd.batch_size, shuffle=True, drop_last=len(y) > kd.batch_size)

    def step(m: nn.Module, batch: Any) -> torch.Tensor:
        xb, yb = batch
        xb = clf.normalize(augment_batch(xb, aug))
        with torch.no_grad():
            soft = F.log_softmax(teacher(xb) / t, -1)
        logits = m(xb)
        kl = F.kl_div(F.log_softmax(logits / t, -1), soft, log_target=True, reduction="batchmean") * t * t
        return alpha * kl + (1 - alpha) * F.cross_entropy(logits, yb)

    cfg = LoopConfig(epochs=kd.epochs, lr=lr, seed=kd.seed, schedule="onecycle", weight_decay=weight_decay,
                     monitor="epoch", mode="max", patience=None, threads=training_threads())
    torch.manual_seed(kd.seed)
    train_loop(student, loader, step, None, checkpoints, cfg, progress=progress)
    student.eval()


def prune_run(task: Any, run_dir: Path, train: Any, prune_opts: Any, say: Callable[[str], None],
              progress: bool = True) -> dict[str, Any]:
    """Prune the CNN of the run in run_dir (a copy of the base run, loaded into `task`), recover it, and save it
    there with its widths; returns what the run's optimize.json records."""
    run_dir = Path(run_dir)
    clf = check_prunable(task.need(), task.config)
    x = task.model_input(train)
    y = clf.targets(train.y)
    teacher = copy.deepcopy(clf.model).eval()
    pick = np.sort(np.random.default_rng(prune_opts.seed).permutation(len(x))[: prune_opts.importance_rows])
    before = shapes_of(clf.model)
    info = prune_cnn(clf, x[pick], y[torch.from_numpy(pick)], prune_opts)
    after = shapes_of(clf.model)
    units = f", hidden units {before['hidden']} -> {after['hidden']}" if after["hidden"] is not None else ""
    say(f"pruned ({prune_opts.importance}): conv channels {before['convs']} -> {after['convs']}{units}; "
        f"MACs per image {info['macs']['before']:,} -> {info['macs']['after']:,}; "
        f"recovering {prune_opts.image.epochs} epoch(s) on {len(x)} training images, peak lr "
        f"{prune_opts.image.lr or task.config.train.lr / 2:g}")
    if task.config.train.adversarial is not None:
        say("note: the recovery does not train on adversarial examples; `luodi evaluate` measures the pruned "
            "run's robust accuracy")
    lr = prune_opts.image.lr or task.config.train.lr / 2
    kd = prune_opts.model_copy(update={"epochs": prune_opts.image.epochs})
    recover(clf.model, teacher, clf, x, y, kd=kd, lr=lr, aug=dict(task.config.train.augment),
            weight_decay=task.opts.weight_decay, checkpoints=run_dir / CHECKPOINT_DIR / "prune", progress=progress)
    clf.meta = {**clf.meta, "pruned": after}
    clf.save(run_dir, task.META)  # (the recovery's checkpoints are removed when the optimized run is recorded)
    sample = x[:512]
    with torch.no_grad():
        agree = teacher(clf.normalize(torch.from_numpy(sample))).argmax(1) == torch.from_numpy(
            clf.proba(sample).argmax(1))
    return {**info, "convs": {"before": before["convs"], "after": after["convs"]},
            "hidden": {"before": before["hidden"], "after": after["hidden"]},
            "teacher_agreement_train": round(float(agree.float().mean()), 5)}
