"""`model.options` of an image-classification app (pydantic and the standard library only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from luodi.options.strict import Strict


class ImageClassificationOptions(Strict):
    """The CNN's shape and its training knobs; epochs, lr, batch size and augmentation come from `train:`."""


    width: int = Field(32, ge=4, le=512, description="channels of the first CNN stage (doubled per stage)")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout before the last linear layer")
    arch: Literal["cnn", "flat", "madry", "scatter"] = Field(
        "cnn",
        description="cnn: conv-batchnorm stages with global average pooling; flat: two strided convs (width, "
        "2 width) and a dense layer of `hidden` units, no batch norm (Wong et al.'s MNIST model: the one where "
        "single-step adversarial training works, see train.adversarial); madry: two 5x5 convs (width, 2 width) "
        "each with 2x2 max pooling and a dense layer of `hidden` units, no batch norm (Madry et al.'s MNIST model "
        "at width 32, hidden 1024: more capacity, more robustness); scatter: fixed wavelet scattering features "
        "(kymatio) and one linear layer, for DP-SGD (train.privacy: few weights to spend the budget on)",
    )
    hidden: int = Field(
        100, ge=8, le=4096, description="units of the dense layer (arch: flat or madry; Madry et al. use 1024)"
    )
    activation: Literal["relu", "tanh"] = Field(
        "relu", description="arch flat or madry: relu, or tanh (bounded: what DP-SGD training, train.privacy, is "
        "reported to do better with)",
    )
    keep_last: bool = Field(
        False,
        description="keep the last epoch's weights (a fixed schedule, no early stopping) instead of the epoch "
        "with the best validation accuracy (robust accuracy with train.adversarial); validation is then only "
        "reported, so it never selects the model",
    )
    size: int | list[int] | None = Field(
        None,
        description="image-folder images are resized to [height, width] (an int: square); unset: 32 x 32",
    )
    channels: Literal[1, 3] = Field(3, description="image-folder images are read as 1 (gray) or 3 (RGB) channels")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy loss")
    weight_decay: float = Field(5e-4, ge=0, description="AdamW weight decay")
    schedule: Literal["constant", "cosine", "onecycle"] = Field(
        "onecycle", description="learning-rate schedule per step (onecycle: linear warmup, then cosine)"
    )

    @field_validator("size")
    @classmethod
    def _height_width(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, list) and (len(v) != 2 or min(v) < 1):
            raise ValueError("expected an int or [height, width] of positive ints")
        if isinstance(v, int) and v < 1:
            raise ValueError("expected a positive int or [height, width]")
        return v

    def image_size(self) -> tuple[int, int] | None:
        """(height, width) from `size`, or None when unset."""
        if self.size is None:
            return None
        return (self.size, self.size) if isinstance(self.size, int) else (self.size[0], self.size[1])
