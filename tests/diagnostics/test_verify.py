"""Re-verification of certified spurious minima: a known one survives, hand-made impostors do not."""

import math

import numpy as np
import pytest
import torch

from study.diagnostics.critical import DiagnosticsConfig, classify
from study.diagnostics.verify import VERDICT_COLUMNS, reverify, with_verdicts
from study.landscapes.base import Certificate, Landscape
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.runs import RunSpec, run_replicas, verify_batch
from study.training.gd import TrainConfig


@pytest.fixture(scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the small matmuls here are much slower on contended threads
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spurious_k8(single_thread):
    """k = n = 8, seed 0: Safran & Shamir's spurious minimum (loss ~0.0215), certified at 1e-9."""
    spec = RunSpec("teacher_student", {"k": 8, "n": 8})
    batch = run_replicas(spec, [0])
    row = batch.frame.iloc[0]
    assert row["critical_point"] == "spurious_minimum" and bool(row["certified"])
    return spec, batch


def test_known_spurious_minimum_is_confirmed(spurious_k8):
    spec, batch = spurious_k8
    landscape = TeacherStudent(TeacherStudentConfig(k=8, n=8))
    theta, theta0 = torch.as_tensor(batch.theta), torch.as_tensor(batch.theta0)
    (verdict,) = reverify(landscape, theta, theta0, [0], inside_theorem=[False], train_config=spec.train)
    assert verdict.verdict == "confirmed", verdict.reason
    assert verdict.stationarity <= 1e-13
    assert verdict.loss == pytest.approx(float(batch.frame["loss"].iloc[0]), rel=1e-6)
    assert 0 <= verdict.radius < 1e-10  # polishing shrinks the certified ball with the gradient
    assert verdict.family.startswith("0.021508-")
    assert math.isnan(verdict.rerun_loss)  # outside a theorem: no re-run

    # the same end point under the permutation symmetry W -> P W Q is the same family
    W = theta.reshape(8, 8)
    perm = torch.tensor([3, 1, 7, 0, 5, 2, 6, 4])
    moved = W[perm][:, perm].reshape(1, -1)
    (again,) = reverify(landscape, moved, theta0, [0], inside_theorem=[False], train_config=spec.train)
    assert again.verdict == "confirmed" and again.family == verdict.family


def test_inside_a_theorem_the_rerun_from_the_initialization_must_agree(spurious_k8):
    spec, batch = spurious_k8
    landscape = TeacherStudent(TeacherStudentConfig(k=8, n=8))
    theta, theta0 = torch.as_tensor(batch.theta), torch.as_tensor(batch.theta0)
    (verdict,) = reverify(landscape, theta, theta0, [0], inside_theorem=[True], train_config=spec.train)
    assert verdict.verdict == "contradiction_candidate", verdict.reason
    assert verdict.rerun_loss == pytest.approx(verdict.loss, rel=1e-7)

    # a hand-made record: the same certified end point, claimed to come from an initialization next
    # to the global minimum W = I. It passes the first certificate; the re-run exposes it.
    first, _ = classify(landscape, theta, seeds=[0])
    assert first["certified"].iloc[0] and first["critical_point"].iloc[0] == "spurious_minimum"
    near_global = torch.eye(8, dtype=torch.float64) + 0.05 * torch.randn(
        8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    (fake,) = reverify(
        landscape, theta, near_global.reshape(1, -1), [0], inside_theorem=[True], train_config=spec.train
    )
    assert fake.verdict == "rejected"
    assert "re-run from its initialization ends at global_minimum" in fake.reason
    assert fake.rerun_loss < 1e-12


class ShallowWell(Landscape):
    """f(x) = s (x^4 - 4/3 (a + b) x^3 + 2 a b x^2): global minimum f(0) = 0, a local maximum at a and
    a strict local minimum at b with f(b) = s b^3 (2a - b) / 3 > 0 when a > b / 2: a true spurious
    minimum whose basin (the barrier at a) is narrower than the escape test's radius."""

    name = "shallow_well"
    n_params = 1
    a, b, s = 0.0032, 0.004, 1e5

    def loss(self, theta):
        x = theta[:, 0]
        return self.s * (x**4 - 4 / 3 * (self.a + self.b) * x**3 + 2 * self.a * self.b * x**2)

    def grad(self, theta):
        x = theta[:, :1]
        return 4 * self.s * x * (x - self.a) * (x - self.b)

    @property
    def optimal_loss(self):
        return 0.0

    def init(self, seeds, *, scheme="xavier-normal", scale=1.0):
        return torch.full((len(seeds), 1), 0.0045, dtype=torch.float64)

    def certify(self, theta, lambda_lower, grad_norm, hessian_norm):
        # 1-D: f'' >= lambda/2 on [x - r, x + r] with r = lambda / (2 |f'''|max), so a minimum lies
        # within |f'| / (lambda / 2) when that is below r (|f'''| <= 24 s (|x| + a + b) there)
        out = []
        for x, lam, g in zip(theta[:, 0].tolist(), lambda_lower.tolist(), grad_norm.tolist(), strict=True):
            third = 24 * self.s * (abs(x) + 2 * (self.a + self.b))
            r = lam / (2 * third)
            radius = 2 * g / lam if lam > 0 else math.inf
            out.append(Certificate(radius <= r, radius, "1-D curvature bound"))
        return out


def test_a_certified_minimum_narrower_than_the_escape_radius_is_rejected(single_thread):
    landscape = ShallowWell(None)
    config = DiagnosticsConfig(gap_tol=1e-9, escape_lr=0.01)  # a stable step on the quartic
    theta = torch.tensor([[landscape.b + 1e-12]], dtype=torch.float64)
    first, _ = classify(landscape, theta, seeds=[0], config=config)
    assert first["critical_point"].iloc[0] == "spurious_minimum" and first["certified"].iloc[0]
    (verdict,) = reverify(
        landscape,
        theta,
        landscape.init([0]),
        [0],
        inside_theorem=[False],
        train_config=TrainConfig(lr=1e-3),
        diagnostics=config,
    )
    assert verdict.verdict == "rejected" and verdict.reason.startswith("escape test"), verdict.reason
    assert verdict.stationarity <= 1e-13 and verdict.radius >= 0


def test_verdict_columns_only_for_certified_spurious_rows(spurious_k8):
    spec, batch = spurious_k8
    frame = batch.frame.copy()
    frame.loc[0, "critical_point"] = "saddle"  # a row that is not a candidate is left blank
    landscape = TeacherStudent(TeacherStudentConfig(k=8, n=8))
    out = with_verdicts(landscape, frame, batch.theta, batch.theta0, train_config=spec.train)
    assert set(VERDICT_COLUMNS) <= set(out.columns) and out["verdict"].iloc[0] == ""
    verified = verify_batch(spec, batch).frame
    assert verified["verdict"].iloc[0] == "confirmed"
    assert np.isfinite(verified["verified_radius"].iloc[0])


class _UnknownOptimum(TeacherStudent):
    """The teacher-student landscape as if L* had no closed form (as for n < k)."""

    @property
    def optimal_loss(self) -> float:
        return math.nan


def test_without_a_known_optimum_candidates_are_judged_against_their_reference(spurious_k8):
    """With L* unknown, the points re-checked together must not stand in for L* themselves: the lone
    candidate would be its own best value, hence a 'global minimum', and be rejected."""
    spec, batch = spurious_k8
    landscape = _UnknownOptimum(TeacherStudentConfig(k=8, n=8))
    theta, theta0 = torch.as_tensor(batch.theta), torch.as_tensor(batch.theta0)
    kwargs = {"inside_theorem": [False], "train_config": spec.train}
    (judged,) = reverify(landscape, theta, theta0, [0], l_star=[0.0], **kwargs)
    assert judged.verdict == "confirmed", judged.reason
    (alone,) = reverify(landscape, theta, theta0, [0], **kwargs)  # no reference: best of the batch
    assert alone.verdict == "rejected" and "global_minimum" in alone.reason
    # a reference above the point's loss: it is the best known value, so not spurious
    (below,) = reverify(landscape, theta, theta0, [0], l_star=[0.05], **kwargs)
    assert below.verdict == "rejected" and "global_minimum" in below.reason
