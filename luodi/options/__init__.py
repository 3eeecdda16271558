"""Typed `model.options` per task family: one pydantic model each, with defaults, ranges and a description per key.

`luodi.config.AppConfig` validates an app's `model.options` with the model of its `task` (an unknown or
out-of-range key is an error naming `model.options.<key>`), and `luodi config schema` documents them all. The
config keeps the user's dict as written (stored runs and config fingerprints do not change); a task reads its
typed options with `luodi.config.model_options(config)`. This package sits beside config.py: it imports only
pydantic and the standard library.
"""

from __future__ import annotations

from pydantic import BaseModel

from luodi.options.anomaly import AnomalyOptions
from luodi.options.image import ImageClassificationOptions
from luodi.options.recommendation import RecommendationOptions
from luodi.options.speech import SpeechRecognitionOptions
from luodi.options.tabular import TabularOptions
from luodi.options.text import TextClassificationOptions, TextGenerationOptions, TokenClassificationOptions

# task -> its model.options model; a task not listed (assistant: its definition is the app's top-level
# `options`) keeps free-form model.options
OPTIONS: dict[str, type[BaseModel]] = {
    "tabular": TabularOptions,
    "anomaly-detection": AnomalyOptions,
    "recommendation": RecommendationOptions,
    "image-classification": ImageClassificationOptions,
    "speech-recognition": SpeechRecognitionOptions,
    "text-classification": TextClassificationOptions,
    "token-classification": TokenClassificationOptions,
    "text-generation": TextGenerationOptions,
}

__all__ = [
    "OPTIONS",
    "AnomalyOptions",
    "ImageClassificationOptions",
    "RecommendationOptions",
    "SpeechRecognitionOptions",
    "TabularOptions",
    "TextClassificationOptions",
    "TextGenerationOptions",
    "TokenClassificationOptions",
]
