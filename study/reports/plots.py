"""Plots (matplotlib's object API, no pyplot and no global backend): Hessian spectra and study summaries
as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def spectrum_plot(eigenvalues: np.ndarray, path: Path, *, title: str = "Hessian spectrum") -> Path:
    """Sorted Hessian eigenvalues as one small figure; cheap enough to draw for every counterexample."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))
    fig = Figure(figsize=(6, 3))
    ax = fig.add_axes((0.1, 0.16, 0.86, 0.72))
    ax.plot(ev, ".", ms=4)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("index (sorted)")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=90)
    return path


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _finish(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def rate_vs_k_plot(table: pd.DataFrame, path: Path) -> Path:
    """Certified spurious rate against the teacher size k, one line per excess width n - k, with 95%
    intervals. ``table`` has columns k, n, rate, rate_low, rate_high (one row per configuration)."""
    fig, ax = _subplots(figsize=(6, 4))
    table = table.assign(excess=table["n"] - table["k"])
    for excess, rows in table.groupby("excess", sort=True):
        rows = rows.sort_values("k")
        error = [rows["rate"] - rows["rate_low"], rows["rate_high"] - rows["rate"]]
        label = "n = k" if excess == 0 else f"n = k{int(excess):+d}"
        offset = 0.06 * float(excess)  # keep overlapping error bars apart
        ax.errorbar(rows["k"] + offset, rows["rate"], yerr=error, marker="o", capsize=3, label=label)
    ax.set_xlabel("teacher size k")
    ax.set_ylabel("certified spurious rate")
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_ylim(bottom=0)
    ax.legend(title="student width")
    ax.set_title("Certified spurious minima vs k (95% Wilson intervals)", fontsize=10)
    return _finish(fig, path)


def family_levels_plot(families: pd.DataFrame, path: Path) -> Path:
    """Loss of each family of spurious minima against k; marker area grows with its number of runs."""
    fig, ax = _subplots(figsize=(6, 4))
    families = families.assign(excess=families["n"] - families["k"])
    largest = max(1, int(families["runs"].max()))
    for excess, rows in families.groupby("excess", sort=True):
        label = "n = k" if excess == 0 else f"n = k{int(excess):+d}"
        sizes = 30 + 270 * rows["runs"] / largest
        ax.scatter(rows["k"], rows["loss"], s=sizes, alpha=0.6, edgecolors="k", label=label)
    ax.set_xlabel("teacher size k")
    ax.set_ylabel("loss of the family")
    ax.set_xticks(sorted(families["k"].unique()))
    ax.legend(title=f"student width (area ~ runs, max {largest})")
    ax.set_title("Loss levels of families of certified spurious minima", fontsize=10)
    return _finish(fig, path)


def spectra_comparison_plot(
    global_spectra: np.ndarray, spurious: dict[str, np.ndarray], path: Path, *, title: str
) -> Path:
    """Sorted Hessian eigenvalues (left) and their pooled histograms (right) at global minima
    ``(G, P)`` and at spurious family representatives (label -> ``(P,)``)."""
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(10, 3.8))
    for i, ev in enumerate(global_spectra):
        ax1.plot(np.sort(ev), color="0.55", lw=1, label="global minima" if i == 0 else None)
    for label, ev in spurious.items():
        ax1.plot(np.sort(ev), ".-", ms=3, lw=0.8, label=label)
    ax1.set_yscale("symlog", linthresh=1e-2)
    ax1.set_xlabel("eigenvalue index (sorted)")
    ax1.set_ylabel("Hessian eigenvalue")
    ax1.legend(fontsize=7)
    pooled = [np.ravel(global_spectra), np.concatenate(list(spurious.values()))]
    low = min(float(np.min(p)) for p in pooled if len(p))
    high = max(float(np.max(p)) for p in pooled if len(p))
    bins = np.linspace(low, high, 50)
    if len(pooled[0]):
        ax2.hist(pooled[0], bins=bins, density=True, histtype="step", lw=1.5, color="0.4", label="global")
    ax2.hist(pooled[1], bins=bins, density=True, histtype="step", lw=1.5, color="C3", label="spurious")
    ax2.set_xlabel("Hessian eigenvalue")
    ax2.set_ylabel("density")
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


def basin_plot(table: pd.DataFrame, x: str, lines: list[str], path: Path, *, xlabel: str) -> Path:
    """Fraction of runs reaching L* (with 95% intervals) and of monotone straight lines from the
    initialization, against ``x``; one line per value of ``lines``."""
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(10, 3.8), sharex=True)
    groups = table.groupby(lines, sort=True) if lines else [((), table)]
    categorical = not pd.api.types.is_numeric_dtype(table[x])
    ticks = sorted(table[x].astype(str).unique()) if categorical else sorted(table[x].unique())
    count = max(1, len(groups) if lines else 1)
    for number, (key, rows) in enumerate(groups):
        rows = rows.sort_values(x)
        xs = np.asarray(
            [ticks.index(v) for v in rows[x].astype(str)] if categorical else rows[x], dtype=float
        )
        spacing = 1.0 if categorical or len(ticks) < 2 else float(np.min(np.diff(ticks)))
        xs = xs + 0.05 * spacing * (number - (count - 1) / 2)  # keep overlapping lines apart
        values = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c}={v}" for c, v in zip(lines, values, strict=True)) or None
        error = [rows["reached"] - rows["reached_low"], rows["reached_high"] - rows["reached"]]
        ax1.errorbar(xs, rows["reached"], yerr=error, marker="o", capsize=3, label=label)
        ax2.plot(xs, rows["monotone"], marker="s", label=label)
    for ax, ylabel in ((ax1, "fraction reaching L*"), (ax2, "fraction of monotone straight lines")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.03, 1.03)
        if categorical:
            ax.set_xticks(range(len(ticks)), ticks)
        else:
            ax.set_xticks(ticks)
        if lines:
            ax.legend(fontsize=7)
    fig.suptitle("Quality of the initial basin (95% Wilson intervals)", fontsize=10)
    return _finish(fig, path)


def accuracy_bars_plot(table: pd.DataFrame, labels: list[str], path: Path) -> Path:
    """Mean train and test accuracy per configuration (bars, +- one standard deviation)."""
    fig, ax = _subplots(figsize=(max(5.0, 1.2 * len(labels) + 2), 4))
    xs = np.arange(len(table))
    width = 0.38
    for shift, column, color in ((-width / 2, "train_acc", "C0"), (width / 2, "test_acc", "C1")):
        if column not in table:
            continue
        sd = table.get(f"{column}_sd", pd.Series(np.nan, index=table.index)).fillna(0.0)
        ax.bar(xs + shift, table[column], width, yerr=sd, capsize=3, color=color, label=column)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right")
    ax.set_title("Train and test accuracy at the end of training (mean +- sd over runs)", fontsize=10)
    return _finish(fig, path)
