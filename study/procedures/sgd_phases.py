"""The settings and phases of two-phase SGD on a classification landscape: each phase's training set
(random labels on masked copies, or the clean set), minibatch SGD of all replicas at once, augmentation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import pad

from study.landscapes.base import DTYPES
from study.landscapes.classification import Classification

_EVAL_CHUNK = 4096  # examples per forward pass in full-batch evaluations


@dataclass(frozen=True)
class SGDConfig:
    """The two-phase procedure's settings (``train:`` of a classification pipeline, or searched names).

    Phase 1 uses plain SGD always (the paper's recipe); phase 2 adds ``momentum``, ``weight_decay`` and
    augmentation (random shifts by up to ``shift_pixels``, plus horizontal flips on natural images) when
    ``regularization`` is true. Each phase stops per replica at the end of the first epoch whose
    training accuracy (on that phase's training set) is >= its target, or at its epoch cap
    (``phase1_epochs``, ``phase2_epochs``): phase 1 (random labels) aims at ``phase1_target_acc`` (None:
    ``target_acc``), phase 2 at ``target_acc``. train_dtype: dtype of the SGD
    phases (None: the landscape's dtype); diagnostics are float64. spectrum: Lanczos extremes of the
    Hessian at the end points (slow beyond tiny models).
    """

    init: str = "random"  # "random" | "adversarial"
    regularization: bool = False
    adv_copies: int = 10
    adv_zero_fraction: float = 0.1
    phase1_epochs: int = 60
    phase2_epochs: int = 100
    lr: float = 0.1
    batch_size: int = 128
    target_acc: float = 0.995
    phase1_target_acc: float | None = None  # None: target_acc
    momentum: float = 0.9  # used only with regularization
    weight_decay: float = 5e-4  # used only with regularization
    shift_pixels: int = 1  # augmentation, only with regularization
    train_dtype: str | None = None
    spectrum: bool = False

    def __post_init__(self) -> None:
        if self.init not in ("random", "adversarial"):
            raise ValueError(f"init must be one of ['random', 'adversarial'], got {self.init!r}")
        if not 0.0 <= self.adv_zero_fraction < 1.0:
            raise ValueError(f"adv_zero_fraction must be in [0, 1), got {self.adv_zero_fraction}")
        for name in ("adv_copies", "phase1_epochs", "phase2_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 < self.target_acc <= 1.0:
            raise ValueError(f"target_acc must be in (0, 1], got {self.target_acc}")
        if self.phase1_target_acc is not None and not 0.0 < self.phase1_target_acc <= 1.0:
            raise ValueError(f"phase1_target_acc must be in (0, 1], got {self.phase1_target_acc}")
        if self.shift_pixels < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("shift_pixels, momentum and weight_decay must be >= 0")
        if self.train_dtype is not None and self.train_dtype not in DTYPES:
            raise ValueError(f"train_dtype must be one of {sorted(DTYPES)} or None, got {self.train_dtype!r}")


def stream_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one replica's random stream (1: phase-1 data, 2/3: phase 1/2 minibatches)."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


@dataclass(frozen=True)
class Phase:
    """One phase's training set, per replica: examples are base images, optionally masked."""

    images: Tensor  # (N, C, H, W) base images in the training dtype
    source: Tensor  # (M,) base image of each example
    labels: Tensor  # (R, M) per-replica labels
    keep: Tensor | None  # (R, M, H*W) bool: pixels not zeroed (phase 1), or None
    epochs: int
    target_acc: float  # a replica stops after the first epoch ending at this training accuracy
    momentum: float
    weight_decay: float
    augment: bool
    stream: int

    @property
    def size(self) -> int:
        return int(self.source.shape[0])

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Examples ``index: (R, b)`` -> images ``(R, b, C, H, W)`` and labels ``(R, b)``."""
        x = self.images[self.source[index]]  # (R, b, C, H, W)
        if self.keep is not None:
            R, b, C, H, W = x.shape
            keep = torch.gather(self.keep, 1, index.unsqueeze(-1).expand(R, b, H * W))  # (R, b, H*W)
            x = x * keep.reshape(R, b, 1, H, W).to(x.dtype)
        return x, torch.gather(self.labels, 1, index)


@dataclass(frozen=True)
class PhaseResult:
    theta: Tensor  # (R, P)
    epochs: Tensor  # (R,) epochs trained
    steps: Tensor  # (R,) SGD steps taken
    train_acc: Tensor  # (R,) accuracy on the phase's training set
    curve: Tensor  # (R, phase.epochs) mean minibatch loss per epoch, carried forward once stopped
    diverged: Tensor  # (R,) bool


def adversarial_phase(
    landscape: Classification, config: SGDConfig, seeds: list[int], images: Tensor
) -> Phase:
    """Replicated training set with zeroed pixels and uniformly random labels, per replica."""
    c = config
    n, _, height, width = images.shape
    m, pixels = n * c.adv_copies, height * width
    n_zero = round(c.adv_zero_fraction * pixels)
    labels, keeps = [], []
    for seed in seeds:
        gen = stream_generator(seed, 1)
        labels.append(torch.randint(0, landscape.data.n_classes, (m,), generator=gen))
        ranks = torch.rand(m, pixels, generator=gen).argsort(dim=1).argsort(dim=1)  # (M, H*W)
        keeps.append(ranks >= n_zero)  # exactly n_zero pixels zeroed per example
    return Phase(
        images=images,
        source=torch.arange(m, device=landscape.device) % n,
        labels=torch.stack(labels).to(landscape.device),
        keep=torch.stack(keeps).to(landscape.device),
        epochs=c.phase1_epochs,
        target_acc=c.target_acc if c.phase1_target_acc is None else c.phase1_target_acc,
        momentum=0.0,
        weight_decay=0.0,
        augment=False,
        stream=2,
    )


def clean_phase(landscape: Classification, config: SGDConfig, seeds: list[int], images: Tensor) -> Phase:
    c = config
    n = images.shape[0]
    reg = c.regularization
    return Phase(
        images=images,
        source=torch.arange(n, device=landscape.device),
        labels=landscape.data.y_train.unsqueeze(0).expand(len(seeds), n).contiguous(),
        keep=None,
        epochs=c.phase2_epochs,
        target_acc=c.target_acc,
        momentum=c.momentum if reg else 0.0,
        weight_decay=c.weight_decay if reg else 0.0,
        augment=reg and (c.shift_pixels > 0 or landscape.flips),
        stream=3,
    )


def augment(x: Tensor, shifts: Tensor, flips: Tensor | None, *, shift_pixels: int) -> Tensor:
    """Shift each image by ``shifts: (R, b, 2)`` in [-s, s] (zero fill); flip where ``flips``."""
    s = shift_pixels
    R, b, C, H, W = x.shape
    if s > 0:
        padded = pad(x, (s, s, s, s))  # (R, b, C, H+2s, W+2s)
        rows = shifts[..., 0:1] + s + torch.arange(H, device=x.device)  # (R, b, H)
        cols = shifts[..., 1:2] + s + torch.arange(W, device=x.device)  # (R, b, W)
        rows = rows[:, :, None, :, None].expand(R, b, C, H, W + 2 * s)
        x = torch.gather(padded, 3, rows)  # (R, b, C, H, W+2s)
        x = torch.gather(x, 4, cols[:, :, None, None, :].expand(R, b, C, H, W))  # (R, b, C, H, W)
    if flips is not None:
        x = torch.where(flips[:, :, None, None, None], x.flip(-1), x)
    return x


def phase_accuracy(landscape: Classification, theta: Tensor, phase: Phase) -> Tensor:
    """Accuracy of each replica on its own phase training set, ``(R,)``."""
    R, M = phase.labels.shape
    correct = torch.zeros(R, dtype=torch.float64, device=theta.device)
    forward = torch.func.vmap(landscape.forward)
    with torch.no_grad():
        for start in range(0, M, _EVAL_CHUNK):
            index = torch.arange(start, min(start + _EVAL_CHUNK, M), device=theta.device)
            x, y = phase.batch(index.unsqueeze(0).expand(R, -1))
            correct += (forward(theta, x).argmax(dim=-1) == y).sum(dim=1)
    return correct / M


def sgd_phase(
    landscape: Classification, config: SGDConfig, theta: Tensor, seeds: list[int], phase: Phase
) -> PhaseResult:
    """Minibatch SGD of all replicas at once (vmap over the replica dimension).

    Each replica draws its own minibatch order (and augmentation) from its seed, so replica r's
    trajectory depends only on ``seeds[r]``. Update, PyTorch convention:
    g = grad + wd * theta;  buf = momentum * buf + g;  theta = theta - lr * buf.
    A replica stops (is frozen) after the first epoch ending with phase accuracy >= ``phase.target_acc``.
    """
    c = config
    R, _ = theta.shape
    M, B = phase.size, c.batch_size
    gens = [stream_generator(seed, phase.stream) for seed in seeds]
    step_fn = torch.func.vmap(torch.func.grad_and_value(landscape.batch_loss))
    active = torch.ones(R, dtype=torch.bool, device=theta.device)
    diverged = torch.zeros_like(active)
    epochs = torch.zeros(R, dtype=torch.long, device=theta.device)
    steps = torch.zeros_like(epochs)
    curve = torch.full((R, phase.epochs), math.nan, dtype=torch.float64, device=theta.device)
    buf = torch.zeros_like(theta)
    acc = torch.zeros(R, dtype=torch.float64, device=theta.device)
    cifar = landscape.flips
    for epoch in range(phase.epochs):
        order = torch.stack([torch.randperm(M, generator=g) for g in gens]).to(theta.device)  # (R, M)
        shifts = flips = None
        if phase.augment:
            s = c.shift_pixels
            shifts = torch.stack([torch.randint(-s, s + 1, (M, 2), generator=g) for g in gens]).to(
                theta.device
            )  # (R, M, 2)
            if cifar:
                flips = torch.stack([torch.rand(M, generator=g) < 0.5 for g in gens]).to(
                    theta.device
                )  # (R, M)
        loss_sum = torch.zeros(R, dtype=torch.float64, device=theta.device)
        for start in range(0, M, B):
            index = order[:, start : start + B]  # (R, b)
            x, y = phase.batch(index)
            if shifts is not None:
                x = augment(
                    x,
                    shifts[:, start : start + B],
                    None if flips is None else flips[:, start : start + B],
                    shift_pixels=c.shift_pixels,
                )
            grad, value = step_fn(theta, x, y)  # (R, P), (R,)
            loss_sum += value.detach().to(torch.float64) * index.shape[1]
            if phase.weight_decay > 0:
                grad = grad + phase.weight_decay * theta
            buf = phase.momentum * buf + grad if phase.momentum > 0 else grad
            theta = torch.where(active.unsqueeze(-1), theta - c.lr * buf, theta)
            steps += active.long()
        epochs += active.long()
        curve[:, epoch] = torch.where(active, loss_sum / M, curve[:, max(epoch - 1, 0)])
        bad = active & ~torch.isfinite(theta).all(dim=1)
        diverged |= bad
        acc = torch.where(bad, torch.zeros_like(acc), phase_accuracy(landscape, theta, phase))
        active &= ~bad & (acc < phase.target_acc)
        if not bool(active.any()):
            curve[:, epoch + 1 :] = curve[:, epoch : epoch + 1]
            break
    return PhaseResult(theta, epochs, steps, acc, curve, diverged)
