"""A teacher-student sweep over k on one device, without Ray, MLflow or Optuna (the lent GPU machine's
image has torch, numpy, scipy, pandas, pyyaml and numba only): train with the batched trainer, diagnose
with the descent procedure's diagnostics, and write the run record's files, so ``study sweep`` and
``study report`` read the folder like a hunt's.

The protocol comes from a pipeline file (``pipelines/safran_2021.yaml``): its ``fixed``, ``derived``
(evaluated with ``k`` set), ``train``, ``diagnostics`` and ``init_scheme``. One trial per k; k values are
visited coarse to fine (:func:`coarse_to_fine`), so a sweep cut short by its time budget still spans the
range. Certified spurious minima are not re-verified here (a hunt re-verifies them in float64 on the CPU).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from study.diagnostics.critical import DiagnosticsConfig
from study.expressions import evaluate
from study.record import RunBatch, save_trial, trial_frame, write_tables
from study.record.files import write_json
from study.runs import RunSpec, run_replicas
from study.training.gd import TrainConfig

#: above this many parameters the Newton finish is off (it holds one (P, P) Hessian per replica at once)
NEWTON_MAX_PARAMS = 2500
#: up to this many parameters every end point gets the full Hessian spectrum (dense, as Safran et al.)
DENSE_MAX_PARAMS = 10_000
TRIAL_SEEDS = 1_000_000  # seed base of trial i: i * TRIAL_SEEDS (runs of different k never share seeds)


def coarse_to_fine(ks: list[int]) -> list[int]:
    """``ks`` (sorted, distinct) reordered: both ends, then every 16th, 8th, 4th, 2nd, then the rest."""
    ks = sorted(set(ks))
    order = [ks[0], ks[-1]]
    for stride in (16, 8, 4, 2, 1):
        order += [k for k in ks if (k - ks[0]) % stride == 0 and k not in order]
    return list(dict.fromkeys(order))


def runs_schedule(text: str) -> Callable[[int], int]:
    """``"40:500,70:200,100"``: 500 runs for k <= 40, 200 for k <= 70, else 100. ValueError names it."""
    steps: list[tuple[float, int]] = []
    try:
        for part in text.split(","):
            bound, _, count = part.strip().rpartition(":")
            steps.append((float(bound) if bound else float("inf"), int(count)))
    except ValueError:
        raise ValueError(f"--runs must look like 40:500,70:200,100, got {text!r}") from None
    if not steps or min(r for _, r in steps) < 1:
        raise ValueError(f"--runs must give run counts >= 1, got {text!r}")

    def runs(k: int) -> int:
        return next((r for bound, r in steps if k <= bound), steps[-1][1])

    return runs


def protocol(raw: dict[str, Any], k: int) -> RunSpec:
    """The :class:`RunSpec` of a teacher-student pipeline ``raw`` at teacher size ``k``: fixed values,
    ``k``, derived expressions in order; names of TrainConfig fields set training, the rest the landscape.
    Above ``NEWTON_MAX_PARAMS`` the Newton finish is off; up to ``DENSE_MAX_PARAMS`` spectra are full."""
    values: dict[str, Any] = {**raw.get("fixed", {}), "k": k}
    for name, expr in raw.get("derived", {}).items():
        values[name] = evaluate(expr, values)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train = TrainConfig(**{**raw.get("train", {}), **{n: v for n, v in values.items() if n in train_fields}})
    params = {n: v for n, v in values.items() if n not in train_fields}
    n_params = int(params.get("n", k)) * int(params.get("d", k))
    if n_params > NEWTON_MAX_PARAMS:
        train = dataclasses.replace(train, newton_polish=False)
    diagnostics = DiagnosticsConfig(**raw.get("diagnostics", {}))
    if n_params <= DENSE_MAX_PARAMS:
        diagnostics = dataclasses.replace(diagnostics, max_dense=max(diagnostics.max_dense, n_params))
    return RunSpec(
        landscape=str(raw["landscape"]),
        params=params,
        train=train,
        diagnostics=dataclasses.replace(diagnostics, reverify=False),
        init_scheme=str(raw.get("init_scheme", "xavier-normal")),
        init_scale=float(raw.get("init_scale", 1.0)),
    )


def trial_row(trial: int, values: dict[str, Any], frame: pd.DataFrame, seconds: float) -> dict[str, Any]:
    """One row of ``trials.csv``, as a hunt writes it: state, parameters, objective, class counts."""
    counts = frame["critical_point"].value_counts().to_dict()
    certified = int(((frame["critical_point"] == "spurious_minimum") & frame["certified"].astype(bool)).sum())
    return {
        "trial": trial,
        "state": "COMPLETE",
        **values,
        "spurious_rate": certified / max(1, len(frame)),
        "runs": len(frame),
        **{str(c): int(v) for c, v in counts.items()},
        "certified_spurious": certified,
        "seconds": seconds,
    }


def sweep(
    pipeline: Path,
    ks: list[int],
    runs: Callable[[int], int],
    out: Path,
    *,
    device: str = "cpu",
    seconds: float = float("inf"),
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Train and diagnose ``runs(k)`` replicas per k (coarse to fine) on ``device`` into ``out``; no k is
    started once ``seconds`` have passed. Returns the trials table (also ``out/trials.csv``)."""
    raw = yaml.safe_load(pipeline.read_text())
    name = str(raw.get("name", pipeline.stem))
    start = time.perf_counter()
    record = {
        "name": name,
        "pipeline": str(pipeline),
        "objective": "spurious_rate",
        "directions": ["maximize"],
    }
    write_json({**record, "started": time.time(), "device": device}, out / "hunt.json")
    rows: list[dict[str, Any]] = []
    for trial, k in enumerate(coarse_to_fine(ks)):
        if time.perf_counter() - start > seconds:
            log(f"time budget of {seconds:.0f} s spent: k = {k} and later not started")
            break
        spec = protocol(raw, k)
        seed_base = trial * TRIAL_SEEDS
        began = time.perf_counter()
        batch: RunBatch = run_replicas(spec, list(range(seed_base, seed_base + runs(k))), device=device)
        took = time.perf_counter() - began
        values = {"k": k, "n": int(spec.params.get("n", k))}
        frame = trial_frame(batch, trial=trial, seed_base=seed_base, values=values, landscape=spec.landscape)
        save_trial(out, frame, batch, seed_base=seed_base)
        rows.append(trial_row(trial, values, frame, took))
        write_tables(out, pd.DataFrame(rows))
        row = rows[-1]
        log(
            f"k = {k}: {row['runs']} runs in {took:.1f} s, certified spurious {row['certified_spurious']}, "
            f"global {row.get('global_minimum', 0)}, not converged {row.get('not_converged', 0)}"
        )
    write_json({**record, "finished": time.time(), "seconds": time.perf_counter() - start}, out / "hunt.json")
    return pd.DataFrame(rows)


def device_summary(device: str) -> str:
    """One line naming the device (and its memory on CUDA)."""
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{device}: {props.name}, {props.total_memory / 2**30:.0f} GiB"
    return device


def write_command(out: Path, argv: list[str]) -> None:
    """``out/command.json``: how the folder was made."""
    write_json({"argv": argv, "torch": torch.__version__}, out / "command.json")
