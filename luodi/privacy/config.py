"""`pii_config`: a PiiConfig (luodi.options.privacy: the CLI, the Python API and every `guard.pii` share it) from a
dict, with errors naming the field."""

from __future__ import annotations

from pydantic import ValidationError

from luodi.errors import ConfigError
from luodi.options.privacy import ALL_ENTITIES, NAME_ENTITIES, PATTERN_ENTITIES, GuardConfig, PiiConfig

__all__ = ["ALL_ENTITIES", "NAME_ENTITIES", "PATTERN_ENTITIES", "GuardConfig", "PiiConfig", "pii_config"]


def pii_config(data: dict | PiiConfig | None = None, where: str = "pii") -> PiiConfig:
    """A PiiConfig from a dict (an app's `guard.pii`, CLI options); errors name the field (`where.field`)."""
    if isinstance(data, PiiConfig):
        return data
    try:
        return PiiConfig.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where}.{field}: {err['msg']}", param=f"{where}.{field}") from None
