"""Re-verification of certified spurious minima before a hunt reports them as counterexamples.

A run classified ``spurious_minimum`` with a certificate is re-checked from scratch, in float64:

1. polished by Newton steps (plain descent where Newton stalls) to stationarity <= ``stationarity_tol``;
2. re-classified at the polished point and its certificate recomputed (a true minimum within r);
3. escape test: perturbations of ``escape_radius`` followed by descent must not end lower;
4. its family assigned: the loss and a digest of the sorted Hessian spectrum, both invariant under the
   landscape's symmetries, so symmetric copies of one minimum share a family;
5. inside a theorem's hypotheses (the run's ``hyp_inside_theorem`` flag), additionally re-trained
   from its initialization with a tolerance ``rerun_tol_factor`` times tighter: the re-run must end at a
   certified spurious minimum of the same loss.

By family (:func:`with_verdicts`): the candidates of a batch are grouped into families of end points
equal up to the landscape's symmetry, generically by their loss (within ``family_loss_tol``, relative),
their sorted Hessian spectrum (within ``family_spectrum_tol``) and the landscape's exactly invariant
``family_invariants`` (within ``family_invariant_tol``; none for most landscapes, the teacher-student
rows and columns sorted modulo permutations, as in its families module). Each family's lowest-loss member
and up to ``per_family`` more (:class:`FamilyVerification`, the pipeline's ``verify.per_family``) are
re-verified in full; the others carry the family's verdict, with ``verified_by`` naming the member it
came from (``s<seed>``), when the verified members agree on it and the member's own loss matches their
polished loss and its spectrum and invariants theirs within the same tolerances; any other member is
re-verified itself. Inside a theorem's hypotheses every run is re-verified alone, and so is every run
of a batch with neither a dense spectrum nor invariants to compare (the loss alone is no family). Every
run keeps its own certificate (the record's ``certified``, ``radius``) whatever its verdict's source.

Verdicts: ``contradiction_candidate`` (survived all checks inside a theorem's hypotheses: a bug or a
finding), ``confirmed`` (survived, outside any theorem's hypotheses: the hypothesis is needed) and
``rejected`` (a check failed; ``reason`` says which).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from study.diagnostics.critical import DiagnosticsConfig, classify, escape_test, label_against
from study.diagnostics.spectrum import hessian_spectrum
from study.landscapes.base import Landscape
from study.record import schema
from study.record.schema import CriticalPoint, family_key, is_certified_spurious
from study.training.gd import TrainConfig, train

VERDICT_TAG = "verdict"  # the MLflow tag a reviewer filters on: tags.verdict = "confirmed"


@dataclass(frozen=True)
class VerifyConfig:
    """Tolerances of the re-check (tighter than any pipeline's)."""

    stationarity_tol: float = 1e-13
    newton_max_steps: int = 100
    descent_max_steps: int = 200_000  # plain descent after Newton stalls
    rerun_tol_factor: float = 1e-3  # the re-run from the initialization stops at tol * this
    loss_match: float = 1e-7  # relative agreement of the re-run's loss with the polished loss
    family_loss_tol: float = 1e-8  # relative; the tolerances of the teacher-student families module
    family_spectrum_tol: float = 1e-4
    family_invariant_tol: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("stationarity_tol", "rerun_tol_factor", "loss_match", "family_loss_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class FamilyVerification:
    """The pipeline's ``verify`` section: how many members of each family are re-verified in full
    besides its lowest-loss one (the rest carry its verdict; see the module docstring)."""

    per_family: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.per_family, bool) or not isinstance(self.per_family, int) or self.per_family < 0:
            raise ValueError(f"per_family must be an integer >= 0, got {self.per_family!r}")


@dataclass(frozen=True)
class Verdict:
    """Outcome of re-verifying one end point; numbers are NaN where the check did not get that far."""

    verdict: str  # a schema.Verdict
    reason: str
    loss: float  # at the polished point
    stationarity: float
    radius: float  # the recomputed certificate's radius
    family: str
    rerun_loss: float  # inside a theorem's hypotheses: loss of the re-run from the initialization
    verified_by: str = ""  # carried from a family member (its run, ``s<seed>``); "": verified itself

    def columns(self) -> dict[str, object]:
        """The run-record columns this verdict adds (``verified_*``)."""
        return {
            "verdict": self.verdict,
            "verdict_reason": self.reason,
            "verified_loss": self.loss,
            "verified_stationarity": self.stationarity,
            "verified_radius": self.radius,
            "family": self.family,
            "rerun_loss": self.rerun_loss,
            "verified_by": self.verified_by,
        }


def polish(landscape: Landscape, theta: Tensor, *, lr: float, config: VerifyConfig) -> Tensor:
    """Newton steps from ``theta: (R, P)`` to stationarity <= ``config.stationarity_tol`` (float64);
    replicas where Newton stalls finish with plain gradient descent of step ``lr``."""
    polish_config = TrainConfig(
        lr=lr,
        tol=config.stationarity_tol,
        max_steps=config.descent_max_steps,
        newton_polish=True,
        newton_polish_at=math.inf,  # Newton from the first step: the points are already critical
        newton_max_steps=config.newton_max_steps,
        curve_points=1,  # the loss curve is not needed
    )
    return train(landscape, theta.to(torch.float64), polish_config).theta


def _rechecked(
    landscape: Landscape,
    theta: Tensor,
    seeds: list[int],
    diagnostics: DiagnosticsConfig,
    tol: float,
    l_star: Sequence[float] | None = None,
) -> tuple[list[dict[str, object]], np.ndarray]:
    """Classify at stationarity tolerance ``tol`` with the certificate on; rows and spectra ``(R, P)``.

    Where the landscape has no L*, each point is judged against ``l_star`` (the reference its run was
    labelled against: the best over its trial), never against the best of the points re-checked here,
    which would make the lowest candidate its own global minimum."""
    strict = dataclasses.replace(diagnostics, grad_tol=tol, certify=True)
    frame, spectrum = classify(landscape, theta, seeds=seeds, config=strict)
    if l_star is not None and not math.isfinite(landscape.optimal_loss):
        frame = label_against(frame, list(l_star), gap_tol=diagnostics.gap_tol)
    return frame.to_dict("records"), spectrum.eigenvalues.detach().cpu().numpy()


def reverify(
    landscape: Landscape,
    theta: Tensor,
    theta0: Tensor,
    seeds: list[int],
    *,
    inside_theorem: Sequence[bool],
    train_config: TrainConfig,
    diagnostics: DiagnosticsConfig = DiagnosticsConfig(),
    config: VerifyConfig = VerifyConfig(),
    l_star: Sequence[float] | None = None,
) -> list[Verdict]:
    """Re-verify R reported counterexamples ``theta: (R, P)`` trained from ``theta0: (R, P)``.

    ``landscape`` must be the float64 landscape of their configuration; ``train_config`` is the
    configuration the runs were trained with (its step and budget are reused for the re-run).
    ``l_star`` (R,): where the landscape has no L*, the reference each run was labelled against.
    """
    if landscape.dtype != torch.float64:
        raise ValueError(f"re-verification runs in float64, got a {landscape.dtype} landscape")
    R = theta.shape[0]
    if R == 0:
        return []
    polished = polish(landscape, theta, lr=train_config.lr, config=config)  # (R, P)
    rows, eigenvalues = _rechecked(landscape, polished, seeds, diagnostics, config.stationarity_tol, l_star)
    escaped = escape_test(landscape, polished, seeds, diagnostics).tolist()

    rerun_rows: dict[int, dict[str, object]] = {}
    inside = [r for r in range(R) if bool(inside_theorem[r])]
    if inside:
        tight = dataclasses.replace(
            train_config,
            tol=train_config.tol * config.rerun_tol_factor,
            newton_polish=True,
            curve_points=1,  # the loss curve is not needed
        )
        start = theta0[inside].to(device=landscape.device, dtype=torch.float64)
        rerun = train(landscape, start, tight).theta  # (I, P)
        refs = None if l_star is None else [l_star[r] for r in inside]
        found, _ = _rechecked(landscape, rerun, [seeds[r] for r in inside], diagnostics, tight.tol, refs)
        rerun_rows = dict(zip(inside, found, strict=True))

    verdicts = []
    for r, row in enumerate(rows):
        loss = float(row["loss"])  # type: ignore[arg-type]
        stat = float(row["stationarity"])  # type: ignore[arg-type]
        radius = float(row["radius"])  # type: ignore[arg-type]
        family = family_key(loss, eigenvalues[r], np.zeros(0)) if eigenvalues.shape[1] else f"{loss:.6g}"
        rerun_loss = math.nan
        reason = ""
        if not stat <= config.stationarity_tol:
            reason = f"polishing stopped at stationarity {stat:.3g} > {config.stationarity_tol:.0e}"
        elif row["critical_point"] != CriticalPoint.SPURIOUS_MINIMUM:
            reason = f"re-classified as {row['critical_point']} after polishing"
        elif not bool(row["certified"]):
            reason = f"certificate fails after polishing: {row['certificate']}"
        elif escaped[r]:
            reason = (
                f"escape test: descent from a perturbation of radius {diagnostics.escape_radius:g} ends lower"
            )
        elif r in rerun_rows:
            again = rerun_rows[r]
            rerun_loss = float(again["loss"])  # type: ignore[arg-type]
            same = abs(rerun_loss - loss) <= config.loss_match * max(1.0, abs(loss))
            ends = "re-run from its initialization ends at"
            if again["critical_point"] != CriticalPoint.SPURIOUS_MINIMUM or not bool(again["certified"]):
                reason = f"{ends} {again['critical_point']} (loss {rerun_loss:.6g})"
            elif not same:
                reason = f"{ends} another minimum (loss {rerun_loss:.6g})"
        if reason:
            verdict = schema.Verdict.REJECTED
        else:
            verdict = schema.Verdict.CONTRADICTION_CANDIDATE if r in rerun_rows else schema.Verdict.CONFIRMED
            reason = (
                "inside the theorem's hypotheses" if r in rerun_rows else "outside any theorem's hypotheses"
            )
        verdicts.append(Verdict(verdict, reason, loss, stat, radius, family, rerun_loss))
    return verdicts


_BLANK = Verdict("", "", math.nan, math.nan, math.nan, "", math.nan)  # a run that was not re-verified
BLANK_VERDICT = _BLANK.columns()  # the verdict columns of a run not re-verified
VERDICT_COLUMNS = tuple(BLANK_VERDICT)


def with_verdicts(
    landscape: Landscape,
    frame: pd.DataFrame,
    theta: np.ndarray,
    theta0: np.ndarray,
    *,
    train_config: TrainConfig,
    diagnostics: DiagnosticsConfig = DiagnosticsConfig(),
    config: VerifyConfig = VerifyConfig(),
    families: FamilyVerification = FamilyVerification(),
    eigenvalues: np.ndarray | None = None,
) -> pd.DataFrame:
    """``frame`` (one row per run, aligned with ``theta, theta0: (R, P)``) with the verdict columns:
    rows classified as certified spurious minima are re-verified by family (module docstring), the
    others get an empty verdict. ``eigenvalues: (R, P)``: the runs' spectra (computed here if None)."""
    out = frame.copy()
    for name, value in _BLANK.columns().items():
        out[name] = value
    chosen = np.flatnonzero(is_certified_spurious(frame).to_numpy())
    if len(chosen) == 0:
        return out
    inside = frame.get("hyp_inside_theorem", pd.Series(False, index=frame.index)).astype(bool).to_numpy()
    seeds = [int(s) for s in frame["seed"].to_numpy()[chosen]]
    points = torch.as_tensor(theta[chosen], dtype=torch.float64, device=landscape.device)  # (C, P)
    starts = torch.as_tensor(theta0[chosen], dtype=torch.float64, device=landscape.device)
    l_star = frame["l_star"].to_numpy(dtype=float)[chosen] if "l_star" in frame else None
    if eigenvalues is None:
        spectra = hessian_spectrum(
            landscape, points, seeds=seeds, max_dense=diagnostics.max_dense
        ).eigenvalues
        spectra_np = np.sort(spectra.detach().cpu().numpy(), axis=1)
    else:
        spectra_np = np.sort(np.asarray(eigenvalues, dtype=float)[chosen], axis=1)
    features = _Features(
        frame["loss"].to_numpy(dtype=float)[chosen], spectra_np, landscape.family_invariants(points), config
    )

    def verified(rows: list[int]) -> dict[int, Verdict]:
        found = reverify(
            landscape, points[rows], starts[rows], [seeds[r] for r in rows],
            inside_theorem=inside[chosen][rows].tolist(), train_config=train_config,
            diagnostics=diagnostics, config=config,
            l_star=None if l_star is None else l_star[rows].tolist(),
        )  # fmt: skip
        return dict(zip(rows, found, strict=True))

    groups = features.families(alone=inside[chosen])
    verdicts = verified([m for group in groups for m in group[: 1 + families.per_family]])
    carried, alone = carry_verdicts(groups, verdicts, features.agree, seeds)
    verdicts.update(carried)
    verdicts.update(verified(alone))
    for position, row in enumerate(chosen):
        for name, value in verdicts[position].columns().items():
            out.loc[out.index[row], name] = value
    return out


def carry_verdicts(
    groups: list[list[int]],
    verdicts: dict[int, Verdict],
    agree: Callable[[int, int, float], bool],
    seeds: Sequence[int],
) -> tuple[dict[int, Verdict], list[int]]:
    """The verdicts carried within families, and the members to verify alone. ``groups``: families of
    candidate positions; ``verdicts``: those verified in full (each family's first members); a member
    carries them only when they are one verdict and ``agree(member, verified, its polished loss)``
    holds for each, else it is verified alone. ``seeds`` name the source (``verified_by = s<seed>``)."""
    carried: dict[int, Verdict] = {}
    alone: list[int] = []
    for group in groups:
        done = [m for m in group if m in verdicts]
        for member in group[len(done) :]:
            if len({verdicts[m].verdict for m in done}) == 1 and all(
                agree(member, m, verdicts[m].loss) for m in done
            ):
                by = f"s{seeds[done[0]]}"
                carried[member] = dataclasses.replace(
                    verdicts[done[0]], stationarity=math.nan, radius=math.nan, verified_by=by
                )
            else:
                alone.append(member)
    return carried, alone


@dataclass(frozen=True)
class _Features:
    """What makes candidates one family: loss ``(C,)``, sorted spectra ``(C, S)`` (S = 0: Lanczos
    extremes only, not compared) and the landscape's symmetry invariants ``(C, m)``; with S = m = 0
    every candidate is a family of its own."""

    loss: np.ndarray
    spectra: np.ndarray
    invariants: np.ndarray
    config: VerifyConfig

    def close(self, a: int, b: int, loss_b: float) -> bool:
        """Run ``a`` matches run ``b`` (whose loss is taken as ``loss_b``) within the tolerances; never
        with neither a spectrum nor invariants to compare (the loss alone does not tell minima apart)."""
        c = self.config
        if self.spectra.shape[1] == 0 and self.invariants.shape[1] == 0:
            return False
        return bool(
            abs(self.loss[a] - loss_b) <= c.family_loss_tol * max(1.0, abs(loss_b))
            and np.all(np.abs(self.spectra[a] - self.spectra[b]) <= c.family_spectrum_tol)
            and np.all(np.abs(self.invariants[a] - self.invariants[b]) <= c.family_invariant_tol)
        )

    def families(self, *, alone: np.ndarray) -> list[list[int]]:
        """Candidates in families, each lowest loss first (compared with its lowest member); ``alone``
        (C,) rows (inside a theorem's hypotheses) are families of their own."""
        groups: list[list[int]] = []
        for r in np.argsort(self.loss, kind="stable").tolist():
            home = next((g for g in groups if not alone[g[0]] and self.close(r, g[0], self.loss[g[0]])), None)
            if home is None or alone[r]:
                groups.append([r])
            else:
                home.append(r)
        return groups

    def agree(self, member: int, verified: int, polished_loss: float) -> bool:
        """A member matches a verified one: its own loss their polished loss, spectra, invariants."""
        return self.close(member, verified, polished_loss)


def due_for_verification(
    labelled: pd.DataFrame, previous_l_star: np.ndarray, *, gap_tol: float
) -> np.ndarray:
    """Rows of ``labelled`` (labelled against its ``l_star`` column) whose verdict must be made (again).

    A certified spurious minimum is due when it has no verdict, or when its verdict was judged against
    ``previous_l_star`` (R,) and its polished loss (``verified_loss``) or re-run loss (``rerun_loss``)
    lies on the other side of ``gap_tol`` from the new L*: those two comparisons are the only places a
    verdict reads L* (:func:`reverify`), so every other verdict stands as it is.
    """
    candidate = (labelled["critical_point"] == "spurious_minimum").to_numpy() & labelled["certified"].astype(
        bool
    ).to_numpy()
    verdict = labelled.get("verdict", pd.Series("", index=labelled.index)).fillna("").astype(str)
    stale = verdict.to_numpy() == ""
    new = labelled["l_star"].to_numpy(dtype=float)
    old = np.asarray(previous_l_star, dtype=float)
    for column in ("verified_loss", "rerun_loss"):
        if column in labelled:
            value = labelled[column].to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                stale |= np.isfinite(value) & ((value - old <= gap_tol) != (value - new <= gap_tol))
    return candidate & stale
