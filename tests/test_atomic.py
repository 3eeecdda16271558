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
