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
    lanczos = lanczos_spectrum(landscape, theta)
    scale = float(dense.hessian_norm.max())
    assert torch.allclose(lanczos.lambda_min, dense.lambda_min, rtol=0, atol=1e-6 * scale)
    assert torch.allclose(lanczos.lambda_max, dense.lambda_max, rtol=0, atol=1e-6 * scale)
    assert (lanczos.residual < 1e-6 * scale).all()
    assert (lanczos.lambda_lower <= dense.lambda_min).all()
    assert (dense.lambda_lower <= dense.lambda_min).all()
