"""L3: deep linear networks (Lu & Kawaguchi 2017).

    L(W) = 1/2 |W_H ... W_1 X - Y|_F^2,   X: (d0, m),  Y: (dH, m),  W_i: (d_i, d_{i-1})

The loss is a sum (no 1/m). Data are seeded Gaussians scaled by 1/sqrt(m) so that X X^T ~ I and
step sizes do not depend on m; targets are either independent of X ("random") or Y = T X for a seeded
Gaussian T ("linear", zero residual: without a bottleneck L* = 0). ``x_rank``/``y_rank`` make X, or Y
(through T), low rank: a product of two Gaussian factors. Flat parameters are the row-major weight
matrices W_1, ..., W_H concatenated.

L* = 1/2 (|Y - Yhat|_F^2 + sum_{i > r} sigma_i(Yhat)^2),  Yhat = Y X^+ X,  r = min_i d_i
(reduced-rank regression: the end-to-end map has rank <= r and ranges over every such map).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from study.landscapes.base import Landscape, init_weight_matrices

#: relative tolerance on singular values when counting the dimension of a symmetry orbit
ORBIT_RANK_RTOL = 1e-6


@dataclass(frozen=True)
class DeepLinearConfig:
    """widths = (d0, d1, ..., dH) with H >= 1 weight matrices; m samples; optional data ranks."""

    widths: tuple[int, ...]
    m: int = 20
    x_rank: int | None = None  # rank of X (None: full, min(d0, m) generically)
    y_rank: int | None = None  # rank of Y (None: full, min(dH, m) generically)
    targets: str = "random"  # "random": Y independent of X; "linear": Y = T X
    data_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))  # YAML gives lists
        if len(self.widths) < 2:
            raise ValueError(f"widths must list d0, ..., dH with H >= 1, got {self.widths}")
        if min(self.widths) < 1:
            raise ValueError(f"widths must be >= 1, got {self.widths}")
        if self.m < 1:
            raise ValueError(f"m must be >= 1, got {self.m}")
        if self.targets not in ("random", "linear"):
            raise ValueError(f"targets must be 'random' or 'linear', got {self.targets!r}")
        for name, dim in (("x_rank", self.widths[0]), ("y_rank", self.widths[-1])):
            rank = getattr(self, name)
            if rank is not None and not 1 <= rank <= min(dim, self.m):
                raise ValueError(f"{name} must be in [1, {min(dim, self.m)}], got {rank}")

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Weight shapes [(d1, d0), (d2, d1), ..., (dH, d_{H-1})]."""
        return [(self.widths[i + 1], self.widths[i]) for i in range(self.depth)]


def _gaussian(rows: int, cols: int, rank: int | None, gen: torch.Generator) -> Tensor:
    """A (rows, cols) Gaussian matrix scaled by 1/sqrt(cols), of the given rank (None: full)."""
    if rank is None:
        return torch.randn(rows, cols, generator=gen, dtype=torch.float64) / math.sqrt(cols)
    left = torch.randn(rows, rank, generator=gen, dtype=torch.float64)
    right = torch.randn(rank, cols, generator=gen, dtype=torch.float64)
    return left @ right / math.sqrt(rank * cols)


def deep_linear_data(config: DeepLinearConfig) -> tuple[Tensor, Tensor]:
    """Seeded data ``X: (d0, m), Y: (dH, m)`` in float64."""
    gen = torch.Generator().manual_seed(config.data_seed)
    X = _gaussian(config.widths[0], config.m, config.x_rank, gen)
    if config.targets == "linear":
        T = _gaussian(config.widths[-1], config.widths[0], config.y_rank, gen)  # (dH, d0)
        return X, T @ X
    Y = _gaussian(config.widths[-1], config.m, config.y_rank, gen)
    return X, Y


def reduced_rank_optimum(X: Tensor, Y: Tensor, rank: int) -> float:
    """min over rank(W) <= rank of 1/2 |W X - Y|_F^2 = 1/2 (|Y - Yhat|^2 + sum_{i > rank} s_i(Yhat)^2)."""
    Yhat = Y @ torch.linalg.pinv(X) @ X  # projection of Y's rows onto the row space of X
    sv = torch.linalg.svdvals(Yhat)
    return 0.5 * float((Y - Yhat).pow(2).sum() + sv[rank:].pow(2).sum())


