"""Adversarial robustness: attacks on a differentiable model and the accuracy that survives them.

Two kinds of code live here, both on plain tensors / arrays (no app, no task), so tests, the audit report and the
bench call them directly:
- fast torch attacks used while training (`fgsm_rs`, Wong et al. 2020: FGSM from a random start; `n_fgsm`, de Jorge
  et al. 2022: FGSM from larger noise, not projected; `pgd`; `trades_examples` with `trades_loss`, Zhang et al.
  2019) and for the per-epoch robust accuracy (`pgd`); they run inside the training loop, where ART's numpy round
  trips would cost;
- the Adversarial Robustness Toolbox (ART) for the measured report: `art_accuracy` wraps a torch model in
  `PyTorchClassifier` and attacks it with `FastGradientMethod` or `ProjectedGradientDescent`.
Tables are attacked in a feature space (`FeatureSpace`) where only numeric columns that may move are perturbed,
within each column's training range, rounded where the column holds integers; categories never change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from luodi.errors import ConfigError

ATTACKS = ("fgsm", "pgd")
Forward = Callable[[torch.Tensor], torch.Tensor]  # inputs (in the attacked space) -> logits


# --- torch attacks (training and per-epoch checks) -------------------------------------------------------


def fgsm_rs(
    forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, start: float | None = None
) -> torch.Tensor:
    """One FGSM step of size `alpha` from a uniform random start in the `start`-ball (default: the eps-ball),
    projected back onto the eps-ball and [0, 1]: the cheap adversarial example of fast adversarial training."""
    start = eps if start is None else start
    delta = (torch.rand_like(x) * 2 - 1) * start
    delta.requires_grad_(True)
    loss = F.cross_entropy(forward((x + delta).clamp(0, 1)), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def n_fgsm(forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, noise: float) -> torch.Tensor:
    """N-FGSM (de Jorge et al. 2022): uniform noise in the `noise`-ball (2 eps in the paper), then one FGSM step of
    `alpha` (eps), **not** projected back onto the eps-ball (only onto [0, 1]). The larger, unclipped
    perturbation is what keeps single-step training from catastrophic overfitting, at FGSM's cost."""
    start = (x + (torch.rand_like(x) * 2 - 1) * noise).clamp(0, 1).requires_grad_(True)
    loss = F.cross_entropy(forward(start), y)
    (grad,) = torch.autograd.grad(loss, start)
    return (start.detach() + alpha * grad.sign()).clamp(0, 1)


