"""`Strict`: the one pydantic base for every typed config (app file, task options, request bodies): an unknown
key is an error that names it instead of being dropped silently."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
