"""luodi.atomic: a failed write leaves the old file and no temp file; JSON takes numpy values."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from luodi import atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic.write_json(target, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text('{"step": 2, "half')  # a writer that dies half-way
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"step": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_written_file_replaces_and_looks_like_any_other(tmp_path):
    target = tmp_path / "v.npy"
    with atomic.atomic_path(target, suffix=".npy") as tmp:
        np.save(tmp, np.arange(3))  # numpy keeps a name that already ends in .npy
    assert np.load(target).tolist() == [0, 1, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_json_takes_numpy_scalars_and_arrays(tmp_path):
    target = tmp_path / "m.json"
    atomic.write_json(target, {"auc": np.float32(0.5), "n": np.int64(3), "v": np.arange(2), "p": tmp_path})
    assert json.loads(target.read_text()) == {"auc": 0.5, "n": 3, "v": [0, 1], "p": str(tmp_path)}


def test_folder_is_swapped_in_whole_or_not_at_all(tmp_path):
    target = tmp_path / "cache" / "model"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "weights").mkdir()
        (tmp / "weights" / "a.bin").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "config.json").write_text('{"half')
            raise RuntimeError("killed")
    assert (target / "config.json").read_text() == "{}" and (target / "weights" / "a.bin").read_bytes() == b"1"
    with atomic.atomic_dir(target) as tmp:  # an old folder is replaced, not mixed with the new one
        (tmp / "model.safetensors").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temp or old folder left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask


def test_merged_folder_keeps_the_other_files(tmp_path):
    run = tmp_path / "v1"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    (run / "adapter_model.safetensors").write_bytes(b"old")
    with atomic.atomic_dir(run, merge=True) as tmp:
        (tmp / "adapter_model.safetensors").write_bytes(b"new")
        (tmp / "adapter_config.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "config.yaml"]
    assert (run / "adapter_model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]
