"""Plots (matplotlib, Agg backend): Hessian spectra and study summaries as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def spectrum_plot(eigenvalues: np.ndarray, path: Path, *, title: str = "Hessian spectrum") -> Path:
    """Sorted eigenvalues (left) and their histogram on a symmetric log scale (right)."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(ev, ".", ms=4)
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_xlabel("index")
    ax1.set_ylabel("eigenvalue")
    ax1.set_yscale("symlog", linthresh=1e-3)
    ax2.hist(ev, bins=min(60, max(10, len(ev) // 2)))
    ax2.set_xlabel("eigenvalue")
    ax2.set_ylabel("count")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
