"""The batched trainer: batched == one at a time, chunking-independent, the published restart rule."""

import torch

from study.landscapes.base import Landscape, seeded_normal
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.record import loss_history
from study.runs import RunSpec, run_replicas
from study.training.gd import TrainConfig, train

torch.set_num_threads(1)


def test_batched_equals_one_at_a_time():
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    theta0 = landscape.init(list(range(6)))
    batched = train(landscape, theta0, TrainConfig(tol=1e-8))
    for r in range(6):
        one = train(landscape, theta0[r : r + 1], TrainConfig(tol=1e-8))
        assert int(one.steps[0]) == int(batched.steps[r])
        torch.testing.assert_close(one.theta[0], batched.theta[r], rtol=0, atol=1e-14)
    assert bool(batched.converged.all())
    # replicas stop at different steps: stopped replicas are not updated further
    assert len(set(batched.steps.tolist())) > 1
    stat = landscape.stationarity(batched.theta)
    assert bool((stat <= 1e-8).all())
    # each replica stopped at the first step that met the rule: one step earlier it did not
    before = batched.theta + 0.1 * landscape.grad(batched.theta)  # approximately the previous iterate
    assert bool((landscape.stationarity(before) > 1e-8 * 0.5).all())


def test_same_seed_same_run_whatever_the_chunking():
    spec = RunSpec("teacher_student", {"k": 4, "n": 4}, train=TrainConfig(tol=1e-7))
    seeds = [11, 12, 13, 14, 15]
    whole = run_replicas(spec, seeds)
    parts = [run_replicas(spec, seeds[:2]), run_replicas(spec, seeds[2:])]
    theta = torch.cat([torch.as_tensor(p.theta) for p in parts])
    torch.testing.assert_close(theta, torch.as_tensor(whole.theta), rtol=0, atol=1e-14)
    assert list(whole.frame["critical_point"]) == [c for p in parts for c in p.frame["critical_point"]]


def test_divergence_restarts_with_half_the_step():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3))
    theta0 = landscape.init([0, 1])
    # step 40 overshoots the curvature (lambda_max ~ 1.5) by far: the gradient norm passes 1e4
    result = train(landscape, theta0, TrainConfig(lr=40.0, tol=1e-8))
    assert bool((result.restarts >= 1).all())
    expected = 40.0 / 2 ** result.restarts.double()
    torch.testing.assert_close(result.lr, expected)
    assert bool(result.converged.all())


def test_gives_up_as_diverged_after_max_restarts():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3))
    result = train(landscape, landscape.init([0]), TrainConfig(lr=1e6, tol=1e-8, max_restarts=2))
    assert bool(result.diverged.all()) and not bool(result.converged.any())


def test_budget_exhausted_is_not_converged():
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    result = train(landscape, landscape.init([0, 1]), TrainConfig(max_steps=10))
    assert not bool(result.converged.any())
    assert result.steps.tolist() == [10, 10]


def test_newton_polish_reaches_tolerance_and_keeps_the_end_point():
    landscape = TeacherStudent(TeacherStudentConfig(k=5, n=5))
    theta0 = landscape.init(list(range(4)))
    plain = train(landscape, theta0, TrainConfig(tol=1e-10))
    polished = train(landscape, theta0, TrainConfig(tol=1e-10, newton_polish=True))
    assert bool(polished.converged.all())
    assert int(polished.steps.sum()) < int(plain.steps.sum())
    torch.testing.assert_close(polished.theta, plain.theta, rtol=0, atol=1e-8)


class DoubleWell:
    """f(x, y) = x^2/2 - y^2/2 + y^4/4: a strict saddle at 0, minima at (0, +-1) with f = -1/4."""

    name = "double_well"

    def loss(self, theta):
        x, y = theta[:, 0], theta[:, 1]
        return 0.5 * x**2 - 0.5 * y**2 + 0.25 * y**4

    def grad(self, theta):
        x, y = theta[:, 0], theta[:, 1]
        return torch.stack([x, -y + y**3], dim=-1)

    def hessian(self, theta):
        y = theta[:, 1]
        H = torch.zeros(theta.shape[0], 2, 2, dtype=theta.dtype)
        H[:, 0, 0] = 1.0
        H[:, 1, 1] = -1.0 + 3 * y**2
        return H

    def stationarity(self, theta):
        return self.grad(theta).abs().amax(dim=-1)

    def stationarity_from_grad(self, theta, grad):
        return grad.abs().amax(dim=-1)


def test_newton_polish_never_lands_on_a_saddle():
    """Started next to the saddle (stationarity 1e-5 < the polishing threshold), Newton alone would
    converge onto the saddle; the trainer must hand the replica back to descent, which escapes."""
    landscape = DoubleWell()
    theta0 = torch.tensor([[1e-5, 1e-6], [1e-5, -1e-6]], dtype=torch.float64)
    result = train(landscape, theta0, TrainConfig(lr=0.1, tol=1e-10, newton_polish=True))  # type: ignore[arg-type]
    assert bool(result.converged.all())
    torch.testing.assert_close(landscape.loss(result.theta), torch.full((2,), -0.25, dtype=torch.float64))
    assert result.theta[0, 1] > 0.99 and result.theta[1, 1] < -0.99


