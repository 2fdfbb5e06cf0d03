"""Terminal output of long work: progress bars (tqdm) and the level of the libraries' own logs."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm.auto import tqdm


class ProgressBar(tqdm):  # type: ignore[misc]
    """tqdm with ``update_to(n)`` for callbacks that report absolute progress."""

    def update_to(self, n: int) -> None:
        self.update(max(0, n - self.n))


def progress_bar(*, total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> ProgressBar:
    """A progress bar on stderr; ``disable`` defaults to off so logs of batch jobs show progress too."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    return ProgressBar(total=total, desc=desc, unit=unit, **kwargs)


# Loggers of the libraries a hunt drives; their INFO lines (database migrations, Ray start-up) are noise
# in front of a user and come back with `-v`.
LIBRARY_LOGGERS = ("mlflow", "alembic", "optuna", "ray", "sqlalchemy", "urllib3", "matplotlib")


def library_logs(*, verbose: bool = False, quiet: bool = False) -> None:
    """Library logs at INFO with ``verbose``, ERROR with ``quiet``, else WARNING."""
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
