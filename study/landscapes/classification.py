"""L5: bad global minima that SGD reaches (Liu, Papailiopoulos & Achlioptas, NeurIPS 2020).

The landscape is the mean cross-entropy of a small classifier (MLP or CNN) on a clean training set,

    L(theta) = 1/N sum_i -log softmax(f_theta(x_i))_{y_i},   theta: (R, P) flat parameters,

whose infimum is L* = 0 on separable data (approached, never attained, as the logit margins grow).
The study trains it with the two-phase SGD procedure (:mod:`study.procedures.two_phase_sgd`):

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
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from study.landscapes.base import INIT_SCHEMES, Landscape, init_weight_matrices
from study.landscapes.datasets import DATASETS, DataRequest, ImageData, load_dataset
from study.record.schema import CriticalPoint

_EVAL_CHUNK = 4096  # examples per forward pass in full-batch evaluations


@dataclass(frozen=True)
class ClassificationConfig:
    """An L5 configuration: model and data (the training procedure's settings are its own).

    model: "mlp" (hidden = widths of the hidden layers) or "cnn" (hidden = channels of 3x3 conv layers,
    each followed by ReLU and 2x2 max-pooling, then one linear layer). dataset: "digits" (bundled) or
    "cifar10" (read from ``data_dir``). normalize: standardize inputs by the training set's per-channel
    mean and std.
    """

    model: str = "mlp"
    hidden: int | tuple[int, ...] = 32
    dataset: str = "digits"
    data_dir: str | None = None
    test_fraction: float = 0.3
    data_seed: int = 0
    max_train: int | None = None
    max_test: int | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(int(h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be positive width(s), got {self.hidden!r}")
        choices = {"model": ("mlp", "cnn"), "dataset": tuple(DATASETS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if DATASETS[self.dataset].needs_data_dir and self.data_dir is None:
            raise ValueError(f"data_dir is required for dataset {self.dataset!r} (a local copy; no download)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


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


class Classification(Landscape):
    """Cross-entropy of an MLP/CNN on flat parameters ``theta: (R, P)`` (SCIENCE.md L5). L* = 0."""

    name = "classification"
    default_procedure = "two_phase_sgd"
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
        self.n_params = self.parameter_count(config)
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

    def batch_loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of one replica on a batch, ``(P,), (B, ...), (B,) -> ()``."""
        return cross_entropy(self.forward(theta, x), y)

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        """Logits per replica on shared inputs, ``(R, P), (B, C, H, W) -> (R, B, K)``."""
        return torch.func.vmap(self.forward, in_dims=(0, None))(theta, x.to(theta.dtype))

    def full_batch(self, theta: Tensor, x: Tensor, y: Tensor, *, with_grad: bool) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy ``(R,)`` and (optionally) its gradient ``(R, P)`` on (x, y), chunked."""
        x = x.to(theta.dtype)
        n = x.shape[0]
        loss = torch.zeros(theta.shape[0], dtype=theta.dtype, device=theta.device)
        grad = torch.zeros_like(theta)
        value_fn = torch.func.vmap(self.batch_loss, in_dims=(0, None, None))
        grad_fn = torch.func.vmap(torch.func.grad_and_value(self.batch_loss), in_dims=(0, None, None))
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
        return self.full_batch(theta, self.data.x_train, self.data.y_train, with_grad=False)[0]

    def grad(self, theta: Tensor) -> Tensor:
        """Full-batch gradient of the training cross-entropy (torch.func, vmapped), ``(R, P) -> (R, P)``."""
        return self.full_batch(theta, self.data.x_train, self.data.y_train, with_grad=True)[1]

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

    @staticmethod
    def parameter_count(config: ClassificationConfig) -> int:
        return sum(p.numel() for p in build_module(config).parameters())  # on the meta device

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

    def config(self) -> dict[str, Any]:
        return {"landscape": self.name, **asdict(self.cfg)}

    @property
    def flips(self) -> bool:
        """Whether horizontal flips are a valid augmentation of this data set (natural images)."""
        return self.cfg.dataset == "cifar10"


def baseline_gap(frame_adv: pd.DataFrame, frame_clean: pd.DataFrame) -> pd.DataFrame:
    """Test-accuracy gap of adversarially initialized runs to the random-init baseline (one row).

    gap = mean(test_acc | clean) - mean(test_acc | adversarial), with standard error
    sqrt(s_a^2/n_a + s_c^2/n_c); positive means the adversarial global minima generalize worse. Only
    runs that reached a global minimum (zero training error) count; ``paired_gap`` averages per-seed
    differences over seeds present in both frames (NaN when none); ``gap_all_runs`` counts every run,
    reached or not.
    """

    def reached(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["critical_point"] == CriticalPoint.GLOBAL_MINIMUM]

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
