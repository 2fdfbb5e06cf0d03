"""The hunt's time over all its invocations (a hunt stopped and resumed, or killed and resumed), kept in
``OUT/hunt_stats.json``: ``invocations``, one entry per driver start (``started`` and ``finished``, epoch
seconds; ``wall_seconds``), and ``total_wall_seconds``, their sum. An entry is opened when a driver starts,
so a driver killed with SIGKILL leaves it open; the next driver closes it at the newest trial file
written after it started (``killed``: true), the last moment known to have been worked. A driver stopped
by an exception or Ctrl-C closes its own entry, and adds the same wall to the hunt's ``account``
(:mod:`study.reports.account`), so the two agree; a SIGKILLed driver's entry is in no account."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from study.record import write_json
from study.reports.hunt import hunt_record

STATS_FILE = "hunt_stats.json"


def open_invocation(out: Path, started: float | None = None) -> list[dict[str, Any]]:
    """Record this driver's start (``started``, epoch seconds; default now), closing one a killed driver
    left open; returns the invocations."""
    stats = hunt_record(out, STATS_FILE)
    invocations = [dict(entry) for entry in stats.get("invocations", []) if isinstance(entry, dict)]
    if not invocations and "wall_seconds" in stats:  # a hunt_stats.json from before invocations
        invocations.append({"started": None, "finished": None, "wall_seconds": float(stats["wall_seconds"])})
    for entry in invocations:
        if entry.get("wall_seconds") is None:
            began = float(entry["started"])
            written = [p.stat().st_mtime for p in (out / "trials").glob("trial-*")]
            entry["finished"] = max([began, *(t for t in written if t >= began)])
            entry["wall_seconds"] = entry["finished"] - began
            entry["killed"] = True
    invocations.append(
        {"started": time.time() if started is None else started, "finished": None, "wall_seconds": None}
    )
    write_json({**stats, **totals(invocations)}, out / STATS_FILE)
    return invocations


def close_invocation(invocations: list[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """The fields ``invocations`` and ``total_wall_seconds`` with this driver's (the last) entry closed."""
    invocations[-1].update(finished=time.time(), wall_seconds=wall_seconds)
    return totals(invocations)


def totals(invocations: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(float(entry["wall_seconds"] or 0.0) for entry in invocations)
    return {"invocations": invocations, "total_wall_seconds": total}
