"""L1 known answers: finite differences, Monte-Carlo, the analytic spectrum at W = V = I_k."""

import math

import pytest
import torch

from study.landscapes.teacher_student import (
    TWO_PI,
    TeacherStudent,
    TeacherStudentConfig,
    population_grad,
    population_hessian,
    population_loss,
)

torch.set_num_threads(1)


def fd_grad(landscape, theta, eps=1e-6):
    out = torch.zeros_like(theta)
    for p in range(theta.shape[1]):
        e = torch.zeros_like(theta)
        e[:, p] = eps
        out[:, p] = (landscape.loss(theta + e) - landscape.loss(theta - e)) / (2 * eps)
    return out


def fd_hessian(landscape, theta, eps=1e-6):
    R, P = theta.shape
    out = torch.zeros(R, P, P, dtype=theta.dtype)
    for p in range(P):
        e = torch.zeros_like(theta)
        e[:, p] = eps
        out[:, :, p] = (landscape.grad(theta + e) - landscape.grad(theta - e)) / (2 * eps)
    return out


def special_points(k: int, n: int) -> torch.Tensor:
    """Points with aligned, anti-parallel and duplicated neurons (where arccos autograd fails)."""
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(3, n, k, generator=gen, dtype=torch.float64)
    W[0, 0] = 1.7 * torch.eye(k, dtype=torch.float64)[0]  # aligned with teacher 0
    W[0, 1] = -0.6 * torch.eye(k, dtype=torch.float64)[1]  # anti-parallel to teacher 1
    W[1, 1] = 2.0 * W[1, 0]  # two parallel students
    W[1, 2] = -0.5 * W[1, 0]  # and an anti-parallel one
    W[2, 2] = W[2, 1]  # duplicated student
    return W.reshape(3, -1)


@pytest.mark.parametrize("k,n", [(3, 4), (4, 4), (5, 3)])
def test_gradient_matches_finite_differences(k, n):
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n))
    gen = torch.Generator().manual_seed(k * 10 + n)
    theta = torch.cat([torch.randn(4, n * k, generator=gen, dtype=torch.float64), special_points(k, n)])
    torch.testing.assert_close(landscape.grad(theta), fd_grad(landscape, theta), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("k,n", [(3, 4), (4, 4)])
def test_hessian_matches_finite_differences_of_gradient(k, n):
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n))
    gen = torch.Generator().manual_seed(1)
    theta = torch.cat([torch.randn(3, n * k, generator=gen, dtype=torch.float64), special_points(k, n)])
    H = landscape.hessian(theta)
    assert torch.isfinite(H).all()
    torch.testing.assert_close(H, H.transpose(-1, -2), atol=1e-12, rtol=0)
    # aligned pairs make F only C^2 there: central differences are O(eps) accurate, not O(eps^2)
    torch.testing.assert_close(H, fd_hessian(landscape, theta), atol=2e-5, rtol=1e-5)


def test_gradient_and_hessian_exact_at_global_minimum():
    k = 5
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k))
    theta = torch.eye(k, dtype=torch.float64).reshape(1, -1)
    assert float(landscape.loss(theta)) == pytest.approx(0.0, abs=1e-15)
    assert float(landscape.grad(theta).abs().max()) <= 1e-15  # zero up to rounding
    torch.testing.assert_close(landscape.hessian(theta), fd_hessian(landscape, theta), atol=1e-5, rtol=0)


def test_closed_form_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    k, n, d = 3, 4, 5
    W = torch.randn(1, n, d, generator=gen, dtype=torch.float64)
    V = torch.randn(1, k, d, generator=gen, dtype=torch.float64)
    x = torch.randn(400_000, d, generator=gen, dtype=torch.float64)
    residual = torch.relu(x @ W[0].T).sum(1) - torch.relu(x @ V[0].T).sum(1)
    samples = 0.5 * residual**2
    mc, stderr = samples.mean(), samples.std() / math.sqrt(len(samples))
    closed = population_loss(W, V)[0]
    assert abs(float(closed - mc)) < 4 * float(stderr)


def test_hessian_spectrum_at_identity_has_known_multiplicities():
    for k in (4, 6, 8):
        landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k))
        ev = torch.linalg.eigvalsh(landscape.hessian(torch.eye(k, dtype=torch.float64).reshape(1, -1)))[0]
        low, high = 0.25 - 1 / (2 * math.pi), 0.25 + 1 / (2 * math.pi)
        assert int(((ev - low).abs() < 1e-9).sum()) == k * (k - 1) // 2
        assert int(((ev - high).abs() < 1e-9).sum()) == k * (k - 3) // 2
        assert float(ev.min()) > 0


