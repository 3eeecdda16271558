"""serve.traffic: split an app's predictions between versions by weight (canary, A/B).

Deterministic: a request goes to the version its body's hash falls on (blake2b of the JSON body, keys sorted,
modulo the weights' sum), so the same body always gets the same version and a retry is never answered by the
other one; over many different bodies each version gets its weight's share. A request that names ?version= is
not split. A version of the split that cannot serve (no such run, not finished) is skipped with a warning: its
share goes to the run the app serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from luodi.errors import LuodiError

log = logging.getLogger("luodi.monitor")


def pick(traffic: dict[str, int], body: Any) -> str:
    """The version of `traffic` this request body goes to."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    point = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") % sum(traffic.values())
    for version, weight in traffic.items():
        if point < weight:
            return version
        point -= weight
    raise AssertionError("unreachable: the weights sum above the point")


def routed(pred: Any, body: Any, load: Any) -> Any:
    """The Predictor of the version this request body goes to under its served run's serve.traffic (`pred` itself
    when it has none); `load(app, version)` loads another version."""
    traffic = pred.config.serve.traffic
    if not traffic:
        return pred
    version = pick(traffic, body)
    if version == pred.run.version:
        return pred
    try:
        return load(pred.run.app, version)
    except LuodiError as e:
        log.warning("serve.traffic of %s: %s cannot serve (%s); %s answers", pred.run.app, version, e, pred.run.version)
        return pred
