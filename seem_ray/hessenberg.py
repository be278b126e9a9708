"""Eigenvalues of a real square matrix as Hessenberg reduction + Hessenberg QR, nothing else.

Why: ``scipy.linalg.eigvals`` (LAPACK ?geev) also balances the matrix (?gebal) and queries and
sizes its workspace for the eigenvector path. For the SEEM matrix A (a difference of two Gram
matrices, already well scaled) balancing buys no accuracy, and at n = 2560 in float32 skipping it
takes the eigenvalue step from ~1.9 s to ~1.55 s on this 2-core machine (docs/benchmarks.md).
?gehrd is wrapped by ``scipy.linalg.lapack``; ?hseqr is not, so it is called through the function
table SciPy exports for Cython (``scipy.linalg.cython_lapack``), after checking that its C
signature is the one expected. Anything unexpected (a SciPy without the table, another
signature, LAPACK reporting no convergence) returns None, and callers use ?geev instead.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from collections.abc import Callable

import numpy as np
from scipy.linalg import lapack

__all__ = ["eigvals_hessenberg"]

log = logging.getLogger(__name__)

_P = ctypes.c_void_p
_INT_P = ctypes.POINTER(ctypes.c_int)
# ?hseqr(job, compz, n, ilo, ihi, h, ldh, wr, wi, z, ldz, work, lwork, info)
_HSEQR_ARGS = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    _INT_P,
    _INT_P,
    _INT_P,
    _P,
    _INT_P,
    _P,
    _P,
    _P,
    _INT_P,
    _P,
    _INT_P,
    _INT_P,
)
_SIGNATURE = "void (char *, char *, int *, int *, int *, {t}, int *, {t}, {t}, {t}, int *, {t}, int *, int *)"


@functools.cache
def _hseqr(prefix: str) -> Callable[..., None] | None:
    """LAPACK ``{prefix}hseqr`` from SciPy's Cython function table, or None when unusable."""
    try:
        from scipy.linalg import cython_lapack

        # Cython modules export __pyx_capi__ at run time; scipy's stubs do not list it.
        capsule = cython_lapack.__pyx_capi__[f"{prefix}hseqr"]  # type: ignore[attr-defined]
        # Own prototypes rather than setting argtypes on the shared ctypes.pythonapi entries.
        get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
            ("PyCapsule_GetName", ctypes.pythonapi)
        )
        get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", ctypes.pythonapi)
        )
        name = get_name(capsule)
        # Real typedefs are spelled like __pyx_t_5scipy_6linalg_13cython_lapack_s (or plainly
        # float / double): normalise them to s / d.
        sig = re.sub(r"__pyx_t_\w*?cython_lapack_([sd]) \*", r"\1 *", name.decode())
        sig = sig.replace("float *", "s *").replace("double *", "d *")
        if sig != _SIGNATURE.format(t=f"{prefix} *"):
            log.debug("unexpected %shseqr signature %r; using geev", prefix, sig)
            return None
        return ctypes.CFUNCTYPE(None, *_HSEQR_ARGS)(get_pointer(capsule, name))
    except (ImportError, AttributeError, KeyError, ValueError, TypeError) as err:
        log.debug("%shseqr unavailable (%s); using geev", prefix, err)
        return None


def eigvals_hessenberg(a: np.ndarray) -> np.ndarray | None:
    """All eigenvalues of real square `a` (float32 or float64, any order), or None if unavailable.

    ``a`` is overwritten. Backward stable like ?geev: the eigenvalues are exact for a + E with
    ||E|| ~ machine epsilon x ||a||.
    """
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.dtype not in (np.float32, np.float64):
        raise ValueError(f"expected a square float32/float64 matrix, got {a.dtype} {a.shape}")
    prefix = "s" if a.dtype == np.float32 else "d"
    hseqr = _hseqr(prefix)
    n = a.shape[0]
    if hseqr is None or n == 0:
        return None
    gehrd = getattr(lapack, f"{prefix}gehrd")
    lwork = int(getattr(lapack, f"{prefix}gehrd_lwork")(n)[0])
    h, _, info = gehrd(a, lwork=max(lwork, n), overwrite_a=True)
    if info != 0:
        return None
    h = np.asfortranarray(h)
    for j in range(n - 2):  # below the subdiagonal gehrd leaves its reflectors: clear them
        h[j + 2 :, j] = 0.0
    wr, wi = np.empty(n, a.dtype), np.empty(n, a.dtype)
    z = np.empty(1, a.dtype)
    ints = {k: ctypes.c_int(v) for k, v in (("n", n), ("ilo", 1), ("ldz", 1), ("info", 0))}

    def call(work: np.ndarray, lwork: int) -> int:
        lw = ctypes.c_int(lwork)
        hseqr(
            b"E", b"N", ctypes.byref(ints["n"]), ctypes.byref(ints["ilo"]), ctypes.byref(ints["n"]),
            h.ctypes.data, ctypes.byref(ints["n"]), wr.ctypes.data, wi.ctypes.data, z.ctypes.data,
            ctypes.byref(ints["ldz"]), work.ctypes.data, ctypes.byref(lw), ctypes.byref(ints["info"]),
        )  # fmt: skip
        return ints["info"].value

    query = np.empty(1, a.dtype)
    if call(query, -1) != 0:
        return None
    work = np.empty(max(int(query[0]), n), a.dtype)
    if call(work, work.size) != 0:  # > 0: the QR iteration did not converge
        return None
    return wr.astype(np.float64) + 1j * wi.astype(np.float64)
