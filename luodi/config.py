"""The App file: a pydantic model of one business task's YAML, strict about unknown keys and types."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from luodi import crypto
from luodi.errors import ConfigError
from luodi.options import OPTIONS
from luodi.options.fairness import FairnessConfig, TrainFairnessConfig
from luodi.options.monitor import DriftConfig, PredictionLogConfig, check_traffic
from luodi.options.optimize import OptimizeConfig
from luodi.options.privacy import GuardConfig
from luodi.options.serving import ReplicasConfig
from luodi.options.strict import Strict
from luodi.options.training import AdversarialConfig, PrivacyConfig

TaskName = Literal[
    "text-classification",
    "token-classification",
    "text-generation",
    "tabular",
    "anomaly-detection",
    "recommendation",
    "image-classification",
    "speech-recognition",
    "assistant",
]


class SplitConfig(Strict):
    """`data.split`: how validation rows are held out. Only the keys the app file sets are dumped, so a
    stored config (and the fingerprint that resumes tune / cv) reads as the file did."""

    valid: int | float | None = Field(
        None, description="validation rows: a fraction in (0, 1) or a count (>= 1); unset: 0.1 (recommendation 0.2)"
    )
    seed: int = Field(0, description="seed of the random hold-out")
    shuffle: bool = Field(True, description="false: hold out the last rows instead of random ones (image apps)")
    stratify: bool = Field(True, description="keep the class proportions when every class has two rows")
    holdout: dict[str, list[Any]] = Field(
        default_factory=dict, description="table apps: column -> values whose rows go to validation only"
    )
    speaker: str | int | list[str | int] | None = Field(
        None, description="speech-recognition: the speaker(s) left out for validation (no random part then)"
    )
    speakers: str | int | list[str | int] | None = Field(None, description="same as `speaker`")
    by: Literal["part"] | None = Field(
        None, description="text-classification: 'part' holds out the file's named parts (clinc150 JSON)"
    )
    valid_parts: list[str] = Field(
        default_factory=lambda: ["val", "oos_val"], description="with by: part, the parts held out"
    )
    valid_path: str | None = Field(
        None, description="token-classification, text-generation: a separate validation file"
    )

    @field_validator("valid")
    @classmethod
    def _positive(cls, v: int | float | None) -> int | float | None:
        if v is not None and (isinstance(v, bool) or v <= 0):
            raise ValueError("expected a fraction in (0, 1) or a row count >= 1")
        return v

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}

    def only(self, task: str, *allowed: str) -> None:
        """Refuse keys this task does not read, naming the first one."""
        bad = [k for k in type(self).model_fields if k in self.model_fields_set and k not in allowed]
        if bad:
            raise ConfigError(
                f"'data.split.{bad[0]}' does not apply to {task}; it reads {', '.join(allowed)}",
                param=f"data.split.{bad[0]}",
            )


class DataConfig(Strict):
    path: str | None = Field(
        None, description="file or folder; ${LUODI_DATASETS} is expanded; unset for built-in sources (sklearn:...)"
    )
    format: str | None = Field(
        None, description="csv | tsv | jsonl | json | conll | idx | image-folder | wav-dir | sklearn:<name> | ..."
    )
    columns: dict[str, Any] = Field(
        default_factory=dict, description="role -> column(s), e.g. text: text, label: category"
    )
    split: SplitConfig = Field(
        default_factory=lambda: SplitConfig(valid=0.1, seed=0),
        description="how validation rows are held out (luodi.data.split.split_indices)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="reader-specific options (separator, header, comment, ...)"
    )


class ModelConfig(Strict):
    source: str | None = Field(
        None, description="base model (bundled:minilm-l6, a local dir, ...) when the task uses one"
    )
    type: str | None = Field(
        None, description="task-specific model family, e.g. lightgbm | mlp | cnn | embedding-head | lora"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the task's options, validated by the app's task (luodi.options; one branch per task in "
        "`luodi config schema`); kept as written, so defaults are not dumped",
    )


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1, description="passes over the training data (LightGBM: n_estimators spread over them)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    optimizer: Literal["adamw", "sgd"] | None = Field(
        None, description="torch-based tasks: adamw (unset: the default), or sgd (SGD with momentum 0.9; what DP-SGD "
        "results are usually reported with: Adam's per-weight scaling amplifies train.privacy's noise)",
    )
    batch_size: int = Field(32, ge=1, description="training examples per optimizer step")
    early_stopping: int | None = Field(3, ge=1, description="patience in epochs; null disables")
    seed: int = Field(0, description="seed of initialization, shuffling and sampling")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight classes inversely to their frequency"
    )
    resample: Literal["none", "oversample", "undersample"] = Field(
        "none", description="re-balance the training rows by class"
    )
    augment: dict[str, Any] = Field(
        default_factory=dict, description="image / speech augmentation (rotate, shift, scale, speed, ...)"
    )
    max_minutes: float | None = Field(None, description="stop training after this many minutes (torch loop)")
    refit: bool = Field(
        False,
        description="after validating, train once more on train + validation rows (the served model); the "
        "reported validation metrics stay those of the model that never saw the validation rows",
    )
    output_dir: str | None = Field(
        None, description="where runs/<app>/<version>/ go (default: LUODI_HOME/runs)"
    )
    adversarial: AdversarialConfig | None = Field(
        None, description="adversarial training (image apps): {method: fgsm-rs | n-fgsm | pgd | trades, eps, alpha, "
        "steps, noise, beta}"
    )
    fairness: TrainFairnessConfig | None = Field(
        None, description="tabular binary apps: per-group decision thresholds that close a fairness gap"
    )
    privacy: PrivacyConfig | None = Field(
        None, description="differentially private training (image / speech CNN apps): {epsilon, delta, max_grad_norm}"
    )


class TuneConfig(Strict):
    space: dict[str, Any] = Field(
        default_factory=dict, description="dotted config path -> {low, high, log} | [choices]"
    )
    sampler: Literal["grid", "random", "tpe"] = Field("tpe", description="how trials pick values")
    trials: int = Field(20, ge=1, description="number of trials")
    folds: int = Field(1, ge=1, description="k-fold cross-validation per trial (1: the validation split)")
    metric: str | None = Field(None, description="metric to optimize (default: evaluate.metrics[0])")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="optimize up or down")


class GoalConfig(Strict):
    metric: str = Field(description="e.g. roc_auc")
    target: float = Field(description="the value to reach")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="higher or lower is better")
    note: str = Field("", description='where it is measured, e.g. "on adult.test"')


class EvaluateConfig(Strict):
    metrics: list[str] = Field(default_factory=list, description="metrics shown first (all are computed)")
    goal: GoalConfig | None = Field(None, description="the business goal; bench/quality.py reports it")
    fairness: FairnessConfig | None = Field(
        None, description="tabular binary apps: compare groups of sensitive columns (luodi audit)"
    )


class ServeConfig(Strict):
    batch_size: int = Field(
        32, ge=1, description="records per predict call; concurrent requests share one (1: never)"
    )
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a request waits for others to share its batch"
    )
    log: PredictionLogConfig | None = Field(
        None, description="the prediction log: sample rate and retention (unset: every prediction, 30 days)"
    )
    drift: DriftConfig | None = Field(None, description="drift thresholds of `luodi monitor` (unset: PSI 0.2)")
    replicas: ReplicasConfig | None = Field(
        None,
        description="with `luodi serve --ray`: predict this app on replicas of its own, autoscaled: {min, max, "
        "target_ongoing_requests, max_ongoing_requests, cpus}; unset: inside the server's replicas",
    )
    traffic: dict[str, int] | None = Field(
        None,
        description="split predictions between versions by weight, e.g. {v3: 90, v4: 10}: each request goes to "
        "one version, chosen by a hash of its body (the same body, the same version); unset: the served run",
    )

    @field_validator("traffic")
    @classmethod
    def _traffic(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        return check_traffic(v)


# keys removed because nothing read them -> the value every stored config.yaml holds: a stored run still loads
# (the key is dropped). FINGERPRINTED: those the previous release still hashed, put back by config_fingerprint
# so tune / cv runs interrupted under it still resume (train.max_wait_ms went one release earlier).
RETIRED: dict[str, Any] = {"train.max_wait_ms": 0.0, "serve.route": None}
FINGERPRINTED = ("serve.route",)
# keys added after runs were stored: unset (None) they are left out of config_fingerprint, so a tune / cv run
# interrupted before they existed still resumes
ADDED_OPTIONAL = (
    "evaluate.fairness", "train.fairness", "train.adversarial", "train.privacy", "train.optimizer", "optimize",
    "serve.log", "serve.drift", "serve.traffic", "serve.replicas",
    "guard",
)


# tasks whose inputs are free text (`text`, or chat `messages` for text-generation): what guard.pii can redact
TEXT_INPUT_TASKS = ("text-classification", "token-classification", "text-generation")


class AppConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="the app's name (runs, routes)")
    task: TaskName = Field(description="the task family; it decides what model.options holds")
    description: str = Field("", description="what the app does, shown in listings and the API docs")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    optimize: OptimizeConfig | None = Field(
        None, description="how `luodi optimize` makes a trained run smaller and faster (int8, ONNX, ...)"
    )
    guard: GuardConfig | None = Field(
        None, description="what the app's prediction routes do to inputs first (guard.pii: redact PII)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="task-level extras (the assistant's definition)"
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, raw: Any) -> Any:
        """A removed key holding its old default (as every stored config.yaml does) is dropped; any other
        value is an error saying it was removed."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for path, default in RETIRED.items():
            section, key = path.split(".")
            if isinstance(raw.get(section), dict) and key in raw[section]:
                if raw[section][key] != default:
                    raise PydanticCustomError(
                        "retired_key", "'{path}' was removed: nothing read it; delete it", {"path": path}
                    )
                raw[section] = {k: v for k, v in raw[section].items() if k != key}
        return raw

    @field_validator("model")
    @classmethod
    def _typed_options(cls, model: ModelConfig, info: ValidationInfo) -> ModelConfig:
        """model.options checked with the task's options model (luodi.options); kept as written."""
        schema = OPTIONS.get(info.data.get("task", ""))
        if schema is not None:
            try:
                schema.model_validate(model.options)
            except ValidationError as e:
                raise _under("options", e, schema) from None
        return model

    @field_validator("guard")
    @classmethod
    def _guard_fits_task(cls, guard: GuardConfig | None, info: ValidationInfo) -> GuardConfig | None:
        """guard.pii reads free text (`text`, chat `messages`): an app without any would redact nothing."""
        task = info.data.get("task", "")
        if guard is not None and guard.pii is not None and task not in TEXT_INPUT_TASKS:
            raise PydanticCustomError(
                "guard_task",
                "guard.pii redacts free-text inputs; a {task} app has none (tasks with text inputs: {tasks})",
                {"task": task, "tasks": ", ".join(TEXT_INPUT_TASKS)},
            )
        return guard

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The App file's JSON Schema, with one `if task == ... then model.options: ...` branch per task."""
        schema = super().model_json_schema(*args, **kwargs)
        defs = schema.setdefault("$defs", {})
        branches = []
        for task, model in OPTIONS.items():
            sub = model.model_json_schema(*args, **kwargs)
            defs.update(sub.pop("$defs", {}))
            defs[model.__name__] = sub
            ref = {"$ref": f"#/$defs/{model.__name__}"}
            branches.append(
                {
                    "if": {"properties": {"task": {"const": task}}, "required": ["task"]},
                    "then": {"properties": {"model": {"properties": {"options": ref}}}},
                }
            )
        schema["allOf"] = branches
        return schema


