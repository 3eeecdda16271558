"""`model.options` of a speech-recognition app (pydantic and the standard library only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from luodi.options.strict import Strict

Speed = Annotated[float, Field(ge=0.5, le=2)]


class SpeechRecognitionOptions(Strict):
    """Features, CNN and head options of both model types (`cnn`: log-mels and CNNs; `speech-embedding`:
    pretrained embeddings and a logistic regression); each key says which type reads it."""


    sample_rate: int | None = Field(
        None,
        ge=4000,
        le=48000,
        description="recordings are resampled to this rate; unset: 8000 (cnn), 16000 (speech-embedding)",
    )
    tta_speeds: list[Speed] = Field(
        default_factory=list,
        description="test-time augmentation: probabilities averaged over copies played at these speeds",
    )
    # speech-embedding
    window_seconds: float = Field(1.6, gt=0, le=10, description="speech-embedding: silence the recording is centred in")
    c: float = Field(0.03, gt=0, description="speech-embedding: inverse L2 strength of the logistic regression")
    # cnn: features
    n_mels: int = Field(40, ge=8, le=256, description="cnn: mel bands")
    hop_ms: float = Field(10.0, gt=0, le=100, description="cnn: milliseconds between frames")
    max_seconds: float = Field(
        1.0, gt=0, le=60, description="cnn: seconds of audio per recording (frames = max_seconds / hop)"
    )
    frames: int | None = Field(None, ge=1, description="cnn: frames per recording; overrides max_seconds")
    trim_db: float = Field(
        0.0, ge=0, description="cnn: trim leading/trailing audio this many dB below the peak (0: off)"
    )
    floor_db: float = Field(0.0, ge=0, description="cnn: floor of the log-mels this many dB below the peak (0: off)")
    normalize: Literal["mean", "cmvn"] = Field(
        "mean", description="cnn: subtract the mean, or mean and variance per band"
    )
    fit: Literal["pad", "resize"] = Field("pad", description="cnn: pad/crop to `frames`, or resize the spectrogram")
    cepstra: int = Field(0, ge=0, le=256, description="cnn: MFCCs instead of log-mels when > 0")
    lifter: int = Field(0, ge=0, description="cnn: cepstral liftering (0: off)")
    # cnn: network and training
    ensemble: int = Field(1, ge=1, le=32, description="cnn: CNNs trained with seeds train.seed, +1, ... and averaged")
    width: int = Field(32, ge=4, le=512, description="cnn: channels of the first CNN stage")
    dropout: float = Field(0.3, ge=0, lt=1, description="cnn: dropout before the last linear layer")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cnn: label smoothing of the cross-entropy loss")
    weight_decay: float = Field(5e-4, ge=0, description="cnn: AdamW weight decay")
    schedule: Literal["constant", "cosine", "onecycle"] = Field(
        "onecycle", description="cnn: learning-rate schedule per step"
    )

    @field_validator("tta_speeds", mode="before")
    @classmethod
    def _one_speed(cls, v: object) -> object:
        if v is None:
            return []
        return [v] if isinstance(v, int | float) and not isinstance(v, bool) else v
