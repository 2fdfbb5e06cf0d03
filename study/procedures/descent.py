"""Batched full-batch gradient descent with restarts and an optional Newton finish, then the
diagnostics of every end point (classification, certificates, basin line test)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from study.diagnostics.basin import basin_columns
from study.diagnostics.critical import classify
from study.procedures.base import Job, device_name
from study.record import RunBatch
from study.training.gd import TrainConfig, engine_for, train

# besides the record's core columns: classify's second-order and kink verdicts, the basin line test
COLUMNS = (
    "second_order",
    "kink_verdict",
    "kink_grad_norm",
    "line_monotone",
    "line_largest_bump",
    "stop_reason",
    "engine",
)


def run(job: Job, seeds: list[int], *, progress: Callable[[int, int], None] | None = None) -> RunBatch:
    """Train one replica per seed as a single batched computation, then diagnose each end point.

    Training runs in the landscape's dtype; diagnostics always run in float64.
    """
    config: TrainConfig = job.config
    landscape = job.landscape
    start, started = time.perf_counter(), time.time()
    theta0 = landscape.init(seeds, scheme=job.init_scheme, scale=job.init_scale)  # (R, P)
    result = train(landscape, theta0, config, progress=progress)
    train_seconds = time.perf_counter() - start
    exact = job.exact()
    theta = result.theta.to(torch.float64)  # (R, P)
    frame, spectrum = classify(exact, theta, seeds=seeds, diverged=result.diverged, config=job.diagnostics)
    for key, values in basin_columns(exact, theta0.to(torch.float64), theta).items():
        frame[key] = values
    frame.insert(1, "steps", result.total_steps.cpu().numpy())
    frame.insert(2, "restarts", result.restarts.cpu().numpy())
    frame["final_lr"] = result.lr.cpu().numpy()
    frame["converged"] = result.converged.cpu().numpy()
    frame["stop_reason"] = result.stop_reason
    frame["engine"] = engine_for(landscape, theta0, config)
    frame["train_seconds_per_run"] = train_seconds / max(1, len(seeds))
    frame["seconds_per_run"] = (time.perf_counter() - start) / max(1, len(seeds))
    frame["device"] = device_name(job.device)
    return RunBatch(
        frame=frame,
        theta=result.theta.detach().cpu().numpy(),
        theta0=theta0.detach().cpu().numpy(),
        eigenvalues=spectrum.eigenvalues.detach().cpu().numpy(),
        curve_steps=result.curve_steps.cpu().numpy(),
        curve=result.curve.detach().cpu().numpy(),
        train_span=np.tile([started, started + train_seconds], (len(seeds), 1)),
    )
