"""`optimize:` in an app YAML: how `luodi optimize` turns a trained run into a smaller, faster one. Typed with
pydantic only, like every module of luodi.options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from luodi.options.strict import Strict


class TeacherConfig(Strict):
    """What distill's student and prune's recovery share: training on the whole trained model's predictions
    (temperature-scaled KL) and the labels (text_finetune.learn_from_teacher)."""

    epochs: int = Field(2, ge=1, description="passes over the training split (per fine-tuned member)")
    lr: float = Field(1e-4, gt=0, description="the encoder's learning rate (its head: 20x)")
    batch_size: int = Field(32, ge=1, description="texts per step")
    temperature: float = Field(2.0, gt=0, description="softens both distributions in the KL term")
    alpha: float = Field(
        0.7, ge=0, le=1, description="weight of the temperature-scaled KL to the trained model's predictions (all "
        "its heads mixed); 1 - alpha: the labels"
    )
    seed: int = Field(0, description="seed of the shuffling (and of prune's importance sample)")


class TabularStudentConfig(Strict):
    """`optimize.distill.mlp`: the MLP student of a tabular app (temperature, alpha and seed: optimize.distill's)."""

    hidden: list[int] = Field(
        default_factory=lambda: [64, 32], min_length=1, description="widths of the student's hidden layers"
    )
    epochs: int = Field(60, ge=1, description="passes over the training rows (and the synthetic ones)")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate (cosine schedule)")
    batch_size: int = Field(64, ge=1, description="rows per step")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    augment: float = Field(
        2.0, ge=0, description="synthetic rows per training row, labelled by the teacher only (KL term): training "
        "rows with each value swapped, with probability `swap`, for another row's value of that column; the "
        "teacher's predictions there are out of sample, unlike on its own training rows. 0: none"
    )
    swap: float = Field(0.3, gt=0, lt=1, description="per-value swap probability of the synthetic rows")


class NarrowConfig(TeacherConfig):
    """What distill's student and prune share besides the teacher: which attention heads and feed-forward channels
    of the encoder are cut out (luodi.tasks.text_prune), so its matrices really shrink."""

    heads: float = Field(
        0.5, ge=0, lt=1, description="fraction of the attention heads removed (ranked over all layers; every "
        "layer keeps at least one)"
    )
    ffn: float = Field(
        0.5, ge=0, lt=1, description="fraction of the feed-forward channels removed (ranked over all layers; "
        "widths rounded to multiples of 16)"
    )
    importance: Literal["taylor", "magnitude"] = Field(
        "taylor", description="how heads and channels are ranked: |gradient x weight| of the output projection "
        "on training texts (taylor: the loss change if removed, to first order) or its weight norm (magnitude)"
    )
    importance_rows: int = Field(
        1024, ge=16, description="training texts (the first of a seeded shuffle) whose gradients rank them"
    )


class DistillConfig(NarrowConfig):
    """`optimize.distill`: a smaller student learns the trained model's predictions (text-classification: a
    shallower, and by default narrower, encoder; tabular: an MLP, `mlp`)."""

    layers: list[int] = Field(
        default_factory=lambda: [1, 3, 5],
        min_length=1,
        description="the teacher's encoder layers (0-based) the student keeps and starts from",
    )
    heads: float = Field(
        0.0, ge=0, lt=1, description="text: fraction of the student's attention heads removed before it learns "
        "(as optimize.prune.heads; 0: it keeps them all)"
    )
    ffn: float = Field(
        0.5, ge=0, lt=1, description="text: fraction of the student's feed-forward channels removed before it "
        "learns (as optimize.prune.ffn). Half the layers leave the token embeddings, the Python around one "
        "prediction and each layer's fixed cost: banking77 at batch 1, 3 of 6 layers measured 1.6-1.9x faster, "
        "with half their channels too 2.3x. 0: the student keeps the teacher's width"
    )
    epochs: int = Field(3, ge=1, description="passes over the training split")
    mlp: TabularStudentConfig = Field(
        default_factory=TabularStudentConfig, description="tabular apps: the MLP student that replaces every member"
    )


class ImagePruneConfig(Strict):
    """`optimize.prune.image`: structured pruning of an image app's CNN."""

    channels: float = Field(
        0.5, ge=0, lt=1, description="fraction of the output channels removed from every conv layer (the least "
        "important of each layer by optimize.prune.importance; the input and the classes stay)"
    )
    units: float = Field(
        0.5, ge=0, lt=1, description="fraction of the dense hidden layer's units removed (model.options.arch flat "
        "or madry)"
    )
    epochs: int = Field(3, ge=1, description="passes of the recovery over the training images (2 lost 1.15 pt "
                        "on handwritten-digits, 3 lost 0.4)")
    lr: float | None = Field(
        None, gt=0, description="the recovery's peak learning rate (AdamW, one-cycle); unset: half the app's train.lr"
    )


class PruneConfig(NarrowConfig):
    """`optimize.prune`: structured pruning of each fine-tuned encoder (attention heads and FFN channels are
    removed, so the matrices really shrink), then a short recovery fine-tune (text-classification); for image
    apps, whole conv channels and dense hidden units (`image`)."""

    heads: float = Field(
        0.75, ge=0, lt=1, description="text: fraction of the attention heads removed (ranked over all layers; every "
        "layer keeps at least one). At batch 1 each layer's fixed cost stays, so only deep cuts approach 2.5x: "
        "banking77, heads 0.75 + ffn 0.875 + 3 epochs: 2.5-2.7x at -0.6 pt; half and half: 1.9x at 0 pt; "
        "0.75 + 0.9: 2.6x at -0.9 pt; 0.8 + 0.9 (4 epochs): 2.9x at -1.8 pt"
    )
    ffn: float = Field(
        0.875, ge=0, lt=1, description="text: fraction of the feed-forward channels removed (ranked over all "
        "layers; widths rounded to multiples of 16)"
    )
    epochs: int = Field(3, ge=1, description="text: passes of the recovery over the training split (per member)")
    features: list[Literal["finetune", "embeddings", "tfidf"]] = Field(
        default_factory=lambda: ["finetune", "tfidf"],
        description="the heads (model.options.features) the pruned run keeps, of those the app has; the "
        "embeddings head runs a whole frozen encoder that pruning cannot shrink and would bound the speed-up, "
        "so by default it is dropped and the recovery's distillation from the whole model carries what it added",
    )
    image: ImagePruneConfig = Field(
        default_factory=ImagePruneConfig, description="image apps: what is cut from the CNN and how it "
        "recovers (luodi.tasks.image_prune; temperature, alpha, batch_size and seed: optimize.prune's)"
    )


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
    prune: PruneConfig = Field(default_factory=PruneConfig, description="--method prune settings")
