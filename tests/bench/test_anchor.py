"""The per-run numpy anchor is the published protocol: same end points and step counts as the trainer."""

import math

import numpy as np
import pytest
import torch

from study.bench.anchor import find_minimum, scaled_gradient
from study.cli import main
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig, population_grad
from study.training.gd import TrainConfig, train

torch.set_num_threads(1)


def test_scaled_gradient_is_two_pi_times_the_exact_gradient():
    landscape = TeacherStudent(TeacherStudentConfig(k=5, n=6))
    theta = landscape.init([3, 4])
    W = landscape.weights(theta)
    exact = population_grad(W, landscape._teacher(2, W))  # pair geometry by atan2, a different formula
    for r in range(2):
        ours = scaled_gradient(W[r].numpy(), np.eye(5))
        np.testing.assert_allclose(ours, 2 * math.pi * exact[r].numpy(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("k", [5, 8])
def test_anchor_reaches_the_trainers_end_points(k):
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k))
    seeds = [0, 1, 2]
    theta0 = landscape.init(seeds)
    batched = train(landscape, theta0, TrainConfig())
    for r in range(len(seeds)):
        one = find_minimum(theta0[r].numpy().reshape(k, k), np.eye(k))
        assert one.converged
        assert one.total_steps == int(batched.total_steps[r])  # the same stopping step
        np.testing.assert_allclose(one.W.ravel(), batched.theta[r].numpy(), rtol=0, atol=1e-10)
        stat = float(np.linalg.norm(scaled_gradient(one.W, np.eye(k)), axis=1).max())
        assert stat <= 1e-9


def test_anchor_restarts_with_half_the_step_like_the_trainer():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3))
    theta0 = landscape.init([0])
    batched = train(landscape, theta0, TrainConfig(lr=40.0, tol=1e-8))
    one = find_minimum(theta0[0].numpy().reshape(3, 3), np.eye(3), lr=40.0, tol=1e-8)
    assert one.restarts == int(batched.restarts[0]) >= 1
    assert one.step_size * 2 * math.pi == pytest.approx(float(batched.lr[0]))
    np.testing.assert_allclose(one.W.ravel(), batched.theta[0].numpy(), rtol=0, atol=1e-10)


def test_bench_trainer_prints_the_speedup_last(capsys):
    assert main(["bench", "trainer", "--k", "4", "--runs", "6", "--anchor-runs", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("speedup: ") and lines[-1].endswith("x")
    row = lines[-2].split()
    assert row[0] == "4"
    assert float(row[-2]) < 1e-10  # anchor and batched end points agree


@pytest.mark.parametrize(
    "argv",
    [
        ["--k", "8,x"],
        ["--k", "0"],
        ["--runs", "0"],
        ["--anchor-runs", "0"],
        ["--threads", "0"],
        ["--engines", "fast"],
        ["--engines", "torch,compiled fast"],
    ],
)
def test_bench_trainer_bad_input_is_one_line(argv, capsys):
    assert main(["bench", "trainer", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("study: error: --")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no CUDA device exists")
def test_bench_trainer_on_cuda_without_a_gpu_is_one_line(capsys):
    assert main(["bench", "trainer", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_trainer_columns_are_engines_with_or_without_the_finish(capsys):
    from study.bench.trainer import engine_config

    assert engine_config("compiled plain") == TrainConfig(engine="compiled")
    assert engine_config("torch") == TrainConfig(engine="torch", newton_polish=True, newton_polish_at=1e-2)
    assert engine_config("auto") is None and engine_config("torch fast") is None
    assert (
        main(
            ["bench", "trainer", "--k", "3", "--runs", "4", "--anchor-runs", "2", "--engines", "torch plain"]
        )
        == 0
    )
    row = capsys.readouterr().out.strip().splitlines()[-2].split()
    steps_per_second = float(row[4].removesuffix("/s").rstrip("kMG"))  # e.g. 31.2k/s
    assert row[0] == "3" and steps_per_second > 0


def test_bench_gpu_grid_trains_and_certifies_each_cell_by_the_engine_asked(capsys):
    assert (
        main(["bench", "gpu-grid", "--runs", "2", "--k", "6", "--device", "cpu", "--engines", "compiled"])
        == 0
    )
    out = capsys.readouterr().out
    assert "engine='compiled'" in out and "total:" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("k=")] == [
        "k= 6 n= 6",
        "k= 6 n= 7",
        "k= 6 n= 8",
    ]
    assert main(["bench", "gpu-grid", "--engines", "fast"]) == 2
