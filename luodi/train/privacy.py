"""Differentially private training for the shared torch loop: DP-SGD with Opacus.

`private(model, optimizer, loader, privacy, epochs)` hands the loop Opacus' wrapped model (per-example gradients),
optimizer (clips each example's gradient to `max_grad_norm`, adds Gaussian noise) and loader (Poisson sampling:
the accounting assumes it), with the noise chosen so that `epochs` passes spend at most `epsilon` (RDP accountant).
The accountant's history goes into the loop's checkpoint, so a resumed run counts what it already spent; the
spent epsilon is written to the run as privacy.json. The model must be built of layers Opacus can differentiate
one example at a time (no batch norm: an image app's `model.options.arch: flat`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from luodi.atomic import write_json
from luodi.errors import ConfigError

PRIVACY_FILE = "privacy.json"


@dataclass
class Private:
    """The loop's model, optimizer and loader under DP-SGD, and how to read what was spent."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    engine: Any
    delta: float
    settings: dict[str, Any]

    def history(self) -> list[list[float]]:
        """The accountant's steps so far, JSON-able (noise multiplier, sample rate, steps)."""
        return [list(h) for h in self.engine.accountant.history]

    def spent(self) -> float:
        return float(self.engine.get_epsilon(self.delta)) if self.engine.accountant.history else 0.0

    def record(self, run_dir: Path) -> dict[str, Any]:
        """Write privacy.json: the budget, what was spent, and the noise that bought it."""
        import opacus

        noise, rate = (self.engine.accountant.history[-1][:2] if self.engine.accountant.history else (None, None))
        info = {
            "mechanism": "DP-SGD (Opacus, RDP accountant, Poisson sampling)",
            "epsilon_target": self.settings["epsilon"],
            "epsilon_spent": round(self.spent(), 4),
            "delta": self.delta,
            "max_grad_norm": self.settings["max_grad_norm"],
            "noise_multiplier": noise,
            "sample_rate": rate,
            "steps": int(sum(h[2] for h in self.engine.accountant.history)),
            "opacus": opacus.__version__,
        }
        write_json(Path(run_dir) / PRIVACY_FILE, info)
        return info

    def close(self) -> None:
        """Detach the per-example gradient hooks: the trained model predicts like any other."""
        self.model._close()


def private(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any, settings: dict[str, Any], epochs: int,
    history: list[list[float]] | None = None,
) -> Private:
    """The loop's parts under DP-SGD (see the module docstring); errors name train.privacy and the fix."""
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError(
            f"'train.privacy': DP-SGD needs each example's own gradient, which this model's layers do not give "
            f"({problems[0]}); image apps: set model.options.arch: scatter or flat (no batch norm)",
            param="train.privacy")
    if not isinstance(loader, torch.utils.data.DataLoader):
        raise ConfigError("'train.privacy' applies to image and speech CNN apps only; remove it", param="train.privacy")
    if loader.batch_size is None:  # batches made by a batch sampler: Opacus needs the plain batch size
        size = getattr(loader.sampler, "batch_size", None) or getattr(loader.batch_sampler, "batch_size", None)
        loader = torch.utils.data.DataLoader(loader.dataset, batch_size=size, shuffle=True)
    delta = settings.get("delta") or 1.0 / (10 * len(loader.dataset))
    with warnings.catch_warnings():  # Opacus' secure_mode needs torchcsprng; the noise is torch's PRNG (docs)
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    # the noise search tries small noise levels whose best RDP order is the largest: harmless (a wider range of
    # orders gives the same noise here)
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    # expected, not news: Poisson batches have no last partial batch to drop, the input needs no gradient
    logging.getLogger("opacus.data_loader").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
    dp_model, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=loader, target_epsilon=settings["epsilon"],
        target_delta=delta, epochs=epochs, max_grad_norm=settings["max_grad_norm"],
    )
    if history:  # resumed: the steps already taken count against the budget
        engine.accountant.history = [tuple(h) for h in history]
    return Private(dp_model, dp_optimizer, dp_loader, engine, delta, dict(settings))
