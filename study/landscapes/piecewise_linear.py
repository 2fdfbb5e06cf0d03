"""L2: piecewise-linear (leaky ReLU) networks with dropout-like noise on finite data (Soudry & Carmon 2016).

One or two hidden layers, one output, no biases, fixed multiplicative noise per (sample, hidden unit):

    A_0 = X^T: (d0, N),  A_l = eps_l * sigma(W_l A_{l-1}): (d_l, N),  f = w_out A_{L-1}: (N,)
    L(W) = 1/(2N) sum_n (f(x_n) - y_n)^2                         (mean squared error, with the 1/2)

sigma(z) = max(z, s z) with negative slope s; sigma'(0) = s (as torch's leaky_relu). The noise eps_l is
drawn once from ``data_seed`` and held fixed. The gradient is analytic (backprop); the Hessian is the
autodiff default, exact away from the kinks (sigma'' = 0 there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from study.landscapes.base import Landscape, init_weight_matrices
from study.landscapes.deep_linear import numerical_rank

NOISES = ("none", "bernoulli", "gaussian")
TARGETS = ("random", "teacher")
#: a sample counts as fitted when its residual |f(x_n) - y_n| is at most this
RESIDUAL_TOL = 1e-6


@dataclass(frozen=True)
class PiecewiseLinearConfig:
    """N samples x ~ N(0, I_d0); hidden ``widths`` (one or two layers); leaky-ReLU ``slope``.

    noise: "none"; "bernoulli" (eps = b / (1 - noise_level), b ~ Bernoulli(1 - noise_level): dropout
    with drop probability noise_level); "gaussian" (eps = 1 + noise_level z, z ~ N(0, 1)).
    targets: "random" (y ~ N(0, 1)) or "teacher" (a seeded network of the same architecture and the
    same noise, so zero training error is attainable for every N). ``reference_loss`` gives L* where
    it is not known in closed form (e.g. the best of many long runs); otherwise L* is NaN there.
    """

    N: int
    d0: int
    widths: tuple[int, ...]
    slope: float = 0.1
    noise: str = "bernoulli"
    noise_level: float = 0.1
    targets: str = "random"
    data_seed: int = 0
    reference_loss: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))  # YAML gives lists
        if self.N < 1 or self.d0 < 1:
            raise ValueError(f"N and d0 must be >= 1, got N={self.N}, d0={self.d0}")
        if not 1 <= len(self.widths) <= 2 or min(self.widths) < 1:
            raise ValueError(f"widths must be one or two hidden widths >= 1, got {self.widths}")
        if not 0.0 <= self.slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {self.slope}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if self.noise == "bernoulli" and not 0.0 <= self.noise_level < 1.0:
            raise ValueError(f"noise_level (drop probability) must be in [0, 1), got {self.noise_level}")
        if self.noise == "gaussian" and self.noise_level < 0:
            raise ValueError(f"noise_level (noise std) must be >= 0, got {self.noise_level}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Weight shapes [(d1, d0), ((d2, d1),) (1, d_last)]."""
        dims = (self.d0, *self.widths, 1)
        return [(dims[i + 1], dims[i]) for i in range(len(dims) - 1)]

    @property
    def capacity(self) -> int:
        """d_{L-2} d_{L-1}: the product of the last two widths before the output (d0 d1 for one layer)."""
        dims = (self.d0, *self.widths)
        return dims[-2] * dims[-1]


def _noise(config: PiecewiseLinearConfig, width: int, gen: torch.Generator) -> Tensor:
    """Multiplicative noise ``(width, N)`` for one hidden layer."""
    shape = (width, config.N)
    if config.noise == "none":
        return torch.ones(shape, dtype=torch.float64)
    if config.noise == "bernoulli":
        keep = 1.0 - config.noise_level
        return torch.bernoulli(torch.full(shape, keep, dtype=torch.float64), generator=gen) / keep
    return 1.0 + config.noise_level * torch.randn(shape, generator=gen, dtype=torch.float64)


def leaky_relu(z: Tensor, slope: float) -> Tensor:
    """sigma(z) = z for z > 0, slope * z otherwise (sigma'(0) = slope, as torch's leaky_relu)."""
    return torch.where(z > 0, z, slope * z)


