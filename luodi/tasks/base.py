"""The Task contract: every task family has the same small verbs (fit / predict / evaluate / save / load).

NOTE to task implementers (apps engineer, backward compatible additions; all optional):
- `TaskBase` below gives defaults you may inherit: `callbacks`, `history`, `on_epoch_end(epoch, logs)`
  (call it after each epoch, AFTER writing your checkpoint: tests raise KeyboardInterrupt from a callback
  to simulate an interruption, then `train --resume` must continue from the checkpoint), `folds(data, k)`
  for `luodi cv` / k-fold tuning (works for DataFrames and lists; override for other data types),
  and `read_input(path)` used by `luodi predict --input FILE` (default: csv/json/jsonl rows, else
  [{"path": FILE}]); a folder is read file by file (`read_inputs`; `inputs_are_files = True`: one input per file).
- Checkpoints go under `run_dir / "checkpoint"` (removed when the run finishes, not in the manifest).
- `evaluate(data)` returns float metrics; it may add a key "report" holding a dict with any of
  y_true (list of labels), y_pred (list), proba (list of per-class lists), labels (class names),
  scores (binary scores) — the HTML report draws confusion matrix, ROC/PR and calibration from it.
  `luodi.evaluate.metrics.classification_report_data(...)` builds both for classifiers.
- `self.history` (list of per-epoch dicts, e.g. {"epoch": 1, "train_loss": .., "valid_loss": ..}) feeds
  the training curves in report.html; save it yourself if you want it after load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from luodi.config import AppConfig


class Task(Protocol):
    """One task family. A Task instance is bound to one AppConfig.

    - `fit(train, valid, run_dir, progress)` trains, checkpointing to run_dir each epoch, resuming from it
      when a checkpoint exists. It returns nothing: callers score the validation split once, with `evaluate`.
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

    def fit(self, train: Any, valid: Any, run_dir: Path, progress: bool = True) -> None: ...

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def evaluate(self, data: Any) -> dict[str, Any]: ...

    def save(self, run_dir: Path) -> None: ...

    def load(self, run_dir: Path) -> None: ...

    def input_model(self) -> type[BaseModel]: ...

    def output_model(self) -> type[BaseModel]: ...


EpochCallback = Callable[[int, dict[str, Any]], None]


def model_name(app: str, suffix: str) -> str:
    """A pydantic model (and OpenAPI schema) name for an app: `credit-risk`, "Input" -> `CreditRiskInput`."""
    return "".join(p.capitalize() for p in app.replace("-", "_").split("_")) + suffix


