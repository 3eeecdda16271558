"""`model.options` of a tabular app (and of the anomaly-detection hybrid's classifier).

The LightGBM, MLP, linear, forest and SVM members read their own keys; the rest shape the ensemble: weights,
calibration, ordered categories (`ordinal`), a compact coding for some members (`coding`, luodi/data/coding.py)
and cross-fitting (`inner_folds`). Cross-field rules that need the data (a coded column must be a feature, the
label's class count must match `objective`) are checked by the task when it sees the rows.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from luodi.options.strict import Strict

MEMBERS = ("lightgbm", "mlp", "linear", "forest", "svm")
MODEL_TYPES = (*MEMBERS, "ensemble")
CODED_MEMBERS = ("mlp", "linear", "forest", "svm")  # the members that read the dense (one-hot) matrix
# the options handed to LightGBM as they are (the others are luodi's own)
LIGHTGBM_PARAMS = (
    "num_leaves",
    "min_child_samples",
    "feature_fraction",
    "bagging_fraction",
    "bagging_freq",
    "lambda_l1",
    "lambda_l2",
    "max_depth",
    "min_split_gain",
    "cat_smooth",
)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class CodingOptions(Strict):
    """`model.options.coding`: the members named read a compact coding of the table (luodi/data/coding.py)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)
    members: list[Literal["mlp", "linear", "forest", "svm"]] = Field(
        default_factory=lambda: ["linear"], min_length=1, description="the members that read this coding"
    )
    ordinal: dict[str, Annotated[list[str], Field(min_length=2)]] | None = Field(
        None, description="{column: [values in order]}: one rank column each (unknown values -> missing)"
    )
    indicators: dict[str, Annotated[list[str], Field(min_length=1)]] | None = Field(
        None, description="{column: [values]}: a 0/1 column for each listed value only (the rest is the baseline)"
    )


