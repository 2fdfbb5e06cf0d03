"""Deep leaky-ReLU networks on the deep linear landscape's data: the contrast to Lu & Kawaguchi (2017).

    A_0 = X: (d0, m),  Z_i = W_i A_{i-1}: (d_i, m),  A_i = sigma(Z_i) for 0 < i < H,  A_H = Z_H
    L(W) = 1/2 |A_H - Y|_F^2

sigma(z) = max(z, s z) for z != 0 with negative slope s in [0, 1] (sigma'(0) = s); s = 1 is the deep
linear network exactly (same data, same initializations, same L*), so a sweep of s from 1 to 0 adds
the nonlinearity, and only it, to the theorem's setting. The gradient is analytic (backprop); the
Hessian is the autodiff default, exact away from the kinks Z_i = 0 (sigma'' = 0 there); each run
records its ``differentiability_margin`` (the smallest |Z_i| over hidden units and samples).

L* is the reduced-rank formula at s = 1; for s < 1 it is unknown (NaN), and runs are labelled against
the best converged run of their configuration (:func:`study.diagnostics.critical.relabel_unknown_optimum`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from study.landscapes.deep_linear import DeepLinear, DeepLinearConfig, numerical_rank
from study.landscapes.piecewise_linear import (
    leaky_relu,
    smallest_generalized_gradient,
    unit_rescaling_tangents,
)


@dataclass(frozen=True)
class DeepLeakyConfig(DeepLinearConfig):
    """The deep linear configuration plus the leaky-ReLU ``slope`` between layers (1: linear)."""

    slope: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.slope <= 1.0:
            raise ValueError(f"slope must be in [0, 1], got {self.slope}")


class DeepLeaky(DeepLinear):
    """Leaky-ReLU network of the deep linear widths on the deep linear data (slope 1: linear)."""

    name = "deep_leaky"
    cfg: DeepLeakyConfig

    @property
    def linear(self) -> bool:
        return self.cfg.slope == 1.0

    def _forward(self, theta: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Activations [A_0 = X, A_1, ..., A_H] ``(R, d_i, m)`` and hidden pre-activations [Z_1, ...,
        Z_{H-1}]."""
        Ws = self.layers(theta)
        acts = [self.X.to(theta).expand(theta.shape[0], -1, -1)]  # (R, d0, m)
        pre = []
        for W in Ws[:-1]:
            Z = W @ acts[-1]  # (R, d_i, m)
            pre.append(Z)
            acts.append(leaky_relu(Z, self.cfg.slope))
        acts.append(Ws[-1] @ acts[-1])  # (R, dH, m)
        return acts, pre

    def loss(self, theta: Tensor) -> Tensor:
        return 0.5 * (self._forward(theta)[0][-1] - self.Y.to(theta)).pow(2).sum(dim=(-1, -2))

    def grad(self, theta: Tensor) -> Tensor:
        """grad_{W_i} L = G_i A_{i-1}^T,  G_H = A_H - Y,  G_i = sigma'(Z_i) * (W_{i+1}^T G_{i+1})."""
        return self.grad_with_slopes(theta, None)

    def grad_with_slopes(self, theta: Tensor, slopes: list[Tensor] | None) -> Tensor:
        """The backprop formula with sigma'(Z_i) replaced by ``slopes`` ``[(R, d_i, m)]`` (None: the
        true ones); slopes in [s, 1] at pre-activations on the kink give a generalized gradient there."""
        Ws = self.layers(theta)
        acts, pre = self._forward(theta)
        back = acts[-1] - self.Y.to(theta)  # (R, dH, m)
        grads: list[Tensor] = []
        for i in range(len(Ws) - 1, -1, -1):  # 0-based layer i maps acts[i] to acts[i + 1]
            grads.append(back @ acts[i].transpose(-1, -2))  # (R, d_{i+1}, d_i)
            if i > 0:
                Z = pre[i - 1]
                if slopes is None:
                    slope = torch.where(Z > 0, 1.0, torch.full_like(Z, self.cfg.slope))
                else:
                    slope = slopes[i - 1]
                back = slope * (Ws[i].transpose(-1, -2) @ back)  # (R, d_i, m)
        return torch.cat([g.reshape(theta.shape[0], -1) for g in reversed(grads)], dim=1)

    def kink_gradient_norm(self, theta: Tensor, kink_tol: float) -> tuple[Tensor, Tensor, bool] | None:
        """Smallest generalized-gradient norm with hidden pre-activations within ``kink_tol`` of the kink
        treated as reached (:func:`study.landscapes.piecewise_linear.smallest_generalized_gradient`:
        exact for one hidden layer, an upper bound for more); None at slope 1 (no kink)."""
        if self.linear or self.cfg.depth < 2:
            return None
        theta = theta.to(torch.float64)
        _, pre = self._forward(theta)
        live = [torch.ones(Z.shape[1:], dtype=torch.bool, device=Z.device) for Z in pre]
        return smallest_generalized_gradient(
            self.grad_with_slopes, theta, pre, live, self.cfg.slope, kink_tol
        )

    # ---- facts --------------------------------------------------------------------------------------
    @property
    def optimal_loss(self) -> float:
        """The reduced-rank formula at slope 1; NaN (unknown) for a nonlinear network."""
        return super().optimal_loss if self.linear else math.nan

    def hypotheses(self) -> dict[str, bool]:
        """Lu & Kawaguchi's hypotheses (X, Y of full row rank) plus the linear activation they assume;
        inside the theorem only when all hold (slope 1)."""
        flags = super().hypotheses()
        flags["linear_activation"] = self.linear
        flags["inside_theorem"] = flags["inside_theorem"] and self.linear
        return flags

    def symmetry_tangents(self, theta: Tensor) -> Tensor:
        """At slope 1 the deep linear symmetries (GL(d_i) on every internal layer); below 1 only the
        positive rescaling of each hidden unit survives (sigma(c z) = c sigma(z) for c > 0), plus the
        data translations of the first layer when X is rank deficient."""
        if self.linear:
            return super().symmetry_tangents(theta)
        rescaling = unit_rescaling_tangents(self.layers(theta), self.n_params)
        return torch.cat([rescaling, self.data_translation_tangents(theta)], dim=1)

    def expected_zero_eigenvalues(self, theta: Tensor) -> Tensor:
        return numerical_rank(self.symmetry_tangents(theta)).to(torch.long)

    def run_diagnostics(self, theta: Tensor) -> dict[str, Any]:
        """The deep linear diagnostics, plus differentiability_margin: min |Z_i| over hidden units and
        samples (inf at slope 1, where there is no kink), and dead_units: hidden units with Z_i <= 0 on
        every sample (at slope 0 they pass nothing forward)."""
        out = super().run_diagnostics(theta)
        _, pre = self._forward(theta)
        R = theta.shape[0]
        if self.linear or not pre:
            margin = torch.full((R,), math.inf, dtype=theta.dtype)
        else:
            margin = torch.stack([Z.abs().flatten(1).amin(dim=1) for Z in pre]).amin(dim=0)
        dead = sum((Z <= 0).all(dim=-1).sum(dim=-1) for Z in pre) if pre else torch.zeros(R)
        out["differentiability_margin"] = margin.cpu().tolist()
        out["dead_units"] = torch.as_tensor(dead).cpu().tolist()
        return out
