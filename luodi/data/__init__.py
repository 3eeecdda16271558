"""Shared data helpers: readers (csv/tsv/jsonl/json/parquet/sklearn built-ins), seeded splits, balancing."""

from luodi.data.balance import class_weights, resample
from luodi.data.readers import expand_path, read_records, read_table
from luodi.data.split import kfold_indices, split_frame, split_indices

__all__ = [
    "class_weights",
    "expand_path",
    "kfold_indices",
    "read_records",
    "read_table",
    "resample",
    "split_frame",
    "split_indices",
]
