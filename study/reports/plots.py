"""Plots (matplotlib's object API, no pyplot and no global backend): Hessian spectra and study summaries
as PNG files, their labels inside the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def spectrum_plot(
    eigenvalues: np.ndarray,
    path: Path,
    *,
    title: str = "Hessian spectrum",
    reference: np.ndarray | None = None,
    reference_label: str = "a global minimum",
) -> Path:
    """Sorted Hessian eigenvalues of one run on a symlog axis (so lambda_min stays apart from 0), with
    lambda_min marked and, when given, the sorted spectrum of a reference point (a global minimum)."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    if reference is not None and len(reference):
        ax.plot(np.sort(reference), color="0.6", lw=1.2, label=reference_label)
    ax.plot(ev, ".", ms=4, color="C3", label="this run")
    ax.axhline(0, color="k", lw=0.6)
    ax.axhline(ev[0], color="C3", lw=0.8, ls="--", label=f"lambda_min = {ev[0]:.3g}")
    _symlog(ax, ev, reference)
    ax.set_xlabel("eigenvalue index (sorted)")
    ax.set_ylabel("Hessian eigenvalue (symlog)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    return _finish(fig, path, dpi=90)


def family_spectra_plot(
    spectra: dict[str, np.ndarray],
    path: Path,
    *,
    title: str,
    reference: np.ndarray | None = None,
    reference_label: str = "a global minimum",
) -> Path:
    """Sorted Hessian spectra of several families of critical points, one labelled line each (symlog
    axis), beside a reference spectrum: one figure for all families of a trial (drawn once, not per run)."""
    fig = Figure(figsize=(7.2, 4.0))  # fixed margins: a constrained layout doubled the drawing time
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.92)
    ax = fig.subplots()
    if reference is not None and len(reference):
        ax.plot(np.sort(reference), color="0.5", lw=2.0, ls=":", label=reference_label)
    colors = _family_colors(len(spectra))
    for (label, eigenvalues), color in zip(spectra.items(), colors, strict=True):
        ax.plot(np.sort(np.asarray(eigenvalues, dtype=float)), lw=1.1, color=color, label=label)
    ax.axhline(0, color="k", lw=0.6)
    _symlog(ax, reference, *spectra.values())
    ax.set_xlabel("eigenvalue index (sorted)")
    ax.set_ylabel("Hessian eigenvalue (symlog)")
    ax.legend(fontsize=6, loc="upper left", ncol=2 if len(spectra) > 8 else 1)
    ax.set_title(title, fontsize=8)
    return _finish(fig, path, dpi=90)


def _family_colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis" if count > 10 else "tab10"]
    return [cmap(i / max(1, count - 1)) if count > 10 else cmap(i) for i in range(count)]


def _symlog(ax: Any, *spectra: np.ndarray | None) -> None:
    """A symlog y axis for eigenvalues; starting at 0 when no eigenvalue is negative."""
    linthresh = _linthresh(*spectra)
    ax.set_yscale("symlog", linthresh=linthresh)
    lowest = min(float(np.min(s)) for s in spectra if s is not None and np.size(s))
    if lowest >= 0:
        ax.set_ylim(bottom=0.0)


def _linthresh(*spectra: np.ndarray | None) -> float:
    """Linear range of a symlog axis: below the smallest nonzero |eigenvalue| shown (within 1e-6..1e-2),
    so lambda_min sits on the log part, away from 0."""
    values = np.concatenate([np.abs(np.ravel(s)) for s in spectra if s is not None and np.size(s)])
    positive = values[values > 1e-12]
    smallest = float(positive.min()) if len(positive) else 1e-2
    return float(min(1e-2, max(1e-6, smallest / 2)))


