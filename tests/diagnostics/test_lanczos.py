"""Lanczos extremes (HVPs) against the dense spectrum on small models of each landscape."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from study.diagnostics.spectrum import dense_spectrum, lanczos_spectrum
from study.landscapes.registry import make_landscape

SMALL_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "teacher_student": ("teacher_student", {"k": 3, "n": 4}),
    "deep_linear": ("deep_linear", {"widths": (3, 4, 2, 3), "m": 10}),
    "piecewise_linear": ("piecewise_linear", {"N": 10, "d0": 3, "widths": (4, 3)}),
}


@pytest.mark.parametrize("case", list(SMALL_MODELS))
def test_lanczos_extremes_match_the_dense_spectrum(case: str) -> None:
    name, params = SMALL_MODELS[case]
    landscape = make_landscape(name, params)
    theta = landscape.init([0, 1])
    dense = dense_spectrum(landscape, theta)
    lanczos = lanczos_spectrum(landscape, theta, seeds=[0, 1])
    scale = float(dense.hessian_norm.max())
    assert torch.allclose(lanczos.lambda_min, dense.lambda_min, rtol=0, atol=1e-6 * scale)
    assert torch.allclose(lanczos.lambda_max, dense.lambda_max, rtol=0, atol=1e-6 * scale)
    assert (lanczos.residual < 1e-6 * scale).all()
    assert (lanczos.lambda_lower <= dense.lambda_min).all()
    assert (dense.lambda_lower <= dense.lambda_min).all()


def test_a_runs_lanczos_numbers_do_not_depend_on_its_chunk() -> None:
    """The start vector is seeded by the run's seed, not its row: a run alone and the same run as the
    third row of a chunk get bit-identical lambda_min, lambda_lower and residual."""
    landscape = make_landscape("piecewise_linear", {"N": 10, "d0": 3, "widths": (4, 3)})
    seeds = [11, 12, 13, 14]
    chunk = lanczos_spectrum(landscape, landscape.init(seeds), seeds=seeds)
    alone = lanczos_spectrum(landscape, landscape.init([13]), seeds=[13])
    for name in ("lambda_min", "lambda_lower", "residual"):
        assert getattr(alone, name)[0].item() == getattr(chunk, name)[2].item(), name
    # the start vector matters at all: Lanczos from another seed does not reproduce the bits
    other = lanczos_spectrum(landscape, landscape.init([13]), seeds=[99])
    assert other.lambda_lower[0].item() != alone.lambda_lower[0].item()


def test_classify_gives_a_run_the_same_lambda_lower_alone_or_in_a_chunk() -> None:
    """Through the classifier as a procedure calls it (Lanczos forced by max_dense = 1)."""
    from study.diagnostics.critical import DiagnosticsConfig, classify

    landscape = make_landscape("teacher_student", {"k": 3, "n": 4})
    config = DiagnosticsConfig(max_dense=1, certify=False)
    seeds = [5, 6, 7]
    chunk, _ = classify(landscape, landscape.init(seeds), seeds=seeds, config=config)
    alone, _ = classify(landscape, landscape.init([7]), seeds=[7], config=config)
    assert chunk["spectrum_method"].iloc[2] == "lanczos"
    assert alone["lambda_lower"].iloc[0] == chunk["lambda_lower"].iloc[2]
