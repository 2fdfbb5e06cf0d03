"""The grid cell check: the anchor re-runs a hunt's stored initializations and compares verdicts."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from study.bench.grid_check import anchor_agreement
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.record.files import write_arrays, write_csv
from study.training.gd import TrainConfig, train


def test_anchor_reproduces_the_hunts_verdicts(tmp_path: Path) -> None:
    k = n = 3
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n))
    seeds = [0, 1, 2]
    theta0 = landscape.init(seeds)
    result = train(landscape, theta0, TrainConfig())
    loss = landscape.loss(result.theta)
    frame = pd.DataFrame(
        {"seed": seeds, "loss": loss.tolist(), "critical_point": "global_minimum", "param_k": k, "param_n": n}
    )
    write_csv(frame, tmp_path / "trials" / "trial-00000.csv")
    write_arrays(
        {"theta0": theta0.numpy(), "theta": result.theta.numpy()}, tmp_path / "trials" / "trial-00000.npz"
    )
    table = anchor_agreement(tmp_path, k, n, runs=3)
    assert table["same_verdict"].all() and table["anchor_converged"].all()
    assert (table["loss_difference"] < 1e-10).all()
    with pytest.raises(LookupError, match="k = 4"):
        anchor_agreement(tmp_path, 4, 4, runs=1)
    assert torch.isfinite(loss).all()