def pgd(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    restarts: int = 1,
) -> torch.Tensor:
    """L-inf PGD in [0, 1] with random starts; per example the first restart that fools the model is kept."""
    alpha = alpha or 2.5 * eps / steps
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        adv = (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(forward(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            now = forward(adv).argmax(1) != y
        take = now & ~fooled
        best[take] = adv[take]
        fooled |= now
        if bool(fooled.all()):
            break
    return best.detach()


def trades_examples(
    forward: Forward, x: torch.Tensor, eps: float, *, steps: int = 10, alpha: float | None = None
) -> torch.Tensor:
    """TRADES' inner maximization (Zhang et al. 2019): `steps` projected sign steps of `alpha` (default 2.5 eps /
    steps) from x plus tiny noise, raising the KL divergence of the model's prediction from its clean one. No label
    is needed: the example moves away from what the model says, not from the truth."""
    alpha = alpha or 2.5 * eps / steps
    with torch.no_grad():
        clean = F.softmax(forward(x), 1)
    adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(forward(adv), 1), clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def trades_loss(
    clean_logits: torch.Tensor,
    adv_logits: torch.Tensor,
    y: torch.Tensor,
    beta: float,
    cross_entropy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> torch.Tensor:
    """TRADES' training loss: `cross_entropy` on the clean inputs (accuracy; the task's, with its class weights
    and label smoothing) + `beta` x the KL divergence of the adversarial prediction from the clean one (smoothness
    within the eps-ball), per example on average."""
    kl = F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(clean_logits, 1), reduction="batchmean")
    return cross_entropy(clean_logits, y) + beta * kl


def torch_robust_accuracy(
    forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10, batch: int = 256
) -> float:
    """Accuracy under `pgd` (one start), batched; gradients enabled even inside a no_grad evaluation."""
    right = 0
    with torch.enable_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            adv = pgd(forward, xb, yb, eps, steps=steps) if eps > 0 else xb
            with torch.no_grad():
                right += int((forward(adv).argmax(1) == yb).sum())
    return right / max(1, len(x))


# --- ART (the report and the bench) ---------------------------------------------------------------------


def art_classifier(model: torch.nn.Module, n_classes: int, input_shape: tuple[int, ...], clip_values: tuple) -> object:
    """`model` (inputs -> logits, in eval mode) as ART's PyTorchClassifier on the CPU."""
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    return PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=n_classes,
        clip_values=clip_values,
        device_type="cpu",
    )


def art_attack(
    classifier: object,
    attack: str,
    eps: float,
    *,
    steps: int = 50,
    restarts: int = 1,
    alpha: float | None = None,
    batch: int = 256,
) -> object:
    """An ART evasion attack: `fgsm` (one step of size eps) or `pgd` (`steps` steps of `alpha`, default 2.5 eps /
    steps, from `restarts` random starts)."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    if attack == "fgsm":
        return FastGradientMethod(classifier, eps=eps, eps_step=eps, batch_size=batch)
    if attack == "pgd":
        return ProjectedGradientDescent(
            classifier,
            eps=eps,
            eps_step=alpha or 2.5 * eps / steps,
            max_iter=steps,
            num_random_init=restarts,
            batch_size=batch,
            verbose=False,
        )
    raise ConfigError(f"attack '{attack}' is unknown; expected one of {', '.join(ATTACKS)}", param="attack")


def art_adversarial(
    classifier: object,
    attack: str,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    mask: np.ndarray | None = None,
    **options: int | float | None,
) -> np.ndarray:
    """Adversarial copies of `x` (class indices `y` as the truth); eps 0 returns `x` itself."""
    if eps <= 0:
        return x
    adv = art_attack(classifier, attack, eps, **options)
    kwargs = {} if mask is None else {"mask": mask}
    return adv.generate(x.astype(np.float32), y=np.eye(classifier.nb_classes, dtype=np.float32)[y], **kwargs)


def art_accuracy(classifier: object, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an ART classifier on `x` against class indices `y`."""
    return float((classifier.predict(x.astype(np.float32)).argmax(1) == y).mean()) if len(y) else float("nan")


def accuracy_curve(
    classifier: object, x: np.ndarray, y: np.ndarray, attack: str, eps_values: Sequence[float], **options
) -> list[dict[str, float]]:
    """Accuracy at each eps (eps 0: clean) under `attack`: the robustness curve of the report."""
    return [
        {
            "eps": float(e),
            "accuracy": art_accuracy(classifier, art_adversarial(classifier, attack, x, y, e, **options), y),
        }
        for e in eps_values
    ]


# --- tables: where a feature may move ---------------------------------------------------------------------


@dataclass
class FeatureSpace:
    """Numeric feature columns in the attacked (z) space: log1p where the preprocessor uses it, standardized by
    the training rows, so eps is in training standard deviations. A column moves only when it has more than two
    training values (0/1 flags are categories in disguise); values stay in the training range and are rounded
    where every training value is an integer."""

    columns: list[str]
    log1p: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    integer: np.ndarray
    movable: np.ndarray

    @classmethod
    def fit(cls, train: pd.DataFrame, numeric: Sequence[str], log1p: Sequence[str] = ()) -> FeatureSpace:
        raw = _numeric(train, numeric)
        logs = np.array([c in set(log1p) for c in numeric], dtype=bool)
        z = _forward_log(raw, logs)
        lo, hi = np.nanmin(raw, 0), np.nanmax(raw, 0)
        finite = np.where(np.isnan(raw), 0.0, raw)
        distinct = np.array([len(pd.unique(raw[:, j][~np.isnan(raw[:, j])])) for j in range(raw.shape[1])])
        return cls(
            columns=list(numeric),
            log1p=logs,
            mean=np.nanmean(z, 0),
            std=np.where(np.nanstd(z, 0) > 0, np.nanstd(z, 0), 1.0),
            lo=lo,
            hi=hi,
            integer=np.all(finite == np.round(finite), 0),
            movable=distinct > 2,
        )

    def to_z(self, df: pd.DataFrame) -> np.ndarray:
        """(n, numeric columns) float32; missing values at the column mean (z 0)."""
        z = (_forward_log(_numeric(df, self.columns), self.log1p) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def z_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        raw = np.stack([self.lo, self.hi])
        z = (_forward_log(raw, self.log1p) - self.mean) / self.std
        return z[0].astype(np.float32), z[1].astype(np.float32)

    def apply(self, df: pd.DataFrame, z: np.ndarray) -> pd.DataFrame:
        """A copy of `df` whose movable numeric columns take the values of `z` where `z` moved them (back in raw
        units, rounded where integer, clipped to the training range); every other value, categories included, is
        left exactly as it was."""
        raw = z.astype(np.float64) * self.std + self.mean
        raw[:, self.log1p] = np.expm1(raw[:, self.log1p])  # only the log1p columns: others may overflow expm1
        raw = np.where(self.integer, np.round(raw), raw)
        raw = np.clip(raw, self.lo, self.hi)
        out = df.copy()
        before = _numeric(df, self.columns)
        moved = (np.abs(z - self.to_z(df)) > 1e-6) & self.movable & ~np.isnan(before)  # missing stays missing
        for j, c in enumerate(self.columns):
            if moved[:, j].any():
                out[c] = np.where(moved[:, j], raw[:, j], before[:, j])
        return out


def _numeric(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    return np.column_stack([pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in columns])


def _forward_log(raw: np.ndarray, logs: np.ndarray) -> np.ndarray:
    return np.where(logs, np.log1p(np.maximum(raw, 0)), raw)


def fit_surrogate(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 30, seed: int = 0, hidden: int = 64
) -> torch.nn.Module:
    """A small MLP that imitates a model's answers `y` on inputs `x`: a differentiable stand-in for a model
    that has no gradients (tree ensembles), to craft attacks that are then replayed on the served model."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, n_classes),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(256):
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def adversarial_examples(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    method: str,
    eps: float,
    alpha: float | None,
    steps: int,
    noise: float | None = None,
) -> torch.Tensor:
    """The training batch of adversarial training (`train.adversarial`): fgsm-rs (step 1.25 eps unless `alpha`,
    start within `noise` eps), n-fgsm (step eps unless `alpha`, noise 2 eps, no projection), pgd (`steps`
    steps) or trades (`steps` steps raising the KL divergence from the clean prediction; its loss: `trades_loss`)."""
    if method == "fgsm-rs":
        return fgsm_rs(forward, x, y, eps, alpha or 1.25 * eps, start=(noise or 1.0) * eps)
    if method == "n-fgsm":
        return n_fgsm(forward, x, y, eps, alpha or eps, noise=(noise or 2.0) * eps)
    if method == "pgd":
        return pgd(forward, x, y, eps, steps=steps, alpha=alpha)
    if method == "trades":
        return trades_examples(forward, x, eps, steps=steps, alpha=alpha)
    raise ConfigError(
        f"'train.adversarial.method' = '{method}' is unknown; expected fgsm-rs, n-fgsm, pgd or trades",
        param="train.adversarial.method",
    )
