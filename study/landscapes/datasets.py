"""Pluggable image-classification data for the L5 landscape: digits (bundled) and CIFAR-10 (on disk).

Every loader returns an :class:`ImageData` with images ``(N, C, H, W)`` scaled to [0, 1] in float64 and
integer labels ``(N,)``. Nothing is downloaded: digits ships with scikit-learn, and CIFAR-10 is read from
a user's local copy of the "CIFAR-10 python version" (the directory ``cifar-10-batches-py`` with the
pickles ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageData:
    """A train/test split of labelled images, float64 in [0, 1]."""

    x_train: Tensor  # (N, C, H, W)
    y_train: Tensor  # (N,) int64
    x_test: Tensor  # (M, C, H, W)
    y_test: Tensor  # (M,) int64
    n_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class DataRequest:
    """What a loader is asked for: the split of data sets without an official one, and a subsample.

    ``test_fraction``/``data_seed`` split digits (CIFAR-10 keeps its official test set);
    ``max_train``/``max_test`` keep the first examples of a seeded permutation (None keeps all).
    """

    data_dir: str | None = None
    test_fraction: float = 0.3
    data_seed: int = 0
    max_train: int | None = None
    max_test: int | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set (known without loading it) and its loader."""

    image_shape: tuple[int, int, int]  # (C, H, W)
    n_classes: int
    load: Callable[[DataRequest], ImageData]
    needs_data_dir: bool = False


def _seeded_subset(n: int, keep: int | None, seed: int) -> Tensor:
    """Indices of a seeded random subset of size ``keep`` of range(n) (all, permuted, when None)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm if keep is None else perm[: min(keep, n)]


def load_digits_data(request: DataRequest) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels 0..16 scaled to [0, 1].

    The split is a seeded permutation (``data_seed``) with ``round(test_fraction * 1797)`` test images.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn; never fetched

    bunch = load_digits()
    x = torch.as_tensor(np.asarray(bunch.images), dtype=torch.float64).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.as_tensor(np.asarray(bunch.target), dtype=torch.int64)  # (N,)
    n = x.shape[0]
    perm = _seeded_subset(n, None, request.data_seed)
    n_test = round(request.test_fraction * n)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    if request.max_train is not None:
        train_idx = train_idx[: request.max_train]
    if request.max_test is not None:
        test_idx = test_idx[: request.max_test]
    return ImageData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], n_classes=10)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return data, labels


def load_cifar10_data(request: DataRequest) -> ImageData:
    """CIFAR-10 from a local ``cifar-10-batches-py`` directory (50000 train / 10000 test, 3x32x32).

    ``data_dir`` may name that directory or its parent. Only trusted files should be read: the format
    is Python pickle. ``max_train``/``max_test`` take seeded subsets (``data_seed``).
    """
    if request.data_dir is None:
        raise ValueError("cifar10: data_dir is required (a local 'cifar-10-batches-py' directory)")
    root = Path(request.data_dir).expanduser()
    candidates = [root, root / "cifar-10-batches-py"]
    folder = next((c for c in candidates if (c / "data_batch_1").is_file()), None)
    if folder is None:
        raise FileNotFoundError(
            f"cifar10: no CIFAR-10 python batches under {str(root)!r} (looked for data_batch_1..5 and "
            f"test_batch in {[str(c) for c in candidates]}); download the 'CIFAR-10 python version' "
            "yourself and point data_dir at it (this project never downloads data)"
        )
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*names, "test_batch"] if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"cifar10: {str(folder)!r} lacks {missing}")
    parts = [_read_cifar_batch(folder / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    train_idx = _seeded_subset(len(y_train), request.max_train, request.data_seed).numpy()
    test_idx = _seeded_subset(len(y_test), request.max_test, request.data_seed + 1).numpy()

    def images(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=torch.float64) / 255.0  # (N, 3, 32, 32)

    return ImageData(
        images(x_train[train_idx]),
        torch.as_tensor(y_train[train_idx]),
        images(x_test[test_idx]),
        torch.as_tensor(y_test[test_idx]),
        n_classes=10,
    )


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo((1, 8, 8), 10, load_digits_data),
    "cifar10": DatasetInfo((3, 32, 32), 10, load_cifar10_data, needs_data_dir=True),
}


def load_dataset(name: str, request: DataRequest) -> ImageData:
    """Load the named data set; a new data set is one loader plus one entry in ``DATASETS``."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name].load(request)
