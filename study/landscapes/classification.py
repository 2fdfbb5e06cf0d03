"""L5: bad global minima that SGD reaches (Liu, Papailiopoulos & Achlioptas, NeurIPS 2020).

The landscape is the mean cross-entropy of a small classifier (MLP or CNN) on a clean training set,

    L(theta) = 1/N sum_i -log softmax(f_theta(x_i))_{y_i},   theta: (R, P) flat parameters,

whose infimum is L* = 0 on separable data (approached, never attained, as the logit margins grow).
The study is the two-phase procedure of :meth:`Classification.run_replicas`:

1. adversarial initialization (``init="adversarial"``): plain SGD on a copy of the training set replicated
   ``adv_copies`` times, each copy with ``adv_zero_fraction`` of its pixels zeroed and a uniformly random
   label, until the replicated set is fitted (or the epoch budget ends);
2. SGD on the true labels until training accuracy >= ``target_acc`` (zero training error, an
   interpolating "global minimum"), with or without explicit regularization.

``init="random"`` runs phase 2 only. The "badness" of a global minimum is its test accuracy, compared with
the random-init baseline at the report level by :func:`baseline_gap`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy, pad

from study.landscapes.base import INIT_SCHEMES, Landscape, init_weight_matrices
from study.landscapes.datasets import DATASETS, DataRequest, ImageData, load_dataset

if TYPE_CHECKING:  # study.runs imports the registry, which imports this module
    from study.runs import RunBatch, RunSpec

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_EVAL_CHUNK = 4096  # examples per forward pass in full-batch evaluations


@dataclass(frozen=True)
class ClassificationConfig:
    """An L5 configuration: model, data, and the two-phase SGD procedure.

    model: "mlp" (hidden = widths of the hidden layers) or "cnn" (hidden = channels of 3x3 conv layers,
    each followed by ReLU and 2x2 max-pooling, then one linear layer). dataset: "digits" (bundled) or
    "cifar10" (read from ``data_dir``). Phase 1 uses plain SGD always (the paper's recipe); phase 2 adds
    momentum 0.9, weight decay 5e-4 and augmentation (random shifts by up to ``shift_pixels``, plus
    horizontal flips on CIFAR-10) when ``regularization`` is true. Each phase stops per replica at the end
    of the first epoch whose training accuracy (on that phase's training set) is >= ``target_acc``.
    train_dtype: dtype of the SGD phases (None: the landscape's dtype); diagnostics are float64.
    """

    model: str = "mlp"
    hidden: int | tuple[int, ...] = 32
    dataset: str = "digits"
    data_dir: str | None = None
    test_fraction: float = 0.3
    data_seed: int = 0
    max_train: int | None = None
    max_test: int | None = None
    init: str = "random"  # "random" | "adversarial"
    regularization: bool = False
    # phase 1: adversarial initialization
    adv_copies: int = 10
    adv_zero_fraction: float = 0.1
    phase1_epochs: int = 60
    # phase 2 (and the only phase for init="random")
    phase2_epochs: int = 100
    lr: float = 0.1
    batch_size: int = 128
    target_acc: float = 0.995
    momentum: float = 0.9  # used only with regularization
    weight_decay: float = 5e-4  # used only with regularization
    shift_pixels: int = 1  # augmentation, only with regularization
    normalize: bool = True  # standardize inputs by the training set's per-channel mean and std
    train_dtype: str | None = None
    spectrum: bool = False  # Lanczos extremes of the Hessian at the end points (slow beyond tiny models)

    def __post_init__(self) -> None:
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(int(h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be positive width(s), got {self.hidden!r}")
        choices = {"model": ("mlp", "cnn"), "dataset": tuple(DATASETS), "init": ("random", "adversarial")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if DATASETS[self.dataset].needs_data_dir and self.data_dir is None:
            raise ValueError(f"data_dir is required for dataset {self.dataset!r} (a local copy; no download)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.adv_zero_fraction < 1.0:
            raise ValueError(f"adv_zero_fraction must be in [0, 1), got {self.adv_zero_fraction}")
        for name in ("adv_copies", "phase1_epochs", "phase2_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 < self.target_acc <= 1.0:
            raise ValueError(f"target_acc must be in (0, 1], got {self.target_acc}")
        if self.shift_pixels < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("shift_pixels, momentum and weight_decay must be >= 0")
        if self.train_dtype is not None and self.train_dtype not in _DTYPES:
            raise ValueError(
                f"train_dtype must be one of {sorted(_DTYPES)} or None, got {self.train_dtype!r}"
            )


def build_module(config: ClassificationConfig) -> nn.Module:
    """The architecture as a parameter-free skeleton on the meta device (weights come from theta)."""
    info = DATASETS[config.dataset]
    channels, height, width = info.image_shape
    layers: list[nn.Module] = []
    hidden = config.hidden
    assert isinstance(hidden, tuple)
    with torch.device("meta"):
        if config.model == "mlp":
            layers.append(nn.Flatten())
            fan_in = channels * height * width
            for h in hidden:
                layers += [nn.Linear(fan_in, h), nn.ReLU()]
                fan_in = h
        else:
            for c in hidden:
                layers += [nn.Conv2d(channels, c, kernel_size=3, padding=1), nn.ReLU()]
                channels = c
                if min(height, width) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    height, width = height // 2, width // 2
            layers.append(nn.Flatten())
            fan_in = channels * height * width
        layers.append(nn.Linear(fan_in, info.n_classes))
        return nn.Sequential(*layers)


def _stream_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one replica's random stream (1: phase-1 data, 2/3: phase 1/2 minibatches)."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


@dataclass(frozen=True)
class _Phase:
    """One phase's training set, per replica: examples are base images, optionally masked."""

    images: Tensor  # (N, C, H, W) base images in the training dtype
    source: Tensor  # (M,) base image of each example
    labels: Tensor  # (R, M) per-replica labels
    keep: Tensor | None  # (R, M, H*W) bool: pixels not zeroed (phase 1), or None
    epochs: int
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
class _PhaseResult:
    theta: Tensor  # (R, P)
    epochs: Tensor  # (R,) epochs trained
    steps: Tensor  # (R,) SGD steps taken
    train_acc: Tensor  # (R,) accuracy on the phase's training set
    curve: Tensor  # (R, phase.epochs) mean minibatch loss per epoch, carried forward once stopped
    diverged: Tensor  # (R,) bool


class Classification(Landscape):
    """Cross-entropy of an MLP/CNN on flat parameters ``theta: (R, P)`` (SCIENCE.md L5). L* = 0."""

    name = "classification"
    cfg: ClassificationConfig

    def __init__(
        self,
        config: ClassificationConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        self.module = build_module(config)
        self.param_shapes = [(name, tuple(p.shape)) for name, p in self.module.named_parameters()]
        self.n_params = sum(math.prod(shape) for _, shape in self.param_shapes)
        # Loaded here, not lazily: tensors first created inside a torch.func transform (a loss called
        # under jvp/vmap) come out wrapped at that transform's level and must not be cached.
        self.data, self._input_stats = self._load()

    # ---- data ---------------------------------------------------------------------------------------
    def _load(self) -> tuple[ImageData, tuple[Tensor, Tensor]]:
        """The data set on ``device`` and the per-channel input mean and std ``(C, 1, 1)``."""
        c = self.cfg
        request = DataRequest(c.data_dir, c.test_fraction, c.data_seed, c.max_train, c.max_test)
        d = load_dataset(c.dataset, request)
        data = ImageData(
            d.x_train.to(self.device),
            d.y_train.to(self.device),
            d.x_test.to(self.device),
            d.y_test.to(self.device),
            d.n_classes,
        )
        x = data.x_train  # (N, C, H, W)
        if not c.normalize:
            return data, (torch.zeros_like(x[0, :, :1, :1]), torch.ones_like(x[0, :, :1, :1]))
        mean = x.mean(dim=(0, 2, 3)).reshape(-1, 1, 1)
        std = x.std(dim=(0, 2, 3)).reshape(-1, 1, 1).clamp_min(1e-8)
        return data, (mean, std)

    # ---- the model as a function of flat parameters ---------------------------------------------------
    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """One replica's flat ``(P,)`` -> named parameter views."""
        params, offset = {}, 0
        for name, shape in self.param_shapes:
            size = math.prod(shape)
            params[name] = theta[offset : offset + size].reshape(shape)
            offset += size
        return params

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """Logits of one replica on raw images in [0, 1], ``(P,), (B, C, H, W) -> (B, K)``.

        Inputs are standardized inside (``normalize``), so pixels zeroed or padded are black in raw space.
        """
        mean, std = self._input_stats
        x = (x - mean.to(x.dtype)) / std.to(x.dtype)
        return torch.func.functional_call(self.module, self.unflatten(theta), (x,))

    def _batch_loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of one replica on a batch, ``(P,), (B, ...), (B,) -> ()``."""
        return cross_entropy(self.forward(theta, x), y)

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        """Logits per replica on shared inputs, ``(R, P), (B, C, H, W) -> (R, B, K)``."""
        return torch.func.vmap(self.forward, in_dims=(0, None))(theta, x.to(theta.dtype))

    def _full_batch(self, theta: Tensor, x: Tensor, y: Tensor, *, with_grad: bool) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy ``(R,)`` and (optionally) its gradient ``(R, P)`` on (x, y), chunked."""
        x = x.to(theta.dtype)
        n = x.shape[0]
        loss = torch.zeros(theta.shape[0], dtype=theta.dtype, device=theta.device)
        grad = torch.zeros_like(theta)
        value_fn = torch.func.vmap(self._batch_loss, in_dims=(0, None, None))
        grad_fn = torch.func.vmap(torch.func.grad_and_value(self._batch_loss), in_dims=(0, None, None))
        for start in range(0, n, _EVAL_CHUNK):
            xb, yb = x[start : start + _EVAL_CHUNK], y[start : start + _EVAL_CHUNK]
            weight = xb.shape[0] / n
            if with_grad:
                g, v = grad_fn(theta, xb, yb)
                grad = grad + weight * g
            else:
                v = value_fn(theta, xb, yb)
            loss = loss + weight * v
        return loss, grad

    # ---- Landscape protocol -----------------------------------------------------------------------------
    def loss(self, theta: Tensor) -> Tensor:
        """Mean cross-entropy on the clean training set, ``(R, P) -> (R,)``."""
        return self._full_batch(theta, self.data.x_train, self.data.y_train, with_grad=False)[0]

    def grad(self, theta: Tensor) -> Tensor:
        """Full-batch gradient of the training cross-entropy (torch.func, vmapped), ``(R, P) -> (R, P)``."""
        return self._full_batch(theta, self.data.x_train, self.data.y_train, with_grad=True)[1]

    def hessian(self, theta: Tensor, *, chunk: int = 64) -> Tensor:
        """Full Hessian ``(R, P) -> (R, P, P)``, built from Hessian-vector products on ``chunk`` basis
        vectors at a time (memory O(chunk * N * width) instead of O(P * N * width)). Cost: P HVPs.
        """
        R, P = theta.shape
        out = torch.empty(R, P, P, dtype=theta.dtype, device=theta.device)
        eye = torch.eye(P, dtype=theta.dtype, device=theta.device)
        for start in range(0, P, chunk):
            basis = eye[start : start + chunk]  # (c, P)
            c = basis.shape[0]
            points = theta.unsqueeze(1).expand(R, c, P).reshape(R * c, P)
            tangents = basis.unsqueeze(0).expand(R, c, P).reshape(R * c, P)
            out[:, start : start + c, :] = self.hvp(points, tangents).reshape(R, c, P)
        return out

    def accuracy(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Fraction of correctly classified examples per replica, ``(R,)``."""
        correct = torch.zeros(theta.shape[0], dtype=torch.float64, device=theta.device)
        with torch.no_grad():
            for start in range(0, x.shape[0], _EVAL_CHUNK):
                pred = self.logits(theta, x[start : start + _EVAL_CHUNK]).argmax(dim=-1)  # (R, b)
                correct += (pred == y[start : start + _EVAL_CHUNK]).sum(dim=1)
        return correct / x.shape[0]

    @property
    def optimal_loss(self) -> float:
        """L* = 0: the infimum of cross-entropy on separable data (not attained; margins grow forever)."""
        return 0.0

    def init(self, seeds: list[int], *, scheme: str = "xavier-normal", scale: float = 1.0) -> Tensor:
        """Weights per ``scheme`` (conv kernels as (out, in*k*k) matrices), biases 0, ``(R, P)``.

        Replica r depends only on ``seeds[r]`` (see :func:`init_weight_matrices`).
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
        matrices = [(s[0], math.prod(s[1:])) for _, s in self.param_shapes if len(s) >= 2]
        weights = init_weight_matrices(
            seeds, matrices, scheme=scheme, scale=scale, dtype=self.dtype, device=self.device
        )  # (R, sum of weight sizes)
        blocks, offset = [], 0
        for _, shape in self.param_shapes:
            size = math.prod(shape)
            if len(shape) >= 2:
                blocks.append(weights[:, offset : offset + size])
                offset += size
            else:
                blocks.append(torch.zeros(len(seeds), size, dtype=self.dtype, device=self.device))
        return torch.cat(blocks, dim=1)

    def hypotheses(self) -> dict[str, bool]:
        return {
            "regularized": self.cfg.regularization,
            "adversarial_init": self.cfg.init == "adversarial",
            "inside_theorem": False,  # L5 is about bad global minima: no theorem excludes them
        }

    def config(self) -> dict[str, Any]:
        return {"landscape": self.name, **asdict(self.cfg)}

    # ---- the two-phase SGD procedure ------------------------------------------------------------------
    def _adversarial_phase(self, seeds: list[int], images: Tensor) -> _Phase:
        """Replicated training set with zeroed pixels and uniformly random labels, per replica."""
        c = self.cfg
        n, _, height, width = images.shape
        m, pixels = n * c.adv_copies, height * width
        n_zero = round(c.adv_zero_fraction * pixels)
        labels, keeps = [], []
        for seed in seeds:
            gen = _stream_generator(seed, 1)
            labels.append(torch.randint(0, self.data.n_classes, (m,), generator=gen))
            ranks = torch.rand(m, pixels, generator=gen).argsort(dim=1).argsort(dim=1)  # (M, H*W)
            keeps.append(ranks >= n_zero)  # exactly n_zero pixels zeroed per example
        return _Phase(
            images=images,
            source=torch.arange(m, device=self.device) % n,
            labels=torch.stack(labels).to(self.device),
            keep=torch.stack(keeps).to(self.device),
            epochs=c.phase1_epochs,
            momentum=0.0,
            weight_decay=0.0,
            augment=False,
            stream=2,
        )

    def _clean_phase(self, seeds: list[int], images: Tensor) -> _Phase:
        c = self.cfg
        n = images.shape[0]
        reg = c.regularization
        return _Phase(
            images=images,
            source=torch.arange(n, device=self.device),
            labels=self.data.y_train.unsqueeze(0).expand(len(seeds), n).contiguous(),
            keep=None,
            epochs=c.phase2_epochs,
            momentum=c.momentum if reg else 0.0,
            weight_decay=c.weight_decay if reg else 0.0,
            augment=reg and (c.shift_pixels > 0 or c.dataset == "cifar10"),
            stream=3,
        )

    def _augment(self, x: Tensor, shifts: Tensor, flips: Tensor | None) -> Tensor:
        """Shift each image by ``shifts: (R, b, 2)`` in [-s, s] (zero fill); flip where ``flips``."""
        s = self.cfg.shift_pixels
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

    def _phase_accuracy(self, theta: Tensor, phase: _Phase) -> Tensor:
        """Accuracy of each replica on its own phase training set, ``(R,)``."""
        R, M = phase.labels.shape
        correct = torch.zeros(R, dtype=torch.float64, device=theta.device)
        forward = torch.func.vmap(self.forward)
        with torch.no_grad():
            for start in range(0, M, _EVAL_CHUNK):
                index = torch.arange(start, min(start + _EVAL_CHUNK, M), device=theta.device)
                x, y = phase.batch(index.unsqueeze(0).expand(R, -1))
                correct += (forward(theta, x).argmax(dim=-1) == y).sum(dim=1)
        return correct / M

    def _sgd_phase(self, theta: Tensor, seeds: list[int], phase: _Phase) -> _PhaseResult:
        """Minibatch SGD of all replicas at once (vmap over the replica dimension).

        Each replica draws its own minibatch order (and augmentation) from its seed, so replica r's
        trajectory depends only on ``seeds[r]``. Update, PyTorch convention:
        g = grad + wd * theta;  buf = momentum * buf + g;  theta = theta - lr * buf.
        A replica stops (is frozen) after the first epoch ending with phase accuracy >= target_acc.
        """
        c = self.cfg
        R, _ = theta.shape
        M, B = phase.size, c.batch_size
        gens = [_stream_generator(seed, phase.stream) for seed in seeds]
        step_fn = torch.func.vmap(torch.func.grad_and_value(self._batch_loss))
        active = torch.ones(R, dtype=torch.bool, device=theta.device)
        diverged = torch.zeros_like(active)
        epochs = torch.zeros(R, dtype=torch.long, device=theta.device)
        steps = torch.zeros_like(epochs)
        curve = torch.full((R, phase.epochs), math.nan, dtype=torch.float64, device=theta.device)
        buf = torch.zeros_like(theta)
        acc = torch.zeros(R, dtype=torch.float64, device=theta.device)
        cifar = c.dataset == "cifar10"
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
                    x = self._augment(
                        x,
                        shifts[:, start : start + B],
                        None if flips is None else flips[:, start : start + B],
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
            acc = torch.where(bad, torch.zeros_like(acc), self._phase_accuracy(theta, phase))
            active &= ~bad & (acc < c.target_acc)
            if not bool(active.any()):
                curve[:, epoch + 1 :] = curve[:, epoch : epoch + 1]
                break
        return _PhaseResult(theta, epochs, steps, acc, curve, diverged)

    def run_replicas(
        self,
        spec: RunSpec,
        seeds: list[int],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> RunBatch:
        """Train one replica per seed through the two-phase procedure as one batched computation.

        Initialization follows ``spec.init_scheme``/``spec.init_scale``. Rows report the clean-train
        cross-entropy ``loss`` and full-batch ``grad_norm`` (float64), ``train_acc``/``test_acc``, and
        ``critical_point``: "global_minimum" when the final phase reaches ``target_acc`` training
        accuracy (zero training error: cross-entropy's infimum 0 is never attained, so the class is by
        accuracy, not by loss_gap), "diverged" on NaN/inf, else "not_converged". ``curve`` holds the mean
        minibatch loss of each epoch (phase 1 on random labels, then phase 2) against the nominal step
        count at the end of that epoch; a stopped replica's value is carried forward.
        """
        from study.diagnostics.spectrum import lanczos_spectrum
        from study.runs import RunBatch, device_name

        c = self.cfg
        R = len(seeds)
        start_time = time.perf_counter()
        train_dtype = self.dtype if c.train_dtype is None else _DTYPES[c.train_dtype]
        theta0 = self.init(seeds, scheme=spec.init_scheme, scale=spec.init_scale)  # (R, P)
        images = self.data.x_train.to(train_dtype)  # (N, C, H, W)
        theta = theta0.to(train_dtype)
        nan = torch.full((R,), math.nan, dtype=torch.float64, device=self.device)
        phase1_acc, phase1_epochs = nan, torch.zeros(R, dtype=torch.long, device=self.device)
        steps = torch.zeros(R, dtype=torch.long, device=self.device)
        diverged = torch.zeros(R, dtype=torch.bool, device=self.device)
        curves, curve_steps, done_steps = [], [], 0
        phases = [self._clean_phase(seeds, images)]
        if c.init == "adversarial":
            phases.insert(0, self._adversarial_phase(seeds, images))
        result: _PhaseResult | None = None
        for number, phase in enumerate(phases):
            result = self._sgd_phase(theta, seeds, phase)
            theta, steps, diverged = result.theta, steps + result.steps, diverged | result.diverged
            per_epoch = math.ceil(phase.size / c.batch_size)
            curves.append(result.curve)
            curve_steps += [done_steps + per_epoch * (e + 1) for e in range(phase.epochs)]
            done_steps += per_epoch * phase.epochs
            if number == 0 and len(phases) == 2:
                phase1_acc, phase1_epochs = result.train_acc, result.epochs
        assert result is not None
        train_seconds = time.perf_counter() - start_time

        exact = theta.detach().to(torch.float64)
        finite = torch.isfinite(exact).all(dim=1)
        safe = torch.where(finite.unsqueeze(-1), exact, torch.zeros_like(exact))
        loss, grad = self._full_batch(safe, self.data.x_train, self.data.y_train, with_grad=True)
        grad_norm = grad.norm(dim=-1)
        train_acc = self.accuracy(safe, self.data.x_train, self.data.y_train)
        test_acc = self.accuracy(safe, self.data.x_test, self.data.y_test)
        test_loss = self._full_batch(safe, self.data.x_test, self.data.y_test, with_grad=False)[0]
        bad = diverged | ~finite | ~torch.isfinite(loss) | ~torch.isfinite(grad_norm)
        classes = [
            "diverged"
            if bool(bad[r])
            else "global_minimum"
            if float(train_acc[r]) >= c.target_acc
            else "not_converged"
            for r in range(R)
        ]
        lam_min = lam_max = lam_lower = residual = nan
        method = "none"
        if c.spectrum:
            spectrum = lanczos_spectrum(self, safe)
            lam_min, lam_max, lam_lower = spectrum.lambda_min, spectrum.lambda_max, spectrum.lambda_lower
            residual, method = spectrum.residual, spectrum.method
        if progress is not None:
            progress(R, R)

        def col(t: Tensor) -> list[Any]:
            return t.detach().cpu().tolist()

        frame = pd.DataFrame(
            {
                "seed": seeds,
                "steps": col(steps),
                "restarts": 0,
                "loss": col(loss),
                "loss_gap": col(loss - self.optimal_loss),
                "grad_norm": col(grad_norm),
                "stationarity": col(grad.abs().amax(dim=-1)),
                "lambda_min": col(lam_min),
                "lambda_max": col(lam_max),
                "lambda_lower": col(lam_lower),
                "n_negative": col((lam_min < -spec.diagnostics.eig_tol).long()) if c.spectrum else 0,
                "n_zero": 0,
                "expected_zero": 0,
                "spectrum_method": method,
                "spectrum_residual": col(residual),
                "critical_point": classes,
                "escaped": False,
                "certified": False,
                "radius": math.nan,
                "certificate": "n/a",
                "phase1_train_acc": col(phase1_acc),
                "phase1_epochs": col(phase1_epochs),
                "train_acc": col(train_acc),
                "test_acc": col(test_acc),
                "test_loss": col(test_loss),
                "epochs": col(result.epochs),
                "init": c.init,
                "regularization": c.regularization,
                "final_lr": c.lr,
                "converged": [cls == "global_minimum" for cls in classes],
            }
        )
        for key, flag in self.hypotheses().items():
            frame[f"hyp_{key}"] = flag
        frame["train_seconds_per_run"] = train_seconds / max(1, R)
        frame["seconds_per_run"] = (time.perf_counter() - start_time) / max(1, R)
        frame["device"] = device_name(self.device)
        return RunBatch(
            frame=frame,
            theta=theta.detach().cpu().numpy(),
            theta0=theta0.detach().cpu().numpy(),
            eigenvalues=np.zeros((R, 0)),
            curve_steps=np.asarray(curve_steps, dtype=np.int64),
            curve=torch.cat(curves, dim=1).cpu().numpy(),
        )


def baseline_gap(frame_adv: pd.DataFrame, frame_clean: pd.DataFrame) -> pd.DataFrame:
    """Test-accuracy gap of adversarially initialized runs to the random-init baseline (one row).

    gap = mean(test_acc | clean) - mean(test_acc | adversarial), with standard error
    sqrt(s_a^2/n_a + s_c^2/n_c); positive means the adversarial global minima generalize worse. Only
    runs that reached a global minimum (zero training error) count; ``paired_gap`` averages per-seed
    differences over seeds present in both frames (NaN when none); ``gap_all_runs`` counts every run,
    reached or not.
    """

    def reached(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["critical_point"] == "global_minimum"]

    adv, clean = reached(frame_adv), reached(frame_clean)
    n_a, n_c = len(adv), len(clean)
    mean_a, mean_c = adv["test_acc"].mean(), clean["test_acc"].mean()
    var_a = adv["test_acc"].var(ddof=1) if n_a > 1 else math.nan
    var_c = clean["test_acc"].var(ddof=1) if n_c > 1 else math.nan
    paired = (
        adv.set_index("seed")["test_acc"]
        .to_frame("adv")
        .join(clean.set_index("seed")["test_acc"].to_frame("clean"), how="inner")
    )
    return pd.DataFrame(
        {
            "runs_adversarial": [n_a],
            "runs_clean": [n_c],
            "reached_adversarial": [n_a / max(1, len(frame_adv))],
            "reached_clean": [n_c / max(1, len(frame_clean))],
            "test_acc_adversarial": [mean_a],
            "test_acc_clean": [mean_c],
            "gap": [mean_c - mean_a],
            "gap_se": [math.sqrt(var_a / n_a + var_c / n_c) if n_a > 1 and n_c > 1 else math.nan],
            "paired_gap": [(paired["clean"] - paired["adv"]).mean() if len(paired) else math.nan],
            "gap_all_runs": [frame_clean["test_acc"].mean() - frame_adv["test_acc"].mean()],
            "phase1_train_acc": [frame_adv["phase1_train_acc"].mean()],
        }
    )
