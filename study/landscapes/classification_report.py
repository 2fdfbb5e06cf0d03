"""The classification landscape's part of the study report (SCIENCE.md L5): accuracy per configuration
and the test-accuracy gap of adversarially initialized runs to the random-initialization baseline.
Found through ``study.landscapes.registry`` (``report``); see :mod:`study.reports.extension`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from study.landscapes.classification import baseline_gap
from study.record import PARAM_PREFIX, CriticalPoint, param_column
from study.reports import plots
from study.reports.extension import NoExtras
from study.reports.hunt import HuntFolder
from study.reports.tables import groups, markdown_table


class ClassificationReport(NoExtras):
    """The hooks of :class:`study.reports.extension.LandscapeReport` for classification hunts."""

    def late_sections(self, hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
        return _classification_section(hunt, lines, folder)


REPORT = ClassificationReport()


def classification_table(hunt: HuntFolder) -> pd.DataFrame:
    """L5: per configuration, mean and standard deviation of train/test accuracy, the phase-1 (random
    label) train accuracy and the fraction of runs that reached zero training error."""
    if "test_acc" not in hunt.runs.columns:
        return pd.DataFrame()
    rows = []
    for values, group in groups(hunt.runs, hunt.param_columns):
        row: dict[str, Any] = {c.removeprefix(PARAM_PREFIX): v for c, v in values.items()}
        row["runs"] = len(group)
        row["reached"] = float((group["critical_point"] == CriticalPoint.GLOBAL_MINIMUM).mean())
        for column in ("train_acc", "test_acc", "phase1_train_acc"):
            if column in group:
                data = pd.to_numeric(group[column], errors="coerce")
                row[column] = float(data.mean())
                row[f"{column}_sd"] = float(data.std(ddof=1)) if data.count() > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_gaps(hunt: HuntFolder) -> pd.DataFrame:
    """L5: test-accuracy gap of adversarially initialized runs to the random-init baseline, per setting
    of the other parameters (regularization, model, ...); see ``classification.baseline_gap``."""
    runs = hunt.runs
    if "test_acc" not in runs.columns or param_column("init") not in runs.columns:
        return pd.DataFrame()

    others = [c for c in hunt.param_columns if c != param_column("init")]
    rows = []
    for values, group in groups(runs, others):
        adversarial = group[group[param_column("init")] == "adversarial"]
        clean = group[group[param_column("init")] == "random"]
        if len(adversarial) == 0 or len(clean) == 0:
            continue
        gap = baseline_gap(adversarial, clean).iloc[0].to_dict()
        rows.append({**{c.removeprefix(PARAM_PREFIX): v for c, v in values.items()}, **gap})
    return pd.DataFrame(rows)


def _classification_section(hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
    table = classification_table(hunt)
    if table.empty:
        return []
    params = [c.removeprefix(PARAM_PREFIX) for c in hunt.param_columns]
    lines += ["", "## Classification (L5): accuracy per configuration", ""]
    lines.append("Means over runs (`_sd`: standard deviation); `reached`: fraction at zero training error.")
    lines += ["", markdown_table(table)]
    gaps = baseline_gaps(hunt)
    lines += ["", "### Test-accuracy gap to the random-initialization baseline", ""]
    if gaps.empty:
        lines.append("No gap: the hunt lacks adversarially or randomly initialized runs to compare.")
    else:
        lines.append(
            "`gap` = mean test accuracy of randomly initialized runs minus that of adversarially "
            "initialized ones, over runs at zero training error (positive: the adversarial global minima "
            "generalize worse); `gap_se`: its standard error."
        )
        lines += ["", markdown_table(gaps)]
    labels = [", ".join(f"{p}={row[p]}" for p in params) or "all runs" for _, row in table.iterrows()]
    return [plots.accuracy_bars_plot(table, labels, folder / "accuracy.png")]
