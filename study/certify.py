"""Certify a single teacher-student end point given as an (n, d) array (the `study certify` command)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from study.diagnostics.critical import DiagnosticsConfig, classify
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig


def certify_weights(
    W: np.ndarray, *, k: int, d: int | None = None, config: DiagnosticsConfig = DiagnosticsConfig()
) -> dict[str, Any]:
    """Classify and certify student neurons ``W: (n, d)`` against the teacher I_k, in float64.

    Raises ValueError naming the problem for a wrong shape, a non-numeric or non-finite array.
    """
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    dim = k if d is None else d
    if dim < k:
        raise ValueError(f"--d must be >= k for the identity teacher, got d={dim} < k={k}")
    if np.iscomplexobj(W):
        raise ValueError(f"weights must be real, got complex dtype {W.dtype}")
    if not np.issubdtype(W.dtype, np.number):
        raise ValueError(f"weights must be numeric, got dtype {W.dtype}")
    if W.ndim != 2:
        raise ValueError(f"weights must be an (n, d) array, got shape {W.shape}")
    if W.shape[1] != dim:
        raise ValueError(
            f"weights have d={W.shape[1]} columns but the teacher needs d={dim} (shape {W.shape})"
        )
    if W.shape[0] < 1:
        raise ValueError("weights have no rows (n = 0)")
    if not np.isfinite(W).all():
        bad = int((~np.isfinite(W)).sum())
        raise ValueError(f"weights contain {bad} NaN or infinite entries")
    n = W.shape[0]
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n, d=d))
    theta = torch.as_tensor(W.astype(np.float64).reshape(1, -1))
    frame, _ = classify(landscape, theta, seeds=[0], config=config)
    row = frame.iloc[0]
    out: dict[str, Any] = {
        "loss": float(row["loss"]),
        "loss_gap": float(row["loss_gap"]),
        "grad_norm": float(row["grad_norm"]),
        "stationarity": float(row["stationarity"]),
        "lambda_min": float(row["lambda_min"]),
        "lambda_max": float(row["lambda_max"]),
        "lambda_lower": float(row["lambda_lower"]),
        "n_negative": int(row["n_negative"]),
        "n_zero": int(row["n_zero"]),
        "critical_point": str(row["critical_point"]),
        "certified": bool(row["certified"]),
        "radius": None if math.isnan(float(row["radius"])) else float(row["radius"]),
        "certificate": str(row["certificate"]),
        "escaped": bool(row["escaped"]),
        "min_neuron_distance": float(row["min_neuron_distance"]),
        "min_neuron_norm": float(row["min_neuron_norm"]),
        "best_teacher": [int(x) for x in str(row["best_teacher"]).split()],
        "k": k,
        "n": n,
        "d": dim,
    }
    return out
