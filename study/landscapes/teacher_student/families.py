"""Families of spurious minima modulo the teacher-student symmetry (SCIENCE.md L1, Arjevani & Field).

F(W) for ``W: (n, d)`` is invariant under W -> P W (P permutes student neurons, the rows) and, when
the teacher is V = I_k, under W -> P W Q with Q permuting the k teacher coordinates (the columns, with
the teachers). Padded coordinates k..d-1 (d > k) are permuted among themselves as well; their full
O(d - k) symmetry is not quotiented.

What is guaranteed, and what is not:

* :func:`symmetry_invariants` is exactly invariant: P W Q gives a bitwise identical vector (rows with
  their entries sorted, in lexicographic order, then columns likewise; sorting only moves floats).
* :func:`spurious_families` puts two end points in one family when their loss, sorted Hessian spectrum
  and invariants agree within tolerances. So end points related by a symmetry (up to numerical noise
  below the tolerances) are never split; two inequivalent minima with equal loss, spectrum and
  row/column multisets would be merged (not excluded, never observed: ``canonical_consistent`` flags a
  family whose members' canonical forms disagree).
* :func:`canonical_form` orders rows and columns by colour refinement (1-dimensional Weisfeiler-Leman on
  the bipartite rows x columns graph weighted by the entries), individualizing one member of the first
  non-singleton cell when refinement stalls. The result is the same matrix for every P W Q when
  refinement alone separates all rows and columns (``exact``), and more generally when every
  individualized cell is an orbit of the matrix's automorphism group, as for minima whose isotropy
  permutes equal rows; otherwise it is a deterministic ordering that equivalent inputs may not share.
  Exact canonization in general is graph canonization (individualization with a full search tree).

Entries closer than ``tol`` within one matrix are treated as equal when ordering (noise-robust), and
the returned representative holds the original, unrounded entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.record.schema import family_key, is_certified_spurious

DEFAULT_TOL = 1e-6
FAMILY_COLUMNS = (
    "family", "key", "k", "n", "loss", "loss_spread", "runs", "lambda_min", "lambda_max",
    "eig_median", "n_large", "representative", "seed", "isotropy_rows", "row_cells",
    "canonical_exact", "canonical_consistent",
)  # fmt: skip


@dataclass(frozen=True)
class CanonicalForm:
    """``matrix = W[row_order][:, col_order]``; ``exact`` when refinement needed no individualization."""

    matrix: np.ndarray  # (n, d)
    row_order: np.ndarray  # (n,)
    col_order: np.ndarray  # (d,)
    exact: bool
    row_cells: tuple[int, ...]  # sizes of the stable row colour classes before individualization


def snap(values: np.ndarray, tol: float = DEFAULT_TOL) -> np.ndarray:
    """Replace each entry by the smallest entry of its cluster (sorted values split at gaps > tol)."""
    flat = values.ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.concatenate([[True], np.diff(ordered) > tol])
    firsts = ordered[starts][np.cumsum(starts) - 1]
    out = np.empty_like(flat)
    out[order] = firsts
    return out.reshape(values.shape) + 0.0  # + 0.0 turns -0.0 into 0.0


def _dense_rank(keys: np.ndarray) -> np.ndarray:
    """Rank of each row of ``keys: (m, L)`` among the distinct rows, in lexicographic order, ``(m,)``."""
    if keys.shape[1] == 0:
        return np.zeros(keys.shape[0], dtype=np.int64)
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    new = np.concatenate([[True], np.any(ordered[1:] != ordered[:-1], axis=1)])
    ranks = np.empty(keys.shape[0], dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ranks


def _signatures(values: np.ndarray, own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per row: its colour, then the pairs (partner colour, entry) sorted, ``(m, 1 + 2 L)``."""
    m, length = values.shape
    colours = np.broadcast_to(partner.astype(float), (m, length))
    order = np.lexsort((values, colours), axis=-1)  # by partner colour, then by value
    pairs = np.stack([np.take_along_axis(colours, order, -1), np.take_along_axis(values, order, -1)], axis=-1)
    return np.concatenate([own[:, None].astype(float), pairs.reshape(m, 2 * length)], axis=1)


