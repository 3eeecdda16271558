"""`optimize:` in an app YAML: how `luodi optimize` turns a trained run into a smaller, faster one. Typed with
pydantic only, like every module of luodi.options."""

from __future__ import annotations

from pydantic import Field

from luodi.options.strict import Strict


class DistillConfig(Strict):
    """`optimize.distill`: a smaller student learns the trained model's predictions (text-classification)."""

    layers: list[int] = Field(
        default_factory=lambda: [1, 3, 5],
        min_length=1,
        description="the teacher's encoder layers (0-based) the student keeps and starts from",
    )
    epochs: int = Field(3, ge=1, description="passes over the training split")
    lr: float = Field(1e-4, gt=0, description="the student encoder's learning rate (its head: 20x)")
    batch_size: int = Field(32, ge=1, description="texts per step")
    temperature: float = Field(2.0, gt=0, description="softens both distributions in the KL term")
    alpha: float = Field(
        0.7, ge=0, le=1, description="weight of the temperature-scaled KL to the teacher; 1 - alpha: the labels"
    )
    seed: int = Field(0, description="seed of the student's shuffling")


class OptimizeConfig(Strict):
    """Settings of `luodi optimize APP.yaml --method ...` (every one has a default: the block is optional)."""

    max_quality_drop: float = Field(
        0.003,
        ge=0,
        le=1,
        description="int8: the most the quality metric may fall on the calibration rows (0.003 = 0.3 pt); "
        "layers are left in float32, most sensitive first, until it holds",
    )
    calibration_rows: int = Field(
        512,
        ge=16,
        description="labelled rows drawn from the training split (never the validation split) to check the "
        "quality bound and to calibrate static quantization",
    )
    require_faster: bool = Field(
        True,
        description="int8: keep the quantized model only where it is measured faster at batch 1 than the "
        "float32 ONNX one; otherwise keep float32 and say why",
    )
    threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads per session (unset: one per CPU core)"
    )
    latency_rows: int = Field(
        200, ge=10, description="validation rows timed one by one for the p50 / p95 latency of the table"
    )
    throughput_rows: int = Field(
        512, ge=32, description="validation rows predicted in batches of 32 for the throughput of the table"
    )
    seed: int = Field(0, description="seed of the calibration sample")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="--method distill settings")
