"""A small CNN over (C, H, W) grids with on-the-fly augmentation, trained with the shared torch loop.

Images and speech log-mel spectrograms (one-channel grids) both use `GridClassifier`: classes,
normalization, the CNN, its training and its persistence (safetensors + JSON).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi import crypto
from luodi.atomic import write_json
from luodi.config import TrainConfig
from luodi.errors import ConfigError, NotFound
from luodi.evaluate.robustness import adversarial_examples, torch_robust_accuracy, trades_loss
from luodi.tasks.file_classifier import label_targets, loss_and_accuracy
from luodi.train.torch_loop import LoopConfig, load_weights, save_weights, train_loop

WEIGHTS = "model.safetensors"
AUGMENT_KEYS = {"rotate", "shift", "scale", "scale_x", "scale_y", "flip", "noise", "time_mask", "freq_mask"}


class SmallCNN(nn.Module):
    """[conv-bn-relu x2, maxpool] per stage, a last conv, global average pooling, dropout, linear.

    `widths`: every conv's output channels, in order (a structurally pruned run, luodi.tasks.image_prune); unset:
    `width` doubled per stage."""

    def __init__(
        self, channels: int, classes: int, size: tuple[int, int], width: int = 32, dropout: float = 0.3,
        widths: list[int] | None = None,
    ):
        super().__init__()
        stages = max(1, min(3, int(math.log2(max(1, min(size) // 4)))))
        full = [width * 2**i for i in range(stages) for _ in (0, 1)] + [width * 2**stages]
        w = check_widths(widths, full)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(stages):
            a, b = w[2 * i], w[2 * i + 1]
            layers += [nn.Conv2d(c_in, a, 3, padding=1, bias=False), nn.BatchNorm2d(a), nn.ReLU()]
            layers += [
                nn.Conv2d(a, b, 3, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = b
        c = w[-1]
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def check_widths(widths: list[int] | None, full: list[int]) -> list[int]:
    """The conv widths of a pruned run (`widths`), checked against the unpruned ones (`full`); `full` when unset."""
    if widths is None:
        return full
    if len(widths) != len(full) or any(not 1 <= a <= b for a, b in zip(widths, full, strict=True)):
        raise ConfigError(f"the run's pruned conv widths {widths} do not fit the CNN's {full}; optimize the app "
                          "again (--method prune)", param="pruned.convs")
    return list(widths)


# tanh: bounded activations keep DP-SGD's clipped gradients informative (Papernot et al. 2021, "tempered sigmoids")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class FlatCNN(nn.Module):
    """Two strided convs (width, 2 width; 4x4, stride 2), a dense hidden layer and the classes: no batch norm and
    no global average pooling. Wong et al.'s MNIST model for fast adversarial training, where batch norm and
    pooling can mask the single-step attack's gradient."""

    def __init__(self, channels: int, classes: int, size: tuple[int, int], width: int = 16, hidden: int = 100,
                 activation: str = "relu", widths: list[int] | None = None):
        super().__init__()
        h, w = size[0] // 2 // 2, size[1] // 2 // 2  # each 4x4 conv with stride 2 and padding 1 halves (floor)
        act = ACTIVATIONS[activation]
        c1, c2 = check_widths(widths, [width, 2 * width])  # (`widths`: a pruned run's, as in SmallCNN)
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 4, stride=2, padding=1),
            act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            act(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * h * w, hidden), act(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MadryCNN(nn.Module):
    """Two 5x5 convs (width, 2 width; same padding) each followed by 2x2 max pooling, a dense hidden layer and
    the classes: no batch norm. Madry et al.'s MNIST model (width 32, hidden 1024), several times the flat CNN's
    capacity: capacity is what robustness at a large eps needs most."""

    def __init__(self, channels: int, classes: int, size: tuple[int, int], width: int = 32, hidden: int = 1024,
                 activation: str = "relu", widths: list[int] | None = None):
        super().__init__()
        h, w = size[0] // 2 // 2, size[1] // 2 // 2  # each 2x2 max pooling halves (floor)
        act = ACTIVATIONS[activation]
        c1, c2 = check_widths(widths, [width, 2 * width])  # (`widths`: a pruned run's, as in SmallCNN)
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5, padding=2),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            act(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * h * w, hidden), act(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ScatterLinear(nn.Module):
    """Fixed wavelet scattering features (kymatio's Scattering2D, J=2: 81 maps per channel at a quarter of the
    size), group-normalized per image, then one linear layer. Nothing before the linear layer is learned, so DP-SGD
    spends its whole budget on few weights: Tramer & Boneh (2021), "Differentially private learning needs better
    features", reach 98.7 % on MNIST at epsilon 3 this way, where end-to-end CNNs stay lower."""

    def __init__(self, channels: int, classes: int, size: tuple[int, int]):
        super().__init__()
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D as Scattering2D  # (kymatio.torch
        # also loads its 3-D part, which needs scipy.special.sph_harm: gone from SciPy 1.15)

        self.scatter = Scattering2D(J=2, shape=size)
        maps = 81 * channels
        self.norm = nn.GroupNorm(27 if maps % 27 == 0 else 1, maps, affine=False)
        self.linear = nn.Linear(maps * (size[0] // 4) * (size[1] // 4), classes)

    def fixed(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the linear layer: nothing there learns (GridClassifier.fit computes it once)."""
        z = self.scatter(x.contiguous())  # (b, channels, 81, h / 4, w / 4)
        return self.norm(z.flatten(1, 2)).flatten(1)

    @property
    def head(self) -> nn.Module:
        return self.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.fixed(x))


def _once(fn: Any, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """fn over x in batches, without gradients (a fixed feature extractor applied to a whole set once)."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else x


def build_cnn(meta: dict[str, Any]) -> nn.Module:
    """The network `meta` names (`arch`: cnn, the default, flat, madry or scatter). A structurally pruned run's
    meta holds `pruned`: {convs: every conv's output channels, hidden: the dense layer's units} (image_prune)."""
    shape = (meta["channels"], len(meta["classes"]), tuple(meta["size"]))
    arch = meta.get("arch", "cnn")
    act = meta.get("activation", "relu")  # runs from before the option: relu
    pruned = meta.get("pruned") or {}
    convs = pruned.get("convs")
    if arch == "scatter":
        return ScatterLinear(*shape)
    if arch == "flat":
        return FlatCNN(*shape, meta["width"], pruned.get("hidden") or meta.get("hidden", 100), act, convs)
    if arch == "madry":
        return MadryCNN(*shape, meta["width"], pruned.get("hidden") or meta.get("hidden", 1024), act, convs)
    return SmallCNN(*shape, meta["width"], meta["dropout"], convs)


class PixelInput(nn.Module):
    """The CNN behind its input normalization: pixels in [0, 1] -> logits (what attacks perturb)."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def check_augment(aug: dict[str, Any], extra: set[str] = frozenset()) -> None:
    """train.augment may hold the grid augmentations (and a task's `extra` keys) only."""
    bad = set(aug) - AUGMENT_KEYS - set(extra)
    if bad:
        raise ConfigError(
            f"unknown key(s) 'train.augment.{sorted(bad)[0]}'; expected {sorted(AUGMENT_KEYS | set(extra))}",
            param=f"train.augment.{sorted(bad)[0]}",
        )


def augment_batch(x: torch.Tensor, aug: dict[str, Any]) -> torch.Tensor:
    """Random affine (rotate degrees, shift fraction or [x, y], scale / scale_x / scale_y), horizontal flip,
    Gaussian noise, and SpecAugment-style masks (time_mask columns, freq_mask rows), per sample."""
    n = x.shape[0]
    if not aug:
        return x

    def uniform(r: float) -> torch.Tensor:
        return (torch.rand(n) * 2 - 1) * float(r)

    if any(aug.get(k) for k in ("rotate", "shift", "scale", "scale_x", "scale_y")):
        ang = uniform(aug.get("rotate", 0)) * math.pi / 180
        s = 1 + uniform(aug.get("scale", 0))
        sx = s * (1 + uniform(aug.get("scale_x", 0)))
        sy = s * (1 + uniform(aug.get("scale_y", 0)))
        shift = aug.get("shift", 0)  # a fraction, or [horizontal, vertical]
        shift_x, shift_y = (shift, shift) if isinstance(shift, int | float) else (shift[0], shift[1])
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / sx, -torch.sin(ang) / sx
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / sy, torch.cos(ang) / sy
        theta[:, 0, 2], theta[:, 1, 2] = uniform(2 * shift_x), uniform(2 * shift_y)  # grid spans [-1, 1]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if aug.get("flip"):
        flip = torch.rand(n) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if aug.get("noise"):
        x = x + torch.randn_like(x) * float(aug["noise"]) * torch.rand(n, 1, 1, 1)
    for key, dim in (("time_mask", -1), ("freq_mask", -2)):
        width = int(aug.get(key, 0))
        if width:
            length = x.shape[dim]
            w = torch.randint(0, width + 1, (n,))
            start = (torch.rand(n) * (length - w).clamp(min=1)).long()
            pos = torch.arange(length)
            mask = (pos[None] >= start[:, None]) & (pos[None] < (start + w)[:, None])
            shape = (n, 1, 1, length) if dim == -1 else (n, 1, length, 1)
            x = x.masked_fill(mask.view(shape), 0.0)
    return x


def training_threads() -> int:
    """Small models train fastest single-threaded on a shared CPU; LUODI_THREADS overrides."""
    if "LUODI_THREADS" in os.environ:
        from luodi.settings import get_settings

        return max(1, get_settings().threads)
    return 1


class GridClassifier:
    """Classes, normalization, the CNN and its training; persisted as safetensors + JSON."""

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta  # classes, channels, size, width, dropout, mean, std (+ task extras)
        self.model = build_cnn(meta)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.meta["mean"]) / self.meta["std"]

    def pixel_model(self) -> nn.Module:
        return PixelInput(self.model, self.meta["mean"], self.meta["std"])

    def robust_accuracy(self, x: np.ndarray, y: torch.Tensor, adv: Any) -> float:
        """Accuracy under a PGD of `adv.check_steps` steps at `adv.eps` (train.adversarial)."""
        self.model.eval()
        return torch_robust_accuracy(self.pixel_model(), torch.from_numpy(x), y, adv.eps, steps=adv.check_steps)

    def targets(self, labels: list[Any], field: str = "label") -> torch.Tensor:
        return label_targets(self.meta["classes"], labels, field)

    @torch.no_grad()
    def proba(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        self.model.eval()
        out = [
            F.softmax(self.model(self.normalize(torch.from_numpy(x[i : i + batch]))), 1)
            for i in range(0, len(x), batch)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.meta["classes"])), np.float32)

    def fit(
        self,
        train: TrainConfig,
        x: np.ndarray,
        y: list[Any],
        valid: tuple[np.ndarray, list[Any]] | None,
        run_dir: Path,
        *,
        aug: dict[str, Any],
        label_smoothing: float,
        weight_decay: float,
        schedule: str,
        mixup: float = 0.0,
        keep_last: bool = False,
        adversarial: bool = False,
        seed: int | None = None,
        progress: bool = True,
        on_epoch: Any = None,
    ) -> None:
        """Train with cross-entropy on augmented batches (optionally mixup of pairs, Beta(mixup, mixup)),
        train.class_weights / resample, and `valid` scored per epoch: the best validation accuracy's epoch is
        kept, or the last epoch with `keep_last` (validation then only reported). With train.adversarial (when
        the caller's inputs are pixels in [0, 1]: `adversarial`) each
        batch is replaced by its adversarial examples (trades: trained on the clean batch and its adversarial copy,
        `trades_loss`), and the best epoch is the one with the best accuracy under PGD on (up to 500) validation
        images: it guards against fast adversarial training's sudden collapse."""
        torch.manual_seed(train.seed)
        ys = self.targets(y)
        xs = torch.from_numpy(x)
        weight = None
        if train.class_weights == "balanced":
            counts = torch.bincount(ys, minlength=len(self.meta["classes"])).float().clamp(min=1)
            weight = len(ys) / (len(counts) * counts)
        if train.resample != "none":
            from luodi.data.balance import resample

            idx = torch.from_numpy(resample(ys.numpy(), train.resample, train.seed))
            xs, ys = xs[idx], ys[idx]
        trainee, vfixed = self.model, None
        fixed = getattr(self.model, "fixed", None)
        if fixed is not None and not aug and train.adversarial is None and not mixup:
            # a prefix that learns nothing (wavelet scattering): computed once per image, only the head trains
            xs, trainee = _once(fixed, self.normalize(xs)), self.model.head
            if valid is not None and len(valid[0]):
                vfixed = _once(fixed, self.normalize(torch.from_numpy(valid[0])))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(xs, ys),
            batch_size=train.batch_size,
            shuffle=True,
            drop_last=len(ys) > train.batch_size,
        )

        def loss(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out, yb, weight=weight, label_smoothing=label_smoothing)

        adv = train.adversarial
        if adv is not None and not adversarial:  # e.g. spectrograms: not pixels in [0, 1]
            raise ConfigError(
                "'train.adversarial' applies to image apps (pixels in [0, 1]) only; remove it",
                param="train.adversarial",
            )

        if adv is not None and adv.method == "trades" and mixup:
            raise ConfigError(
                "'train.adversarial.method' trades trains on clean and adversarial copies of each batch, not on "
                "mixed pairs; turn mixup off or use another method",
                param="train.adversarial.method",
            )
        ramp_steps = adv.ramp_epochs * len(loader) if adv is not None else 0
        done = [0]  # training steps so far: the eps ramp's clock

        def step(model: nn.Module, batch: Any) -> torch.Tensor:
            xb, yb = batch
            if trainee is not self.model:  # features computed already
                return loss(model(xb), yb)
            xb = augment_batch(xb, aug)
            if adv is not None:  # crafted in eval mode: batch-norm statistics of the attacked batch cannot mask it
                done[0] += 1
                scale = min(1.0, done[0] / ramp_steps) if ramp_steps else 1.0
                alpha = adv.alpha * scale if adv.alpha else None  # unset: the method's default, relative to eps
                model.eval()
                pixels = PixelInput(model, self.meta["mean"], self.meta["std"])
                clean, xb = xb.clamp(0, 1), adversarial_examples(
                    pixels, xb.clamp(0, 1), yb, adv.method, adv.eps * scale, alpha, adv.steps, adv.noise
                )
                model.train()
                if adv.method == "trades":  # clean cross-entropy + beta x KL(adversarial || clean)
                    return trades_loss(model(self.normalize(clean)), model(self.normalize(xb)), yb, adv.beta, loss)
            xb = self.normalize(xb)
            if not mixup:
                return loss(model(xb), yb)
            lam = float(torch.distributions.Beta(mixup, mixup).sample())
            j = torch.randperm(len(xb))
            out = model(lam * xb + (1 - lam) * xb[j])
            return lam * loss(out, yb) + (1 - lam) * loss(out, yb[j])

        eval_fn = None
        if valid is not None and len(valid[0]):
            vx, vy = valid[0], self.targets(valid[1], "valid label").numpy()

            def eval_fn(model: nn.Module) -> dict[str, float]:
                if vfixed is not None:
                    model.eval()
                    with torch.no_grad():
                        return loss_and_accuracy(F.softmax(model(vfixed), 1).numpy(), vy)
                out = loss_and_accuracy(self.proba(vx), vy)
                if adv is not None:
                    out["valid_robust_accuracy"] = self.robust_accuracy(vx[:500], torch.from_numpy(vy[:500]), adv)
                return out

        overrides: dict[str, Any] = {} if seed is None else {"seed": seed}
        if keep_last:  # the last epoch: never chosen by the held-out data
            overrides.update(monitor="epoch", mode="max")
        else:
            monitor = "valid_robust_accuracy" if adv is not None else "valid_accuracy"
            overrides.update(monitor=monitor if eval_fn else "loss", mode="max" if eval_fn else "min")
        cfg = LoopConfig.from_train(
            train, weight_decay=weight_decay, schedule=schedule, threads=training_threads(), **overrides
        )
        train_loop(trainee, loader, step, eval_fn, run_dir, cfg, progress=progress, on_epoch=on_epoch)

    def save(self, run_dir: Path, meta_file: str) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.model, run_dir / WEIGHTS)
        write_json(run_dir / meta_file, self.meta)

    @classmethod
    def load(cls, run_dir: Path, meta_file: str) -> GridClassifier:
        path = run_dir / meta_file
        if not path.exists() or not (run_dir / WEIGHTS).exists():
            raise NotFound(
                f"no trained model in {run_dir} ({meta_file} or {WEIGHTS} missing); train the app first"
            )
        clf = cls(crypto.read_json(path))
        load_weights(clf.model, run_dir / WEIGHTS)
        clf.model.eval()
        return clf