def _refine(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, permute_columns: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Colour refinement to a stable colouring (colours are dense ranks of invariant signatures)."""
    while True:
        new_rows = _dense_rank(_signatures(values, rows, cols))
        new_cols = _dense_rank(_signatures(values.T, cols, new_rows)) if permute_columns else cols
        if len(np.unique(new_rows)) == len(np.unique(rows)) and len(np.unique(new_cols)) == len(
            np.unique(cols)
        ):
            return new_rows, new_cols
        rows, cols = new_rows, new_cols


def _individualize(colours: np.ndarray) -> np.ndarray | None:
    """Split the first (lowest colour) non-singleton cell: its lowest index comes first. None if discrete."""
    counts = np.bincount(colours)
    tied = np.flatnonzero(counts > 1)
    if len(tied) == 0:
        return None
    cell = tied[0]
    member = int(np.flatnonzero(colours == cell)[0])
    out = 2 * colours
    out[member] -= 1
    return _dense_rank(out[:, None].astype(float))


def _column_classes(d: int, k: int | None, permute_columns: bool) -> np.ndarray:
    """Initial column colours: teacher coordinates 0, padded ones 1; or all distinct (no column moves)."""
    if not permute_columns:
        return np.arange(d)
    classes = np.zeros(d, dtype=np.int64)
    if k is not None and k < d:
        classes[k:] = 1
    return classes


def canonical_form(
    W: np.ndarray, *, identity_teacher: bool = True, k: int | None = None, tol: float = DEFAULT_TOL
) -> CanonicalForm:
    """A representative of ``W: (n, d)`` modulo row permutations and, if ``identity_teacher``, column
    permutations within the teacher coordinates (first ``k``, default all) and within the padding."""
    W = np.asarray(W, dtype=float)
    n, d = W.shape
    values = snap(W, tol)
    rows = np.zeros(n, dtype=np.int64)
    cols = _column_classes(d, k, identity_teacher)
    rows, cols = _refine(values, rows, cols, identity_teacher)
    row_cells = tuple(sorted(np.bincount(rows).tolist(), reverse=True))
    exact = len(np.unique(rows)) == n and len(np.unique(cols)) == d
    while True:
        split = _individualize(rows)
        if split is not None:
            rows = split
        elif identity_teacher and (split := _individualize(cols)) is not None:
            cols = split
        else:
            break
        rows, cols = _refine(values, rows, cols, identity_teacher)
    row_order = np.argsort(rows, kind="stable")
    col_order = np.argsort(cols, kind="stable")
    return CanonicalForm(W[row_order][:, col_order], row_order, col_order, exact, row_cells)


def symmetry_invariants(
    W: np.ndarray, *, identity_teacher: bool = True, k: int | None = None, tol: float = DEFAULT_TOL
) -> np.ndarray:
    """Rows (entries sorted within each column class if columns move) in lexicographic order, then
    columns (entries sorted) likewise; ``(2 n d,)``, exactly invariant under the symmetry."""
    W = np.asarray(W, dtype=float)
    n, d = W.shape
    classes = _column_classes(d, k, identity_teacher)

    def lexicographic(lines: np.ndarray) -> np.ndarray:
        # lines in lexicographic order of their snapped values (noise cannot swap distinct lines)
        return lines[np.lexsort(snap(lines, tol).T[::-1])] if lines.size else lines

    if identity_teacher:  # sort each row's entries within each column class
        row_lines = np.concatenate([np.sort(W[:, classes == g], axis=1) for g in np.unique(classes)], axis=1)
    else:
        row_lines = W
    row_part = lexicographic(row_lines)  # (n, d)
    col_lines = np.sort(W.T, axis=1)  # (d, n): each column's entries, sorted
    if identity_teacher:
        col_part = np.concatenate([lexicographic(col_lines[classes == g]) for g in np.unique(classes)])
    else:
        col_part = col_lines
    return np.concatenate([row_part.ravel(), col_part.ravel()]) + 0.0


def isotropy_rows(W: np.ndarray, *, identity_teacher: bool = True, tol: float = DEFAULT_TOL) -> int:
    """The largest number of rows equal up to a permutation of coordinates (equal rows if not)."""
    W = np.asarray(W, dtype=float)
    lines = np.sort(W, axis=1) if identity_teacher else W
    return int(np.bincount(_dense_rank(snap(lines, tol))).max())


def spurious_families(
    frame: pd.DataFrame,
    theta: np.ndarray,
    eigenvalues: np.ndarray,
    *,
    k: int,
    n: int,
    identity_teacher: bool = True,
    d: int | None = None,
    loss_tol: float = 1e-8,
    spectrum_tol: float = 1e-4,
    weight_tol: float = 1e-5,
    large_eigenvalue: float = 1.0,
) -> pd.DataFrame:
    """Certified spurious minima of one teacher-student configuration grouped into families.

    ``frame`` rows align with ``theta: (R, n*d)`` and ``eigenvalues: (R, n*d)`` (or ``(R, 0)``: then the
    spectrum is not compared and its summary comes from ``frame``). Returns one row per family, lowest
    loss first: loss, runs, spectrum summary (``n_large`` counts eigenvalues above ``large_eigenvalue``,
    the Theta(k) ones), ``representative`` (a row index into the arrays), isotropy hints.
    """
    dim = k if d is None else d
    chosen = np.flatnonzero(is_certified_spurious(frame).to_numpy())
    chosen = chosen[np.argsort(frame["loss"].to_numpy()[chosen], kind="stable")]
    has_spectrum = eigenvalues.ndim == 2 and eigenvalues.shape[1] > 0
    families: list[list[int]] = []
    features: list[tuple[float, np.ndarray, np.ndarray]] = []
    for index in chosen:
        W = theta[index].reshape(n, dim)
        loss = float(frame["loss"].iloc[index])
        spectrum = np.sort(eigenvalues[index]) if has_spectrum else np.zeros(0)
        invariants = symmetry_invariants(W, identity_teacher=identity_teacher, k=k)
        for members, (loss0, spectrum0, invariants0) in zip(families, features, strict=True):
            if (
                abs(loss - loss0) <= loss_tol * max(1.0, abs(loss0))
                and (not has_spectrum or np.max(np.abs(spectrum - spectrum0)) <= spectrum_tol)
                and np.max(np.abs(invariants - invariants0)) <= weight_tol
            ):
                members.append(int(index))
                break
        else:
            families.append([int(index)])
            features.append((loss, spectrum, invariants))
    rows = []
    for number, (members, (loss, spectrum, invariants)) in enumerate(zip(families, features, strict=True)):
        rep = members[0]
        form = canonical_form(theta[rep].reshape(n, dim), identity_teacher=identity_teacher, k=k)
        consistent = all(
            np.max(
                np.abs(
                    canonical_form(theta[m].reshape(n, dim), identity_teacher=identity_teacher, k=k).matrix
                    - form.matrix
                )
            )
            <= weight_tol
            for m in members[1:]
        )
        losses = frame["loss"].to_numpy()[members]
        if has_spectrum:
            summary = {
                "lambda_min": float(spectrum[0]),
                "lambda_max": float(spectrum[-1]),
                "eig_median": float(np.median(spectrum)),
                "n_large": int(np.sum(spectrum > large_eigenvalue)),
            }
        else:
            summary = {
                "lambda_min": float(frame["lambda_min"].iloc[rep]),
                "lambda_max": float(frame["lambda_max"].iloc[rep]),
                "eig_median": float("nan"),
                "n_large": -1,
            }
        rows.append(
            {
                "family": number,
                "key": family_key(loss, spectrum, invariants),
                "k": k,
                "n": n,
                "loss": loss,
                "loss_spread": float(losses.max() - losses.min()),
                "runs": len(members),
                **summary,
                "representative": rep,
                "seed": int(frame["seed"].iloc[rep]) if "seed" in frame else -1,
                "isotropy_rows": isotropy_rows(theta[rep].reshape(n, dim), identity_teacher=identity_teacher),
                "row_cells": "+".join(map(str, form.row_cells)),
                "canonical_exact": form.exact,
                "canonical_consistent": consistent,
            }
        )
    return pd.DataFrame(rows, columns=list(FAMILY_COLUMNS))
