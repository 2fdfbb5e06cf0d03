"""The landscape protocol: everything training, diagnostics, search and tracking need to know.

Parameters are flat on a leading replica dimension, ``theta: (R, P)``; a single run is ``R = 1``.
A landscape owns its data (teacher, data set), built deterministically from its configuration.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from study.landscapes.kernels import CudaDescent, DescentKernel

DTYPES = {"float64": torch.float64, "float32": torch.float32}  # the dtypes a landscape computes in, by name


@dataclass(frozen=True)
class Certificate:
    """Outcome of a certificate check for one run: a true minimum within ``radius`` when certified."""

    certified: bool
    radius: float
    reason: str


class Landscape(ABC):
    """A loss surface on flat parameters ``theta: (R, P)``.

    Subclasses give ``loss`` and ``grad``; ``hessian`` and ``hvp`` default to torch.func autodiff of
    ``loss`` (exact where the loss is smooth). Everything is batched over the leading replica dimension.
    """

    name: ClassVar[str]
    default_procedure: ClassVar[str] = "descent"  # the registered procedure that trains it by default
    n_params: int  # P, the number of parameters of one replica
    cfg: Any  # the landscape's frozen configuration dataclass
    device: torch.device
    dtype: torch.dtype

    def __init__(
        self,
        config: Any = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        """Every landscape is built as ``Landscape(config, device=..., dtype=...)`` (the registry's call)."""
        self.cfg = config
        self.device = torch.device(device)
        self.dtype = dtype

    # ---- values -------------------------------------------------------------------------------
    @abstractmethod
    def loss(self, theta: Tensor) -> Tensor:
        """Loss per replica, ``(R, P) -> (R,)``."""

    @abstractmethod
    def grad(self, theta: Tensor) -> Tensor:
        """Gradient per replica, ``(R, P) -> (R, P)``."""

    def hessian(self, theta: Tensor) -> Tensor:
        """Full Hessian per replica, ``(R, P) -> (R, P, P)`` (autodiff default)."""

        def single(t: Tensor) -> Tensor:
            return self.loss(t.unsqueeze(0)).squeeze(0)

        return torch.func.vmap(torch.func.hessian(single))(theta)

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """Hessian-vector product per replica, ``(R, P), (R, P) -> (R, P)`` (forward-over-reverse)."""
        return torch.func.jvp(self.grad, (theta,), (v,))[1]

    def descent_kernel(self) -> DescentKernel | None:
        """This landscape's compiled per-replica descent on CPU threads (``study.training.compiled``
        runs it), or None: then training on CPU runs the batched torch engine."""
        return None

    def cuda_descent(self) -> CudaDescent | None:
        """This landscape's per-replica descent on a CUDA device (``study.training.cuda_engine`` runs
        it), or None: then training on CUDA runs the batched torch engine."""
        return None

    def stationarity(self, theta: Tensor) -> Tensor:
        """The stopping-rule measure per replica, ``(R,)``: default max |grad| entry."""
        return self.stationarity_from_grad(theta, self.grad(theta))

    def stationarity_from_grad(self, theta: Tensor, grad: Tensor) -> Tensor:
        """The stopping-rule measure given the gradient ``(R, P)`` already computed at ``theta``."""
        return grad.abs().amax(dim=-1)

    # ---- facts about the landscape ---------------------------------------------------------------
    @staticmethod
    def parameter_count(config: Any) -> int:
        """P for ``config``, known without building the landscape (a hunt checks its memory with it);
        -1 where it is not known (then nothing is checked)."""
        return -1

    @property
    @abstractmethod
    def optimal_loss(self) -> float:
        """L*, the global minimum value (closed form or reference solver)."""

    @abstractmethod
    def init(self, seeds: list[int], *, scheme: str = "xavier-normal", scale: float = 1.0) -> Tensor:
        """Seeded initializations ``(R, P)``, one per seed; replica r depends only on ``seeds[r]``."""

    def expected_zero_eigenvalues(self, theta: Tensor) -> Tensor:
        """Number of exact zero Hessian eigenvalues explained by continuous symmetries, ``(R,)``."""
        return torch.zeros(theta.shape[0], dtype=torch.long, device=theta.device)

    def hypotheses(self) -> dict[str, bool]:
        """Hypotheses of this landscape's theorem, as flags for every run of this configuration.

        ``inside_theorem``: every hypothesis of a theorem that excludes spurious minima holds, so a
        certified spurious minimum here would contradict it (re-verified more strictly)."""
        return {}

    def run_diagnostics(self, theta: Tensor) -> dict[str, Any]:
        """Extra per-run diagnostics: name -> sequence of length R (numbers or strings)."""
        return {}

    def kink_gradient_norm(self, theta: Tensor, kink_tol: float) -> tuple[Tensor, Tensor, bool] | None:
        """For piecewise-smooth landscapes: the smallest norm of a generalized (Clarke) gradient at each
        point, treating kinks within ``kink_tol`` as reached, and the number of kinks within it, ``(R,)``
        each, plus whether that smallest norm is exact (else an upper bound). None for smooth landscapes
        (the default)."""
        return None

    def certify(
        self, theta: Tensor, lambda_lower: Tensor, grad_norm: Tensor, hessian_norm: Tensor
    ) -> list[Certificate]:
        """Certify a true minimum near each end point; default: no certificate for this landscape."""
        return [Certificate(False, math.nan, f"no certificate for landscape {self.name}")] * theta.shape[0]

    def config(self) -> dict[str, Any]:
        """The configuration that rebuilds this landscape exactly (logged with every run)."""
        return {"landscape": self.name}

    def symmetry_canonical_form(self, theta: Tensor) -> Tensor:
        """A representative of each end point modulo the landscape's symmetry group, ``(R, P)``."""
        return theta

    def escape_descents(self, starts: Tensor, threshold: Tensor, *, lr: float, steps: int) -> Tensor | None:
        """The escape test's descents compiled (the landscape's own kernel), the lowest loss along each
        from ``starts: (E, P)``, ``(E,)``; None: no kernel, the torch loop runs them."""
        return None

    def family_invariants(self, theta: Tensor) -> np.ndarray:
        """Numbers exactly invariant under the landscape's symmetry that, with the loss and the sorted
        spectrum, tell families of end points apart (re-verification by family), ``(R, m)``; none here."""
        return np.zeros((theta.shape[0], 0))


# Seeds from 2**62 up (a hunt's SeedSequence seeds) draw from numpy's PCG64, which uses every bit of the
# seed; smaller ones from torch's generator as always (it keeps only a seed's low 32 bits: 2**32 streams).
WIDE_SEEDS = 2**62


def seeded_normal(
    seeds: list[int], shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Standard normal draws ``(R, *shape)``; replica r depends only on ``seeds[r]``.

    Drawn on the CPU in float64 and then cast and moved, so the same seed gives the same
    initialization whichever chunk, device or dtype a run is computed in. A seed below
    :data:`WIDE_SEEDS` seeds torch's generator (draws as before; seeds equal modulo 2**32 draw alike),
    one from :data:`WIDE_SEEDS` up seeds numpy's PCG64 through a SeedSequence of all its bits.
    """
    draws = []
    for seed in map(int, seeds):
        if seed >= WIDE_SEEDS:
            draw = np.random.default_rng(seed).standard_normal(shape)
            draws.append(torch.from_numpy(np.asarray(draw, dtype=np.float64)))
        else:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            draws.append(torch.randn(shape, generator=generator, dtype=torch.float64))
    return torch.stack(draws).to(device=device, dtype=dtype)


INIT_SCHEMES = ("xavier-normal", "he-normal", "orthogonal", "scaled-normal")


def init_weight_matrices(
    seeds: list[int],
    shapes: list[tuple[int, int]],
    *,
    scheme: str,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """Initialize a stack of (fan_out, fan_in) weight matrices per replica, flattened to ``(R, P)``.

    xavier-normal: N(0, 2/(fan_in+fan_out)); for square layers this is N(0, 1/fan_in) as in Safran &
    Shamir (2018). he-normal: N(0, 2/fan_in). orthogonal: QR of a Gaussian matrix (semi-orthogonal rows
    or columns). scaled-normal: N(0, scale^2). ``scale`` multiplies every scheme.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    total = sum(a * b for a, b in shapes)
    z = seeded_normal(seeds, (total,), dtype=torch.float64, device=torch.device("cpu"))  # (R, P)
    blocks = []
    offset = 0
    for fan_out, fan_in in shapes:
        block = z[:, offset : offset + fan_out * fan_in].reshape(-1, fan_out, fan_in)
        offset += fan_out * fan_in
        if scheme == "xavier-normal":
            block = block * math.sqrt(2.0 / (fan_in + fan_out))
        elif scheme == "he-normal":
            block = block * math.sqrt(2.0 / fan_in)
        elif scheme == "orthogonal":
            tall = fan_out >= fan_in
            q, r = torch.linalg.qr(block if tall else block.transpose(-1, -2))
            q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
            block = q if tall else q.transpose(-1, -2)
        blocks.append(block.reshape(block.shape[0], -1))
    theta = torch.cat(blocks, dim=1) * scale
    return theta.to(device=device, dtype=dtype)
