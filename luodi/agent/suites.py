"""Reading a YAML test suite (agent task suites, assistant conversation tests) into its pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from luodi.config import format_validation_error
from luodi.errors import ConfigError

SuiteT = TypeVar("SuiteT", bound=BaseModel)


def load_yaml_suite(path: str | Path, model: type[SuiteT], what: str = "suite file") -> SuiteT:
    """The file validated by `model`; a missing file, bad YAML or a wrong key is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} '{p}' not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(p))) from e
