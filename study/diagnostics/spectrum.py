"""Hessian spectra at end points: full (batched eigvalsh) or extreme eigenvalues by Lanczos on HVPs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from study.landscapes.base import Landscape

_EPS64 = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Spectrum:
    """Hessian eigen-information for R end points.

    ``eigenvalues`` is ``(R, P)`` ascending for the dense method and ``(R, 0)`` for Lanczos.
    ``lambda_lower`` is a rigorous-in-floating-point lower bound on lambda_min: the computed value
    minus the residual (Lanczos) or the backward error of eigvalsh, c * P * eps * |H|_2 (dense).
    """

    method: str  # "dense" or "lanczos"
    eigenvalues: Tensor  # (R, P) or (R, 0)
    lambda_min: Tensor  # (R,)
    lambda_max: Tensor  # (R,)
    lambda_lower: Tensor  # (R,)
    residual: Tensor  # (R,) max |H v - lambda v| over the reported pair(s); 0 for dense
    hessian_norm: Tensor  # (R,) |H|_2


def dense_spectrum(landscape: Landscape, theta: Tensor, *, chunk: int = 32) -> Spectrum:
    """Full spectrum via the landscape's Hessian, ``(R, P) -> eigenvalues (R, P)``, in chunks of R."""
    evs = []
    for start in range(0, theta.shape[0], chunk):
        H = landscape.hessian(theta[start : start + chunk].to(torch.float64))  # (c, P, P)
        H = 0.5 * (H + H.transpose(-1, -2))
        bad = ~torch.isfinite(H).all(dim=(-1, -2))
        H = torch.where(bad[:, None, None], torch.zeros_like(H), H)
        ev = torch.linalg.eigvalsh(H)
        ev[bad] = math.nan
        evs.append(ev)
    ev = torch.cat(evs)
    P = ev.shape[1]
    norm = ev.abs().amax(dim=1)
    slack = 64.0 * P * _EPS64 * norm
    return Spectrum(
        method="dense",
        eigenvalues=ev,
        lambda_min=ev[:, 0],
        lambda_max=ev[:, -1],
        lambda_lower=ev[:, 0] - slack,
        residual=torch.zeros_like(norm),
        hessian_norm=norm,
    )


def lanczos_spectrum(
    landscape: Landscape, theta: Tensor, *, seeds: list[int], tol: float = 1e-10
) -> Spectrum:
    """Extreme eigenvalues by Lanczos (scipy eigsh) on Hessian-vector products, per replica.

    lambda_lower = lambda_min - |H v - lambda_min v| - 64 P eps |H| (Weyl/Bauer-Fike for a unit Ritz
    vector bounds the distance to *an* eigenvalue, and the residual is itself rounded; it is a lower bound
    on lambda_min when that eigenvalue is the smallest, which Lanczos finds reliably for well-separated
    extremes). Each replica's start vector is seeded by its run's seed (``seeds``, one per row), so a run
    gets the same numbers alone or inside any chunk.
    """
    theta = theta.to(torch.float64)
    R, P = theta.shape
    if len(seeds) != R:
        raise ValueError(f"seeds: one per replica, got {len(seeds)} for {R} replicas")
    lam_min = torch.full((R,), math.nan, dtype=torch.float64)
    lam_max = torch.full((R,), math.nan, dtype=torch.float64)
    resid = torch.full((R,), math.nan, dtype=torch.float64)
    for r in range(R):
        point = theta[r : r + 1]

        def matvec(v: np.ndarray, point: Tensor = point) -> np.ndarray:
            vec = torch.as_tensor(np.ascontiguousarray(v).reshape(1, -1), dtype=torch.float64)
            out = landscape.hvp(point, vec.to(point.device))
            return out.detach().cpu().numpy().reshape(-1)

        op = spla.LinearOperator((P, P), matvec=matvec, dtype=np.float64)
        try:
            v0 = np.random.default_rng(int(seeds[r])).standard_normal(P)  # by the run, not its row
            vals, vecs = spla.eigsh(op, k=2, which="BE", tol=tol, maxiter=max(1000, 20 * P), v0=v0)
        except spla.ArpackNoConvergence as exc:  # keep whatever converged
            vals, vecs = exc.eigenvalues, exc.eigenvectors
            if len(vals) < 2:
                continue
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
        res = [np.linalg.norm(matvec(vecs[:, i]) - vals[i] * vecs[:, i]) for i in range(2)]
        lam_min[r], lam_max[r] = float(vals[0]), float(vals[-1])
        resid[r] = float(max(res))
    lam_min, lam_max, resid = (t.to(theta.device) for t in (lam_min, lam_max, resid))
    norm = torch.maximum(lam_min.abs(), lam_max.abs())
    slack = 64.0 * P * _EPS64 * norm  # the residual itself is computed in floating point
    return Spectrum(
        method="lanczos",
        eigenvalues=torch.zeros((R, 0), dtype=torch.float64, device=theta.device),
        lambda_min=lam_min,
        lambda_max=lam_max,
        lambda_lower=lam_min - resid - slack,
        residual=resid,
        hessian_norm=norm,
    )


def hessian_spectrum(
    landscape: Landscape, theta: Tensor, *, seeds: list[int], max_dense: int = 2048
) -> Spectrum:
    """Dense spectrum when P <= ``max_dense``, else Lanczos extremes (started from each run's ``seeds``);
    ``Spectrum.method`` says which."""
    if theta.shape[1] <= max_dense:
        return dense_spectrum(landscape, theta)
    return lanczos_spectrum(landscape, theta, seeds=seeds)
