"""What a landscape adds to the generic report, found through the landscape registry.

A landscape entry in :mod:`study.landscapes.registry` may name a report module (``report``: a dotted
module path, imported only here, when a report of such a hunt is built). That module exposes
``REPORT``, an object with the methods of :class:`LandscapeReport`; a landscape without one gets the
generic report alone (:class:`NoExtras`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from study.landscapes.registry import LANDSCAPES
from study.reports.hunt import HuntFolder


class LandscapeReport(Protocol):
    """Hooks called by :func:`study.reports.report.build_report`, in this order."""

    def prepare(self, hunt: HuntFolder, fixed: dict[str, Any] | None, folder: Path) -> tuple[Any, list[Path]]:
        """State the other hooks receive (e.g. families), and the data files written into ``folder``."""
        ...

    def configurations(self, hunt: HuntFolder, state: Any, table: pd.DataFrame) -> pd.DataFrame:
        """The configuration table with the landscape's columns added (before it is shown)."""
        ...

    def configuration_plots(self, hunt: HuntFolder, table: pd.DataFrame, folder: Path) -> list[Path]:
        """Plots drawn from the configuration table."""
        ...

    def sections(self, hunt: HuntFolder, state: Any, lines: list[str], folder: Path) -> list[Path]:
        """Sections appended after the configurations (markdown lines in place); plots written."""
        ...

    def basin_axis(self, table: pd.DataFrame) -> tuple[pd.DataFrame, str, list[str], str] | None:
        """(table, x column, line keys, x label) for the basin plot, or None for the generic width."""
        ...

    def late_sections(self, hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
        """Sections appended after the basin section."""
        ...


class NoExtras:
    """The generic report alone."""

    def prepare(self, hunt: HuntFolder, fixed: dict[str, Any] | None, folder: Path) -> tuple[Any, list[Path]]:
        return None, []

    def configurations(self, hunt: HuntFolder, state: Any, table: pd.DataFrame) -> pd.DataFrame:
        return table

    def configuration_plots(self, hunt: HuntFolder, table: pd.DataFrame, folder: Path) -> list[Path]:
        return []

    def sections(self, hunt: HuntFolder, state: Any, lines: list[str], folder: Path) -> list[Path]:
        return []

    def basin_axis(self, table: pd.DataFrame) -> tuple[pd.DataFrame, str, list[str], str] | None:
        return None

    def late_sections(self, hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
        return []


def landscape_report(landscape: str) -> LandscapeReport:
    """The named landscape's report extension (NoExtras for one without, or an unknown name)."""
    entry = LANDSCAPES.get(landscape)
    if entry is None or not entry.report:
        return NoExtras()
    report: LandscapeReport = importlib.import_module(entry.report).REPORT
    return report