def _under(field: str, err: ValidationError, model: type[BaseModel]) -> ValidationError:
    """`err` of a sub-model re-raised with its locations under `field`; unknown keys list the known ones."""
    details: list[Any] = []
    for e in err.errors():
        if e["type"] == "extra_forbidden":
            kind: Any = PydanticCustomError(
                "extra_forbidden", "Extra inputs are not permitted", {"known": ", ".join(model.model_fields)}
            )
            details.append({"type": kind, "loc": (field, *e["loc"]), "input": e["input"]})
        else:
            details.append({"type": e["type"], "loc": (field, *e["loc"]), "input": e["input"], "ctx": e.get("ctx")})
            if details[-1]["ctx"] is None:
                del details[-1]["ctx"]
    return ValidationError.from_exception_data(err.title, details)


def format_validation_error(err: ValidationError, source: str = "app", prefix: str = "") -> str:
    """One line per problem: the dotted path of the key (under `prefix`), what was wrong, what is expected."""
    lines = []
    for e in err.errors():
        parts = [*(prefix.split(".") if prefix else []), *e["loc"]]
        path = ".".join(str(p) for p in parts) or "(root)"
        if e["type"] == "extra_forbidden":
            known = (e.get("ctx") or {}).get("known")
            hint = f"expected one of {known}" if known else "remove it or check its spelling"
            lines.append(f"{source}: unknown key '{path}' — {hint}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing key '{path}' — add it")
        elif e["type"] == "retired_key":
            lines.append(f"{source}: {e['msg']}")
        else:
            got = repr(e.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: '{path}': {msg} (got {got})")
    return "\n".join(lines)


def validate_app(raw: dict[str, Any], source: str = "app") -> AppConfig:
    """An AppConfig from a mapping; errors (a ConfigError) name `source` and each offending key."""
    try:
        return AppConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e


def model_options(cfg: AppConfig) -> Any:
    """The app's model.options as its task's typed model (luodi.options), defaults filled in; errors (of a
    config built without validation, e.g. by model_copy) name `model.options.<key>`."""
    schema = OPTIONS[cfg.task]
    try:
        return schema.model_validate(cfg.model.options)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cfg.name, prefix="model.options")) from e


