"""Critical-point classification of end points, the escape test, and certificates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from study.diagnostics.spectrum import Spectrum, hessian_spectrum
from study.landscapes.base import Landscape, seeded_normal
from study.record.schema import CLASSES

__all__ = ["CLASSES", "DiagnosticsConfig", "classify", "escape_test"]


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Tolerances of the classifier (SCIENCE.md, Vocabulary).

    gap_tol: a converged run with loss - L* <= gap_tol is a global minimum, else it is spurious or a
    saddle. grad_tol: stationarity (the landscape's stopping measure) at most this is a critical point.
    eig_tol: |lambda| <= eig_tol is a zero eigenvalue, lambda < -eig_tol a negative one.
    """

    gap_tol: float = 1e-3
    grad_tol: float = 1e-6
    eig_tol: float = 1e-7
    escape_perturbations: int = 8
    escape_radius: float = 1e-2
    escape_steps: int = 3000
    escape_lr: float = 0.05
    escape_margin: float = 1e-7  # relative drop in loss that counts as an escape
    max_dense: int = 2048
    certify: bool = True
    reverify: bool = True  # re-verify certified spurious minima (study.diagnostics.verify) in hunts

    def __post_init__(self) -> None:
        for name in ("gap_tol", "grad_tol", "eig_tol", "escape_radius", "escape_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def escape_test(landscape: Landscape, theta: Tensor, seeds: list[int], config: DiagnosticsConfig) -> Tensor:
    """Perturb each point M times by ``escape_radius`` (random unit directions) and run plain gradient
    descent; escaped when some descent ends below the point's loss by a relative ``escape_margin``.

    ``theta: (R, P) -> (R,) bool``. A minimum (even a degenerate one) cannot be escaped this way; a
    saddle, including one with no negative curvature (the origin of a deep linear net), can.
    """
    R, P = theta.shape
    M = config.escape_perturbations
    base = landscape.loss(theta)  # (R,)
    escape_seeds = [seed * 7919 + 13 for seed in seeds]  # decorrelated from the init seeds
    dirs = seeded_normal(escape_seeds, (M, P), dtype=theta.dtype, device=theta.device)  # (R, M, P)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    x = (theta.unsqueeze(1) + config.escape_radius * dirs).reshape(R * M, P)
    for _ in range(config.escape_steps):
        g = landscape.grad(x)
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
        x = x - config.escape_lr * g
    final = landscape.loss(x).reshape(R, M)
    final = torch.where(torch.isfinite(final), final, torch.full_like(final, math.inf))
    margin = config.escape_margin * base.abs().clamp_min(1e-3)
    return final.amin(dim=1) < base - margin


def classify(
    landscape: Landscape,
    theta: Tensor,
    *,
    seeds: list[int],
    diverged: Tensor | None = None,
    config: DiagnosticsConfig = DiagnosticsConfig(),
) -> tuple[pd.DataFrame, Spectrum]:
    """Diagnose R end points ``theta: (R, P)`` (computed in float64): one row per run.

    Columns: loss, loss_gap, grad_norm, stationarity, lambda_min, lambda_max, lambda_lower,
    n_negative (saddle index), n_zero, expected_zero, spectrum_method, spectrum_residual,
    critical_point, escaped, certified, radius, certificate, plus the landscape's own diagnostics.
    """
    theta = theta.to(torch.float64)
    R = theta.shape[0]
    finite = torch.isfinite(theta).all(dim=1)
    safe = torch.where(finite.unsqueeze(-1), theta, torch.zeros_like(theta))
    loss = landscape.loss(safe)
    grad = landscape.grad(safe)
    grad_norm = grad.norm(dim=-1)
    stat = landscape.stationarity_from_grad(safe, grad)
    bad = ~finite | ~torch.isfinite(loss) | ~torch.isfinite(grad_norm)
    if diverged is not None:
        bad = bad | diverged.to(bad.device)
    spectrum = hessian_spectrum(landscape, safe, max_dense=config.max_dense)
    ev = spectrum.eigenvalues
    if ev.shape[1] > 0:
        n_negative = (ev < -config.eig_tol).sum(dim=1)
        n_zero = (ev.abs() <= config.eig_tol).sum(dim=1)
    else:  # Lanczos: only the extremes are known
        n_negative = (spectrum.lambda_min < -config.eig_tol).long()
        n_zero = (spectrum.lambda_min.abs() <= config.eig_tol).long()
    expected_zero = landscape.expected_zero_eigenvalues(safe).to(n_zero.device)
    l_star = landscape.optimal_loss
    l_star_source = "landscape"
    if not math.isfinite(l_star):
        # no closed form or reference solver: the best converged end point of this batch stands in
        ok = ~bad & (stat <= config.grad_tol)
        l_star = float(loss[ok].min()) if bool(ok.any()) else math.nan
        l_star_source = "best of batch"
    gap = loss - l_star if math.isfinite(l_star) else torch.full_like(loss, math.nan)

    classes: list[str] = []
    for r in range(R):
        if bool(bad[r]):
            classes.append("diverged")
        elif float(stat[r]) > config.grad_tol:
            classes.append("not_converged")
        elif math.isfinite(float(gap[r])) and float(gap[r]) <= config.gap_tol:
            classes.append("global_minimum")
        elif int(n_negative[r]) > 0:
            classes.append("saddle")
        elif int(n_zero[r]) > int(expected_zero[r]):
            classes.append("degenerate")
        else:
            classes.append("spurious_minimum")

    escaped = [False] * R
    candidates = [r for r, c in enumerate(classes) if c == "degenerate"]
    if candidates:
        idx = torch.tensor(candidates, device=theta.device)
        esc = escape_test(landscape, safe[idx], [seeds[r] for r in candidates], config).tolist()
        for r, e in zip(candidates, esc, strict=True):
            escaped[r] = bool(e)

    certificates: list[Any] = [None] * R
    minima = [r for r, c in enumerate(classes) if c in ("global_minimum", "spurious_minimum")]
    if config.certify and minima:
        idx = torch.tensor(minima, device=theta.device)
        certs = landscape.certify(
            safe[idx], spectrum.lambda_lower[idx], grad_norm[idx], spectrum.hessian_norm[idx]
        )
        for r, cert in zip(minima, certs, strict=True):
            certificates[r] = cert

    frame = pd.DataFrame(
        {
            "seed": seeds,
            "loss": loss.tolist(),
            "loss_gap": gap.tolist(),
            "l_star": l_star,
            "l_star_source": l_star_source,
            "grad_norm": grad_norm.tolist(),
            "stationarity": stat.tolist(),
            "lambda_min": spectrum.lambda_min.tolist(),
            "lambda_max": spectrum.lambda_max.tolist(),
            "lambda_lower": spectrum.lambda_lower.tolist(),
            "n_negative": n_negative.tolist(),
            "n_zero": n_zero.tolist(),
            "expected_zero": expected_zero.tolist(),
            "spectrum_method": spectrum.method,
            "spectrum_residual": spectrum.residual.tolist(),
            "critical_point": classes,
            "escaped": escaped,
            "certified": [c is not None and c.certified for c in certificates],
            "radius": [c.radius if c is not None else math.nan for c in certificates],
            "certificate": [c.reason if c is not None else "not a minimum" for c in certificates],
        }
    )
    for key, values in landscape.run_diagnostics(safe).items():
        frame[key] = list(values)
    for key, flag in landscape.hypotheses().items():
        frame[f"hyp_{key}"] = flag
    return frame, spectrum