def closed_form_hessian_at_identity(k: int) -> torch.Tensor:
    """The Hessian at W = V = I_k derived by hand from SCIENCE.md's formulas (not from the code).

    At w_i = e_i every student pair and every teacher pair j != i has t = pi/2, so the diagonal blocks'
    student and teacher sums cancel except the self term: H_ii = I/2. An off-diagonal block is
    d/dv g(e_i, e_j) = ((pi/2) I + e_i e_j^T + e_j e_i^T) / (2 pi) = I/4 + (e_i e_j^T + e_j e_i^T)/(2 pi).
    """
    H = torch.zeros(k, k, k, k, dtype=torch.float64)  # (i, a, j, b)
    eye = torch.eye(k, dtype=torch.float64)
    for i in range(k):
        H[i, :, i, :] = 0.5 * eye
        for j in range(k):
            if j != i:
                H[i, :, j, :] = (
                    0.25 * eye + (torch.outer(eye[i], eye[j]) + torch.outer(eye[j], eye[i])) / TWO_PI
                )
    return H.reshape(k * k, k * k)


@pytest.mark.parametrize("k", [4, 6, 9])
def test_whole_spectrum_at_identity(k):
    """Every eigenvalue, not only the two known groups: the code's exact Hessian against the closed form
    above and against central differences of the analytic gradient (O(eps) accurate at aligned pairs)."""
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k))
    theta = torch.eye(k, dtype=torch.float64).reshape(1, -1)
    ev = torch.linalg.eigvalsh(landscape.hessian(theta))[0]
    closed = torch.linalg.eigvalsh(closed_form_hessian_at_identity(k))
    torch.testing.assert_close(ev, closed, atol=1e-12, rtol=0)
    fd = fd_hessian(landscape, theta, eps=1e-7)[0]
    torch.testing.assert_close(ev, torch.linalg.eigvalsh(0.5 * (fd + fd.T)), atol=1e-5, rtol=0)
    # the groups besides 1/4 -+ 1/(2 pi): k - 1 pairs (a, b) with a + b = (k + 2)/4, and one more pair
    low, high = 0.25 - 1 / TWO_PI, 0.25 + 1 / TWO_PI
    rest = ev[((ev - low).abs() > 1e-9) & ((ev - high).abs() > 1e-9)]
    assert rest.numel() == 2 * (k - 1) + 2
    assert float(rest.max()) > (k + 2) / 4 - 0.5  # grows linearly with k (the Theta(k) eigenvalues)


def test_batched_equals_one_at_a_time():
    gen = torch.Generator().manual_seed(5)
    W = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64)
    V = torch.eye(3, dtype=torch.float64).unsqueeze(0).expand(6, -1, -1)
    loss, grad, hess = population_loss(W, V), population_grad(W, V), population_hessian(W, V)
    for r in range(6):
        torch.testing.assert_close(population_loss(W[r : r + 1], V[:1])[0], loss[r], rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(population_grad(W[r : r + 1], V[:1])[0], grad[r], rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(
            population_hessian(W[r : r + 1], V[:1])[0], hess[r], rtol=1e-13, atol=1e-15
        )


def test_float32_on_request():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3), dtype=torch.float32)
    theta = landscape.init([0, 1])
    assert theta.dtype == torch.float32
    assert landscape.grad(theta).dtype == torch.float32


def test_invalid_config_names_the_field():
    with pytest.raises(ValueError, match="n must be"):
        TeacherStudentConfig(k=3, n=0)
    with pytest.raises(ValueError, match="d must be >= k"):
        TeacherStudentConfig(k=3, n=3, d=2)


def test_xavier_init_matches_published_scale():
    landscape = TeacherStudent(TeacherStudentConfig(k=10, n=10))
    theta = landscape.init(list(range(400)))
    # w_i ~ N(0, I/d): the entries' variance is 1/d
    assert float(theta.var()) == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",  # the same comparison in the default suite, so an API change breaks it here
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
            ],
        ),
    ],
)
def test_cuda_matches_cpu(device):
    cpu = TeacherStudent(TeacherStudentConfig(k=6, n=6))
    gpu = TeacherStudent(TeacherStudentConfig(k=6, n=6), device=device)
    theta = cpu.init(list(range(8)))
    assert gpu.grad(theta.to(device)).device.type == device
    torch.testing.assert_close(gpu.grad(theta.to(device)).cpu(), cpu.grad(theta), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        gpu.hessian(theta.to(device)).cpu(), cpu.hessian(theta), rtol=1e-10, atol=1e-12
    )


def test_non_orthogonal_teacher_is_equiangular_and_realizable():
    """V V^T = (1 - c) I + c 11^T (padded to d > k); the student W = V is a global minimum."""
    config = TeacherStudentConfig(k=4, n=4, d=6, teacher="non_orthogonal", teacher_cos=0.3)
    landscape = TeacherStudent(config)
    V = landscape.V
    gram = (1 - 0.3) * torch.eye(4, dtype=torch.float64) + 0.3
    assert torch.allclose(V @ V.T, gram, atol=1e-14) and bool((V[:, 4:] == 0).all())
    theta = V.reshape(1, -1)
    assert abs(float(landscape.loss(theta))) < 1e-14
    assert float(landscape.grad(theta).abs().max()) < 1e-13
    assert not landscape.hypotheses()["orthonormal_teacher"]
    with pytest.raises(ValueError, match="teacher_cos"):
        TeacherStudentConfig(k=4, n=4, teacher="non_orthogonal", teacher_cos=-0.5)
