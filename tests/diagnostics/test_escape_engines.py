"""The escape test's two engines: the compiled descents (study.landscapes.teacher_student.escape) follow
the torch loop step for step: the same lowest loss along every descent (full budgets and early stops,
identity and general teachers, d > k padding), hence the same verdicts, at known minima and saddles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.diagnostics.critical import DiagnosticsConfig, _escape_descents, escape_test
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training.compiled import escape_compiled
from study.training.gd import TrainConfig, train

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "config",
    [
        TeacherStudentConfig(k=6, n=6),
        TeacherStudentConfig(k=5, n=7, d=7),
        TeacherStudentConfig(k=4, n=5, teacher="gaussian", teacher_seed=3),
        TeacherStudentConfig(k=4, n=4, teacher="non_orthogonal", teacher_cos=0.3),
    ],
)
def test_compiled_descents_see_the_same_lowest_loss_as_torch(config):
    landscape = TeacherStudent(config)
    starts = landscape.init(list(range(6)))  # (6, P): far from critical, descents drop quickly
    base = landscape.loss(starts)
    # half never stop early (threshold -inf: the full budget), half stop once 1% lower
    threshold = torch.where(torch.arange(6) % 2 == 0, torch.full_like(base, -np.inf), 0.99 * base)
    diag = DiagnosticsConfig(escape_steps=400, escape_lr=0.05)
    compiled = escape_compiled(
        landscape, starts.clone(), threshold, lr=diag.escape_lr, steps=diag.escape_steps
    )
    batched = _escape_descents(landscape, starts.clone(), threshold, diag)
    assert compiled is not None
    np.testing.assert_allclose(compiled.numpy(), batched.numpy(), rtol=1e-11, atol=1e-14)
    assert bool((compiled[1::2] < threshold[1::2]).all())  # the early stops did escape
    assert bool((compiled[::2] < base[::2]).all())  # and the full descents went down


def test_same_verdicts_at_a_spurious_minimum_and_at_saddles():
    landscape = TeacherStudent(TeacherStudentConfig(k=8, n=8))
    # seed 0 ends at Safran & Shamir's spurious minimum (loss ~0.0215): not escaped by either engine
    minimum = train(landscape, landscape.init([0]), TrainConfig(newton_polish=True)).theta
    # two students merged into one (w, w) of a global minimum is a saddle of the n = 8 landscape
    W = torch.eye(8, dtype=torch.float64)
    W[7] = W[6] = 0.5 * (W[6] + W[7])
    saddle = W.reshape(1, -1)
    points = torch.cat([minimum, saddle])
    config = DiagnosticsConfig(escape_steps=3000)
    compiled = escape_test(landscape, points, [0, 1], config)
    batched = escape_test(landscape, points, [0, 1], config, engine="torch")
    assert compiled.tolist() == batched.tolist() == [False, True]


def test_no_kernel_or_float32_falls_back_to_torch():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3), dtype=torch.float32)
    starts = landscape.init([0]).to(torch.float32)
    assert escape_compiled(landscape, starts, torch.zeros(1), lr=0.05, steps=3) is None