def unit_rescaling_tangents(Ws: list[Tensor], n_params: int) -> Tensor:
    """Per hidden unit of a layered net with weights ``Ws = [W_1 (R, d1, d0), ..., W_L]`` (flattened
    row-major in this order): the tangent of its positive rescaling (incoming row * c, outgoing column
    / c), (W_l[i, :], -W_{l+1}[:, i]) at c = 1, ``(R, sum of hidden widths, P)``."""
    R = Ws[0].shape[0]
    offsets = [0]
    for W in Ws:
        offsets.append(offsets[-1] + W.shape[1] * W.shape[2])
    blocks = []
    for layer in range(len(Ws) - 1):
        d = Ws[layer].shape[1]
        eye = torch.eye(d, dtype=Ws[0].dtype, device=Ws[0].device)
        gen = torch.zeros(R, d, n_params, dtype=Ws[0].dtype, device=Ws[0].device)
        incoming = torch.einsum("ip,rpq->ripq", eye, Ws[layer])  # row i of W_l: (R, d, d, d_prev)
        outgoing = -torch.einsum("rpi,iq->ripq", Ws[layer + 1], eye)  # column i of W_{l+1}
        gen[..., offsets[layer] : offsets[layer + 1]] = incoming.reshape(R, d, -1)
        gen[..., offsets[layer + 1] : offsets[layer + 2]] = outgoing.reshape(R, d, -1)
        blocks.append(gen)
    return torch.cat(blocks, dim=1)


GradWithSlopes = Callable[[Tensor, list[Tensor]], Tensor]


def smallest_generalized_gradient(
    grad_with_slopes: GradWithSlopes,
    theta: Tensor,
    pre: list[Tensor],
    live: list[Tensor],
    slope: float,
    kink_tol: float,
) -> tuple[Tensor, Tensor, bool]:
    """For a leaky-ReLU net with hidden pre-activations ``pre: [(R, d_l, N)]``: per replica of ``theta:
    (R, P)``, the smallest norm of a chain-rule (Clarke) generalized gradient and the number of kinked
    (unit, sample) pairs, ``(R,)`` each, and whether the norm is exact (one hidden layer) or an upper bound.

    Pairs with ``live`` ``(d_l, N)`` true and |Z| <= ``kink_tol`` sit at the kink, where sigma' may be any
    value in [slope, 1]; ``grad_with_slopes(point (1, P), slopes [(1, d_l, N)])`` is the backprop formula
    with those derivatives. The gradient is affine in one layer's slopes when the others are fixed, so
    each layer's slopes are chosen by bounded least squares (scipy ``lsq_linear``), in turn, three rounds
    for two or more layers.
    """
    from scipy.optimize import lsq_linear

    s = slope
    norms, counts = [], []
    for r in range(theta.shape[0]):
        point = theta[r : r + 1]
        slopes = [torch.where(Z[r : r + 1] > 0, 1.0, torch.full_like(Z[r : r + 1], s)) for Z in pre]
        kinked = [(Z[r : r + 1].abs() <= kink_tol) & alive for Z, alive in zip(pre, live, strict=True)]
        counts.append(sum(int(k.sum()) for k in kinked))
        rounds = 1 if len(pre) == 1 else 3
        for _ in range(rounds if counts[-1] else 0):
            for layer, mask in enumerate(kinked):
                where = torch.nonzero(mask.reshape(-1)).squeeze(-1)
                if where.numel() == 0:
                    continue
                base = grad_with_slopes(point, slopes)[0]  # (P,)
                current = slopes[layer].reshape(-1)[where]
                columns = []
                for idx in where.tolist():  # the gradient's change per unit change of one slope
                    bumped = [t.clone() for t in slopes]
                    bumped[layer].view(-1)[idx] += 1.0
                    columns.append(grad_with_slopes(point, bumped)[0] - base)
                A = torch.stack(columns, dim=1).cpu().numpy()  # (P, K)
                rhs = -(base.cpu().numpy() - A @ current.cpu().numpy())
                fit = lsq_linear(A, rhs, bounds=(s, 1.0) if s < 1.0 else (s, s + 1e-12))
                slopes[layer].view(-1)[where] = torch.as_tensor(fit.x, dtype=theta.dtype)
        norms.append(float(grad_with_slopes(point, slopes).norm()))
    exact = len(pre) == 1
    return torch.tensor(norms, dtype=torch.float64), torch.tensor(counts, dtype=torch.long), exact


