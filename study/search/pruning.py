"""What a trial reports to Optuna's pruner while its chunks arrive: its running estimate at fixed steps.

Chunks vary in size with measured time (:meth:`study.dispatch.pool.ChunkPool.chunk_runs`), and Optuna's
percentile and median pruners compare trials at equal steps only; so a trial reports at every multiple
of the pipeline's ``chunk_size`` that its runs have reached, in seed order (step = that multiple, value
from its first ``step`` seeds), whatever the chunks that brought them.
"""

from __future__ import annotations

import pandas as pd

from study.diagnostics.critical import relabel_unknown_optimum
from study.record import RunBatch
from study.search.hunt_study import AskedTrial
from study.search.objectives import objective_value
from study.spec import HuntSpec

__all__ = ["report_steps"]


def report_steps(spec: HuntSpec, asked: AskedTrial, prefix: list[RunBatch], reported: int) -> int:
    """Report the estimate at each multiple of ``spec.chunk_size`` above step ``reported`` that
    ``prefix`` (the trial's first seeds, in seed order) reaches; returns the last step reported. Where
    L* is unknown the estimate labels the runs at that step against their own best (the stored labels
    come later, from the configuration's best: :mod:`study.search.labels`)."""
    if not prefix:
        return reported
    frame = pd.concat([batch.frame for batch in prefix], ignore_index=True)
    step = reported
    for step in range(reported + spec.chunk_size, len(frame) + 1, spec.chunk_size):
        head = relabel_unknown_optimum(frame.iloc[:step], gap_tol=spec.diagnostics.gap_tol, by=[])
        asked.trial.report(objective_value(spec.objective[0], head, asked.values), step=step)
    return step
