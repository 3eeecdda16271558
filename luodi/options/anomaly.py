"""`model.options` of an anomaly-detection app: the detectors, their thresholds and the hybrid's classifier."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from luodi.options.strict import Strict
from luodi.options.tabular import MODEL_TYPES as TABULAR_MODEL_TYPES
from luodi.options.tabular import TabularOptions

Detector = Literal["autoencoder", "isolation-forest"]
MODEL_TYPES = ("autoencoder", "isolation-forest", "hybrid")


class AnomalyOptions(Strict):
    """`model.options` of an anomaly-detection app; `model.type` is autoencoder | isolation-forest | hybrid."""

    model_config = ConfigDict(coerce_numbers_to_str=True)
    normal: str = Field("normal", description="the label value (after data.columns.label_map) of normal rows")
    attack_label: str = Field("attack", description="the label predictions give anomalous rows")
    detectors: list[Detector] | None = Field(
        None, description="default: the model.type detector; autoencoder and isolation-forest for hybrid"
    )
    quantile: float = Field(
        0.99, gt=0, le=1, description="detector threshold: this quantile of scores on held-back normal training rows"
    )
    threshold_rows: float = Field(
        0.1, gt=0, lt=1, description="share of normal training rows held back to set the thresholds"
    )
    ae_hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 16], min_length=1, description="autoencoder layer widths down to the code"
    )
    ae_dropout: float = Field(0.0, ge=0, lt=1, description="autoencoder dropout")
    trees: int = Field(200, ge=1, description="isolation-forest trees")
    max_samples: int = Field(256, ge=1, description="isolation forest: rows drawn per tree")
    classifier: TabularOptions = Field(
        default_factory=TabularOptions, description="model.options of the hybrid's supervised tabular classifier"
    )
    classifier_type: Literal[TABULAR_MODEL_TYPES] = Field(  # type: ignore[valid-type]
        "lightgbm", description="model.type of the hybrid's classifier"
    )
    classifier_lr: float = Field(
        0.05, gt=0, description="the classifier's learning rate (train.lr is the autoencoder's)"
    )
    threads: int = Field(1, ge=1, description="torch threads while training the autoencoder")
