"""Property-based fuzzing of the HTTP API (issue 18): schemathesis reads /openapi.json, generates valid and
invalid requests for every operation and sends them to the real app in-process (ASGI). No request may be
answered 5xx, and every documented response must match its schema.

The routes that run the chat model (chat/completions, completions, agents, assistants, kb ask) are left out:
each call decodes tokens on the CPU, too slow for a bounded run; their validation is tested with the live
server in test_server_openai.py / test_rag_http.py. Auth is off here so the generated requests reach the
route code (auth is tested in test_server_auth.py), and generated DELETE /v1/keys/{id} cannot revoke the
key the run would need.
"""

from __future__ import annotations

import os
import re

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (pip install schemathesis)")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from luodi.serve.app import create_app  # noqa: E402
from luodi.settings import get_settings  # noqa: E402
from luodi.store import init_db  # noqa: E402

EXAMPLES = int(os.environ.get("LUODI_FUZZ_EXAMPLES", "20"))  # per operation and mode; CI may raise it
SLOW = r"^/v1/(chat/completions|completions|agents|assistants|kb/[^/]+/ask)"
ROW_IDS = {"key_id", "ticket_id", "doc_id", "approval_id"}  # path parameters that name database rows
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _fuzz(operation, mode, path_parameters: dict | None = None) -> str | None:
    """Run one operation's examples; the first failure's message (with a curl to reproduce), or None."""

    @given(operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the run stays bounded
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # negative mode, an operation with nothing to get wrong (no parameters, free strings)
        return None
    except Exception as e:  # noqa: BLE001 - collected, so one run reports every failing operation
        pinned = f", {path_parameters}" if path_parameters else ""
        return f"{operation.label} ({mode.value}{pinned}): {e}"
    return None


def _trained_app(tmp_path) -> str:
    """A small table app (LightGBM on sklearn's breast cancer set, seconds), so its typed predict route is
    fuzzed too."""
    import yaml

    from luodi import api
    from luodi.apps import registry

    name = "fuzz-diag"
    if name not in registry.apps_with_runs():
        cfg = {
            "name": name,
            "task": "tabular",
            "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target", "positive": "malignant"},
                     "split": {"valid": 0.25, "seed": 0}},
            "model": {"type": "lightgbm", "options": {"n_estimators": 20, "num_leaves": 8}},
            "evaluate": {"metrics": ["accuracy"]},
        }
        (tmp_path / "app.yaml").write_text(yaml.safe_dump(cfg))
        api.train(tmp_path / "app.yaml", progress=False)
    return name


def _existing_rows(tmp_path) -> dict[str, object]:
    """An app, a knowledge base with a document, a ticket and a throwaway key, so generated requests also reach
    past the 404s: path parameters pinned to them, by name."""
    from luodi import rag
    from luodi.agent.assistant.tickets import create_ticket
    from luodi.keys import create_key

    kb = "fuzz-kb"
    if kb not in {k["name"] for k in rag.list_kbs()}:
        rag.create_kb(kb)
    rag.add_bytes(kb, [("guide.txt", b"Cards can be frozen in the app. Transfers take one working day.")])
    return {
        "app": _trained_app(tmp_path),
        "name": kb,
        "doc_id": rag.list_documents(kb)[0]["id"],
        "ticket_id": create_ticket(None, "fuzz", "a ticket for the fuzz run"),
        "key_id": create_key("fuzz-throwaway").id,
    }


def _runs(operation, rows: dict[str, object]) -> list[dict | None]:
    """Path parameters for each run of an operation: None = generated. Ids that name rows (keys, tickets,
    documents) are only ever pinned to the run's own rows, except in reads: generated ones could revoke or
    answer rows other tests in the session made; `name` is pinned to the knowledge base on /v1/kb/ paths."""
    params = re.findall(r"{(\w+)}", operation.path)
    own = [p for p in params if p in ROW_IDS]
    pinned = {p: rows[p] for p in params if p in rows and p != "name"}
    if "name" in params and operation.path.startswith("/v1/kb/"):
        pinned["name"] = rows["name"]
    elif "name" in params and operation.path.startswith("/v1/apps/"):
        pinned["name"] = rows["app"]
    if (operation.method.upper(), operation.path) in (("DELETE", "/v1/kb/{name}"), ("POST", "/v1/apps/{name}/audit")):
        pinned = {}  # would delete the knowledge base the other runs use; an audit takes minutes
    runs: list[dict | None] = [] if own and operation.method.upper() != "GET" else [None]
    if pinned and set(own) <= set(pinned):
        runs.append(pinned)
    return runs


def test_api_never_answers_5xx_and_keeps_its_schema(tmp_path):
    from luodi.serve.apps_routes import refresh_app_routes

    s = get_settings().model_copy(update={"auth": "off"})
    init_db(s.db_url)  # the app's lifespan does this; schemathesis calls the app without it
    rows = _existing_rows(tmp_path)
    app = create_app(s, preload=False)
    refresh_app_routes(app)  # the lifespan does this too: typed predict routes of the trained apps
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=SLOW)
    failures, ran = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in _runs(operation, rows):
                ran += 1
                failures.append(_fuzz(operation, mode, path_parameters))
    failures = [f for f in failures if f]
    assert ran >= 20, f"only {ran} operation runs: the schema lost its routes?"
    assert not failures, "\n\n".join(failures)
