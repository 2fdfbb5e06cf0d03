"""Critical-point classification of end points, the escape test, and certificates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from study.diagnostics.spectrum import Spectrum, hessian_spectrum
from study.landscapes.base import Landscape, seeded_normal
from study.record.schema import PARAM_PREFIX, CriticalPoint
from study.training.compiled import escape_compiled

__all__ = ["DiagnosticsConfig", "classify", "escape_test"]

# the classes of runs that ended off a critical point
NOT_CRITICAL = (CriticalPoint.NOT_CONVERGED, CriticalPoint.DIVERGED)


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Tolerances of the classifier (SCIENCE.md, Vocabulary).

    gap_tol: a converged run with loss - L* <= gap_tol is a global minimum, else it is spurious or a
    saddle. grad_tol: stationarity (the landscape's stopping measure) at most this is a critical point.
    eig_tol: |lambda| <= eig_tol is a zero eigenvalue, lambda < -eig_tol a negative one.
    kink_tol, kink_grad_tol: settle runs that end ``not_converged`` on a piecewise-smooth landscape (see
    :func:`settle_kinks`).
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
    kink_tol: float = 1e-4  # |pre-activation| at most this counts as sitting at a kink
    kink_grad_tol: float = 1e-3  # a generalized gradient this small makes a kink a critical point

    def __post_init__(self) -> None:
        for name in ("gap_tol", "grad_tol", "eig_tol", "escape_radius", "escape_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def escape_test(
    landscape: Landscape, theta: Tensor, seeds: list[int], config: DiagnosticsConfig, *, engine: str = "auto"
) -> Tensor:
    """Perturb each point M times by ``escape_radius`` (random unit directions) and run plain gradient
    descent; escaped when the loss somewhere along some descent falls below the point's loss by a
    relative ``escape_margin``.

    ``theta: (R, P) -> (R,) bool``. A minimum (even a degenerate one) cannot be escaped this way; a
    saddle, including one with no negative curvature (the origin of a deep linear net), can. The loss is
    tracked at every step, so a descent that runs off towards -inf (a saddle unbounded below) counts as
    escaped even when its iterate later overflows to inf or NaN; a trajectory stops once it has escaped
    or its iterate is no longer finite. ``engine``: "auto" runs the descents in the landscape's compiled
    kernel where it has one (float64 on CPU, :func:`study.training.compiled.escape_compiled`, the same
    steps), "torch" always in the batched torch loop.
    """
    R, P = theta.shape
    M = config.escape_perturbations
    base = landscape.loss(theta)  # (R,)
    escape_seeds = [seed * 7919 + 13 for seed in seeds]  # decorrelated from the init seeds
    dirs = seeded_normal(escape_seeds, (M, P), dtype=theta.dtype, device=theta.device)  # (R, M, P)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    x = (theta.unsqueeze(1) + config.escape_radius * dirs).reshape(R * M, P)
    margin = config.escape_margin * base.abs().clamp_min(1e-3)
    threshold = (base - margin).repeat_interleave(M)  # (R * M,)
    lowest = None
    if engine == "auto":
        lowest = escape_compiled(landscape, x, threshold, lr=config.escape_lr, steps=config.escape_steps)
    if lowest is None:
        lowest = _escape_descents(landscape, x, threshold, config)
    return (lowest < threshold).reshape(R, M).any(dim=1)


def _escape_descents(landscape: Landscape, x: Tensor, threshold: Tensor, config: DiagnosticsConfig) -> Tensor:
    """The torch loop of :func:`escape_test`: the lowest loss along each descent from ``x: (E, P)``."""
    lowest = landscape.loss(x)  # (E,) lowest loss seen along each descent (fmin skips NaN)
    lowest = torch.where(torch.isnan(lowest), torch.full_like(lowest, math.inf), lowest)
    active = torch.isfinite(x).all(dim=-1) & ~(lowest < threshold)
    for _ in range(config.escape_steps):
        rows = torch.nonzero(active).squeeze(-1)
        if rows.numel() == 0:
            break
        step = x[rows] - config.escape_lr * landscape.grad(x[rows])  # (A, P)
        value = landscape.loss(step)  # (A,)
        x[rows] = step
        lowest[rows] = torch.fmin(lowest[rows], value)
        stop = (value < threshold[rows]) | ~torch.isfinite(value) | ~torch.isfinite(step).all(dim=-1)
        active[rows[stop]] = False
    return lowest


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
    spectrum = hessian_spectrum(landscape, safe, seeds=seeds, max_dense=config.max_dense)
    ev = spectrum.eigenvalues
    if ev.shape[1] > 0:
        n_negative = (ev < -config.eig_tol).sum(dim=1)
        n_zero = (ev.abs() <= config.eig_tol).sum(dim=1)
    else:  # Lanczos: only the extremes are known
        n_negative = (spectrum.lambda_min < -config.eig_tol).long()
        n_zero = (spectrum.lambda_min.abs() <= config.eig_tol).long()
    expected_zero = landscape.expected_zero_eigenvalues(safe).to(n_zero.device)
    l_star = landscape.optimal_loss
    known = math.isfinite(l_star)
    # the second-order verdict of each converged end point, independent of L*
    second_order: list[str] = []
    converged: list[bool] = []
    for r in range(R):
        ok = not bool(bad[r]) and float(stat[r]) <= config.grad_tol
        converged.append(ok)
        if not ok:
            second_order.append("")
        elif int(n_negative[r]) > 0:
            second_order.append(CriticalPoint.SADDLE)
        elif int(n_zero[r]) > int(expected_zero[r]):
            second_order.append(CriticalPoint.DEGENERATE)
        else:
            second_order.append("minimum")
    if known:
        gap = loss - l_star
        l_star_source = "landscape"
    else:
        # no closed form or reference solver: the best converged end point stands in for L*. Here that is
        # the best of this batch, a provisional label for a caller that holds every run (``study train``);
        # a hunt labels again against the best of the whole configuration (study.search.labels), from the
        # label-free columns below, and never stores these.
        ok_loss = [float(loss[r]) for r in range(R) if converged[r]]
        l_star = min(ok_loss) if ok_loss else math.nan
        l_star_source = "best of batch"
        gap = loss - l_star if math.isfinite(l_star) else torch.full_like(loss, math.nan)
    classes = [
        _critical_point(bool(bad[r]), converged[r], float(gap[r]), second_order[r], config.gap_tol)
        for r in range(R)
    ]

    escaped = [False] * R
    # with L* unknown a run's label may change as runs arrive, so every degenerate point is tested
    candidates = [
        r
        for r in range(R)
        if second_order[r] == CriticalPoint.DEGENERATE
        and (classes[r] == CriticalPoint.DEGENERATE or not known)
    ]
    if candidates:
        idx = torch.tensor(candidates, device=theta.device)
        esc = escape_test(landscape, safe[idx], [seeds[r] for r in candidates], config).tolist()
        for r, e in zip(candidates, esc, strict=True):
            escaped[r] = bool(e)

    certificates: list[Any] = [None] * R
    minima = [
        r
        for r, c in enumerate(classes)
        if c in (CriticalPoint.GLOBAL_MINIMUM, CriticalPoint.SPURIOUS_MINIMUM)
        or (not known and second_order[r] == "minimum")
    ]
    if config.certify and minima:
        idx = torch.tensor(minima, device=theta.device)
        certs = landscape.certify(
            safe[idx], spectrum.lambda_lower[idx], grad_norm[idx], spectrum.hessian_norm[idx]
        )
        for r, cert in zip(minima, certs, strict=True):
            certificates[r] = cert

    kink_verdict, kink_grad = settle_kinks(landscape, safe, classes, seeds, config)

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
            "second_order": second_order,
            "escaped": escaped,
            "certified": [c is not None and c.certified for c in certificates],
            "radius": [c.radius if c is not None else math.nan for c in certificates],
            "certificate": [c.reason if c is not None else "not a minimum" for c in certificates],
            "kink_verdict": kink_verdict,
            "kink_grad_norm": kink_grad,
        }
    )
    for key, values in landscape.run_diagnostics(safe).items():
        frame[key] = list(values)
    for key, flag in landscape.hypotheses().items():
        frame[f"hyp_{key}"] = flag
    return frame, spectrum


#: verdicts of :func:`settle_kinks` (empty for runs it does not concern)
KINK_VERDICTS = (
    "nondifferentiable minimum",  # at a kink, a zero generalized gradient, and the escape test fails
    "nondifferentiable, escaped",  # at a kink, a zero generalized gradient, but descent finds lower loss
    "at a kink, not stationary",  # one hidden layer: no generalized gradient is zero, so not a minimum
    "undecided",  # not at a kink, or two layers where the search for a zero gradient is not exhaustive
)


def settle_kinks(
    landscape: Landscape, theta: Tensor, classes: list[str], seeds: list[int], config: DiagnosticsConfig
) -> tuple[list[str], list[float]]:
    """Settle runs that ended ``not_converged`` on a piecewise-smooth landscape.

    For each such run: the smallest generalized-gradient norm with kinks within ``kink_tol`` treated as
    reached (``Landscape.kink_gradient_norm``). With a kink reached and that norm <= ``kink_grad_tol``
    the point is a non-differentiable critical point, and the escape test says whether it is a
    minimum; where the landscape's minimization is exact (one hidden layer), a larger norm proves a
    descent direction (not a minimum); everything else is undecided. Returns (verdict, norm) per run.
    """
    R = theta.shape[0]
    verdict, norms = [""] * R, [math.nan] * R
    rows = [r for r in range(R) if classes[r] == CriticalPoint.NOT_CONVERGED]
    if not rows:
        return verdict, norms
    idx = torch.tensor(rows, device=theta.device)
    result = landscape.kink_gradient_norm(theta[idx], config.kink_tol)
    if result is None:
        return verdict, norms
    kink_norm, kinked, exact = result
    critical = []
    for i, r in enumerate(rows):
        norms[r] = float(kink_norm[i])
        if int(kinked[i]) == 0:
            verdict[r] = "undecided"
        elif norms[r] <= config.kink_grad_tol:
            critical.append(r)
        else:
            verdict[r] = "at a kink, not stationary" if exact else "undecided"
    if critical:
        sub = torch.tensor(critical, device=theta.device)
        escaped = escape_test(landscape, theta[sub], [seeds[r] for r in critical], config).tolist()
        for r, e in zip(critical, escaped, strict=True):
            verdict[r] = "nondifferentiable, escaped" if e else "nondifferentiable minimum"
    return verdict, norms


def _critical_point(bad: bool, converged: bool, gap: float, second_order: str, gap_tol: float) -> str:
    """The class of one run from its flags, its gap to L* and its second-order verdict."""
    if bad:
        return CriticalPoint.DIVERGED
    if not converged:
        return CriticalPoint.NOT_CONVERGED
    if math.isfinite(gap) and gap <= gap_tol:
        return CriticalPoint.GLOBAL_MINIMUM
    if second_order in (CriticalPoint.SADDLE, CriticalPoint.DEGENERATE):
        return CriticalPoint(second_order)
    return CriticalPoint.SPURIOUS_MINIMUM


def label_against(
    frame: pd.DataFrame, l_star: list[float], *, gap_tol: float, source: str = "reference"
) -> pd.DataFrame:
    """``frame`` with ``loss_gap`` and ``critical_point`` recomputed against a given L* per row, from the
    label-free columns only (loss, the second-order verdict, and the classes that do not read L*:
    diverged, not_converged); ``l_star_source`` says where the value came from."""
    out = frame.copy()
    ref = np.asarray(l_star, dtype=float)  # (R,)
    gap = out["loss"].to_numpy(dtype=float) - ref
    out["l_star"] = ref
    out["l_star_source"] = source
    out["loss_gap"] = gap
    out["critical_point"] = [
        _critical_point(cls == CriticalPoint.DIVERGED, cls not in NOT_CRITICAL, float(g), str(so), gap_tol)
        for cls, g, so in zip(out["critical_point"], gap, out["second_order"].fillna(""), strict=True)
    ]
    return out


def relabel_unknown_optimum(
    frame: pd.DataFrame, *, gap_tol: float, by: list[str] | None = None
) -> pd.DataFrame:
    """Labels against the best converged loss over all of ``frame`` where L* is unknown.

    Rows whose ``l_star_source`` is not "landscape" (no closed form or reference solver) get
    L* = the lowest loss among converged runs of their group (``by`` columns: one configuration; default
    every ``param_*`` column, or the whole frame), and ``loss_gap`` and ``critical_point`` are recomputed
    from the recorded second-order verdict. The result depends only on the set of runs, never on how
    they were chunked; call it again as runs arrive. Rows with a known L* are returned unchanged.
    """
    if "l_star_source" not in frame.columns or "second_order" not in frame.columns:
        return frame
    unknown = frame["l_star_source"].astype(str) != "landscape"
    if not bool(unknown.any()):
        return frame
    out = frame.copy()
    keys = by if by is not None else [c for c in out.columns if c.startswith(PARAM_PREFIX)]
    groups = out[unknown].groupby(keys, dropna=False, sort=False) if keys else [(None, out[unknown])]
    for _, group in groups:
        converged = ~group["critical_point"].isin(NOT_CRITICAL)
        best = float(group.loc[converged, "loss"].min()) if bool(converged.any()) else math.nan
        labelled = label_against(group, [best] * len(group), gap_tol=gap_tol)
        labelled["l_star_source"] = f"best of {len(group)} runs"
        for column in ("l_star", "l_star_source", "loss_gap", "critical_point"):
            out.loc[group.index, column] = labelled[column]
    return out
