"""Progress bars for long work (tqdm), quiet when output is not a terminal unless asked."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


class ProgressBar(tqdm):  # type: ignore[misc]
    """tqdm with ``update_to(n)`` for callbacks that report absolute progress."""

    def update_to(self, n: int) -> None:
        self.update(max(0, n - self.n))


def progress_bar(*, total: int, desc: str, unit: str = "it", **kwargs: Any) -> ProgressBar:
    """A progress bar on stderr; ``disable`` defaults to off so logs of batch jobs show progress too."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    return ProgressBar(total=total, desc=desc, unit=unit, **kwargs)
