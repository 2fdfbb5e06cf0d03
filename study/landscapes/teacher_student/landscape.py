"""L1: two-layer ReLU teacher-student with Gaussian inputs, population loss in closed form.

    F(W) = 1/2 E_x[(sum_i relu(w_i.x) - sum_j relu(v_j.x))^2],  x ~ N(0, I_d)
         = 1/2 sum_ij h(w_i, w_j) - sum_ij h(w_i, v_j) + 1/2 sum_ij h(v_i, v_j)
    h(w, v) = |w||v| (sin t + (pi - t) cos t) / (2 pi),  t = angle(w, v)

Student ``W: (R, n, d)``, teacher ``V: (k, d)``. Gradient and Hessian are analytic and exact at
aligned (t = 0) and anti-aligned (t = pi) pairs, where autograd through arccos is NaN/inf. Angles
use t = 2 atan2(|u - s|, |u + s|) on unit vectors, accurate to rounding near 0 and pi.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from study.landscapes.base import INIT_SCHEMES, Certificate, Landscape, init_weight_matrices
from study.landscapes.kernels import CudaDescent, DescentKernel
from study.landscapes.teacher_student.population import (
    differentiability_margins,
    pair_geometry,
    population_grad,
    population_grad_identity,
    population_hessian,
    population_loss,
)

TWO_PI = 2.0 * math.pi
_TINY = 1e-300


@dataclass(frozen=True)
class TeacherStudentConfig:
    """k teacher neurons, n student neurons, input dimension d (d = k by default), teacher V.

    teacher: "identity" (V = I_k padded to d), "gaussian" (seeded, unit rows) or "non_orthogonal"
    (unit rows with every pairwise cosine equal to ``teacher_cos``: the Cholesky factor of the Gram
    matrix (1 - c) I + c 11^T, padded to d).
    """

    k: int
    n: int
    d: int | None = None
    teacher: str = "identity"
    teacher_seed: int = 0
    teacher_cos: float = 0.5  # "non_orthogonal" only

    @property
    def dim(self) -> int:
        return self.k if self.d is None else self.d

    def __post_init__(self) -> None:
        for name in ("k", "n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d is not None and self.d < 1:
            raise ValueError(f"d must be >= 1, got {self.d}")
        if self.teacher in ("identity", "non_orthogonal") and self.dim < self.k:
            raise ValueError(f"d must be >= k for the {self.teacher} teacher, got d={self.dim} < k={self.k}")
        if self.teacher not in ("identity", "gaussian", "non_orthogonal"):
            raise ValueError(
                f"teacher must be 'identity', 'gaussian' or 'non_orthogonal', got {self.teacher!r}"
            )
        if not -1.0 / max(1, self.k - 1) < self.teacher_cos < 1.0:
            raise ValueError(f"teacher_cos must be in (-1/(k-1), 1), got {self.teacher_cos}")


def teacher_matrix(config: TeacherStudentConfig) -> Tensor:
    """Teacher ``V: (k, d)`` in float64: I_k (zero-padded), equiangular unit rows, or seeded Gaussian
    rows of unit norm."""
    if config.teacher == "identity":
        return torch.eye(config.k, config.dim, dtype=torch.float64)
    if config.teacher == "non_orthogonal":
        c = config.teacher_cos
        gram = (1 - c) * torch.eye(config.k, dtype=torch.float64) + c  # (k, k), positive definite
        V = torch.zeros(config.k, config.dim, dtype=torch.float64)
        V[:, : config.k] = torch.linalg.cholesky(gram)
        return V
    gen = torch.Generator().manual_seed(config.teacher_seed)
    V = torch.randn(config.k, config.dim, generator=gen, dtype=torch.float64)
    return V / V.norm(dim=1, keepdim=True)


class TeacherStudent(Landscape):
    """Two-layer ReLU teacher-student, population loss (SCIENCE.md L1). L* = 0."""

    name = "teacher_student"
    cfg: TeacherStudentConfig

    def __init__(
        self,
        config: TeacherStudentConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        self.V = teacher_matrix(config).to(device=self.device, dtype=dtype)  # (k, d)
        self.n_params = self.parameter_count(config)

    # ---- shape helpers ------------------------------------------------------------------------------
    def weights(self, theta: Tensor) -> Tensor:
        """Flat ``(R, n*d)`` -> student neurons ``(R, n, d)``."""
        return theta.reshape(theta.shape[0], self.cfg.n, self.cfg.dim)

    def _teacher(self, R: int, like: Tensor) -> Tensor:
        return self.V.to(like).unsqueeze(0).expand(R, -1, -1)

    # ---- values -------------------------------------------------------------------------------------
    def loss(self, theta: Tensor) -> Tensor:
        W = self.weights(theta)
        return population_loss(W, self._teacher(W.shape[0], W))

    def grad(self, theta: Tensor) -> Tensor:
        W = self.weights(theta)
        if self.cfg.teacher == "identity":
            return population_grad_identity(W, self.cfg.k).reshape(theta.shape)
        return population_grad(W, self._teacher(W.shape[0], W)).reshape(theta.shape)

    def hessian(self, theta: Tensor) -> Tensor:
        W = self.weights(theta)
        return population_hessian(W, self._teacher(W.shape[0], W))

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        return (self.hessian(theta) @ v.unsqueeze(-1)).squeeze(-1)

    def descent_kernel(self) -> DescentKernel:
        """The compiled loop on CPU threads (:mod:`study.landscapes.teacher_student.kernel`)."""
        from study.landscapes.teacher_student.kernel import TeacherStudentKernel

        V = np.ascontiguousarray(self.V.detach().cpu().numpy(), dtype=np.float64)  # (k, d)
        return TeacherStudentKernel(V=V, identity=self.cfg.teacher == "identity")

    def cuda_descent(self) -> CudaDescent:
        """The loop on a CUDA device (:mod:`study.landscapes.teacher_student.cuda_kernel`; numba.cuda is
        imported only here)."""
        from study.landscapes.teacher_student.cuda_kernel import TeacherStudentCuda
        from study.landscapes.teacher_student.kernel import teacher_term

        V = np.ascontiguousarray(self.V.detach().cpu().numpy(), dtype=np.float64)  # (k, d)
        return TeacherStudentCuda(V, self.cfg.n, self.cfg.teacher == "identity", teacher_term(V))

    def stationarity_from_grad(self, theta: Tensor, grad: Tensor) -> Tensor:
        """max_i |2 pi grad_{w_i} F| (Safran & Shamir's stopping rule), ``(R,)``."""
        return TWO_PI * self.weights(grad).norm(dim=-1).amax(dim=-1)

    @property
    def optimal_loss(self) -> float:
        return 0.0 if self.cfg.n >= self.cfg.k else math.nan

    @staticmethod
    def parameter_count(config: TeacherStudentConfig) -> int:
        return config.n * config.dim  # W: (n, d)

    def init(self, seeds: list[int], *, scheme: str = "xavier-normal", scale: float = 1.0) -> Tensor:
        """Student neurons per scheme; "xavier-normal" is w_i ~ N(0, I/d) as in Safran & Shamir (2018)."""
        n, d = self.cfg.n, self.cfg.dim
        if scheme == "xavier-normal":
            return init_weight_matrices(
                seeds,
                [(n, d)],
                scheme="scaled-normal",
                scale=scale / math.sqrt(d),
                dtype=self.dtype,
                device=self.device,
            )
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
        return init_weight_matrices(
            seeds, [(n, d)], scheme=scheme, scale=scale, dtype=self.dtype, device=self.device
        )

    # ---- facts --------------------------------------------------------------------------------------
    def hypotheses(self) -> dict[str, bool]:
        """No theorem excludes spurious minima here (SCIENCE.md L1): never inside a theorem."""
        return {
            "orthonormal_teacher": self.cfg.teacher == "identity",
            "over_parameterized": self.cfg.n > self.cfg.k,
            "exact_parameterized": self.cfg.n == self.cfg.k,
            "inside_theorem": False,
        }

    def config(self) -> dict[str, Any]:
        return {"landscape": self.name, **asdict(self.cfg), "d": self.cfg.dim}

    def run_diagnostics(self, theta: Tensor) -> dict[str, Any]:
        """Differentiability margin and, per student neuron, its best-aligned teacher and angle."""
        W = self.weights(theta)
        R = W.shape[0]
        min_dist, min_norm = differentiability_margins(W)
        geo = pair_geometry(W, self._teacher(R, W))
        best_angle, best_teacher = geo.angle.min(dim=-1)  # (R, n)
        return {
            "min_neuron_distance": min_dist.cpu().tolist(),
            "min_neuron_norm": min_norm.cpu().tolist(),
            "best_teacher": [" ".join(map(str, row)) for row in best_teacher.cpu().tolist()],
            "best_angle": [" ".join(f"{a:.4g}" for a in row) for row in best_angle.cpu().tolist()],
            "max_best_angle": best_angle.amax(dim=-1).cpu().tolist(),
        }

    def third_derivative_bound(self, theta: Tensor, radius: Tensor) -> Tensor:
        """An upper bound B on |D^3 F| over the ball of ``radius`` around each point, ``(R,)``.

        Each pair term h(a, b) is homogeneous of degree 1 in a and in b; differentiating the Hessian
        blocks above once more gives |D^3 h(a, b)| <= C (|b|/|a|^2 + |a|/|b|^2 + 1/|a| + 1/|b|) on a
        unit direction of (a, b), with C = 3 (twice the constant of the term-by-term bound). Summing
        pairs with sum_{i<j}(|d_i|^2 + |d_j|^2) <= max_i (...) gives B = max_i sum_j b_ij, evaluated at
        the worst point of the ball (norms shrunk by the radius in denominators, grown in numerators).
        """
        W = self.weights(theta)
        r = radius.unsqueeze(-1)  # (R, 1)
        lo_w = (W.norm(dim=-1) - r).clamp_min(_TINY)  # (R, n)
        hi_w = W.norm(dim=-1) + r
        norm_v = self.V.norm(dim=-1).to(W)  # (k,)
        c = 3.0
        # student pairs (both vary)
        ww = c * (
            hi_w.unsqueeze(-2) / lo_w.unsqueeze(-1) ** 2
            + hi_w.unsqueeze(-1) / lo_w.unsqueeze(-2) ** 2
            + 1 / lo_w.unsqueeze(-1)
            + 1 / lo_w.unsqueeze(-2)
        )  # (R, n, n)
        ww = ww * (1 - torch.eye(W.shape[1], dtype=W.dtype, device=W.device))
        # teacher pairs (only the student varies)
        wv = c * (norm_v / lo_w.unsqueeze(-1) ** 2 + 1 / lo_w.unsqueeze(-1))  # (R, n, k)
        return (ww.sum(-1) + wv.sum(-1)).amax(dim=-1)

    def certify(
        self, theta: Tensor, lambda_lower: Tensor, grad_norm: Tensor, hessian_norm: Tensor
    ) -> list[Certificate]:
        """Safran & Shamir's radius bound: if 9 lam^2 >= 25 |g| B, a true minimum lies within
        r = (3 lam - sqrt(9 lam^2 - 25 |g| B)) / (2 B), provided the ball avoids the non-smooth set
        (2 r < min_{i != j} |w_i - w_j| and min_i |w_i| > r). B is evaluated on a ball of radius
        min_i |w_i| / 2 and the bound is accepted only if r stays inside it."""
        W = self.weights(theta)
        min_dists, min_norms = differentiability_margins(W)
        out: list[Certificate] = []
        probe = W.norm(dim=-1).amin(dim=-1) / 2  # (R,)
        B_all = self.third_derivative_bound(theta, probe)
        for r_idx in range(theta.shape[0]):
            lam = float(lambda_lower[r_idx])
            g = float(grad_norm[r_idx])
            B = float(B_all[r_idx])
            min_norm = float(min_norms[r_idx])
            min_dist = float(min_dists[r_idx])
            if not math.isfinite(lam) or lam <= 0:
                out.append(Certificate(False, math.nan, f"lambda_min lower bound {lam:.3g} <= 0"))
                continue
            disc = 9 * lam**2 - 25 * g * B
            if disc < 0:
                out.append(Certificate(False, math.nan, f"9 lam^2 < 25 |g| B (|g|={g:.3g}, B={B:.3g})"))
                continue
            radius = (3 * lam - math.sqrt(disc)) / (2 * B) if g > 0 else 0.0
            if radius > float(probe[r_idx]):
                out.append(Certificate(False, radius, "radius exceeds the ball on which B was bounded"))
            elif not (min_norm > radius and 2 * radius < min_dist):
                out.append(Certificate(False, radius, "ball meets the non-differentiable set"))
            else:
                out.append(Certificate(True, radius, "radius bound"))
        return out

    def escape_descents(self, starts: Tensor, threshold: Tensor, *, lr: float, steps: int) -> Tensor | None:
        """The escape test's descents in numba (:mod:`study.landscapes.teacher_student.escape`); float64
        on CPU only."""
        if starts.device.type != "cpu" or starts.dtype != torch.float64:
            return None
        from study.landscapes.teacher_student.escape import escape_rows
        from study.landscapes.teacher_student.kernel import TeacherStudentKernel

        kernel = TeacherStudentKernel(
            np.ascontiguousarray(self.V.cpu().numpy(), dtype=np.float64), self.cfg.teacher == "identity"
        )
        teacher, lowest = kernel.teacher(), np.full(starts.shape[0], math.inf)
        points = np.ascontiguousarray(starts.detach().numpy().reshape(starts.shape[0], self.cfg.n, -1))
        bound = np.ascontiguousarray(threshold.detach().numpy(), dtype=np.float64)
        escape_rows(points, teacher.Vp, teacher.identity, teacher.term, lr, steps, bound, lowest)
        return torch.as_tensor(lowest)

    def family_invariants(self, theta: Tensor) -> np.ndarray:
        """:func:`study.landscapes.teacher_student.families.symmetry_invariants` per row, ``(R, 2 n d)``."""
        from study.landscapes.teacher_student.families import symmetry_invariants

        W = self.weights(theta).detach().cpu().numpy()  # (R, n, d)
        identity = self.cfg.teacher == "identity"
        return np.stack([symmetry_invariants(w, identity_teacher=identity, k=self.cfg.k) for w in W])

    def symmetry_canonical_form(self, theta: Tensor) -> Tensor:
        """Rows (students) and, for V = I, columns (coordinates with teachers) ordered by colour
        refinement; see :func:`study.landscapes.teacher_student.families.canonical_form` for what is
        guaranteed."""
        from study.landscapes.teacher_student.families import canonical_form

        W = self.weights(theta).detach().cpu().numpy()  # (R, n, d)
        identity = self.cfg.teacher == "identity"
        forms = [canonical_form(w, identity_teacher=identity, k=self.cfg.k).matrix for w in W]
        return torch.as_tensor(np.stack(forms), dtype=theta.dtype, device=theta.device).reshape(theta.shape)