class PiecewiseLinear(Landscape):
    """Leaky-ReLU network with fixed dropout-like noise on seeded data (SCIENCE.md L2)."""

    name = "piecewise_linear"
    cfg: PiecewiseLinearConfig

    def __init__(
        self,
        config: PiecewiseLinearConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        gen = torch.Generator().manual_seed(config.data_seed)
        X = torch.randn(config.N, config.d0, generator=gen, dtype=torch.float64)  # (N, d0)
        eps = [_noise(config, w, gen) for w in config.widths]  # [(d_l, N)]
        self.n_params = self.parameter_count(config)
        self.X = X.to(device=self.device, dtype=dtype)
        self.eps = [e.to(device=self.device, dtype=dtype) for e in eps]
        #: the teacher's flat weights ``(1, P)`` for teacher targets (a zero-loss point), else None
        self.teacher_theta: Tensor | None = None
        if config.targets == "random":
            y = torch.randn(config.N, generator=gen, dtype=torch.float64)
        else:
            teacher = torch.cat(  # xavier-normal weights drawn from the data generator
                [
                    torch.randn(1, a * b, generator=gen, dtype=torch.float64) * math.sqrt(2.0 / (a + b))
                    for a, b in config.shapes
                ],
                dim=1,
            )  # (1, P)
            y = self._forward(teacher, X, eps)[0][-1].reshape(config.N)
            self.teacher_theta = teacher.to(device=self.device, dtype=dtype)
        self.y = y.to(device=self.device, dtype=dtype)  # (N,)

    # ---- shape helpers ------------------------------------------------------------------------------
    def layers(self, theta: Tensor) -> list[Tensor]:
        """Flat ``(R, P)`` -> [W_1 (R, d1, d0), (W_2 (R, d2, d1),) w_out (R, 1, d_last)]."""
        out, offset = [], 0
        for rows, cols in self.cfg.shapes:
            out.append(theta[:, offset : offset + rows * cols].reshape(theta.shape[0], rows, cols))
            offset += rows * cols
        return out

    def _forward(self, theta: Tensor, X: Tensor, eps: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Activations [A_0 = X^T, A_1, ..., f (R, 1, N)] and pre-activations [Z_1, ...] ``(R, d_l, N)``."""
        Ws = self.layers(theta)
        acts = [X.T.to(theta).expand(theta.shape[0], -1, -1)]  # (R, d0, N)
        pre = []
        for W, e in zip(Ws[:-1], eps, strict=True):
            Z = W @ acts[-1]  # (R, d_l, N)
            pre.append(Z)
            acts.append(e.to(theta) * leaky_relu(Z, self.cfg.slope))
        acts.append(Ws[-1] @ acts[-1])  # (R, 1, N)
        return acts, pre

    def predict(self, theta: Tensor) -> Tensor:
        """Network outputs on the training set, ``(R, N)``."""
        return self._forward(theta, self.X, self.eps)[0][-1].squeeze(-2)

    # ---- values -------------------------------------------------------------------------------------
    def loss(self, theta: Tensor) -> Tensor:
        residual = self.predict(theta) - self.y.to(theta)  # (R, N)
        return 0.5 * residual.pow(2).mean(dim=-1)

    def grad(self, theta: Tensor) -> Tensor:
        """Backprop: dL/dW_l = G_l A_{l-1}^T, G_L = r^T / N, G_l = eps_l sigma'(Z_l) (W_{l+1}^T G_{l+1})."""
        return self.grad_with_slopes(theta, None)

    def grad_with_slopes(self, theta: Tensor, slopes: list[Tensor] | None) -> Tensor:
        """The backprop formula with the activation derivatives sigma'(Z_l) replaced by ``slopes``
        (``[(R, d_l, N)]``, None: the true ones). With slopes in [s, 1] at pre-activations that sit at
        the kink, this is an element of the chain-rule (Clarke) generalized gradient there."""
        Ws = self.layers(theta)
        acts, pre = self._forward(theta, self.X, self.eps)
        back = (acts[-1] - self.y.to(theta)) / self.cfg.N  # (R, 1, N)
        grads = [back @ acts[-2].transpose(-1, -2)]  # w_out: (R, 1, d_last)
        for layer in range(len(pre) - 1, -1, -1):
            if slopes is None:
                slope = torch.where(pre[layer] > 0, 1.0, torch.full_like(pre[layer], self.cfg.slope))
            else:
                slope = slopes[layer]
            back = self.eps[layer].to(theta) * slope * (Ws[layer + 1].transpose(-1, -2) @ back)
            grads.append(back @ acts[layer].transpose(-1, -2))  # (R, d_l, d_{l-1})
        return torch.cat([g.reshape(theta.shape[0], -1) for g in reversed(grads)], dim=1)

    def kink_gradient_norm(self, theta: Tensor, kink_tol: float) -> tuple[Tensor, Tensor, bool] | None:
        """Smallest norm of a generalized gradient, and the number of kinked (unit, sample) pairs, ``(R,)``.

        Pairs with nonzero noise and |pre-activation| <= ``kink_tol`` count as sitting at the kink, where
        sigma' may be any value in [s, 1]. The gradient is affine in one layer's slopes when the others
        are fixed, so each layer's slopes are chosen by bounded least squares (scipy ``lsq_linear``), in
        turn, three rounds for two layers (exact for one hidden layer; an upper bound on the minimum for
        two). Near 0 with kinked pairs: a non-differentiable critical point (Clarke stationary).
        """
        theta = theta.to(torch.float64)
        _, pre = self._forward(theta, self.X, self.eps)
        live = [e != 0 for e in self.eps]  # a dropped unit's kink does not affect the loss
        return smallest_generalized_gradient(
            self.grad_with_slopes, theta, pre, live, self.cfg.slope, kink_tol
        )

    # ---- facts --------------------------------------------------------------------------------------
    @staticmethod
    def parameter_count(config: PiecewiseLinearConfig) -> int:
        return sum(a * b for a, b in config.shapes)

    @property
    def optimal_loss(self) -> float:
        """0 when zero training error is attainable: teacher targets (realizable), or N <= d_{L-2} d_{L-1}
        (Soudry & Carmon: every differentiable local minimum has zero error for almost every data set
        and noise); else ``reference_loss`` if given, NaN if unknown (no run is then called global)."""
        if self.cfg.targets == "teacher" or self.cfg.capacity >= self.cfg.N:
            return 0.0
        return math.nan if self.cfg.reference_loss is None else float(self.cfg.reference_loss)

    def init(self, seeds: list[int], *, scheme: str = "xavier-normal", scale: float = 1.0) -> Tensor:
        return init_weight_matrices(
            seeds, self.cfg.shapes, scheme=scheme, scale=scale, dtype=self.dtype, device=self.device
        )

    def hypotheses(self) -> dict[str, bool]:
        """N <= d_{L-2} d_{L-1} (the theorem's over-parameterization), and whether noise is applied;
        inside the theorem when both hold."""
        capacity, noise = self.cfg.capacity >= self.cfg.N, self.cfg.noise != "none"
        return {"n_le_d0_d1": capacity, "dropout_noise": noise, "inside_theorem": capacity and noise}

    def config(self) -> dict[str, Any]:
        return {"landscape": self.name, **asdict(self.cfg)}

    def symmetry_tangents(self, theta: Tensor) -> Tensor:
        """Per hidden unit, the tangent of its positive rescaling (incoming row * c, outgoing column / c):
        (W_l[i, :], -W_{l+1}[:, i]) at c = 1, ``(R, sum_l d_l, P)``. Permuting units is not a symmetry
        here (the noise is tied to unit indices) and is discrete anyway."""
        return unit_rescaling_tangents(self.layers(theta), self.n_params)

    def expected_zero_eigenvalues(self, theta: Tensor) -> Tensor:
        """Numerical rank of the per-unit rescaling tangents: the number of hidden units at a generic
        point (a unit with zero incoming and outgoing weights contributes none). Flat directions of
        dead or dropped units are not counted (such points are ``degenerate`` and escape-tested)."""
        return numerical_rank(self.symmetry_tangents(theta)).to(torch.long)

    def run_diagnostics(self, theta: Tensor) -> dict[str, Any]:
        """differentiability_margin: min |pre-activation| over (sample, unit) pairs whose noise is
        nonzero (a dropped unit's kink does not affect the loss); training_error: the fraction of
        samples with |f(x_n) - y_n| > RESIDUAL_TOL; dead_units: hidden units with a negative
        pre-activation on every sample."""
        acts, pre = self._forward(theta, self.X, self.eps)
        residual = (acts[-1].squeeze(-2) - self.y.to(theta)).abs()  # (R, N)
        margins, dead = [], []
        for Z, e in zip(pre, self.eps, strict=True):
            live = (e != 0).to(theta.device)  # (d_l, N)
            margins.append(torch.where(live, Z.abs(), math.inf).flatten(1).amin(dim=1))
            dead.append((Z < 0).all(dim=-1).sum(dim=-1))
        return {
            "differentiability_margin": torch.stack(margins).amin(dim=0).cpu().tolist(),
            "training_error": (residual > RESIDUAL_TOL).to(theta.dtype).mean(dim=-1).cpu().tolist(),
            "max_residual": residual.amax(dim=-1).cpu().tolist(),
            "dead_units": torch.stack(dead).sum(dim=0).cpu().tolist(),
        }