def load_app_config(path: str | Path) -> AppConfig:
    """Read and validate an App YAML; errors name the offending key."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"app file '{p}' not found")
    try:
        raw = yaml.safe_load(crypto.read_text(p)) or {}  # (a run's config.yaml may be encrypted)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{p}: expected a mapping of keys (name, task, data, ...), got {type(raw).__name__}"
        )
    return validate_app(raw, str(p))


def apply_overrides(cfg: AppConfig, params: dict[str, Any], source: str = "--set") -> AppConfig:
    """A copy of the config with dotted-path values set, re-validated; errors name `source` and the path."""
    raw = cfg.model_dump()
    for path, value in params.items():
        where = f"{source} {path}" if source.startswith("-") else f"{source}.{path}"  # --set x.y | tune.space.x.y
        node = raw
        keys = path.split(".")
        fresh = False  # inside an optional section the app left out (optimize, train.privacy): made here, and
        for k in keys[:-1]:  # validation names any key in it that does not exist
            if isinstance(node, dict) and (node.get(k) is None and (k in node or fresh)):
                node[k], fresh = {}, True
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"'{where}': '{k}' is not a key of the app config")
            node = node[k]
        if not isinstance(node, dict):
            raise ConfigError(f"'{where}': cannot set a value inside a non-mapping")
        node[keys[-1]] = value
    return validate_app(raw, source)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["data.split.seed=1", "train.epochs=3"]` -> {dotted path: YAML-parsed value} (CLI `--set`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        path, eq, value = item.partition("=")
        if not eq or not path.strip() or any(not k for k in path.strip().split(".")):
            raise ConfigError(
                f"--set {item!r}: expected a dotted key, '=' and a YAML value, e.g. --set data.split.seed=1",
                param="--set",
            )
        try:
            out[path.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {e}", param="--set") from e
    return out


def config_fingerprint(cfg: AppConfig, ignore: tuple[str, ...] = (), **extra: Any) -> str:
    """A short hash of the resolved config (minus `ignore`d dotted paths) and `extra` options: tells whether an
    interrupted search or CV can be continued with the same settings."""
    import hashlib
    import json

    dump = cfg.model_dump(mode="json")
    for path in FINGERPRINTED:  # as the previous release hashed them: same fingerprints, runs resume
        section, key = path.split(".")
        dump[section][key] = RETIRED[path]
    for path in ADDED_OPTIONAL:
        *parents, key = path.split(".")
        node = dump[parents[0]] if parents else dump
        if node.get(key, "unset") is None:
            del node[key]
    for path in ignore:
        *parents, leaf = path.split(".")
        node = dump
        for k in parents:
            node = node.get(k, {})
        node.pop(leaf, None)
    blob = json.dumps({"config": dump, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def on_off_or_file(value: str, where: str, what: str) -> bool | dict[str, Any] | None:
    """A setting or option that is on, off or a YAML / JSON file (LUODI_GUARD_PII, LUODI_GUARD_INJECTION, `luodi kb
    create --pii / --injection`): None (empty or off), True (on) or the file's mapping; errors name `where`."""
    value = (value or "").strip()
    if value.lower() in ("", "off", "false", "0"):
        return None
    if value.lower() in ("on", "true", "1"):
        return True
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{where}: '{value}' is neither on, off nor a YAML / JSON file of {what}", param=where)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: {path} is not YAML / JSON ({e})", param=where) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path} must hold a mapping of {what}", param=where)
    return data
