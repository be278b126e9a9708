"""seem_ray.hessenberg against numpy's eigvals (LAPACK geev, with balancing) as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from seem_ray import hessenberg as H
from seem_ray import seem as S


def _match(w: np.ndarray, ref: np.ndarray, tol: float) -> None:
    """Same multiset of eigenvalues: each reference value has a distinct partner within tol."""
    assert w.shape == ref.shape
    left = list(w)
    for r in ref:
        i = int(np.argmin([abs(r - x) for x in left]))
        assert abs(r - left[i]) <= tol, (r, left[i])
        left.pop(i)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 200])
def test_eigenvalues_match_geev(dtype: type, tol: float, n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n)) / np.sqrt(n)  # a real non-symmetric matrix: complex pairs
    w = H.eigvals_hessenberg(a.astype(dtype))
    assert w is not None, "the hseqr binding should load with this SciPy"
    _match(w, np.linalg.eigvals(a), tol)
    if n >= 7:
        assert np.any(w.imag != 0), "a random non-symmetric matrix has complex pairs"


def test_structured_spectrum_with_a_known_answer() -> None:
    # Similar to diag(1..n) through a random well-conditioned basis: eigenvalues exactly 1..n.
    rng = np.random.default_rng(0)
    n = 40
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = q @ np.diag(1.0 + rng.random(n)) @ q.T
    a = s @ np.diag(np.arange(1.0, n + 1)) @ np.linalg.inv(s)
    w = H.eigvals_hessenberg(a.copy())
    assert w is not None
    np.testing.assert_allclose(np.sort(w.real), np.arange(1.0, n + 1), atol=1e-9)
    np.testing.assert_allclose(w.imag, 0.0, atol=1e-9)


def test_rejects_what_it_cannot_handle() -> None:
    with pytest.raises(ValueError, match="square"):
        H.eigvals_hessenberg(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="float32/float64"):
        H.eigvals_hessenberg(np.zeros((2, 2), dtype=np.complex128))


def test_unexpected_signature_falls_back_to_geev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H, "_SIGNATURE", "void (int *) {t}")
    H._hseqr.cache_clear()
    try:
        a = np.random.default_rng(1).standard_normal((30, 30))
        assert H.eigvals_hessenberg(a.copy()) is None
        # The SEEM eigen step still answers, through geev, without touching its input.
        before = a.copy()
        w = S._dense_eigs(a)
        np.testing.assert_array_equal(a, before)
        _match(w, np.linalg.eigvals(a), 1e-10)
    finally:
        monkeypatch.undo()
        H._hseqr.cache_clear()
    assert H._hseqr("d") is not None


def test_callers_inputs_are_not_overwritten() -> None:
    rng = np.random.default_rng(2)
    for a in (rng.standard_normal((50, 50)), np.asfortranarray(rng.standard_normal((50, 50)))):
        before = a.copy()
        S._dense_eigs(a)
        S._mixed_eigs(a / np.linalg.norm(a))
        np.testing.assert_array_equal(a, before)
