"""Two-phase SGD (Liu, Papailiopoulos & Achlioptas 2020) on a classification landscape.

1. adversarial initialization (``init="adversarial"``): plain SGD on the training set replicated
   ``adv_copies`` times, each copy with ``adv_zero_fraction`` of its pixels zeroed and a uniformly random
   label, until the replicated set is fitted (or the epoch budget ends);
2. SGD on the true labels until training accuracy >= ``target_acc``, with or without regularization.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from study.diagnostics.spectrum import lanczos_spectrum
from study.landscapes.base import DTYPES
from study.landscapes.classification import Classification
from study.procedures.base import Job, device_name
from study.procedures.sgd_phases import (
    PhaseResult,
    SGDConfig,
    adversarial_phase,
    clean_phase,
    sgd_phase,
)
from study.record import CriticalPoint, RunBatch

__all__ = ["COLUMNS", "SGDConfig", "run"]
# besides the record's core columns (classification has no landscape diagnostics of its own)
COLUMNS = (
    "phase1_train_acc",
    "phase1_epochs",
    "train_acc",
    "test_acc",
    "test_loss",
    "epochs",
    "init",
    "regularization",
    "hyp_regularized",
    "hyp_adversarial_init",
)


def run(job: Job, seeds: list[int], *, progress: Callable[[int, int], None] | None = None) -> RunBatch:
    """Train one replica per seed through the two-phase procedure as one batched computation.

    Initialization follows ``job.init_scheme``/``job.init_scale``. Rows report the clean-train
    cross-entropy ``loss`` and full-batch ``grad_norm`` (float64), ``train_acc``/``test_acc``, and
    ``critical_point``: "global_minimum" when the final phase reaches ``target_acc`` training
    accuracy (zero training error: cross-entropy's infimum 0 is never attained, so the class is by
    accuracy, not by loss_gap), "diverged" on NaN/inf, else "not_converged". ``curve`` holds the mean
    minibatch loss of each epoch (phase 1 on random labels, then phase 2) against the nominal step
    count at the end of that epoch; a stopped replica's value is carried forward.
    """
    landscape = job.landscape
    assert isinstance(landscape, Classification), "two-phase SGD trains a classification landscape"
    c: SGDConfig = job.config
    R = len(seeds)
    start_time, started = time.perf_counter(), time.time()
    train_dtype = landscape.dtype if c.train_dtype is None else DTYPES[c.train_dtype]
    theta0 = landscape.init(seeds, scheme=job.init_scheme, scale=job.init_scale)  # (R, P)
    images = landscape.data.x_train.to(train_dtype)  # (N, C, H, W)
    theta = theta0.to(train_dtype)
    nan = torch.full((R,), math.nan, dtype=torch.float64, device=landscape.device)
    phase1_acc, phase1_epochs = nan, torch.zeros(R, dtype=torch.long, device=landscape.device)
    steps = torch.zeros(R, dtype=torch.long, device=landscape.device)
    diverged = torch.zeros(R, dtype=torch.bool, device=landscape.device)
    curves, curve_steps, done_steps = [], [], 0
    phases = [clean_phase(landscape, c, seeds, images)]
    if c.init == "adversarial":
        phases.insert(0, adversarial_phase(landscape, c, seeds, images))
    result: PhaseResult | None = None
    for number, phase in enumerate(phases):
        result = sgd_phase(landscape, c, theta, seeds, phase)
        theta, steps, diverged = result.theta, steps + result.steps, diverged | result.diverged
        per_epoch = math.ceil(phase.size / c.batch_size)
        curves.append(result.curve)
        curve_steps += [done_steps + per_epoch * (e + 1) for e in range(phase.epochs)]
        done_steps += per_epoch * phase.epochs
        if number == 0 and len(phases) == 2:
            phase1_acc, phase1_epochs = result.train_acc, result.epochs
    assert result is not None
    train_seconds = time.perf_counter() - start_time

    exact = theta.detach().to(torch.float64)
    finite = torch.isfinite(exact).all(dim=1)
    safe = torch.where(finite.unsqueeze(-1), exact, torch.zeros_like(exact))
    loss, grad = landscape.full_batch(safe, landscape.data.x_train, landscape.data.y_train, with_grad=True)
    grad_norm = grad.norm(dim=-1)
    train_acc = landscape.accuracy(safe, landscape.data.x_train, landscape.data.y_train)
    test_acc = landscape.accuracy(safe, landscape.data.x_test, landscape.data.y_test)
    test_loss = landscape.full_batch(safe, landscape.data.x_test, landscape.data.y_test, with_grad=False)[0]
    bad = diverged | ~finite | ~torch.isfinite(loss) | ~torch.isfinite(grad_norm)
    classes = [
        CriticalPoint.DIVERGED
        if bool(bad[r])
        else CriticalPoint.GLOBAL_MINIMUM
        if float(train_acc[r]) >= c.target_acc
        else CriticalPoint.NOT_CONVERGED
        for r in range(R)
    ]
    lam_min = lam_max = lam_lower = residual = nan
    method = "none"
    if c.spectrum:
        spectrum = lanczos_spectrum(landscape, safe, seeds=seeds)
        lam_min, lam_max, lam_lower = spectrum.lambda_min, spectrum.lambda_max, spectrum.lambda_lower
        residual, method = spectrum.residual, spectrum.method
    if progress is not None:
        progress(R, R)

    def col(t: Tensor) -> list[Any]:
        return t.detach().cpu().tolist()

    frame = pd.DataFrame(
        {
            "seed": seeds,
            "steps": col(steps),
            "restarts": 0,
            "loss": col(loss),
            "loss_gap": col(loss - landscape.optimal_loss),
            "l_star": landscape.optimal_loss,
            "l_star_source": "landscape",
            "grad_norm": col(grad_norm),
            "stationarity": col(grad.abs().amax(dim=-1)),
            "lambda_min": col(lam_min),
            "lambda_max": col(lam_max),
            "lambda_lower": col(lam_lower),
            "n_negative": col((lam_min < -job.diagnostics.eig_tol).long()) if c.spectrum else 0,
            "n_zero": 0,
            "expected_zero": 0,
            "spectrum_method": method,
            "spectrum_residual": col(residual),
            "critical_point": classes,
            "escaped": False,
            "certified": False,
            "radius": math.nan,
            "certificate": "n/a",
            "phase1_train_acc": col(phase1_acc),
            "phase1_epochs": col(phase1_epochs),
            "train_acc": col(train_acc),
            "test_acc": col(test_acc),
            "test_loss": col(test_loss),
            "epochs": col(result.epochs),
            "init": c.init,
            "regularization": c.regularization,
            "final_lr": c.lr,
            "converged": [cls == CriticalPoint.GLOBAL_MINIMUM for cls in classes],
        }
    )
    frame["hyp_regularized"] = c.regularization
    frame["hyp_adversarial_init"] = c.init == "adversarial"
    frame["train_seconds_per_run"] = train_seconds / max(1, R)
    frame["seconds_per_run"] = (time.perf_counter() - start_time) / max(1, R)
    frame["device"] = device_name(landscape.device)
    return RunBatch(
        frame=frame,
        theta=theta.detach().cpu().numpy(),
        theta0=theta0.detach().cpu().numpy(),
        eigenvalues=np.zeros((R, 0)),
        curve_steps=np.asarray(curve_steps, dtype=np.int64),
        curve=torch.cat(curves, dim=1).cpu().numpy(),
        train_span=np.tile([started, started + train_seconds], (R, 1)),
    )