def _finish(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    fig.savefig(path, dpi=dpi)
    return path


def _width_label(excess: float) -> str:
    return "n = k" if excess == 0 else f"n = k{int(excess):+d}"


def rate_vs_k_plot(table: pd.DataFrame, path: Path, *, confidence: float = 0.99) -> Path:
    """Certified spurious rate against the teacher size k, one line per excess width n - k, with shaded
    Wilson interval bands at ``confidence`` and the counts (x/N) beside each point. ``table`` has columns
    k, n, runs, certified_spurious, rate, rate_low, rate_high (one row per configuration)."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    table = table.assign(excess=table["n"] - table["k"])
    top = float(np.nanmax(table["rate_high"])) if len(table) else 1.0
    markers = ("o", "s", "^", "D", "v")
    for number, (excess, rows) in enumerate(table.groupby("excess", sort=True)):
        rows = rows.sort_values("k")
        shift = 0.06 * number  # series whose rates coincide (often all 0) stay visible side by side
        (line,) = ax.plot(
            rows["k"] + shift,
            rows["rate"],
            marker=markers[number % len(markers)],
            ms=4,
            clip_on=False,
            label=_width_label(float(excess)),
        )
        color = line.get_color()
        ax.fill_between(rows["k"] + shift, rows["rate_low"], rows["rate_high"], color=color, alpha=0.12, lw=0)
        for edge in ("rate_low", "rate_high"):
            ax.plot(rows["k"] + shift, rows[edge], color=color, lw=0.6, ls=":")
        for k, rate, hits, runs in zip(
            rows["k"], rows["rate"], rows["certified_spurious"], rows["runs"], strict=True
        ):
            if int(hits) == 0:
                continue  # unlabelled points are 0 of their runs (the title says so)
            ax.annotate(
                f"{int(hits)}/{int(runs)}",
                (k + shift, rate),
                textcoords="offset points",
                xytext=(5, 4 + 10 * number),
                fontsize=6.5,
                color=color,
            )
    ax.set_xlabel("teacher size k (input dimension d = k)")
    ax.set_ylabel("fraction of runs ending at a certified spurious minimum")
    ks = sorted(table["k"].unique())
    ax.set_xticks(ks if len(ks) <= 20 else ks[:: max(1, len(ks) // 12)])
    ax.set_ylim(-0.02 * max(top, 0.05), max(top, 0.05) * 1.12)
    ax.axhline(0, color="0.7", lw=0.6, zorder=0)
    ax.legend(title="student width n", fontsize=8)
    runs = int(table["runs"].sum())
    ax.set_xlim(min(ks) - 0.5, max(ks) + 0.9)
    ax.set_title(
        f"Certified spurious minima vs k: {runs} runs in {len(table)} configurations\n"
        f"bands: {confidence:.0%} Wilson intervals; labels: certified spurious / runs (none: 0)",
        fontsize=9,
    )
    return _finish(fig, path)


def lambda_min_vs_k_plot(runs: pd.DataFrame, path: Path, *, note: str = "") -> Path:
    """The smallest Hessian eigenvalue at every global and spurious minimum against k (log scale; one
    dot per run, jittered in k, with the median per k and class as a line). ``runs`` has columns k,
    critical_point, lambda_min."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    floor = 1e-8
    styles = {"global_minimum": ("0.45", "global minima"), "spurious_minimum": ("tab:red", "spurious minima")}
    jitter = np.random.default_rng(0)
    for cls, (color, label) in styles.items():
        rows = runs[runs["critical_point"] == cls]
        if not len(rows):
            continue
        values = rows["lambda_min"].to_numpy(dtype=float).clip(min=floor)
        ks = rows["k"].to_numpy(dtype=float)
        ax.scatter(ks + jitter.uniform(-0.25, 0.25, len(ks)), values, s=5, color=color, alpha=0.35, lw=0)
        median = rows.assign(v=values).groupby("k")["v"].median()
        ax.plot(
            median.index,
            median.to_numpy(),
            color=color,
            marker="_",
            ms=12,
            lw=1.2,
            label=f"{label} ({len(rows)} runs; line: median)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("teacher size k")
    ax.set_ylabel("lambda_min of the Hessian at the end point")
    ax.legend(fontsize=8)
    ax.set_title(
        f"Smallest Hessian eigenvalue at minima vs k{note}\n(values below {floor:g} drawn at {floor:g})",
        fontsize=9,
    )
    return _finish(fig, path)


def family_levels_plot(families: pd.DataFrame, path: Path, *, l_star: float = 0.0) -> Path:
    """Loss of each family of spurious minima against k, with L* for reference; marker area grows with
    its number of runs, and each family is labelled with that number."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    families = families.assign(excess=families["n"] - families["k"])
    largest = max(1, int(families["runs"].max()))
    for number, (excess, rows) in enumerate(families.groupby("excess", sort=True)):
        sizes = 30 + 270 * rows["runs"] / largest
        offset = 0.08 * float(number)
        color = f"C{number}"
        ax.scatter(
            rows["k"] + offset,
            rows["loss"],
            s=sizes,
            alpha=0.6,
            edgecolors="k",
            color=color,
            label=_width_label(float(excess)),
        )
        for k, loss, runs in zip(rows["k"], rows["loss"], rows["runs"], strict=True):
            ax.annotate(
                f"{int(runs)}",
                (k + offset, loss),
                textcoords="offset points",
                xytext=(7, 3),
                fontsize=7,
                color=color,
            )
    ax.axhline(l_star, color="k", lw=0.8, ls="--", label=f"L* = {l_star:g} (global minimum)")
    ax.set_xlabel("teacher size k")
    ax.set_ylabel("loss of the family")
    ax.set_xticks(sorted(families["k"].unique()))
    ks = families["k"].to_numpy(dtype=float)
    ax.set_xlim(ks.min() - 0.5, ks.max() + 0.7)
    ax.set_ylim(bottom=min(l_star, float(families["loss"].min())) - 0.05 * float(families["loss"].max()))
    ax.legend(title="student width (area, label: runs)", fontsize=8)
    ax.set_title(
        f"Loss levels of {len(families)} families of certified spurious minima "
        f"({int(families['runs'].sum())} runs)",
        fontsize=9,
    )
    return _finish(fig, path)


def spectra_comparison_plot(
    global_spectra: np.ndarray, spurious: dict[str, np.ndarray], path: Path, *, title: str
) -> Path:
    """Sorted Hessian eigenvalues (left) and their pooled histograms (right) at global minima
    ``(G, P)`` and at spurious family representatives (label -> ``(P,)``)."""
    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    _sorted_spectra(ax1, global_spectra, spurious)
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


def _sorted_spectra(ax: Any, global_spectra: np.ndarray, spurious: dict[str, np.ndarray]) -> None:
    """Sorted spectra on a symlog axis: global minima in grey, spurious ones in colour."""
    for i, ev in enumerate(global_spectra):
        label = f"global minima ({len(global_spectra)})" if i == 0 else None
        ax.plot(np.sort(ev), color="0.55", lw=1, label=label)
    for label, ev in spurious.items():
        ax.plot(np.sort(ev), ".-", ms=3, lw=0.8, label=label)
    ax.axhline(0, color="k", lw=0.5)
    _symlog(ax, *global_spectra, *spurious.values())
    ax.set_xlabel("eigenvalue index (sorted)")
    ax.set_ylabel("Hessian eigenvalue (symlog)")


def spectra_across_k_plot(
    panels: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: Path, *, title: str
) -> Path:
    """One panel per configuration (title, global spectra ``(G, P)``, spurious label -> ``(P,)``): the
    sorted spectra at global and spurious minima side by side across k, on one symlog scale."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True)).ravel()
    for ax, (label, global_spectra, spurious) in zip(axes, panels, strict=False):
        _sorted_spectra(ax, global_spectra, spurious)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


def basin_plot(table: pd.DataFrame, x: str, lines: list[str], path: Path, *, xlabel: str) -> Path:
    """Fraction of runs reaching L* (with 95% intervals) and of monotone straight lines from the
    initialization, against ``x``; one line per value of ``lines``."""
    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharex=True)
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
        bars = ax1.errorbar(
            xs, rows["reached"], yerr=error, marker="o", capsize=3, label=label, clip_on=False
        )
        ax2.plot(xs, rows["monotone"], marker="s", label=label, clip_on=False)
        if "runs" in rows:
            for x_at, fraction, runs in zip(xs, rows["reached"], rows["runs"], strict=True):
                ax1.annotate(
                    f"{round(fraction * runs)}/{int(runs)}",
                    (x_at, fraction),
                    textcoords="offset points",
                    xytext=(5, 4 - 10 * (number % 3)),
                    fontsize=7,
                    color=bars[0].get_color(),
                )
    for ax, ylabel in ((ax1, "fraction reaching L*"), (ax2, "fraction of monotone straight lines")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.03, 1.1)
        if categorical:
            ax.set_xticks(range(len(ticks)), ticks)
        else:
            ax.set_xticks(ticks)
        if lines:
            ax.legend(fontsize=7)
    runs = f"{int(table['runs'].sum())} runs, " if "runs" in table else ""
    fig.suptitle(
        f"Quality of the initial basin: {runs}{len(table)} configurations (95% Wilson intervals; "
        "labels: reached/runs)",
        fontsize=10,
    )
    return _finish(fig, path)


def accuracy_bars_plot(table: pd.DataFrame, labels: list[str], path: Path) -> Path:
    """Mean train and test accuracy per configuration (bars, +- one standard deviation)."""
    fig = Figure(figsize=(max(5.0, 1.2 * len(labels) + 2), 4), layout="constrained")
    ax = fig.subplots()
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


def pareto_plot(values: pd.DataFrame, front: pd.Series, path: Path) -> Path:
    """Completed trials of a two-objective hunt (the first two columns of ``values``, named by them),
    the Pareto front highlighted and joined in order of the first objective."""
    x, y = values.columns[:2]
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(values[x], values[y], s=14, color="0.6", label="trials")
    best = values[front.to_numpy()].sort_values(x)
    ax.plot(best[x], best[y], "o-", color="C3", ms=5, label="Pareto front")
    ax.set_xlabel(str(x))
    ax.set_ylabel(str(y))
    ax.legend(fontsize=8)
    ax.set_title("Pareto front of the hunt", fontsize=9)
    return _finish(fig, path)
