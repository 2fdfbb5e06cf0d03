"""Usage telemetry off: the one switch for every process the project starts (the CLI sets it before any
library reads it; Ray workers, local Ray heads and submitted jobs get it in their environment)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# MLflow honours DO_NOT_TRACK only as "true" (not "1").
TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def telemetry_off(env: MutableMapping[str, str] = os.environ) -> None:
    """Turn usage telemetry off in ``env`` unless its owner chose otherwise."""
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)
