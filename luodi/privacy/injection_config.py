"""Parsing `guard.injection` values (on / off / a mapping) into `InjectionConfig` (luodi.options.injection), with
errors that name where the value came from and the field."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from luodi.errors import ConfigError
from luodi.options.injection import INPUT_CHECKS, OUTPUT_CHECKS, InjectionConfig

__all__ = ["INPUT_CHECKS", "OUTPUT_CHECKS", "InjectionConfig", "injection_config"]


def injection_config(data: Any, where: str = "guard.injection") -> InjectionConfig | None:
    """Settings from YAML / JSON data: None / false: off; true / 'on': the defaults; a mapping: its fields. Errors
    name `where` and the field."""
    if data is None or data is False or (isinstance(data, str) and data.lower() in ("off", "false", "")):
        return None
    if data is True or (isinstance(data, str) and data.lower() in ("on", "true")):
        return InjectionConfig()
    if isinstance(data, InjectionConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected on, off or a mapping of injection-guard settings, got {data!r}",
                          param=where)
    try:
        return InjectionConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{field}: {first['msg']}", param=f"{where}.{field}") from None
