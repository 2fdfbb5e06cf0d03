"""The teacher-student landscape's part of the study report: families of certified spurious minima
(``families.csv``, a section, spectra plots), the certified rate against k and the basin plot against the
excess width n - k. Found through ``study.landscapes.registry`` (``report``); see
:mod:`study.reports.extension`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.landscapes.teacher_student.families import FAMILY_COLUMNS, spurious_families
from study.record import PARAM_PREFIX, CriticalPoint, param_column
from study.record import is_certified_spurious as certified_spurious
from study.reports import plots
from study.reports.hunt import HuntFolder, recorded_fixed
from study.reports.tables import binomial_interval, groups, markdown_table

Families = tuple[pd.DataFrame, list[str]]  # the families table and notes on what was skipped


class TeacherStudentReport:
    """The hooks of :class:`study.reports.extension.LandscapeReport` for teacher-student hunts."""

    def prepare(
        self, hunt: HuntFolder, fixed: dict[str, Any] | None, folder: Path
    ) -> tuple[Families, list[Path]]:
        """Families (``families.csv``, written even when empty)."""
        families = pd.DataFrame(columns=list(FAMILY_COLUMNS))
        notes: list[str] = []
        if len(hunt.runs):
            needs_fixed = not {param_column("k"), param_column("n")} <= set(hunt.runs.columns)
            if fixed is None and needs_fixed:
                fixed = recorded_fixed(hunt)
            families, notes = families_table(hunt, fixed)
        path = folder / "families.csv"
        families.to_csv(path, index=False)
        return (families, notes), [path]

    def configurations(self, hunt: HuntFolder, state: Families, table: pd.DataFrame) -> pd.DataFrame:
        """Adds ``families``: the families among a configuration's certified spurious minima."""
        families = state[0]
        params = [c.removeprefix(PARAM_PREFIX) for c in hunt.param_columns]
        counts = []
        for _, row in table.iterrows():
            match = families
            for name in params:
                if name in match.columns:
                    match = match[match[name] == row[name]]
            counts.append(len(match) if row["certified_spurious"] else 0)
        return table.assign(families=counts)

    def configuration_plots(self, hunt: HuntFolder, table: pd.DataFrame, folder: Path) -> list[Path]:
        if not {"k", "n"} <= set(table.columns):
            return []
        per_kn = _pool(table, ["k", "n"])
        written = []
        if per_kn["k"].nunique() >= 1 and len(per_kn) >= 2:
            written.append(
                plots.rate_vs_k_plot(per_kn, folder / "spurious_rate_vs_k.png", confidence=RATE_CONFIDENCE)
            )
        runs = hunt.runs
        if "param_k" in runs and "lambda_min" in runs and runs["param_k"].nunique() >= 2:
            minima = runs[runs["critical_point"].isin(["global_minimum", "spurious_minimum"])]
            note = ""
            if "param_n" in minima and (minima["param_n"] != minima["param_k"]).any():
                # wider students have flat directions at their global minima: keep n = k
                minima, note = minima[minima["param_n"] == minima["param_k"]], " (runs with n = k)"
            if len(minima):
                written.append(
                    plots.lambda_min_vs_k_plot(
                        minima.assign(k=minima["param_k"]), folder / "lambda_min_vs_k.png", note=note
                    )
                )
        return written

    def sections(self, hunt: HuntFolder, state: Families, lines: list[str], folder: Path) -> list[Path]:
        return _families_section(hunt, state[0], state[1], lines, folder)

    def basin_axis(self, table: pd.DataFrame) -> tuple[pd.DataFrame, str, list[str], str] | None:
        if not {"k", "n"} <= set(table.columns):
            return None
        return table.assign(excess_width=table["n"] - table["k"]), "excess_width", ["k"], "excess width n - k"

    def late_sections(self, hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
        return []


REPORT = TeacherStudentReport()


RATE_CONFIDENCE = 0.99  # the interval bands of the rate-against-k plot


def _pool(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Configurations pooled over the columns other than ``keys`` (counts add up), with
    ``RATE_CONFIDENCE`` Wilson intervals."""
    pooled = table.groupby(keys, as_index=False)[["runs", "certified_spurious"]].sum()
    pooled["rate"] = pooled["certified_spurious"] / pooled["runs"]
    bounds = [
        binomial_interval(c, r, confidence=RATE_CONFIDENCE)
        for c, r in zip(pooled["certified_spurious"], pooled["runs"], strict=True)
    ]
    pooled["rate_low"] = [b[0] for b in bounds]
    pooled["rate_high"] = [b[1] for b in bounds]
    return pooled


def teacher_student_sizes(hunt: HuntFolder, values: dict[str, Any], fixed: dict[str, Any]) -> dict[str, int]:
    """k, n, d of a teacher-student configuration from its parameters, else the pipeline's fixed values."""
    sizes: dict[str, int] = {}
    for name in ("k", "n", "d"):
        value = values.get(param_column(name), fixed.get(name))
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            sizes[name] = int(value)
    if "k" in sizes:
        sizes.setdefault("d", sizes["k"])
    return sizes


def families_table(hunt: HuntFolder, fixed: dict[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Families of certified spurious minima per teacher-student configuration, and notes on what was
    skipped. ``representative`` indexes ``hunt.runs`` (and so runs.csv)."""

    fixed = fixed or {}
    notes: list[str] = []
    tables = []
    for values, group in groups(hunt.runs, hunt.param_columns):
        if not certified_spurious(group).any():
            continue
        sizes = teacher_student_sizes(hunt, values, fixed)
        label = ", ".join(f"{c.removeprefix(PARAM_PREFIX)}={v}" for c, v in values.items()) or "all runs"
        if not {"k", "n"} <= set(sizes):
            notes.append(f"{label}: k or n unknown (not a parameter and no pipeline metadata); no families")
            continue
        theta = hunt.stacked(group, "theta")
        if theta is None or theta.shape[1] != sizes["n"] * sizes["d"]:
            notes.append(f"{label}: end points missing or of the wrong size in trials/*.npz; no families")
            continue
        eigenvalues = hunt.stacked(group, "eigenvalues")
        if eigenvalues is None:
            eigenvalues = np.zeros((len(group), 0))
        identity = (
            bool(group["hyp_orthonormal_teacher"].iloc[0]) if "hyp_orthonormal_teacher" in group else True
        )
        table = spurious_families(
            group.reset_index(drop=True),
            theta,
            eigenvalues,
            k=sizes["k"],
            n=sizes["n"],
            d=sizes["d"],
            identity_teacher=identity,
        )
        table["representative"] = group.index.to_numpy()[table["representative"].to_numpy()]
        for c, v in values.items():
            name = c.removeprefix(PARAM_PREFIX)
            if name not in table.columns:
                table[name] = v
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=list(FAMILY_COLUMNS)), notes
    return pd.concat(tables, ignore_index=True), notes


def _families_section(
    hunt: HuntFolder, families: pd.DataFrame, notes: list[str], lines: list[str], folder: Path
) -> list[Path]:
    lines += ["", "## Families of certified spurious minima", ""]
    lines.append(
        "End points are grouped modulo permutations of student neurons and, for the identity teacher, of "
        "input coordinates with teachers: one family when the loss, the sorted Hessian spectrum and the "
        "sorted rows and columns of W agree within tolerances "
        "(`study.landscapes.teacher_student.families`). `n_large`: "
        "eigenvalues above 1 (the ones growing like k); `isotropy_rows`: most rows equal up to a "
        "permutation of coordinates; `row_cells`: sizes of the classes of rows that colour refinement "
        "cannot tell apart; `representative`: its row in runs.csv (0-based)."
    )
    for note in notes:
        lines += ["", f"- {note}"]
    if families.empty:
        lines += ["", "No families: no certified spurious minimum with stored end points."]
        return []
    shown = families[
        ["k", "n", "family", "loss", "runs", "lambda_min", "lambda_max", "eig_median", "n_large"]
        + ["isotropy_rows", "row_cells", "representative", "key"]
    ]
    lines += ["", markdown_table(shown)]
    l_star = float(hunt.runs["l_star"].median()) if "l_star" in hunt.runs else 0.0
    written = [plots.family_levels_plot(families, folder / "family_losses.png", l_star=l_star)]
    written += _spectra_plots(hunt, families, folder)
    return written


GLOBAL_SPECTRA_DRAWN = 40  # global-minimum spectra drawn per configuration (they nearly coincide)


def _spectra_panels(
    hunt: HuntFolder, families: pd.DataFrame
) -> list[tuple[int, int, int, int, np.ndarray, dict[str, np.ndarray]]]:
    """Per (k, n) with families: (k, n, global runs, spurious runs, global spectra drawn ``(G, P)``,
    family label -> representative spectrum), in order of k then n."""
    runs = hunt.runs
    panels = []
    for (k, n), chosen in families.groupby(["k", "n"], sort=True):
        same = runs.loc[chosen["representative"]]
        config = runs
        for column in hunt.param_columns:  # the representatives' configuration (first one's)
            config = config[config[column] == same[column].iloc[0]]
        global_rows = config[config["critical_point"] == CriticalPoint.GLOBAL_MINIMUM]
        drawn = global_rows.head(GLOBAL_SPECTRA_DRAWN)
        global_spectra = hunt.stacked(drawn, "eigenvalues") if len(drawn) else np.zeros((0, 0))
        spurious_spectra = hunt.stacked(same, "eigenvalues")
        if spurious_spectra is None or spurious_spectra.shape[1] == 0 or global_spectra is None:
            continue
        labels = [
            f"family {f}: {int(r)} run{'s' * (int(r) != 1)}, loss {loss:.4g}"
            for f, r, loss in zip(chosen["family"], chosen["runs"], chosen["loss"], strict=True)
        ]
        spurious = dict(zip(labels, spurious_spectra, strict=True))
        panels.append((int(k), int(n), len(global_rows), int(chosen["runs"].sum()), global_spectra, spurious))
    return panels


def _spectra_plots(hunt: HuntFolder, families: pd.DataFrame, folder: Path) -> list[Path]:
    """Spectra at global vs spurious minima: in detail for the configuration with the most families,
    and across every (k, n) with families in one figure."""
    panels = _spectra_panels(hunt, families)
    if not panels:
        return []

    def shown(global_runs: int, drawn: int) -> str:
        return f"{global_runs}" if drawn == global_runs else f"{drawn} of {global_runs}"

    k, n, global_runs, spurious_runs, global_spectra, spurious = max(
        panels, key=lambda p: (len(p[5]), p[3], p[0], -p[1])
    )
    written = [
        plots.spectra_comparison_plot(
            global_spectra,
            spurious,
            folder / "hessian_spectra.png",
            title=f"Hessian spectra at k={k}, n={n}: {shown(global_runs, len(global_spectra))} "
            f"global-minimum runs vs {len(spurious)} spurious famil{'y' if len(spurious) == 1 else 'ies'} "
            f"({spurious_runs} runs)",
        )
    ]
    if len(panels) >= 2:
        written.append(
            plots.spectra_across_k_plot(
                [
                    (f"k={k}, n={n}: {shown(g, len(gs))} global, {s} spurious runs", gs, sp)
                    for k, n, g, s, gs, sp in panels
                ],
                folder / "hessian_spectra_across_k.png",
                title="Sorted Hessian spectra at global (grey) and spurious minima across k",
            )
        )
    return written
