"""HTTP routes for trained apps: GET /v1/apps, GET /v1/apps/{name}/runs, the run report, and
POST /v1/apps/{name}/predict (one record, or {"inputs": [...]} for a batch) and POST /v1/apps/{name}/explain
(the same, each prediction explained).

Each trained app gets a typed predict route (its request and response models appear in the OpenAPI docs) from
`refresh_app_routes`, called at server start-up and when an app is promoted; the generic route serves the
others (apps trained while the server runs) with the same validation. Every route calls luodi.api.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, ValidationError, create_model
from starlette.concurrency import run_in_threadpool

from luodi import api, crypto, monitor
from luodi.apps import registry
from luodi.options.privacy import PII_REMOVED_HEADER
from luodi.serve import remote_predictors
from luodi.serve.auth import require_admin, require_key, visible
from luodi.serve.batching import MicroBatcher
from luodi.serve.limits import error_responses
from luodi.serve.uploads import files_field, read_uploads

log = logging.getLogger("luodi.serve")
_deps = [Depends(require_key)]
_admin = [Depends(require_admin)]

GENERIC_PREDICT = "/v1/apps/{name}/predict"  # serves every app; typed routes of trained apps come before it
VersionQuery = Query(
    None, description="predict with this version (see GET /v1/apps/{name}/runs) instead of the one served"
)
ExplainQuery = Query(
    False,
    description="add why (`explanation`): each feature's effect (table, anomaly apps), integrated gradients over "
    "words (text-classification), pixels (image) or frames (speech CNN apps)",
)


class PromoteRequest(BaseModel):
    version: str | None = Field(
        ..., description="the version to serve from now on, e.g. v3; null: the latest finished run again"
    )
    force: bool = Field(False, description="serve a run that missed its evaluate.goal (its runs row says why)")


def _schemas(pred: api.Predictor) -> tuple[type[BaseModel], type[BaseModel]]:
    task = pred.task
    key = "_luodi_schemas"
    if not hasattr(task, key):
        setattr(task, key, (task.input_model(), task.output_model()))
    return getattr(task, key)


def _validate(pred: api.Predictor, body: Any) -> tuple[list[dict[str, Any]], bool]:
    """Records from a single object or {"inputs": [...]}, validated against the app's input model."""
    inp, _ = _schemas(pred)
    batch = isinstance(body, dict) and "inputs" in body and len(body) == 1
    if batch and not isinstance(body["inputs"], list):
        raise RequestValidationError(
            [
                {
                    "type": "list_type",
                    "loc": ("body", "inputs"),
                    "msg": "Input should be a valid list",
                    "input": body["inputs"],
                }
            ]
        )
    if not batch and not isinstance(body, dict):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ("body",),
                    "msg": 'Input should be an object (one record) or {"inputs": [...]}',
                    "input": body,
                }
            ]
        )
    items = body["inputs"] if batch else [body]
    if batch and len(items) > max(1, pred.config.serve.batch_size) * 32:
        raise HTTPException(
            413,
            f"batch of {len(items)} inputs is too large; send at most "
            f"{pred.config.serve.batch_size * 32} per request",
        )
    records, errors = [], []
    for i, item in enumerate(items):
        try:
            records.append(inp.model_validate(item).model_dump(by_alias=True, exclude_unset=True))
        except ValidationError as e:
            prefix = ("body", "inputs", i) if batch else ("body",)
            errors += [{**err, "loc": prefix + tuple(err["loc"])} for err in e.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return records, batch


async def _predict(
    name: str, body: Any, response: Response, version: str | None = None, explain: bool = False
) -> Any:
    # luodi errors (unknown app, bad values, tampered run) reach the server's handler: status + field
    t0 = time.perf_counter()
    pred = await run_in_threadpool(api.load_predictor, name, version)
    if version is None and pred.config.serve.traffic:  # serve.traffic: a canary / A-B split between versions
        pred = await run_in_threadpool(monitor.routed, pred, body, api.load_predictor)
    records, batch = _validate(pred, body)
    if pred.guard is not None:  # guard.pii: nothing after this line sees the texts as sent
        records, removed = await run_in_threadpool(pred.redact, records)
        response.headers[PII_REMOVED_HEADER] = ",".join(removed) or "none"
    remote = remote_predictors.handle_for(name)  # serve.replicas under `luodi serve --ray`: its own replicas
    if remote is not None:
        outs = await remote_predictors.predict(remote, records, pred.run.version, explain)
    else:
        outs = await _batcher(pred, explain).predict(records)
    ids = monitor.log_predictions(pred, records, outs, time.perf_counter() - t0)  # queued: written off this path
    if any(ids):
        response.headers[monitor.ID_HEADER] = monitor.id_header(ids)
    if batch:
        return {"app": name, "version": pred.run.version, "outputs": outs}
    return {"app": name, "version": pred.run.version, **outs[0]}


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, MicroBatcher]] = (
    weakref.WeakKeyDictionary()
)