class TabularOptions(Strict):
    """`model.options` of a tabular app; `model.type` picks the members (lightgbm by default)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    # LightGBM
    n_estimators: int = Field(
        500, ge=1, description="LightGBM boosting rounds at most (early stopping may stop sooner)"
    )
    num_leaves: int = Field(31, ge=2, le=131072, description="LightGBM leaves per tree")
    min_child_samples: int = Field(20, ge=0, description="LightGBM: fewest rows in a leaf")
    feature_fraction: float = Field(0.9, gt=0, le=1, description="LightGBM: share of columns tried per tree")
    bagging_fraction: float = Field(1.0, gt=0, le=1, description="LightGBM: share of rows per tree (with bagging_freq)")
    bagging_freq: int = Field(0, ge=0, description="LightGBM: re-sample rows every this many trees (0: never)")
    lambda_l1: float = Field(0.0, ge=0, description="LightGBM L1 regularization")
    lambda_l2: float = Field(0.0, ge=0, description="LightGBM L2 regularization")
    max_depth: int = Field(-1, ge=-1, description="LightGBM tree depth limit (-1 or 0: none)")
    min_split_gain: float = Field(0.0, ge=0, description="LightGBM: least gain a split must bring")
    cat_smooth: float = Field(10.0, ge=0, description="LightGBM smoothing of categorical splits")
    early_stopping_rounds: int = Field(
        50, ge=0, description="LightGBM stops after this many rounds without a better validation loss (0: never)"
    )
    seeds: int = Field(
        1, ge=1, description=">1: that many boosters with different bagging / feature-sampling seeds, averaged"
    )
    # MLP
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [128, 64], description="MLP hidden layer widths"
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="MLP dropout")
    weight_decay: float = Field(1e-4, ge=0, description="MLP weight decay (AdamW)")
    mlp_lr: float | None = Field(None, gt=0, description="MLP learning rate (default: train.lr)")
    # linear model
    linear_C: float = Field(
        1.0, gt=0, description="inverse L2 strength of the linear member (ridge alpha = 1 / linear_C for regression)"
    )
    # random forest and RBF SVM (scikit-learn, stored as ONNX)
    forest_trees: int = Field(500, ge=1, description="random-forest trees")
    forest_min_leaf: int = Field(3, ge=1, description="random forest: fewest rows in a leaf")
    forest_max_features: str | float = Field(
        "sqrt", description="features tried per split: sqrt | log2 | a fraction in (0, 1] (1: all)"
    )
    svm_C: float = Field(1.0, gt=0, description="RBF SVM regularization C")
    svm_gamma: str | float = Field("scale", description="RBF width: scale | auto | a positive number")
    svm_max_rows: int = Field(
        10_000, ge=50, description="the SVM's cost grows with rows squared: above this it fits a stratified sample"
    )
    # the ensemble
    ensemble_weights: dict[str, float] | list[float] | None = Field(
        None,
        description="member -> weight, e.g. {lightgbm: 1, linear: 1, forest: 1, svm: 1} (a list is read as "
        "[lightgbm, mlp(, linear)]); default: the model.type member, or lightgbm + mlp for ensemble",
    )
    calibration: Literal["sigmoid", "isotonic", "none"] = Field(
        "sigmoid", description="calibration of binary probabilities"
    )
    objective: Literal["auto", "binary", "multiclass", "regression"] = Field(
        "auto", description="auto: regression for a float label with > 20 values, else classification"
    )
    ordinal: dict[str, Annotated[list[str], Field(min_length=2)]] | None = Field(
        None, description="{column: [values in order]}: ordered categories as one rank column (unknown -> missing)"
    )
    coding: CodingOptions | None = Field(None, description="a compact coding for some members (luodi/data/coding.py)")
    threads: int = Field(1, ge=1, description="OpenMP threads; >1 is much slower on a busy 2-core machine")
    inner_folds: int = Field(
        0,
        ge=0,
        description=">= 2: cross-fitted members (each early-stopped on its own fold, calibrated out of fold), so "
        "the validation split is only scored; 0: off",
    )

    @field_validator("forest_max_features")
    @classmethod
    def _max_features(cls, v: str | float) -> str | float:
        if v in ("sqrt", "log2") or (_number(v) and 0 < v <= 1):
            return v
        raise ValueError("must be sqrt, log2 or a fraction in (0, 1]")

    @field_validator("svm_gamma")
    @classmethod
    def _gamma(cls, v: str | float) -> str | float:
        if v in ("scale", "auto") or (_number(v) and v > 0):
            return v
        raise ValueError("must be scale, auto or a positive number")

    @field_validator("ensemble_weights", mode="before")
    @classmethod
    def _weights(cls, w: Any) -> Any:
        if w is None:
            return w
        as_dict = dict(zip(("lightgbm", "mlp", "linear"), w, strict=False)) if isinstance(w, list) else w
        ok = (
            (not isinstance(w, list) or len(w) in (2, 3))
            and isinstance(as_dict, dict)
            and set(as_dict) <= set(MEMBERS)
            and all(_number(x) and x >= 0 for x in as_dict.values())
            and sum(as_dict.values()) > 0
        )
        if not ok:
            raise ValueError(
                "must map members to non-negative weights, e.g. {lightgbm: 1, linear: 1, forest: 1, svm: 1} "
                f"(members: {', '.join(MEMBERS)}; a list [lightgbm, mlp, linear] also works)"
            )
        return w

    @field_validator("inner_folds", mode="before")
    @classmethod
    def _folds(cls, k: Any) -> Any:
        if isinstance(k, int) and not isinstance(k, bool) and (k == 0 or k >= 2):
            return k
        raise ValueError("must be 0 (off) or an integer >= 2")

    def weights(self, model_type: str) -> dict[str, float]:
        """Normalized weight per member (MEMBERS order); members with weight 0 are not trained."""
        w = self.ensemble_weights
        if w is None:
            w = {model_type: 1.0} if model_type in MEMBERS else {"lightgbm": 1.0, "mlp": 1.0}
        elif isinstance(w, list):
            w = dict(zip(("lightgbm", "mlp", "linear"), w, strict=False))
        total = float(sum(w.values()))
        return {m: float(w.get(m, 0.0)) / total for m in MEMBERS}
