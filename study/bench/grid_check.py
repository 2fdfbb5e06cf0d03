"""A grid cell of a Safran-Shamir hunt re-run one network at a time by the independent anchor.

The hunt's per-trial arrays hold every run's initialization; :func:`anchor_agreement` runs the
published protocol (:func:`study.bench.anchor.find_minimum`, plain numpy, no Newton finish) from the
same initializations and compares the verdict that defines the published rate: spurious when F >= 1e-3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from study.bench.anchor import find_minimum
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.record import load_arrays, param_column
from study.record.files import read_csv, trial_files

SPURIOUS_LOSS = 1e-3  # the published threshold on F


def cell_runs(out: Path, k: int, n: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The runs table and arrays of the hunt's trial for (k, n); LookupError if the hunt has none."""
    for path in trial_files(out):
        frame = read_csv(path)
        if frame is None or not len(frame) or param_column("k") not in frame:
            continue
        if int(frame[param_column("k")].iloc[0]) == k and int(frame[param_column("n")].iloc[0]) == n:
            return frame, load_arrays(out, path.stem)
    raise LookupError(f"no finished trial with k = {k}, n = {n} in {out}")


def anchor_agreement(
    out: Path,
    k: int,
    n: int,
    *,
    runs: int,
    spurious_first: bool = False,
    max_steps: int = 200_000,
) -> pd.DataFrame:
    """One row per run (``runs`` of the cell's runs, in seed order; with ``spurious_first`` the runs the
    hunt called spurious come first): the hunt's loss and class, the anchor's loss, steps and
    convergence, and whether both say the same about F >= 1e-3."""
    frame, arrays = cell_runs(out, k, n)
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n))
    V = landscape.V.numpy()
    order = list(range(len(frame)))
    if spurious_first:
        order.sort(key=lambda r: float(frame["loss"].iloc[r]) < SPURIOUS_LOSS)  # stable: seed order kept
    rows = []
    for r in order[:runs]:
        W0 = arrays["theta0"][r].reshape(n, k)
        result = find_minimum(W0, V, max_steps=max_steps)
        theta = torch.as_tensor(result.W.reshape(1, -1), dtype=torch.float64)
        loss = float(landscape.loss(theta)[0])
        ours = float(frame["loss"].iloc[r])
        rows.append(
            {
                "seed": int(frame["seed"].iloc[r]),
                "hunt_loss": ours,
                "hunt_class": str(frame["critical_point"].iloc[r]),
                "anchor_loss": loss,
                "anchor_converged": result.converged,
                "anchor_steps": result.total_steps,
                "same_verdict": (ours >= SPURIOUS_LOSS) == (loss >= SPURIOUS_LOSS),
                "loss_difference": abs(ours - loss) if math.isfinite(loss) else math.inf,
            }
        )
    return pd.DataFrame(rows)
