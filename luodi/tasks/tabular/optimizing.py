"""`luodi optimize` for the tabular task (a mixin of TabularTask): method `onnx` puts the whole ensemble into one
ONNX graph (onnx_graphs.py) that `load` then runs with onnxruntime, and says how closely it reproduces the
original members and whether it is faster for single records (measured, not assumed). Method `distill`
(distilling.py) replaces the ensemble by one MLP student; `luodi export` writes the bundle (exporting.py).

The optimized run keeps its LightGBM text files: `explain` reads them for exact TreeSHAP (ONNX tree ensembles
keep no cover statistics); predictions never do. The MLP's safetensors and the forest / SVM graphs are gone:
the ensemble graph holds them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from luodi import atomic, crypto
from luodi.errors import ConfigError
from luodi.tasks.tabular.distilling import Distilling
from luodi.tasks.tabular.exporting import Exporting
from luodi.tasks.tabular.sklearn_members import SKLEARN_MEMBERS

GRAPH = "ensemble.onnx"
AGREEMENT_GOAL = 0.999


class Optimizing(Distilling, Exporting):
    """records_of / parameter_count / optimize of TabularTask (its state is declared in TabularTask); distill
    (distilling.py) and export_bundle (exporting.py) come with it."""

    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "distill")
    ensemble: Any  # onnx_graphs.EnsembleSession of an optimized run, else None
    onnx_info: dict[str, Any] | None

    def records_of(self, data: pd.DataFrame) -> list[dict[str, Any]]:
        """The prediction requests of a labelled table: its feature columns (and train.fairness's group column,
        which decisions read), missing values as None."""
        cols = list(self.prep.features)
        group = self.fairness.sensitive if self.fairness else None
        if group and group not in cols and group in data.columns:
            cols.append(group)
        frame = data[cols].astype(object)
        return frame.where(frame.notna(), None).to_dict("records")

    def parameter_count(self) -> int:
        """Numbers the model computes with: tree nodes (LightGBM, forest), support vectors and coefficients
        (SVM), network weights (MLP) and coefficients (linear); for an ONNX run, those of its graph."""
        import onnx

        from luodi.tasks.tabular.onnx_graphs import parameter_count

        if self.ensemble is not None:
            return parameter_count(onnx.load_from_string(self.ensemble.blob))
        n = 0
        for m in self.members or [self]:
            if m.weights["lightgbm"] > 0:
                for b in (m.booster, *m.more_boosters):
                    n += sum(2 * t["num_leaves"] - 1 for t in b.dump_model()["tree_info"])
            if m.weights["mlp"] > 0:
                n += sum(w.size + b.size for w, b in m._mlp_weights())
            if m.weights["linear"] > 0:
                n += np.asarray(m.linear["coef"]).size + np.asarray(m.linear["intercept"]).size
            n += sum(parameter_count(onnx.load_from_string(m.sk[k].blob)) for k in m.sk if m.weights[k] > 0)
        return n

    def ensemble_graph(self) -> Any:
        """Every cross-fitted member's weighted parts as one ONNX model (onnx_graphs.merge)."""
        import onnx

        from luodi.tasks.tabular.onnx_graphs import dense_graph, lgb_graph, merge

        reg, parts = self.objective == "regression", []
        for j, m in enumerate(self.members or [self]):
            w = m.weights
            if w["lightgbm"] > 0:
                for i, b in enumerate((m.booster, *m.more_boosters)):
                    parts.append((f"m{j}.lightgbm.{i}.", f"m{j}.lgb", lgb_graph(b, reg)))
            if w["mlp"] > 0:
                scale = (float(m._ystd), float(m._ymean)) if reg else None
                graph = dense_graph(m._mlp_weights(), "none" if reg else "softmax", scale=scale)
                parts.append((f"m{j}.mlp.0.", f"m{j}.{m._matrix_of('mlp')}", graph))
            if w["linear"] > 0:
                coef, icpt = np.asarray(m.linear["coef"]).T, np.asarray(m.linear["intercept"])
                if reg:
                    coef, icpt = coef[:, :1], icpt[:1]
                head = "none" if reg else "binary" if self.objective == "binary" else "softmax"
                graph = dense_graph([(coef, icpt)], head, dtype=np.float64)
                parts.append((f"m{j}.linear.0.", f"m{j}.{m._matrix_of('linear')}", graph))
            for k in SKLEARN_MEMBERS:
                if w[k] > 0:
                    parts.append((f"m{j}.{k}.0.", f"m{j}.{m._matrix_of(k)}", onnx.load_from_string(m.sk[k].blob)))
        return merge(parts)

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: pd.DataFrame, opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """`onnx`: the run in run_dir (a copy of the base run) predicts with one ONNX graph of the whole
        ensemble. Returns its agreement with the original on the validation split, the largest probability
        difference (served and per part) and batch-1 latency before / after (with a note when not faster)."""
        from importlib.metadata import version

        from luodi.tasks.tabular.onnx_graphs import EnsembleSession

        if method != "onnx":  # (distill trains again: luodi.apps.optimize calls self.distill)
            raise ConfigError(f"--method '{method}' is not available for tabular apps; they offer: "
                              f"{', '.join(self.optimize_methods)}", param="method")
        if self.ensemble is not None:
            raise ConfigError("this run already predicts with ONNX; optimize its base version instead (--version)",
                              param="method")
        run_dir = Path(run_dir)
        _, valid = self.split(self.read(None))
        records = self.records_of(valid)
        quality_before = _quality(score)
        before = self._served(records)
        parts_before = self._part_outputs(records)
        ms_before = self._batch1_ms(records)
        blob = self.ensemble_graph().SerializeToString()
        self.ensemble = EnsembleSession(blob, self.opts.threads)
        after = self._served(records)
        parts_after = self._part_outputs(records)
        ms_after = self._batch1_ms(records)
        say(f"ensemble as one ONNX graph ({GRAPH}, {len(blob) / 1e6:.2f} MB): {ms_after:.3f} ms vs "
            f"{ms_before:.3f} ms per single record")
        self._write_onnx_run(run_dir, blob, version("onnxmltools"))
        agree = _agreement(before, after, self.objective == "regression")
        diff = float(np.max(np.abs(before[1] - after[1]))) if len(records) else 0.0
        info: dict[str, Any] = {
            "graph": GRAPH,
            "validation_rows": len(records),
            "agreement": round(agree, 6),
            "agreement_goal": AGREEMENT_GOAL,
            "agreement_goal_met": agree >= AGREEMENT_GOAL,
            "max_abs_probability_diff" if self.objective != "regression" else "max_abs_value_diff": diff,
            "max_abs_diff_by_part": {
                k: float(np.max(np.abs(parts_before[k] - parts_after[k]))) for k in parts_before
            },
            "calibration_quality": {"original": quality_before, "onnx": _quality(score)},
            "batch1_ms": {"original": round(ms_before, 4), "onnx": round(ms_after, 4)},
            "faster_batch1": ms_after < ms_before,
            "kept": "model.lgb*.txt (read by explain for exact TreeSHAP only; predictions run on ONNX)",
        }
        if ms_after >= ms_before:
            info["note"] = (f"not faster for single records here ({ms_after:.3f} ms vs {ms_before:.3f} ms): the "
                            "ONNX run is an export (one onnxruntime graph, no LightGBM / torch at serving), kept")
        if agree < AGREEMENT_GOAL:
            say(f"ONNX agrees with the original on {agree:.2%} of validation rows (goal {AGREEMENT_GOAL:.1%})")
        return info

    def _served(self, records: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray]:
        """The served decisions and probabilities (values) of records, as predict computes them."""
        if not records:
            return [], np.zeros((0, 1))
        rows = self._rows(records)
        p = self._calibrate(self._raw_proba(rows))
        if self.objective == "regression":
            return p[:, 0].tolist(), p
        return [o["label"] for o in self._outputs(rows, p, records)], p

    def _part_outputs(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Each weighted part's outputs over every cross-fitted member (for the per-part difference)."""
        if not records:
            return {}
        rows = self._rows(records)
        members = self.members or [self]
        mats = [rows.matrices(j) for j in range(len(members))]
        onnx = self.ensemble.run(mats, self.objective == "regression") if self.ensemble is not None else None
        out: dict[str, list[np.ndarray]] = {}
        for j, m in enumerate(members):
            for part in (k for k, w in m.weights.items() if w > 0):
                p = m._member_proba(mats[j], (part,), onnx[j] if onnx else None) / m.weights[part]
                out.setdefault(part, []).append(p)
        return {k: np.concatenate(v) for k, v in out.items()}

    def _batch1_ms(self, records: list[dict[str, Any]], n: int = 100) -> float:
        """Median milliseconds of predict([record]) over the first n records (after a warm-up)."""
        sample = records[:n]
        for r in sample[:5]:
            self.predict([r])
        times = []
        for r in sample:
            t0 = time.perf_counter()
            self.predict([r])
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000) if times else 0.0

    def _write_onnx_run(self, run_dir: Path, blob: bytes, converter: str) -> None:
        """ensemble.onnx in, the files it replaces out, preprocess.json (top and members) saying so."""
        atomic.write_bytes(run_dir / GRAPH, blob)
        self.onnx_info = {"graph": GRAPH, "converter": f"onnxmltools {converter}"}
        for j, m in enumerate(self.members or [self]):
            folder = run_dir / f"member{j}" if self.members else run_dir
            for name in ("mlp.safetensors", *(f"{k}.onnx" for k in SKLEARN_MEMBERS)):
                (folder / name).unlink(missing_ok=True)
            if self.members:
                m.onnx_info = {"in": "parent"}
                _set_meta(folder, m.onnx_info)
        _set_meta(run_dir, self.onnx_info)


def _set_meta(folder: Path, info: dict[str, Any]) -> None:
    meta = crypto.read_json(folder / "preprocess.json")
    meta["onnx"] = info
    atomic.write_json(folder / "preprocess.json", meta)


def _quality(score: Callable[[], float]) -> float | None:
    """The app's metric on the calibration rows, or None where the task does not report it (a regression app
    whose metric defaulted to accuracy)."""
    try:
        return round(float(score()), 6)
    except KeyError:
        return None


def _agreement(a: tuple[list[Any], np.ndarray], b: tuple[list[Any], np.ndarray], regression: bool) -> float:
    """Share of rows with the same decision (regression: the same value to 1e-4 relative)."""
    if not a[0]:
        return 1.0
    if regression:
        return float(np.mean(np.isclose(a[1][:, 0], b[1][:, 0], rtol=1e-4, atol=1e-6)))
    return float(np.mean([x == y for x, y in zip(a[0], b[0], strict=True)]))
