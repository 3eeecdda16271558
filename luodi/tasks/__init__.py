"""Task families. TASKS maps the App file's `task` to the class implementing luodi.tasks.base.Task."""

from __future__ import annotations

import importlib

from luodi.config import AppConfig
from luodi.errors import ConfigError

TASKS: dict[str, str] = {
    "tabular": "luodi.tasks.tabular:TabularTask",
    "anomaly-detection": "luodi.tasks.anomaly:AnomalyTask",
    "recommendation": "luodi.tasks.recommendation:RecommendationTask",
    "image-classification": "luodi.tasks.image:ImageClassificationTask",
    "speech-recognition": "luodi.tasks.speech:SpeechRecognitionTask",
    "text-classification": "luodi.tasks.text_classification:TextClassificationTask",
    "token-classification": "luodi.tasks.token_classification:TokenClassificationTask",
    "text-generation": "luodi.tasks.text_generation:TextGenerationTask",
}


def task_for(config: AppConfig):
    """Instantiate the Task for an app config."""
    if config.task not in TASKS:
        raise ConfigError(f"task '{config.task}' cannot be trained; trainable tasks: {', '.join(TASKS)}")
    mod, cls = TASKS[config.task].split(":")
    return getattr(importlib.import_module(mod), cls)(config)