class AbsoluteValue(Landscape):
    """f(x) = sum_i |x_i|: gradient descent with a fixed step chatters around the kink at 0 forever."""

    name = "absolute_value"

    def __init__(self) -> None:
        super().__init__(None)
        self.n_params = 3

    def loss(self, theta):
        return theta.abs().sum(-1)

    def grad(self, theta):
        return torch.where(theta >= 0, 1.0, -1.0).to(theta)

    @property
    def optimal_loss(self):
        return 0.0

    def init(self, seeds, *, scheme="xavier-normal", scale=1.0):
        return seeded_normal(seeds, (3,), dtype=torch.float64, device=self.device)


def test_chatter_at_a_kink_is_detected_and_stopped():
    """Without stall detection the runs use the whole budget; with it they stop early as "stalled",
    after the step was reduced twice (the chatter amplitude shrinks with the step)."""
    landscape = AbsoluteValue()
    theta0 = landscape.init([0, 1, 2, 3])
    plain = train(landscape, theta0, TrainConfig(lr=0.1, max_steps=5000))
    assert plain.stop_reason == ["max_steps"] * 4 and bool((plain.steps == 5000).all())
    config = TrainConfig(lr=0.1, max_steps=5000, stall_window=100, stall_rtol=1e-9)
    stopped = train(landscape, theta0, config)
    assert stopped.stop_reason == ["stalled"] * 4
    assert bool((stopped.steps < 1000).all()) and not bool(stopped.converged.any())
    torch.testing.assert_close(stopped.lr, torch.full((4,), 0.1 * 0.1**2, dtype=torch.float64))
    # the end point sits at the kink up to the final chatter amplitude
    assert float(stopped.theta.abs().max()) <= 2 * 0.001 + 1e-12


def test_stall_detection_leaves_smooth_runs_alone():
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    theta0 = landscape.init(list(range(4)))
    plain = train(landscape, theta0, TrainConfig(tol=1e-8))
    watched = train(landscape, theta0, TrainConfig(tol=1e-8, stall_window=200, stall_rtol=1e-12))
    assert watched.stop_reason == ["converged"] * 4
    torch.testing.assert_close(watched.theta, plain.theta, rtol=0, atol=0)


def test_per_replica_budget():
    """A replica's budget is its own: the Newton tail never lends one replica another's steps."""
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    theta0 = landscape.init([0, 1, 2])
    result = train(landscape, theta0, TrainConfig(tol=1e-14), budget=torch.tensor([5, 17, 40]))
    assert result.steps.tolist() == [5, 17, 40] and result.stop_reason == ["max_steps"] * 3
    alone = train(landscape, theta0[1:2], TrainConfig(tol=1e-14), budget=torch.tensor([17]))
    torch.testing.assert_close(alone.theta[0], result.theta[1], rtol=0, atol=0)


def test_loss_curve_is_log_spaced_over_the_steps_taken_with_first_and_last():
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    theta0 = landscape.init([3, 4])
    config = TrainConfig(tol=1e-9, max_steps=200_000, engine="torch")  # bitwise: the torch engine
    result = train(landscape, theta0, config)
    grid = result.curve_steps.tolist()
    assert grid[0] == 0 and grid == sorted(set(grid)) and grid[-1] < config.max_steps
    ratios = [b / a for a, b in zip(grid[20:], grid[21:], strict=False)]
    assert max(ratios) / min(ratios) < 1.1  # evenly spaced in log(step) once steps are large
    for r in range(2):
        steps = int(result.total_steps[r])
        assert steps > 1000  # a run of a few thousand steps ...
        history = loss_history(
            result.curve_steps.numpy(),
            result.curve[r].numpy(),
            steps,
            float(landscape.loss(result.theta[r : r + 1])),
        )
        assert len(history) >= 16  # ... gets a curve of many points, not 2
        assert history[0][0] == 0 and history[-1][0] == steps
        assert [s for s, _ in history] == sorted({s for s, _ in history})
        # each sample is the loss after that many plain descent steps from the initialization
        x = theta0[r : r + 1].clone()
        want = {}
        for step in range(steps):
            want[step] = float(landscape.loss(x))
            x = x - config.lr * landscape.grad(x)
        for step, value in history[:-1]:
            assert value == want[step]


def test_refilling_the_batch_never_changes_a_run():
    """A working batch of 3 refilled from the queue as replicas stop == all replicas at once, exactly:
    end points, step counts, restarts, step sizes, stop reasons, Newton steps and loss curves."""
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    theta0 = landscape.init(list(range(10)))
    budget = torch.tensor([3, 50, 200_000, 700, 12, 200_000, 200_000, 1, 90, 200_000])
    configs = [
        (TrainConfig(tol=1e-8), None),
        (TrainConfig(tol=1e-9, newton_polish=True, newton_polish_at=1e-2), None),
        (TrainConfig(lr=40.0, tol=1e-8), None),  # restarts with half the step
        (TrainConfig(tol=1e-10), budget),
    ]
    for config, cap in configs:
        whole = train(landscape, theta0, config, budget=cap)
        assert config.lr < 40 or bool((whole.restarts >= 1).all())
        for batch in (1, 3):
            refilled = train(landscape, theta0, config, budget=cap, batch=batch)
            assert torch.equal(refilled.theta, whole.theta)
            for name in ("steps", "total_steps", "lr", "restarts", "converged", "diverged", "newton_steps"):
                assert torch.equal(getattr(refilled, name), getattr(whole, name)), name
            assert refilled.stop_reason == whole.stop_reason
            torch.testing.assert_close(refilled.curve, whole.curve, rtol=0, atol=0, equal_nan=True)
    assert bool((whole.steps == budget).any()) and len(set(whole.stop_reason)) > 1
