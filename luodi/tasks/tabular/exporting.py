"""`luodi export APP.yaml --format onnx` for tabular apps (a mixin of TabularTask): the whole model as one ONNX
graph (onnx_graphs.py: every cross-fitted member's boosters, MLP, linear model, forest and SVM, or a distilled
student) and everything around it as data in preprocess.json, read by a short predict.py (onnxruntime and numpy).

preprocess.json lists, for each input matrix of the graph (m<j>.lgb / m<j>.dense / m<j>.coded), its columns as
[feature, source, op]: source says how a cell becomes a number (None: the number itself; {"rank": {value: i}}:
its place in a listed order, model.options.ordinal / coding.ordinal; {"is": value}: 1 / 0, a coding indicator),
op what the member reads (["raw"]: the number, missing kept; ["code", {category: i}]: LightGBM's category code,
unknown -> missing; ["std", log1p, median, mean, std]: the networks' standardized number, clipped to +-10;
["onehot", category]). Then the combining rule: each graph output's weight (member weight / copies / boosters)
and whether its probabilities are renormalized, the calibrator (binary apps), the positive class and the labels.
These are the numbers rows.py and Preprocessor compute with, so the bundle reproduces luodi's predictions.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from luodi import atomic
from luodi.errors import ConfigError

PREDICT = "tabular_predict.py"
NORMALIZED = ("lightgbm", "forest", "svm")  # their ONNX probabilities are renormalized, as EnsembleSession does


class Exporting:
    """export_bundle of TabularTask (its state is declared in TabularTask)."""

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write model.onnx, preprocess.json and predict.py into `out`; returns what the README says."""
        import onnx

        from luodi.tasks import bundles

        if self.fairness is not None:
            raise ConfigError(
                "train.fairness: per-group decision thresholds are not part of the tabular bundle yet; export an "
                "app without train.fairness", param="train.fairness",
            )
        out = Path(out)
        model = onnx.load_from_string(self.ensemble.blob) if self.ensemble is not None else self.ensemble_graph()
        atomic.write_bytes(out / "model.onnx", model.SerializeToString())  # (plaintext: runs without luodi)
        spec = self.bundle_spec([i.name for i in model.graph.input], [o.name for o in model.graph.output])
        atomic.write_json(out / "preprocess.json", spec)
        shutil.copy2(Path(bundles.__file__).parent / PREDICT, out / "predict.py")
        reg = self.objective == "regression"
        return {
            "inputs": "a CSV file (or CSV on stdin) whose first line names the columns; it needs the features "
            f"{', '.join(self.prep.features)} (empty cells are missing values)",
            "outputs": "one JSON line per row: {value}" if reg else "one JSON line per row: {label, probability, "
            f"probabilities}} with labels {self.classes}",
            "labels": len(self.classes),
            "requires": "onnxruntime numpy",
            "contents": "model.onnx (every member of every cross-fitted copy in one graph), preprocess.json (the "
            "feature coding of each input, the members' weights, the calibrator, the labels), predict.py",
            "example": "python predict.py rows.csv   (or: python predict.py < rows.csv)",
        }

    def bundle_spec(self, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
        """preprocess.json of a bundle whose graph has these input and output names (see the module docstring)."""
        members = self.members or [self]
        boosters: dict[tuple[int, str], int] = {}
        for name in outputs:
            key = (int(name.split(".")[0][1:]), name.split(".")[1])
            boosters[key] = boosters.get(key, 0) + 1
        combine = {}
        for name in outputs:
            j, part = int(name.split(".")[0][1:]), name.split(".")[1]
            weight = members[j].weights[part] / len(members) / boosters[(j, part)]
            combine[name] = [weight, part in NORMALIZED and self.objective != "regression"]
        return {
            "features": list(self.prep.features),
            "inputs": {name: _columns(members[int(name.split(".")[0][1:])], name.split(".")[1]) for name in inputs},
            "outputs": combine,
            "objective": self.objective,
            "labels": self.classes,
            "positive": self.positive,
            "calibration": self.calibrator if self.objective == "binary" else None,
        }


def _columns(m: Any, key: str) -> list[list[Any]]:
    """The [feature, source, op] columns of member m's matrix `key` (lgb | dense | coded)."""
    prep = m.coded_prep if key == "coded" else m.prep
    source = _coded_source if key == "coded" else _shared_source
    cols: list[list[Any]] = []
    for c in prep.numeric:
        feature, how = source(m, c)
        op = ["raw"] if key == "lgb" else ["std", c in set(prep.log1p), prep.medians[c], prep.means[c], prep.stds[c]]
        cols.append([feature, how, op])
    for c in prep.categorical:
        if key == "lgb":
            cols.append([c, None, ["code", {v: i for i, v in enumerate(prep.categories[c])}]])
        else:
            cols += [[c, None, ["onehot", v]] for v in prep.categories[c]]
    return cols


def _shared_source(m: Any, c: str) -> tuple[str, dict[str, Any] | None]:
    """How the shared matrices read column c: its rank (model.options.ordinal) or its number."""
    return c, ({"rank": {v: float(i) for i, v in enumerate(m.ordinal[c])}} if c in m.ordinal else None)


def _coded_source(m: Any, c: str) -> tuple[str, dict[str, Any] | None]:
    """How the coding's matrix reads column c (rows.RowCoder._coded_source's rules)."""
    coding = m.coding
    if "=" in c and c not in m.prep.features:
        col, value = c.split("=", 1)
        if col in coding.indicators:
            return col, {"is": value}
    for ranks in (coding.ordinal, m.ordinal):
        if c in ranks:
            return c, {"rank": {v: float(i) for i, v in enumerate(ranks[c])}}
    return c, None
