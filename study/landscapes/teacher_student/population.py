"""The teacher-student population loss in closed form (SCIENCE.md L1): values, gradient, Hessian and
the margins to its kinks, for student ``W: (R, n, d)`` and teacher ``V: (R, k, d)`` (float64)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

TWO_PI = 2.0 * math.pi
_TINY = 1e-300  # floor for norms we divide by


@dataclass(frozen=True)
class PairGeometry:
    """Pairwise geometry between rows of A: (R, n, d) and B: (R, m, d)."""

    norm_a: Tensor  # (R, n)
    norm_b: Tensor  # (R, m)
    unit_a: Tensor  # (R, n, d)
    unit_b: Tensor  # (R, m, d)
    angle: Tensor  # (R, n, m), in [0, pi]
    sin: Tensor  # (R, n, m)
    cos: Tensor  # (R, n, m)


def pair_geometry(A: Tensor, B: Tensor) -> PairGeometry:
    """Norms, unit vectors and angles t_ij = 2 atan2(a, b), a = |u_i - s_j|, b = |u_i + s_j| (unit rows).

    sin t = 2ab / (a^2 + b^2) and cos t = (b^2 - a^2) / (a^2 + b^2) follow algebraically, accurate to
    rounding at t = 0 and t = pi where arccos of a dot product is not.
    """
    norm_a = A.norm(dim=-1)
    norm_b = B.norm(dim=-1)
    unit_a = A / norm_a.clamp_min(_TINY).unsqueeze(-1)
    unit_b = B / norm_b.clamp_min(_TINY).unsqueeze(-1)
    mode = "donot_use_mm_for_euclid_dist"  # the mm shortcut loses the small distances we need
    diff = torch.cdist(unit_a, unit_b, compute_mode=mode)  # (R, n, m)
    summ = torch.cdist(unit_a, -unit_b, compute_mode=mode)
    angle = 2.0 * torch.atan2(diff, summ)
    scale = diff * diff + summ * summ  # = 4 up to rounding (0 only for zero rows)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    sin = 2.0 * diff * summ / scale
    cos = (summ * summ - diff * diff) / scale
    return PairGeometry(norm_a, norm_b, unit_a, unit_b, angle, sin, cos)


def population_loss(W: Tensor, V: Tensor) -> Tensor:
    """F(W) per replica, ``W: (R, n, d), V: (R, k, d) -> (R,)``."""

    def h_sum(A: Tensor, B: Tensor) -> Tensor:
        g = pair_geometry(A, B)
        kernel = g.sin + (math.pi - g.angle) * g.cos  # (R, n, m)
        return (g.norm_a.unsqueeze(-1) * g.norm_b.unsqueeze(-2) * kernel).sum((-1, -2)) / TWO_PI

    return 0.5 * h_sum(W, W) - h_sum(W, V) + 0.5 * h_sum(V, V)


def population_grad(W: Tensor, V: Tensor) -> Tensor:
    """grad_{w_i} F = sum_j g(w_i, w_j) - sum_j g(w_i, v_j), ``(R, n, d)``.

    g(w, v) = (|v| sin t w/|w| + (pi - t) v) / (2 pi); the j = i term gives the self term w_i / 2.
    Angles come from c = u.s (one batched matmul) as arccos(c) where |c| <= 0.9 (error below
    1e-14 there); nearly parallel or anti-parallel pairs are recomputed exactly as
    t = 2 atan2(|u - s|, |u + s|), sin t = |u - s||u + s| / 2.
    """
    n = W.shape[1]
    partners = torch.cat([W, V], dim=1)  # (R, n + k, d): students, then teachers
    norm_w = W.norm(dim=-1, keepdim=True).clamp_min(_TINY)  # (R, n, 1)
    norm_p = partners.norm(dim=-1, keepdim=True).clamp_min(_TINY)  # (R, n + k, 1)
    unit_w = W / norm_w
    unit_p = partners / norm_p
    cos = (unit_w @ unit_p.transpose(1, 2)).clamp_(-1.0, 1.0)  # (R, n, n + k)
    angle = torch.arccos(cos)
    sin = (1.0 - cos * cos).clamp_(min=0.0).sqrt_()
    r, i, j = torch.nonzero(cos.abs_() > 0.9, as_tuple=True)  # includes every self pair
    if r.numel() > 0:
        a, b = unit_w[r, i], unit_p[r, j]  # (E, d)
        minus, plus = (a - b).norm(dim=-1), (a + b).norm(dim=-1)
        angle[r, i, j] = 2.0 * torch.atan2(minus, plus)
        sin[r, i, j] = 0.5 * minus * plus
    sign = torch.ones(partners.shape[1], 1, dtype=W.dtype, device=W.device)
    sign[n:] = -1.0  # teacher terms enter with a minus sign
    radial = sin @ (sign * norm_p)  # (R, n, 1)
    linear = angle.neg_().add_(math.pi) @ (sign * partners)  # (R, n, d)
    return linear.addcmul_(radial, unit_w).div_(TWO_PI)


def population_grad_identity(W: Tensor, k: int) -> Tensor:
    """grad F for the identity teacher V = I_k (zero-padded to d), ``W: (R, n, d) -> (R, n, d)``.

    The teacher terms need no matmul: cos s_ij = u_ij (coordinate j of u_i) and sum_j (pi - s_ij) v_j
    is the row (pi - s_i1, ..., pi - s_ik, 0, ...). All angles are arccos of clipped cosines, self
    pairs set to t = 0: the gradient is smooth in t with d g / d t = O(t) at t = 0 and O(pi - t) at
    t = pi, so the arccos rounding there (up to ~1e-8 in t) moves it by ~1e-16 only.
    """
    R, n, d = W.shape
    norm = W.norm(dim=-1)  # (R, n)
    unit = W / norm.clamp_min(_TINY).unsqueeze(-1)  # (R, n, d)
    cos = torch.bmm(unit, unit.transpose(1, 2)).clamp_(-1.0, 1.0)  # (R, n, n)
    angle = torch.arccos(cos)
    sin = cos.mul_(cos).neg_().add_(1.0).clamp_(min=0.0).sqrt_()
    angle.diagonal(dim1=1, dim2=2).zero_()  # the self term, exactly w_i / 2
    sin.diagonal(dim1=1, dim2=2).zero_()
    cos_t = unit[..., :k].clamp(-1.0, 1.0)  # (R, n, k): cosines with the teachers e_j
    angle_t = torch.arccos(cos_t)
    sin_t = cos_t.mul_(cos_t).neg_().add_(1.0).clamp_(min=0.0).sqrt_()
    radial = torch.bmm(sin, norm.unsqueeze(-1)).squeeze(-1) - sin_t.sum(-1)  # (R, n)
    linear = torch.bmm(angle.neg_().add_(math.pi), W)  # (R, n, d)
    linear[..., :k] -= angle_t.neg_().add_(math.pi)
    return linear.addcmul_(radial.unsqueeze(-1), unit).div_(TWO_PI)


def population_hessian(W: Tensor, V: Tensor) -> Tensor:
    """Exact Hessian of F, ``(R, n, d) -> (R, n*d, n*d)``.

    d/dw g(w, v) = |v| sin t / (2 pi |w|) (I - u u^T) + |v| p p^T / (2 pi |w| sin t),
    d/dv g(w, v) = ((pi - t) I + sin t u s^T + p q^T / sin t) / (2 pi),
    with u = w/|w|, s = v/|v|, p = s - cos t u, q = u - cos t s (|p| = |q| = sin t, so both are
    continuous at t = 0 and t = pi, where the p, q terms vanish). Diagonal blocks sum the first over
    partners as alpha (I - u u^T) + P^T diag(beta) P (one small matmul per neuron); off-diagonal blocks
    are the second, one (d x 2)(2 x d) product per pair.
    """
    R, n, d = W.shape
    eye = torch.eye(d, dtype=W.dtype, device=W.device)
    norm_w = W.norm(dim=-1).clamp_min(_TINY)  # (R, n)
    u = W / norm_w.unsqueeze(-1)  # (R, n, d)

    def pair_terms(B: Tensor, sign: float, skip_self: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """alpha: (R, n), the diagonal blocks' sum P^T diag(beta) P: (R, n, d, d), p: (R, n, m, d),
        sin and angle: (R, n, m) for the partners B: (R, m, d)."""
        norm_b = B.norm(dim=-1)  # (R, m)
        s = B / norm_b.clamp_min(_TINY).unsqueeze(-1)
        cos = torch.bmm(u, s.transpose(1, 2)).clamp_(-1.0, 1.0)  # (R, n, m)
        p = s.unsqueeze(1) - cos.unsqueeze(-1) * u.unsqueeze(2)  # (R, n, m, d)
        minus = (u.unsqueeze(2) - s.unsqueeze(1)).norm(dim=-1)  # |u - s|, exact near t = 0
        plus = (u.unsqueeze(2) + s.unsqueeze(1)).norm(dim=-1)  # |u + s|, exact near t = pi
        angle = 2.0 * torch.atan2(minus, plus)
        sin = 0.5 * minus * plus
        if skip_self:
            diag = torch.arange(n, device=W.device)
            sin[:, diag, diag] = 0.0
        alpha = sign * (sin * norm_b.unsqueeze(-2)).sum(-1)  # (R, n)
        beta = torch.where(sin > 1e-150, sign * norm_b.unsqueeze(-2) / sin.clamp_min(1e-150), 0.0)
        pp = torch.matmul((p * beta.unsqueeze(-1)).transpose(-1, -2), p)  # (R, n, d, d)
        return alpha, pp, p, sin, angle

    alpha_w, pp_w, p_ww, sin_ww, angle_ww = pair_terms(W, 1.0, True)
    alpha_v, pp_v, _, _, _ = pair_terms(V, -1.0, False)
    proj = eye - u.unsqueeze(-1) * u.unsqueeze(-2)  # (R, n, d, d)
    diag_blocks = ((alpha_w + alpha_v)[..., None, None] * proj + pp_w + pp_v) / (
        TWO_PI * norm_w[..., None, None]
    ) + 0.5 * eye  # (R, n, d, d)

    # off-diagonal blocks (i, j): (pi - t) I + sin t u_i u_j^T + p_ij p_ji^T / sin t, over 2 pi
    inv_sin = torch.where(sin_ww > 1e-150, 1.0 / sin_ww.clamp_min(1e-150), 0.0)
    left = torch.stack([p_ww * inv_sin.unsqueeze(-1), sin_ww.unsqueeze(-1) * u.unsqueeze(2)], dim=-1)
    right = torch.stack([p_ww.transpose(1, 2), u.unsqueeze(1).expand(R, n, n, d)], dim=-2)
    H = torch.matmul(left, right)  # (R, n, n, d, d): (d x 2)(2 x d) per pair
    H.diagonal(dim1=-2, dim2=-1).add_((math.pi - angle_ww).unsqueeze(-1))
    H = H / TWO_PI
    idx = torch.arange(n, device=W.device)
    H[:, idx, idx] = diag_blocks
    return H.permute(0, 1, 3, 2, 4).reshape(R, n * d, n * d)


def differentiability_margins(W: Tensor) -> tuple[Tensor, Tensor]:
    """Distance to the non-smooth set: min_{i != j} |w_i - w_j| and min_i |w_i|, ``(R,)`` each."""
    R, n, _ = W.shape
    if n > 1:
        dist = torch.cdist(W, W, compute_mode="donot_use_mm_for_euclid_dist")  # (R, n, n)
        dist = dist + torch.diag(torch.full((n,), math.inf, dtype=W.dtype, device=W.device))
        min_dist = dist.amin(dim=(-1, -2))
    else:
        min_dist = torch.full((R,), math.inf, dtype=W.dtype, device=W.device)
    return min_dist, W.norm(dim=-1).amin(dim=-1)
