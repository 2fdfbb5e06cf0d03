"""A tracker that logs nothing: the baseline of the tracking benchmark, and hunts without MLflow."""

from __future__ import annotations

from typing import Any

from study.record import RunBatch


class NullTracker:
    """Logs nothing: the baseline of the tracking benchmark (same interface as HuntTracker)."""

    seconds = 0.0
    runs_logged = 0

    def start_hunt(self, params: dict[str, Any]) -> str:
        return ""

    def trial_run(self, seed_base: int, trial_number: int, values: dict[str, Any]) -> str:
        return ""

    def log_runs(self, trial_run_id: str, batch: RunBatch, **kwargs: Any) -> int:
        return 0

    def update_runs(self, batch: RunBatch, **kwargs: Any) -> int:
        return 0

    def finish_trial(
        self, run_id: str, *, metrics: dict[str, float], failed: str | None = None, pruned: bool = False
    ) -> None:
        return None

    def finish_hunt(self, *, status: str = "FINISHED", metrics: dict[str, float] | None = None) -> None:
        return None
