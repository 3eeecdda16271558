"""How a torch-based app trains beyond the loop's basics: `train.adversarial` (adversarial examples) and
`train.privacy` (DP-SGD). Typed with pydantic only, like every module of luodi.options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from luodi.options.strict import Strict


class AdversarialConfig(Strict):
    """`train.adversarial`: train on adversarial examples (image apps) so the model resists small perturbations."""

    method: Literal["fgsm-rs", "n-fgsm", "pgd", "trades"] = Field(
        "fgsm-rs",
        description="fgsm-rs: one FGSM step from a random start in the eps-ball, projected back (Wong et al. "
        "2020); n-fgsm: one FGSM step of eps from noise in a 2 eps ball, not projected (de Jorge et al. 2022); "
        "pgd: `steps` projected steps (Madry et al.); trades: `steps` projected steps that maximize the KL "
        "divergence from the clean prediction, trained on clean cross-entropy + `beta` x that KL (Zhang et al. "
        "2019); pgd and trades are multi-step methods",
    )
    eps: float = Field(0.3, gt=0, le=1, description="L-inf radius in pixel units ([0, 1] images)")
    alpha: float | None = Field(
        None, gt=0, description="step size; unset: 1.25 eps (fgsm-rs), eps (n-fgsm) or 2.5 eps / steps (pgd)"
    )
    noise: float | None = Field(
        None,
        gt=0,
        le=4,
        description="radius of the random start in eps (fgsm-rs, n-fgsm only); unset: 1 (fgsm-rs), 2 (n-fgsm)",
    )
    steps: int = Field(7, ge=1, description="pgd / trades steps per batch (fgsm-rs and n-fgsm take one)")
    beta: float = Field(
        6.0,
        gt=0,
        le=100,
        description="trades only: weight of the KL term (robustness) against the clean cross-entropy (accuracy); "
        "Zhang et al. use 6",
    )
    ramp_epochs: float = Field(
        0,
        ge=0,
        description="eps (and the step) grow linearly from 0 to eps over this many first epochs; 0: full eps "
        "from the start",
    )
    check_steps: int = Field(
        10, ge=1, description="PGD steps of the robust accuracy measured on validation each epoch and in metrics"
    )


class PrivacyConfig(Strict):
    """`train.privacy`: differentially private training (DP-SGD, Opacus) of image and speech CNN apps: each
    example's gradient is clipped and Gaussian noise is added, so the trained weights reveal little about any one
    training row. The epsilon spent is stored in the run (privacy.json, metrics dp_epsilon) and its report."""

    epsilon: float = Field(gt=0, le=100, description="privacy budget the whole training may spend (smaller: more "
                           "private; 1-8 is usual)")
    delta: float | None = Field(None, gt=0, lt=0.1, description="probability the guarantee fails; unset: 1 / (10 x "
                                "training rows)")
    max_grad_norm: float = Field(1.0, gt=0, description="each example's gradient is clipped to this L2 norm")
