"""A tabular run on disk and over HTTP: LightGBM text files, MLP safetensors, forest / SVM ONNX, and
preprocess.json (preprocessing, calibration, linear coefficients, metadata); cross-fitted members under
member<j>/. `TabularStore` is a mixin of TabularTask. No pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from luodi import atomic, crypto
from luodi.data.coding import Coding
from luodi.data.tabular import Preprocessor, py_name
from luodi.options.tabular import MEMBERS
from luodi.tasks.base import model_name
from luodi.tasks.tabular.fairness import GroupThresholds
from luodi.tasks.tabular.sklearn_members import SKLEARN_MEMBERS, OnnxMember
from luodi.tasks.tabular.torch_state import load_torch_state, make_mlp, save_torch_state


class TabularStore:
    """Writes and reads TabularTask's fitted state; `meta()` is preprocess.json (what `load_meta` reads)."""

    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        for j, m in enumerate(self.members):
            m.save(run_dir / f"member{j}")
        if self.booster is not None and self.weights["lightgbm"] > 0:
            atomic.write_bytes(run_dir / "model.lgb.txt", self.booster.model_to_string().encode())
            for i, b in enumerate(self.more_boosters, 1):
                atomic.write_bytes(run_dir / f"model.lgb.{i}.txt", b.model_to_string().encode())
        if self.mlp is not None and self.weights["mlp"] > 0:
            save_torch_state(run_dir / "mlp.safetensors", {"model": self.mlp})
        for kind, member in self.sk.items():
            atomic.write_bytes(run_dir / f"{kind}.onnx", member.blob)
        if self.ensemble is not None:
            atomic.write_bytes(run_dir / self.onnx_info["graph"], self.ensemble.blob)
        atomic.write_json(run_dir / "preprocess.json", self.meta())

    def meta(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model_type": self.kind,
            "objective": self.objective,
            "classes": self.classes,
            "positive": self.positive,
            "label": self.cols.label,
            "weights": self.weights,
            "calibration": self.calibrator,
            "linear": self.linear,
            "lgb_seeds": 1 + len(self.more_boosters),
            "members": len(self.members),
            "ordinal": self.ordinal,
            "preprocessor": self.prep.to_json(),
            "coding": self.coding.to_json() if self.coded_prep is not None else None,
            "coded_preprocessor": self.coded_prep.to_json() if self.coded_prep is not None else None,
            "mlp": {
                "hidden": list(self.opts.hidden),
                "dropout": self.opts.dropout,
                "ymean": getattr(self, "_ymean", 0.0),
                "ystd": getattr(self, "_ystd", 1.0),
            },
            "history": self.history,
            "fairness": self.fairness.to_json() if self.fairness else None,
            "onnx": self.onnx_info,
        }

    def load(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        m = crypto.read_json(run_dir / "preprocess.json")
        self.load_meta(m)
        self._coder, self._mlp_layers, self._onnx_batch = None, None, None  # rebuilt on first use
        self.onnx_info, self.ensemble = m.get("onnx"), None
        if self.onnx_info and self.onnx_info.get("graph"):  # an ONNX run (luodi optimize --method onnx)
            from luodi.tasks.tabular.onnx_graphs import EnsembleSession

            self.ensemble = EnsembleSession(crypto.read_bytes(run_dir / self.onnx_info["graph"]), self.opts.threads)
        if m.get("members"):
            cfg = self._member_config()
            self.members = []
            for j in range(int(m["members"])):
                member = type(self)(cfg)
                member.load(run_dir / f"member{j}")
                self.members.append(member)
            return
        if self.weights["lightgbm"] > 0:
            import lightgbm as lgb

            self.booster = lgb.Booster(model_str=crypto.read_text(run_dir / "model.lgb.txt"))
            self.more_boosters = [
                lgb.Booster(model_str=crypto.read_text(run_dir / f"model.lgb.{i}.txt"))
                for i in range(1, int(m.get("lgb_seeds", 1)))
            ]
        self.sk, self.mlp = {}, None
        if self.onnx_info:  # the MLP and forest / SVM are parts of the ONNX graph; the boosters stay for explain
            return
        self.sk = {
            k: OnnxMember(crypto.read_bytes(run_dir / f"{k}.onnx"), self.opts.threads)
            for k in SKLEARN_MEMBERS
            if self.weights[k] > 0
        }
        if self.weights["mlp"] > 0:
            mods = load_torch_state(run_dir / "mlp.safetensors")
            n_in = mods["model"]["0.weight"].shape[1]
            n_out = 1 if self.objective == "regression" else len(self.classes)
            self.mlp = make_mlp(n_in, n_out, m["mlp"]["hidden"], m["mlp"]["dropout"])
            self.mlp.load_state_dict(mods["model"])
            self.mlp.eval()

    def load_meta(self, m: dict[str, Any]) -> None:
        self.kind, self.objective, self.classes = m["model_type"], m["objective"], m["classes"]
        self.positive, self.calibrator = m["positive"], m["calibration"]
        w = m["weights"]  # a list [lightgbm, mlp(, linear)] in runs saved before forest / svm members
        w = dict(zip(("lightgbm", "mlp", "linear"), w, strict=False)) if isinstance(w, list) else w
        self.weights = {k: float(w.get(k, 0.0)) for k in MEMBERS}
        self.linear, self.ordinal = m.get("linear"), m.get("ordinal") or {}
        self.prep = Preprocessor.from_json(m["preprocessor"])
        if m.get("coded_preprocessor"):
            self.coding = Coding(**m["coding"])
            self.coded_prep = Preprocessor.from_json(m["coded_preprocessor"])
        else:
            self.coding, self.coded_prep = None, None
        self._ymean, self._ystd = m["mlp"]["ymean"], m["mlp"]["ystd"]
        self.history = m.get("history", [])
        self.fairness = GroupThresholds.from_json(m.get("fairness"))

    # ---- HTTP schemas ---------------------------------------------------------------------------------
    def input_model(self) -> type[BaseModel]:
        base = record_model(self.config.name, self.prep, self.ordinal)
        col = self.fairness.sensitive if self.fairness else None
        if col is None or col in self.prep.features:
            return base
        name = py_name(col, set(base.model_fields))  # train.fairness's column, read for the decision only
        field = (str | float | None, Field(..., alias=col, description="the group column of train.fairness"))
        return create_model(model_name(self.config.name, "Input"), __base__=base, **{name: field})

    def output_model(self) -> type[BaseModel]:
        if self.objective == "regression":
            return create_model(model_name(self.config.name, "Output"), value=(float, ...))
        return create_model(
            model_name(self.config.name, "Output"),
            label=(str, Field(..., description=f"one of {self.classes}")),
            probability=(float, ...),
            probabilities=(dict[str, float], ...),
        )


def record_model(app: str, prep: Preprocessor, ordinal: dict[str, list[str]]) -> type[BaseModel]:
    """The request record of a table app: one field per feature column (numbers, categories, ordered values),
    with an example (the preprocessor's typical row); shared with anomaly-detection apps."""
    taken: set[str] = set()
    fields: dict[str, Any] = {}
    example = dict(prep.example)
    for c in prep.features:
        if c in ordinal:
            typ, desc = str | None, f"one of (in order): {', '.join(ordinal[c][:20])}"
            v = example.get(c)
            example[c] = None if v is None or v != v else ordinal[c][int(v)]
        elif c in prep.numeric:
            typ, desc = float | None, "number"
        else:
            typ, desc = str | None, f"one of: {', '.join(prep.categories[c][:20])}"
        fields[py_name(c, taken)] = (typ, Field(..., alias=c, description=desc))
    return create_model(
        model_name(app, "Input"),
        __config__=ConfigDict(
            populate_by_name=True, extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [example]}
        ),
        **fields,
    )
