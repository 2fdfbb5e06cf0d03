"""Families of spurious minima modulo the teacher-student symmetry: invariance under W -> P W Q."""

import numpy as np
import pandas as pd
import pytest
import torch

from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.landscapes.teacher_student.families import (
    canonical_form,
    isotropy_rows,
    spurious_families,
    symmetry_invariants,
)
from study.record.schema import family_key


def diagonal_isotropy_point(k: int) -> np.ndarray:
    """A matrix fixed by the diagonal S_{k-1} (rows and columns 1..k-1 permuted together)."""
    W = np.full((k, k), 0.1)
    np.fill_diagonal(W, 0.9)
    W[1:, 0] = -0.2
    W[0, 1:] = 0.05
    W[0, 0] = 0.5
    return W


def permuted(W: np.ndarray, rng: np.random.Generator, columns: bool = True) -> np.ndarray:
    rows = rng.permutation(W.shape[0])
    cols = rng.permutation(W.shape[1]) if columns else np.arange(W.shape[1])
    return W[rows][:, cols]


@pytest.mark.parametrize("shape", [(6, 6), (7, 6), (5, 5)])
def test_canonical_form_is_invariant_under_p_and_q(shape):
    rng = np.random.default_rng(0)
    W = rng.normal(size=shape)
    reference = canonical_form(W, k=shape[1])
    assert reference.exact  # a generic matrix has no ties: the canonical form is exact
    for _ in range(10):
        other = permuted(W, rng)
        form = canonical_form(other, k=shape[1])
        np.testing.assert_array_equal(form.matrix, reference.matrix)
        np.testing.assert_array_equal(
            symmetry_invariants(other, k=shape[1]), symmetry_invariants(W, k=shape[1])
        )
        np.testing.assert_array_equal(other[form.row_order][:, form.col_order], form.matrix)


def test_symmetric_point_ties_are_orbits():
    """Under the diagonal S_{k-1} the k-1 tied rows form one orbit: the form is still canonical."""
    rng = np.random.default_rng(1)
    W = diagonal_isotropy_point(6)
    reference = canonical_form(W)
    assert not reference.exact and reference.row_cells == (5, 1)
    assert isotropy_rows(W) == 5
    for _ in range(10):
        np.testing.assert_array_equal(canonical_form(permuted(W, rng)).matrix, reference.matrix)


def test_canonical_form_tolerates_noise():
    rng = np.random.default_rng(2)
    W = diagonal_isotropy_point(5)
    noisy = permuted(W + 1e-11 * rng.normal(size=W.shape), rng)
    assert np.max(np.abs(canonical_form(noisy).matrix - canonical_form(W).matrix)) < 1e-9


def test_without_identity_teacher_only_rows_move():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(5, 4))
    rows_only = W[rng.permutation(5)]
    assert np.array_equal(
        canonical_form(rows_only, identity_teacher=False).matrix,
        canonical_form(W, identity_teacher=False).matrix,
    )
    swapped = W[:, [1, 0, 2, 3]]  # a column permutation is no symmetry for a generic teacher
    assert not np.array_equal(
        symmetry_invariants(swapped, identity_teacher=False), symmetry_invariants(W, identity_teacher=False)
    )


def test_padded_coordinates_do_not_mix_with_teacher_coordinates():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(4, 5))  # k = 3 teachers, d = 5
    inside = W[:, [2, 0, 1, 4, 3]]  # permutes teacher coordinates, and the padding: a symmetry
    across = W[:, [3, 1, 2, 0, 4]]  # swaps a teacher coordinate with a padded one: not a symmetry
    np.testing.assert_array_equal(canonical_form(inside, k=3).matrix, canonical_form(W, k=3).matrix)
    assert not np.array_equal(symmetry_invariants(across, k=3), symmetry_invariants(W, k=3))


def test_landscape_symmetry_and_batched_canonical_form():
    """Known answer: F and the Hessian spectrum are invariant under P W Q for V = I; the landscape's
    canonical form maps W and P W Q to the same point, batched."""
    rng = np.random.default_rng(5)
    k = 4
    W = rng.normal(size=(k, k)) / 2
    other = permuted(W, rng)
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k))
    theta = torch.as_tensor(np.stack([W.ravel(), other.ravel()]))
    loss = landscape.loss(theta)
    spectra = torch.linalg.eigvalsh(landscape.hessian(theta))
    assert float(loss[0]) == pytest.approx(float(loss[1]), abs=1e-13)
    np.testing.assert_allclose(spectra[0], spectra[1], atol=1e-12)
    canonical = landscape.symmetry_canonical_form(theta)
    assert canonical.shape == theta.shape
    torch.testing.assert_close(canonical[0], canonical[1], rtol=0, atol=0)


def test_spurious_families_groups_symmetric_copies_and_splits_losses():
    rng = np.random.default_rng(6)
    k = n = 4
    A = diagonal_isotropy_point(k)
    B = rng.normal(size=(k, k))
    points = [A, permuted(A, rng), B, permuted(A, rng), np.eye(k)]
    spectrum_a, spectrum_b = np.linspace(0.01, 2.0, k * k), np.linspace(0.02, 1.5, k * k)
    eigenvalues = np.stack([spectrum_a, spectrum_a, spectrum_b, spectrum_a, spectrum_a])
    frame = pd.DataFrame(
        {
            "seed": [10, 11, 12, 13, 14],
            "loss": [0.05, 0.05, 0.08, 0.05, 0.0],
            "critical_point": ["spurious_minimum"] * 4 + ["global_minimum"],
            "certified": [True, True, True, True, True],
            "lambda_min": eigenvalues[:, 0],
            "lambda_max": eigenvalues[:, -1],
        }
    )
    theta = np.stack([p.ravel() for p in points])
    families = spurious_families(frame, theta, eigenvalues, k=k, n=n)
    assert families["runs"].tolist() == [3, 1]
    assert families["loss"].tolist() == [0.05, 0.08]
    assert families["key"].nunique() == 2
    first = families.iloc[0]
    assert first["representative"] == 0 and first["seed"] == 10
    assert first["n_large"] == int(np.sum(spectrum_a > 1.0))
    assert first["isotropy_rows"] == k - 1 and first["row_cells"] == f"{k - 1}+1"
    assert bool(first["canonical_consistent"])
    # the key of a permuted copy is the key of the family
    inv = symmetry_invariants(permuted(A, rng), k=k)
    assert family_key(0.05, spectrum_a, inv) == first["key"]


def test_spurious_families_empty():
    frame = pd.DataFrame(
        {"seed": [1], "loss": [0.0], "critical_point": ["global_minimum"], "certified": [True]}
    )
    families = spurious_families(frame, np.eye(3).reshape(1, 9), np.ones((1, 9)), k=3, n=3)
    assert families.empty and "loss" in families.columns
