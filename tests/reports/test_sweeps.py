"""Sweep and grid tables on hand-made run tables with known counts."""

import pandas as pd
import pytest

from study.reports.sweeps import grid_comparison, inside_hypotheses, sweep_table


def runs(k: int, n: int, spurious: int, total: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "param_k": k,
            "param_n": n,
            "critical_point": ["spurious_minimum"] * spurious + ["global_minimum"] * (total - spurious),
            "certified": [True] * spurious + [False] * (total - spurious),
        }
    )


def test_grid_names_the_cells_whose_published_rate_is_outside_the_interval():
    table = grid_comparison(
        pd.concat([runs(6, 6, 10, 1000), runs(7, 7, 60, 1000)], ignore_index=True),
        {(6, 6): 0.01, (7, 7): 0.20},
        confidence=0.99,
    )
    assert table["rate"].tolist() == [0.01, 0.06]
    assert table["disagrees"].tolist() == [False, True]
    # the 99% Wilson interval for 60 / 1000
    assert table.loc[1, "low"] == pytest.approx(0.0434, abs=2e-4)
    assert table.loc[1, "high"] == pytest.approx(0.0824, abs=2e-4)


def test_sweep_table_counts_kinks_and_hypotheses():
    frame = pd.DataFrame(
        {
            "param_N": [8, 8, 8, 96],
            "hyp_n_le_d0_d1": [True, True, True, False],
            "critical_point": ["global_minimum", "not_converged", "not_converged", "not_converged"],
            "certified": [True, False, False, False],
            "stop_reason": ["converged", "stalled", "max_steps", "stalled"],
            "kink_verdict": ["", "nondifferentiable, escaped", "undecided", "nondifferentiable minimum"],
            "training_error": [0.0, 0.5, 0.25, 1.0],
        }
    )
    assert inside_hypotheses(frame).tolist() == [True, True, True, False]
    table = sweep_table(frame).set_index("N")
    assert table.loc[8, "inside"] and not table.loc[96, "inside"]
    assert table.loc[8, "nondifferentiable"] == 1 and table.loc[8, "undecided"] == 1
    assert table.loc[96, "nondiff_minimum"] == 1 and table.loc[8, "stalled"] == 1
    assert table.loc[8, "zero_training_error"] == 1


def test_cells_without_a_published_rate_neither_agree_nor_disagree():
    table = grid_comparison(runs(8, 8, 3, 100), {})
    assert table["disagrees"].tolist() == [None] and table["published"].isna().all()
