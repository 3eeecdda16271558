"""No pickle is ever loaded from disk (issue 18): a pickle runs code when it is read, so a tampered run or
index file could take over the server. Checked twice: the source never reaches for a pickle reader, and loading
and using real stored artifacts (a five-member tabular run, a knowledge base) unpickles nothing."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from luodi import api, rag
from luodi.apps import predict

PACKAGE = Path(__file__).resolve().parents[1] / "luodi"
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def pickle_readers(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each import of a pickle module and each call that may unpickle: torch.load without
    weights_only=True, np.load(allow_pickle=True), pandas read_pickle."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            kw = {k.arg: k.value for k in node.keywords}
            name, owner = node.func.attr, ast.unparse(node.func.value)
            if name == "read_pickle":
                found.append((node.lineno, ast.unparse(node.func)))
            elif name == "load" and owner == "torch":
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                found += [] if safe else [(node.lineno, "torch.load without weights_only=True")]
            elif name == "load" and owner in ("np", "numpy"):
                allow = kw.get("allow_pickle")
                found += [(node.lineno, "np.load(allow_pickle=...)")] if allow is not None else []
    return found


def test_the_source_never_reads_a_pickle():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50
    bad = [f"{f.relative_to(PACKAGE.parent)}:{line}: {what}"
           for f in files for line, what in pickle_readers(ast.parse(f.read_text(), str(f)))]
    assert bad == [], "pickle readers in luodi/:\n" + "\n".join(bad)


def test_the_scan_finds_what_it_looks_for():
    src = "import pickle\nfrom joblib import load\nimport torch\ntorch.load(p)\nnp.load(p, allow_pickle=True)\n"
    src += "pd.read_pickle(p)\ntorch.load(p, weights_only=True)\nnp.load(p)\n"
    assert [line for line, _ in pickle_readers(ast.parse(src))] == [1, 2, 4, 5, 6]


_refusing = [False]


def _audit(event: str, args: tuple) -> None:
    # every unpickler (C or Python, pickle / joblib / numpy) raises this event when a pickle names a class
    if _refusing[0] and event == "pickle.find_class":
        raise AssertionError(f"a pickle was loaded: it asked for {args[0]}.{args[1]}")


sys.addaudithook(_audit)  # a hook cannot be removed: it refuses only while _refusing is set


@pytest.fixture
def refuse_pickles(monkeypatch):
    import torch

    def no_torch_load(*a, **k):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    _refusing[0] = True
    yield
    _refusing[0] = False


def test_the_audit_hook_catches_an_unpickle(refuse_pickles):
    import pickle

    blob = pickle.dumps(Path("x"))
    with pytest.raises(AssertionError, match="a pickle was loaded"):
        pickle.loads(blob)


def test_loading_and_using_stored_artifacts_unpickles_nothing(tmp_path, refuse_pickles):
    _refusing[0] = False  # training may use whatever it likes; loading what it stored may not
    app = {
        "name": "no-pickle",
        "task": "tabular",
        "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target"}, "split": {"valid": 0.25}},
        "model": {
            "type": "ensemble",
            "options": {
                "ensemble_weights": {"lightgbm": 1, "mlp": 1, "linear": 1, "forest": 1, "svm": 1},
                "forest_trees": 20, "n_estimators": 40,
            },
        },
        "train": {"epochs": 3},
    }
    api.train(app, progress=False)
    predict.forget_loaded()  # nothing from training kept in memory
    doc = tmp_path / "ferry.txt"
    doc.write_text("The night ferry to Lindholm leaves at eleven.")
    rag.create_kb("no-pickle")
    rag.add_documents("no-pickle", [doc])
    from luodi.rag import index

    index.forget("no-pickle")
    _refusing[0] = True
    predictor = api.load_predictor("no-pickle")  # a fresh load from disk: every member file is read
    record = predictor.task.read(None).drop(columns=["target"]).iloc[:1].to_dict(orient="records")
    assert predictor.task.predict(record)[0]["label"] in {"malignant", "benign"}
    assert predictor.task.explain(record)[0]["explanation"]["effects"]
    assert "eleven" in rag.search("no-pickle", "When does the ferry leave?", k=1).hits[0].text