def _batcher(pred: api.Predictor, explain: bool) -> MicroBatcher:
    """The micro-batcher of this run (and this event loop): concurrent requests share predict calls."""
    mine = _batchers.setdefault(asyncio.get_running_loop(), {})
    key = (pred.run.app, pred.run.version, explain)
    if key not in mine:
        serve = pred.config.serve
        mine[key] = MicroBatcher(pred.explaining(explain).predict_redacted, serve.batch_size, serve.max_wait_ms)
    return mine[key]


def _app_summary(pred: api.Predictor) -> dict[str, Any]:
    inp, _ = _schemas(pred)
    schema = inp.model_json_schema(by_alias=True)
    example = (schema.get("examples") or [{}])[0]
    return {
        "name": pred.config.name,
        "task": pred.config.task,
        "description": pred.config.description,
        "version": pred.run.version,
        "metrics": pred.run.metrics,
        "route": f"/v1/apps/{pred.config.name}/predict",
        "input_schema": schema,
        "example": example,
    }


async def list_apps(request: Request) -> dict[str, Any]:
    """The trained apps the caller's key may use (all of them for an unscoped key)."""
    preds = await run_in_threadpool(api.trained_apps)
    return {"object": "list", "data": visible(request, "app", [_app_summary(p) for p in preds])}


async def get_app(name: str) -> dict[str, Any]:
    return _app_summary(await run_in_threadpool(api.load_predictor, name))


async def app_runs(name: str) -> dict[str, Any]:
    runs = await run_in_threadpool(api.list_runs, name)
    if not runs:
        raise HTTPException(404, f"app '{name}' has no runs; train it with `luodi train APP.yaml`")
    for r in runs:
        r["report_url"] = f"/v1/apps/{name}/runs/{r['version']}/report"
        if r["audited"]:  # `luodi audit` wrote its page
            r["audit_url"] = f"/v1/apps/{name}/runs/{r['version']}/audit"
    return {"object": "list", "data": runs}


async def run_report(name: str, version: str) -> HTMLResponse:
    run = await run_in_threadpool(registry.get_run, name, version)
    p = run.path / "report.html"
    if not p.exists():
        raise HTTPException(404, f"run {name} {version} has no report (status: {run.status})")
    return HTMLResponse(crypto.read_text(p))


async def predict_any(
    name: str,
    request: Request,
    response: Response,
    version: str | None = VersionQuery,
    explain: bool = ExplainQuery,
) -> Any:
    """Predict with any trained app: one record, or {"inputs": [...]} for a batch."""
    return await _predict(name, await _json_body(request), response, version, explain)


async def explain_any(
    name: str, request: Request, response: Response, version: str | None = VersionQuery
) -> Any:
    """Predict with an app and explain each prediction (as predict?explain=true): one record, or
    {"inputs": [...]} for a batch."""
    return await _predict(name, await _json_body(request), response, version, explain=True)


async def predict_files(
    name: str,
    response: Response,
    files: list[UploadFile] = files_field("input files: CSV / JSON rows, texts, images or wavs, as the app takes"),
    version: str | None = VersionQuery,
    explain: bool = ExplainQuery,
) -> dict[str, Any]:
    """Predict for uploaded files (multipart field `files`), read in memory as `luodi predict --input` reads
    files: rows of a CSV / JSON / the dataset's own format, texts, images, wavs. Each output names its file
    under `input`."""
    t0 = time.perf_counter()
    pred = await run_in_threadpool(api.load_predictor, name, version)  # 404 before reading the bodies
    items = await read_uploads(files, "applicants.csv")
    removed: set[str] = set()
    seen: list[dict[str, Any]] = []  # the inputs as predicted: logged like those of /predict
    outs = await run_in_threadpool(api.predict_files, name, items, pred.run.version, explain, removed, seen)
    if pred.guard is not None:
        response.headers[PII_REMOVED_HEADER] = ",".join(sorted(removed)) or "none"
    ids = monitor.log_predictions(pred, seen, outs, time.perf_counter() - t0)
    # in the body, not the header: a file of thousands of rows would need a header larger than clients read
    outs = [{**o, "prediction_id": i} if i else o for o, i in zip(outs, ids, strict=True)]
    return {"app": name, "version": pred.run.version, "outputs": outs}


async def promote(name: str, body: PromoteRequest, request: Request) -> dict[str, Any]:
    """Choose the version an app serves (admin key): every server sharing the store switches at once."""
    served = await run_in_threadpool(api.promote, name, body.version, body.force)
    await run_in_threadpool(refresh_app_routes, request.app, [name])
    return served