def numerical_rank(J: Tensor, rtol: float = ORBIT_RANK_RTOL) -> Tensor:
    """Rank per replica of ``J: (R, G, P)``: singular values above rtol * the largest (0 for J = 0)."""
    sv = torch.linalg.svdvals(J)  # (R, min(G, P))
    if sv.shape[-1] == 0:
        return torch.zeros(J.shape[0], dtype=torch.long, device=J.device)
    return (sv > rtol * sv[:, :1]).sum(dim=-1)


class DeepLinear(Landscape):
    """Deep linear network on seeded data (SCIENCE.md L3); analytic batched gradient."""

    name = "deep_linear"
    cfg: DeepLinearConfig

    def __init__(
        self,
        config: DeepLinearConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        X, Y = deep_linear_data(config)  # float64, (d0, m), (dH, m)
        self._X64, self._Y64 = X, Y
        self.X = X.to(device=self.device, dtype=dtype)
        self.Y = Y.to(device=self.device, dtype=dtype)
        self.n_params = self.parameter_count(config)

    # ---- shape helpers ------------------------------------------------------------------------------
    def layers(self, theta: Tensor) -> list[Tensor]:
        """Flat ``(R, P)`` -> [W_1 (R, d1, d0), ..., W_H (R, dH, d_{H-1})]."""
        out, offset = [], 0
        for rows, cols in self.cfg.shapes:
            out.append(theta[:, offset : offset + rows * cols].reshape(theta.shape[0], rows, cols))
            offset += rows * cols
        return out

    def end_to_end(self, theta: Tensor) -> Tensor:
        """The product W_H ... W_1, ``(R, dH, d0)``."""
        Ws = self.layers(theta)
        product = Ws[0]
        for W in Ws[1:]:
            product = W @ product
        return product

    # ---- values -------------------------------------------------------------------------------------
    def loss(self, theta: Tensor) -> Tensor:
        out = self.X.to(theta)  # (d0, m), broadcast over replicas
        for W in self.layers(theta):
            out = W @ out  # (R, d_i, m)
        return 0.5 * (out - self.Y.to(theta)).pow(2).sum(dim=(-1, -2))

    def grad(self, theta: Tensor) -> Tensor:
        """grad_{W_i} L = (W_H ... W_{i+1})^T E (W_{i-1} ... W_1 X)^T,  E = W_H ... W_1 X - Y."""
        Ws = self.layers(theta)
        acts = [self.X.to(theta).expand(theta.shape[0], -1, -1)]  # A_0 = X, A_i = W_i A_{i-1}
        for W in Ws:
            acts.append(W @ acts[-1])  # (R, d_i, m)
        back = acts[-1] - self.Y.to(theta)  # (R, dH, m): E, then pulled back through the layers
        grads: list[Tensor] = []
        for i in range(len(Ws) - 1, -1, -1):
            grads.append(back @ acts[i].transpose(-1, -2))  # (R, d_{i+1}, d_i) in 0-based layers
            back = Ws[i].transpose(-1, -2) @ back
        return torch.cat([g.reshape(theta.shape[0], -1) for g in reversed(grads)], dim=1)

    # ---- facts --------------------------------------------------------------------------------------
    @staticmethod
    def parameter_count(config: DeepLinearConfig) -> int:
        return sum(a * b for a, b in config.shapes)

    @property
    def optimal_loss(self) -> float:
        return reduced_rank_optimum(self._X64, self._Y64, min(self.cfg.widths))

    def init(self, seeds: list[int], *, scheme: str = "xavier-normal", scale: float = 1.0) -> Tensor:
        return init_weight_matrices(
            seeds, self.cfg.shapes, scheme=scheme, scale=scale, dtype=self.dtype, device=self.device
        )

    def hypotheses(self) -> dict[str, bool]:
        """Lu & Kawaguchi: X and Y of full row rank => every local minimum is global."""
        d0, dH = self.cfg.widths[0], self.cfg.widths[-1]
        x_full = int(torch.linalg.matrix_rank(self._X64)) == d0
        y_full = int(torch.linalg.matrix_rank(self._Y64)) == dH
        return {"x_full_row_rank": x_full, "y_full_row_rank": y_full, "inside_theorem": x_full and y_full}

    def config(self) -> dict[str, Any]:
        return {"landscape": self.name, **asdict(self.cfg)}

    def symmetry_tangents(self, theta: Tensor) -> Tensor:
        """Generators of the loss-preserving directions at each point, ``(R, G, P)``.

        Rows: (i) the rescaling symmetry W_i -> A W_i, W_{i+1} -> W_{i+1} A^-1 of each internal layer,
        whose tangent at A = I + t E_ab is (.., E_ab W_i, -W_{i+1} E_ab, ..); (ii) when X is rank
        deficient, the translations W_1 -> W_1 + e_a n^T with n^T X = 0. G = sum_{0<i<H} d_i^2
        + d1 (d0 - rank X).
        """
        R = theta.shape[0]
        Ws = self.layers(theta)
        offsets = [0]
        for rows, cols in self.cfg.shapes:
            offsets.append(offsets[-1] + rows * cols)
        blocks = []
        for i in range(len(Ws) - 1):  # internal width d = Ws[i].shape[1] (0-based layer i -> i+1)
            d = Ws[i].shape[1]
            eye = torch.eye(d, dtype=theta.dtype, device=theta.device)
            gen = torch.zeros(R, d, d, self.n_params, dtype=theta.dtype, device=theta.device)
            left = torch.einsum("ap,rbq->rabpq", eye, Ws[i])  # E_ab W_i: (R, d, d, d, d_prev)
            right = -torch.einsum("rpa,bq->rabpq", Ws[i + 1], eye)  # -W_{i+1} E_ab: (R, d, d, d_next, d)
            gen[..., offsets[i] : offsets[i + 1]] = left.reshape(R, d, d, -1)
            gen[..., offsets[i + 1] : offsets[i + 2]] = right.reshape(R, d, d, -1)
            blocks.append(gen.reshape(R, d * d, self.n_params))
        blocks.append(self.data_translation_tangents(theta))
        return torch.cat(blocks, dim=1)

    def data_translation_tangents(self, theta: Tensor) -> Tensor:
        """W_1 -> W_1 + e_a n^T with n^T X = 0 (the left null space of X; none when X has full row
        rank): the first layer's output W_1 X does not change, ``(R, d1 (d0 - rank X), P)``."""
        U, S, _ = torch.linalg.svd(self._X64)
        rank_x = int((S.max() * 1e-10 < S).sum()) if S.numel() else 0
        null = U[:, rank_x:].T.to(theta)  # (d0 - rank X, d0)
        d1, d0 = self.cfg.shapes[0]
        eye = torch.eye(d1, dtype=theta.dtype, device=theta.device)
        trans = torch.einsum("ap,kq->akpq", eye, null).reshape(d1 * null.shape[0], d1 * d0)
        gen = torch.zeros(
            theta.shape[0], trans.shape[0], self.n_params, dtype=theta.dtype, device=theta.device
        )
        gen[..., : d1 * d0] = trans
        return gen

    def expected_zero_eigenvalues(self, theta: Tensor) -> Tensor:
        """Dimension of the symmetry orbit's tangent space at each point, ``(R,)``.

        The numerical rank of :meth:`symmetry_tangents` (relative tolerance ``ORBIT_RANK_RTOL``). It
        equals sum_{0<i<H} d_i^2 (+ data translations) at a generic point, less where the action has a
        stabilizer: 0 at the origin; (d1 - d0)(d1 - d2)-fold less for a wide middle layer d1 > d0, d2.
        At a critical point every such direction is a zero eigenvalue of the Hessian. Flat directions
        beyond the orbit (non-strict or non-isolated critical sets, e.g. at saddles of depth >= 3, or
        repeated singular values of Yhat at the rank cut) are not counted: they make a point
        ``degenerate`` and send it to the escape test. Global minima with full-rank factors have none.
        """
        return numerical_rank(self.symmetry_tangents(theta)).to(torch.long)

    def run_diagnostics(self, theta: Tensor) -> dict[str, Any]:
        """Rank of the end-to-end map (relative tolerance 1e-8) and the smallest singular value among
        the weight matrices (small values mark rank-deficient factors, typical of saddles)."""
        product = self.end_to_end(theta)
        sv = torch.linalg.svdvals(product)  # (R, min(dH, d0))
        rank = (sv > 1e-8 * sv[:, :1].clamp_min(1e-300)).sum(dim=-1)
        min_sv = torch.stack([torch.linalg.svdvals(W)[:, -1] for W in self.layers(theta)]).amin(dim=0)
        return {"end_to_end_rank": rank.cpu().tolist(), "min_factor_singular_value": min_sv.cpu().tolist()}
