"""The account of a hunt's time: where its cores' seconds went, summed over every invocation of the hunt.

The workers' CPU slots (Ray's CPUs, ``cores``) give ``cores x wall`` core-seconds per invocation, split
into

    train + classify and certify + re-verify + other work in the tasks + Ray scheduling and idle cores

(train and classify-and-certify summed from the trial files' ``train_seconds_per_run`` and
``seconds_per_run``; re-verification and whole tasks timed in the tasks; the idle part is what is left).
The busy fraction is the tasks' core-seconds over ``cores x wall``. The driver's own stages (MLflow,
tables and trial files, Optuna, labels, dispatch, start and finish) are seconds on its threads, which
share the machine's cores with the workers; they are listed apart and are not added to the split above.
The account is kept in ``OUT/hunt_stats.json`` under ``account`` (:func:`add_invocation`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# the workers' stages, in order: (key, what it is); their sum and IDLE make cores x wall
WORKER_STAGES = (
    ("train", "train"),
    ("classify_certify", "classify and certify"),
    ("reverify", "re-verify"),
    ("worker_other", "other work in the tasks (set-up, results, discarded chunks)"),
)
IDLE = ("idle", "Ray scheduling and idle cores")
# the driver's stages (seconds on its threads, overlapping the workers')
DRIVER_STAGES = (
    ("mlflow", "log to MLflow (and artifacts)"),
    ("tables_files", "tables and trial files"),
    ("optuna", "Optuna ask/tell"),
    ("labels", "labels where L* is unknown (waits for follow-up re-verification)"),
    ("dispatch", "Ray submit and results (driver)"),
    ("start_finish", "start and finish (Ray, storages, tables rebuilt, summary)"),
)
STAGES = tuple(key for key, _ in (*WORKER_STAGES, IDLE, *DRIVER_STAGES))


def invocation_account(stages: dict[str, float], *, wall: float, cores: int) -> dict[str, Any]:
    """One invocation's account from the stopwatch's ``stages`` (``train`` and ``classify_certify`` as
    summed from the trial files it saved, ``worker_tasks``, ``reverify`` and the driver's), its ``wall``
    seconds and Ray's ``cores``."""
    tasks, reverify = stages.get("worker_tasks", 0.0), stages.get("reverify", 0.0)
    train, classify_certify = stages.get("train", 0.0), stages.get("classify_certify", 0.0)
    seconds = {
        "train": train,
        "classify_certify": classify_certify,
        "reverify": reverify,
        "worker_other": tasks - train - classify_certify - reverify,
        "idle": cores * wall - tasks,
        **{key: stages.get(key, 0.0) for key, _ in DRIVER_STAGES},
    }
    return {
        "invocations": 1,
        "wall_seconds": wall,
        "core_seconds": cores * wall,
        "cores": cores,
        "stages": seconds,
    }


def add_invocation(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """The hunt's account after one more invocation: every sum added (a resume keeps adding), the busy
    fraction recomputed from the sums."""
    total = dict(current)
    if previous:
        for key in ("invocations", "wall_seconds", "core_seconds"):
            total[key] = previous.get(key, 0) + current[key]
        before = previous.get("stages", {})
        total["stages"] = {key: before.get(key, 0.0) + current["stages"].get(key, 0.0) for key in STAGES}
    busy = sum(total["stages"][key] for key, _ in WORKER_STAGES)
    total["busy_fraction"] = busy / total["core_seconds"] if total["core_seconds"] > 0 else 0.0
    return total


def account_lines(account: dict[str, Any]) -> list[str]:
    """The account as a markdown table (core-seconds and share of ``cores x wall``), then the busy line."""
    core_seconds = account["core_seconds"]
    stages = account["stages"]

    def row(key: str, label: str) -> str:
        share = stages[key] / core_seconds if core_seconds > 0 else 0.0
        return f"| {label} | {stages[key]:.1f} | {100 * share:.1f}% |"

    lines = ["| stage | core-seconds | share of cores x wall |", "|---|---:|---:|"]
    lines += [row(key, label) for key, label in (*WORKER_STAGES, IDLE)]
    lines.append(f"| **cores x wall** ({account['cores']} cores) | {core_seconds:.1f} | 100% |")
    lines += [row(key, f"driver: {label}") for key, label in DRIVER_STAGES]
    lines.append("")
    lines.append(
        f"busy: {100 * account['busy_fraction']:.1f}% of {account['cores']} cores "
        f"({account['invocations']} invocation(s), {account['wall_seconds']:.1f} s wall in all; the driver's "
        "stages are seconds on its threads, beside the workers')"
    )
    return lines


def recorded_account(out: Path) -> dict[str, Any] | None:
    """The account in ``OUT/hunt_stats.json`` (None: no hunt finished there yet, or one from before it)."""
    path = Path(out) / "hunt_stats.json"
    if not path.exists():
        return None
    account = json.loads(path.read_text()).get("account")
    return account if isinstance(account, dict) else None


def hunt_account(out: Path, stages: dict[str, float], wall: float, cores: int) -> dict[str, Any]:
    """The account of the hunt in ``out`` once this invocation (see :func:`invocation_account`) is added
    to the one its ``hunt_stats.json`` records."""
    return add_invocation(recorded_account(out), invocation_account(stages, wall=wall, cores=cores))


def account_section(out: Path) -> list[str]:
    """The report's section on the hunt's time (nothing when the hunt has no account yet)."""
    account = recorded_account(out)
    if account is None:
        return []
    return ["", "## Where the time went", "", *account_lines(account)]