def _register_static_routes(r: APIRouter) -> None:
    r.add_api_route(
        "/v1/apps", list_apps, methods=["GET"], summary="Trained apps (newest finished run of each)"
    )
    r.add_api_route(
        "/v1/apps/{name}", get_app, methods=["GET"], summary="One trained app: version, metrics, input schema"
    )
    r.add_api_route(
        "/v1/apps/{name}/runs", app_runs, methods=["GET"], summary="Every run of an app, newest first"
    )
    r.add_api_route(
        "/v1/apps/{name}/predict/files",
        predict_files,
        methods=["POST"],
        summary="Predict for uploaded files (multipart `files`: CSV / JSON rows, texts, images, wavs)",
        responses=error_responses(400, 404, 413),
    )
    r.add_api_route(
        "/v1/apps/{name}/explain",
        explain_any,
        methods=["POST"],
        summary="Predict and explain (table apps: TreeSHAP / ablation; text, image, speech: integrated gradients)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "description": 'one record, or {"inputs": [...]}'}
                    }
                },
            }
        },
    )
    r.add_api_route(
        "/v1/apps/{name}/promote",
        promote,
        methods=["POST"],
        dependencies=_admin,
        summary="Serve another version of an app (admin key; version null: the latest finished run)",
    )
    r.add_api_route(
        "/v1/apps/{name}/runs/{version}/report",
        run_report,
        methods=["GET"],
        response_class=HTMLResponse,
        summary="A run's report.html",
    )
    r.add_api_route(
        GENERIC_PREDICT,
        predict_any,
        methods=["POST"],
        summary='Predict with any trained app (one record or {"inputs": [...]})',
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "description": 'one record, or {"inputs": [...]}'}
                    }
                },
            }
        },
    )


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema with its $defs moved to components-free inline form (for openapi_extra)."""
    defs = schema.pop("$defs", {})
    if not defs:
        return schema
    text = json.dumps(schema)
    for k, v in defs.items():
        text = text.replace(json.dumps({"$ref": f"#/$defs/{k}"}), json.dumps(v))
    return json.loads(text)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as e:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body",),
                    "msg": "JSON decode error",
                    "input": raw[:80].decode(errors="replace"),
                    "ctx": {"error": str(e)},
                }
            ]
        ) from e


def _typed_route(pred: api.Predictor) -> None:
    """POST /v1/apps/<name>/predict with the app's own request and response models (for OpenAPI), replacing
    the one it had."""
    name = pred.config.name
    inp, outp = _schemas(pred)
    cname = "".join(p.capitalize() for p in name.replace("-", "_").split("_"))  # unique per app
    explained = create_model(  # with ?explain=true (table apps)
        f"{cname}PredictionItem", __base__=outp, explanation=(dict[str, Any] | None, None)
    )
    single_out = create_model(f"{cname}Prediction", __base__=explained, app=(str, ...), version=(str, ...))
    batch_out = create_model(
        f"{cname}BatchPrediction", app=(str, ...), version=(str, ...), outputs=(list[explained], ...)
    )
    one = _inline(inp.model_json_schema(by_alias=True))
    many = {
        "title": f"{cname}BatchInput",
        "type": "object",
        "required": ["inputs"],
        "properties": {"inputs": {"type": "array", "items": one}},
    }

    async def predict_typed(
        request: Request, response: Response, version: str | None = VersionQuery, explain: bool = ExplainQuery
    ) -> Any:
        return await _predict(name, await _json_body(request), response, version, explain)

    path = f"/v1/apps/{name}/predict"
    _typed.routes[:] = [r for r in _typed.routes if getattr(r, "path", "") != path]
    _typed.add_api_route(  # also tells the routers that include this one that its routes changed
        path,
        predict_typed,
        methods=["POST"],
        response_model=single_out | batch_out,
        response_model_exclude_unset=True,  # `explanation` only when asked for
        summary=f"Predict with app '{name}'",
        description=(pred.config.description or f"{pred.config.task} app {name}")
        + ' Send one record, or {"inputs": [...]} for a batch.',
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"oneOf": [one, many]}}},
            }
        },
    )


def refresh_app_routes(app: FastAPI | None = None, names: list[str] | None = None) -> None:
    """Give every trained app (or the `names` given) its typed POST /v1/apps/<name>/predict, built from the run
    it serves now; an app that cannot load keeps the route it had (else the generic one serves it). Called at
    server start-up (this router's lifespan) and when an app is promoted; apps trained while the server runs
    are served by the generic route until then. `app`: the server whose OpenAPI document is rebuilt."""
    try:
        names = registry.apps_with_runs() if names is None else names
    except Exception:  # noqa: BLE001 - no store yet: only the generic routes
        log.warning("trained apps not listed; their typed predict routes are left out", exc_info=True)
        return
    for name in names:
        try:
            _typed_route(api.load_predictor(name))
        except Exception:  # noqa: BLE001 - an app that cannot load must not take the server down
            log.warning("app %s: typed predict route not refreshed", name, exc_info=True)
    if app is not None:
        app.openapi_schema = None  # rebuilt with the new request and response models on the next /openapi.json


@asynccontextmanager
async def _typed_routes_at_startup(app: FastAPI) -> AsyncIterator[None]:
    refresh_app_routes(app)
    yield


_typed = APIRouter()  # the typed predict routes (tag and API key from `router`), matched before the generic one
router = APIRouter(tags=["apps"], dependencies=_deps, lifespan=_typed_routes_at_startup)
router.include_router(_typed)
_register_static_routes(router)