class TaskBase:
    """Optional defaults for tasks: epoch callbacks, history, k-fold indices, prediction input files."""

    name: ClassVar[str] = "task"

    def __init__(self, config: AppConfig):
        self.config = config
        self.callbacks: list[EpochCallback] = []
        self.history: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """Record the epoch in history and call every callback (they may raise KeyboardInterrupt)."""
        self.history.append({"epoch": epoch, **logs})
        for cb in self.callbacks:
            cb(epoch, logs)

    def importance(self, data: Any) -> list[dict[str, Any]] | None:
        """Global feature importance on labelled data for the report (None: the task has none)."""
        return None

    def explain(self, records: list[dict[str, Any]], top: int | None = None) -> list[dict[str, Any]]:
        """Predictions with each feature's (token's, pixel block's, frame's) effect; table, text-classification,
        image and speech (CNN) apps implement it."""
        from luodi.errors import BadRequest

        raise BadRequest(
            "explanations are available for table apps (tabular, anomaly-detection), text-classification, "
            f"image-classification and speech (CNN) apps; this app is {self.name}",
            param="explain",
        )

    def refit_blocker(self) -> str | None:
        """Why train.refit cannot be used with this model (None: it can): refitting on all rows is only
        sound when the validation rows pick nothing (no early stopping, epoch choice or calibration)."""
        return f"task {self.name} picks epochs or calibrates on the validation rows"

    def privacy_blocker(self) -> str | None:
        """Why train.privacy cannot be used with this task and model (None: it can). Only a task that trains one
        torch model through the shared loop's DP-SGD (luodi.train.privacy) can account for what it spends."""
        return f"task {self.name} has no differentially private training (image-classification has)"

    def labels(self, data: Any) -> Any:
        """Labels used to stratify folds (None: plain k-fold)."""
        return None

    def folds(self, data: Any, k: int, seed: int = 0) -> list[tuple[Any, Any]]:
        """k (train, valid) pairs of the data, stratified when `labels(data)` gives labels."""
        from luodi.data.split import kfold_indices

        out = []
        for tr, va in kfold_indices(len(data), k, seed, self.labels(data)):
            if hasattr(data, "iloc"):
                out.append((data.iloc[tr].reset_index(drop=True), data.iloc[va].reset_index(drop=True)))
            else:
                out.append(([data[i] for i in tr], [data[i] for i in va]))
        return out

    inputs_are_files: ClassVar[bool] = False  # image / speech: one input per file, so a folder is its files

    def read_input(self, path: str) -> list[dict[str, Any]]:
        """Records to predict from an input file (csv/tsv/json/jsonl/parquet; any other file -> its path)."""
        from luodi.data.readers import read_records

        if Path(path).suffix.lower() in (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"):
            return read_records(path)
        return [{"path": str(path)}]

    def read_inputs(self, path: str) -> tuple[list[dict[str, Any]], list[str] | None]:
        """Records from an input file (sources None), or from every file of a folder (sorted, hidden files
        skipped) with the file each record came from: one record per file for image / speech apps, the rows
        of each file (read by `read_input`) for the others."""
        if not Path(path).is_dir():
            return self._read_some(path), None
        files = [f["path"] for f in folder_inputs(path)]
        if self.inputs_are_files:
            return [{"path": f} for f in files], files
        records: list[dict[str, Any]] = []
        sources: list[str] = []
        for f in files:
            rows = self._read_some(f)
            records += rows
            sources += [f] * len(rows)
        return records, sources

    def _read_some(self, path: str) -> list[dict[str, Any]]:
        from luodi.errors import BadRequest

        rows = self.read_input(path)
        if not rows:
            raise BadRequest(f"input file '{path}' holds nothing to predict (no rows or texts)", param="input")
        return rows


def folder_inputs(path: str | Path) -> list[dict[str, Any]]:
    """One {"path": file} per non-hidden file under a folder (recursively, sorted)."""
    from luodi.errors import BadRequest

    root = Path(path)
    files = sorted(
        f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
    )
    if not files:
        raise BadRequest(f"input folder '{path}' has no files", param="input")
    return [{"path": str(f)} for f in files]


class TableInputs:
    """`read_input` for table apps (self.cols: names, label): records, a table with a header, or lines in the
    data's own headerless format, label field optional (luodi.data.readers.read_feature_rows); and `explain`
    (self.prep, optional self.ordinal)."""

    config: AppConfig
    cols: Any
    prep: Any

    def read_input(self, path: str) -> list[dict[str, Any]]:
        from luodi.data.readers import read_feature_rows

        d = self.config.data
        return read_feature_rows(path, d.format, d.options, self.cols.names, self.cols.label)

    def explain(self, records: list[dict[str, Any]], top: int | None = None) -> list[dict[str, Any]]:
        """Predictions with each feature's effect against a typical record (luodi.evaluate.explain)."""
        from luodi.evaluate.explain import explain, typical_record

        typical = typical_record(self.prep, getattr(self, "ordinal", None) or {})
        return explain(self.predict, records, typical, top)


class TextInputs:
    """`read_input` for tasks whose input is {"text": ...}: JSON, a CSV naming the text column, the dataset's
    own format, or one text per line (luodi.data.text.read_text_inputs). Put it before TaskBase in the bases."""

    config: AppConfig

    def read_input(self, path: str) -> list[dict[str, Any]]:
        from luodi.data.text import read_text_inputs

        return read_text_inputs(path, str(self.config.data.columns.get("text", "text")))
