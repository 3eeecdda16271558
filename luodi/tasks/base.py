"""The Task contract: every task family has the same small verbs (fit / predict / evaluate / save / load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from luodi.config import AppConfig


class Task(Protocol):
    """One task family. A Task instance is bound to one AppConfig.

    - `fit(train, valid, run_dir, progress)` trains, checkpointing to run_dir each epoch, resuming from it
      when a checkpoint exists, and returns validation metrics.
    - `predict(records)` maps a list of input dicts (the request schema) to a list of output dicts.
    - `evaluate(data)` returns metrics (and fills report material) on labelled data.
    - `save(dir)` / `load(dir)` write and read weights (safetensors/ONNX/JSON, never pickle) and metadata.
    - `input_model` / `output_model` are pydantic models used for the HTTP routes and OpenAPI docs.
    """

    name: ClassVar[str]
    config: AppConfig

    def read(self, path: str | None) -> Any:
        """Read a dataset in this task's formats (the app's data.path when path is None).

        Must accept the dataset's original file format (e.g. banking77 test.csv, a CoNLL file,
        KDDTest+.txt, adult.test, a folder of wavs) so `luodi evaluate APP --data FILE` works.
        """
        ...

    def split(self, data: Any) -> tuple[Any, Any]:
        """Hold out a validation split per config.data.split (seeded, stratified where it applies)."""
        ...

    def fit(self, train: Any, valid: Any, run_dir: Path, progress: bool = True) -> dict[str, float]: ...

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def evaluate(self, data: Any) -> dict[str, Any]: ...

    def save(self, run_dir: Path) -> None: ...

    def load(self, run_dir: Path) -> None: ...

    def input_model(self) -> type[BaseModel]: ...

    def output_model(self) -> type[BaseModel]: ...
