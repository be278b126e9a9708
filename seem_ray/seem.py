"""SEEM: the self-excite eigenvalue measure of a critic on a fixed probe batch (Yue et al. 2023).

Flow position: the loop calls `compute_seem` every K steps on the online critic (one head, see
`probe_critic`) and a fixed probe batch; the value goes to the divergence predictors. Pure: no I/O,
no Ray/MLflow/Optuna.

    A = diag(gamma * (1 - done)) G(X*, X) - G(X, X),   G(X1, X2)[i, j] = <g(X1_i), g(X2_j)>
    SEEM = max Re eig(A) / ||A||_F  in [-1, 1]

with g(x) = grad_theta Q(x) over all trainable parameters (docs/seem.md sections 1-4).

Two exact Gram paths: "layerwise" builds G from per-layer inputs and output-gradients (one
backward per input set, seem.md section 4) for MLPs of Linear/LayerNorm/RMSNorm and elementwise
activations; "generic" uses torch.func per-sample gradients (chunked) for any other module.
The rightmost eigenvalue comes from a dense float64 eigensolver (default), or, opt-in, from a
shift-invert block Krylov method whose answer is residual-checked and falls back to dense.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from seem_ray.config import EIG_METHODS

__all__ = [
    "EIG_METHODS",
    "SeemResult",
    "compute_seem",
    "gram_matrices",
    "layerwise_eligible",
    "probe_critic",
    "rightmost_eigenvalue",
]

log = logging.getLogger(__name__)

GRAM_METHODS = ("auto", "layerwise", "generic")

# Arnoldi accepts an eigenpair when ||A v - lam v|| <= ARNOLDI_TOL (A scaled to ||A||_F = 1).
ARNOLDI_TOL = 1e-9
# Shift-invert rounds before the dense fallback.
SHIFT_ROUNDS = 4
# Eigenvalues closer than this to the best one found (units of ||A||_F) need no certificate.
ARNOLDI_SLACK = 1e-7
# Largest shift-invert Krylov space per round.
KRYLOV_MAX_DIM = 384
# Memory budget (bytes) for the float64 temporaries of one row block of the Gram.
_BLOCK_BYTES = 256 * 2**20
# Memory budget (bytes) for materialised per-sample gradients on the generic path.
_GENERIC_BYTES = 1024 * 2**20

# Parameter-free leaf modules that act on each sample independently.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.Tanh,
    nn.Mish,
    nn.GELU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
)
_NORMS = (nn.LayerNorm, nn.RMSNorm)


@dataclass(frozen=True)
class SeemResult:
    """One SEEM measurement; eigenvalues and norms are in A's scale (1/P when scaled)."""

    seem: float
    """max Re eig(A) / ||A||_F, in [-1, 1] (0.0 when A == 0, nan when A is not finite)."""
    max_eig: float
    """Real part of the rightmost eigenvalue of A."""
    frob: float
    """||A||_F."""
    n: int
    """Probe size."""
    num_params: int
    """P: trainable parameters the gradients span."""
    seconds: float
    gram_seconds: float
    eig_seconds: float
    method: str
    """Gram path: "layerwise" or "generic"."""
    eig_method: str
    """Eigen-solver that produced the answer: "dense" or "arnoldi"."""
    top_eigs: tuple[complex, ...] = ()
    """The top_k rightmost eigenvalues of A (complex), rightmost first; empty when top_k=0."""


def probe_critic(critic: nn.Module, head: int) -> nn.Module:
    """The module SEEM probes: `critic.head_module(head)` for batched ensembles, else `critic`."""
    head_module = getattr(critic, "head_module", None)
    if callable(head_module):
        return head_module(head)
    return critic


# ----------------------------------------------------------------------------- helpers


@contextmanager
def _eval_mode(critic: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (dropout off, BatchNorm on running stats); restore every flag."""
    modes = [(m, m.training) for m in critic.modules()]
    critic.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _trainable(critic: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in critic.named_parameters() if p.requires_grad]


def _q_vector(q: torch.Tensor, n: int) -> torch.Tensor:
    if q.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"critic(obs, act) returned shape {tuple(q.shape)}; expected [{n}] or [{n}, 1]"
        )
    return q.reshape(n)


def _gram_device(device: torch.device) -> torch.device:
    # MPS has no float64; everything else can hold the float64 Gram where the critic lives.
    return torch.device("cpu") if device.type == "mps" else device


def layerwise_eligible(critic: nn.Module) -> bool:
    """Static check for the layer-wise path: trainable params only in Linear/LN/RMSNorm modules.

    Leaf modules must be Linear, LayerNorm, RMSNorm, a known elementwise activation or Dropout;
    parents may be any container without trainable parameters of its own. Parametrized modules
    (spectral/weight norm) are not eligible. A runtime check (each parametrised layer called
    exactly once on an [n, d] input, outputs not modified in place) completes it.
    """
    for module in critic.modules():
        if parametrize.is_parametrized(module):
            return False
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        children = list(module.children())
        if not children:
            if isinstance(module, nn.Linear):
                continue
            if isinstance(module, nn.LayerNorm):
                if len(module.normalized_shape) != 1:
                    return False
                continue
            if isinstance(module, nn.RMSNorm):
                if len(module.normalized_shape) != 1:
                    return False
                continue
            if isinstance(module, _ELEMENTWISE) and not own:
                continue
            return False
        if own:
            return False
    return True


@dataclass(frozen=True)
class _LayerFeatures:
    """Per-layer factors of the Gram: G += (g1 g2^T) * (x1 x2^T + bias) or norm-affine terms."""

    kind: str  # "linear" or "norm"
    x: torch.Tensor  # Linear input a, or normalised pre-affine n  [N, d_in]
    g: torch.Tensor  # dQ/d(output)  [N, d_out]
    weight: bool  # weight trainable
    bias: bool  # bias trainable


class _NotLayerwise(Exception):
    """The runtime check failed: use the generic path."""


def _layer_features(
    critic: nn.Module, obs: torch.Tensor, act: torch.Tensor
) -> tuple[list[_LayerFeatures], torch.Tensor]:
    """One forward with hooks and one autograd.grad of Q.sum() w.r.t. every layer output."""
    n = obs.shape[0]
    records: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor, int, int]]] = {}
    layers = [
        m
        for m in critic.modules()
        if isinstance(m, (nn.Linear, *_NORMS)) and any(p.requires_grad for p in m.parameters())
    ]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        records.setdefault(module, []).append((x, output, x._version, output._version))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        q = _q_vector(critic(obs, act), n)
    finally:
        for h in handles:
            h.remove()

    feats_in: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    for m in layers:
        rec = records.get(m, [])
        if len(rec) != 1:
            raise _NotLayerwise(f"{type(m).__name__} called {len(rec)} times")
        x, out, xv, ov = rec[0]
        if x._version != xv or out._version != ov:
            raise _NotLayerwise(f"{type(m).__name__} input/output modified in place")
        if x.ndim != 2 or x.shape[0] != n or out.ndim != 2 or out.shape[0] != n:
            raise _NotLayerwise(f"{type(m).__name__} saw shape {tuple(x.shape)}, not [n, d]")
        if not out.requires_grad:
            raise _NotLayerwise(f"{type(m).__name__} output not in the graph")
        feats_in.append((m, x, out))

    if not feats_in:
        raise ValueError("critic has no trainable parameters: SEEM is undefined")
    grads = torch.autograd.grad(q.sum(), [out for _, _, out in feats_in], allow_unused=True)

    feats: list[_LayerFeatures] = []
    for (m, x, out), g in zip(feats_in, grads, strict=True):
        g = torch.zeros_like(out) if g is None else g
        weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
        w = weight is not None and weight.requires_grad
        b = bias is not None and bias.requires_grad
        if isinstance(m, nn.Linear):
            feats.append(_LayerFeatures("linear", x.detach(), g.detach(), w, b))
            continue
        with torch.no_grad():
            if isinstance(m, nn.LayerNorm):
                normed = F.layer_norm(x, m.normalized_shape, eps=m.eps)
            else:
                normed = F.rms_norm(x, m.normalized_shape, eps=m.eps)
        feats.append(_LayerFeatures("norm", normed.detach(), g.detach(), w, b))
    return feats, q.detach()


def _linear_block(
    f1: _LayerFeatures, f2: _LayerFeatures, rows: slice
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Either a Gram block or a pair of feature matrices whose product is the block."""
    x1, g1 = f1.x[rows].double(), f1.g[rows].double()
    x2, g2 = f2.x.double(), f2.g.double()
    d_in, d_out = x1.shape[1], g1.shape[1]
    if f1.kind == "norm":
        left = [g1 * x1] if f1.weight else []
        right = [g2 * x2] if f1.weight else []
        if f1.bias:
            left.append(g1)
            right.append(g2)
        return torch.cat(left, 1), torch.cat(right, 1)
    if d_in * d_out <= d_in + d_out or not f1.weight:
        # Explicit per-sample gradients are no wider than the factors (e.g. the output layer).
        left = [(g1[:, :, None] * x1[:, None, :]).reshape(len(x1), -1)] if f1.weight else []
        right = [(g2[:, :, None] * x2[:, None, :]).reshape(len(x2), -1)] if f1.weight else []
        if f1.bias:
            left.append(g1)
            right.append(g2)
        return torch.cat(left, 1), torch.cat(right, 1)
    block = x1 @ x2.T
    if f1.bias:
        block += 1.0
    block *= g1 @ g2.T
    return block


def _gram_rows(
    feats1: list[_LayerFeatures], feats2: list[_LayerFeatures], rows: slice
) -> torch.Tensor:
    """Rows `rows` of G(X1, X2) from layer features (seem.md section 4)."""
    lefts: list[torch.Tensor] = []
    rights: list[torch.Tensor] = []
    out: torch.Tensor | None = None
    for f1, f2 in zip(feats1, feats2, strict=True):
        part = _linear_block(f1, f2, rows)
        if isinstance(part, tuple):
            lefts.append(part[0])
            rights.append(part[1])
        elif out is None:
            out = part
        else:
            out += part
    if lefts:
        low = torch.cat(lefts, 1) @ torch.cat(rights, 1).T
        out = low if out is None else out.add_(low)
    assert out is not None
    return out


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, min(n_rows, _BLOCK_BYTES // (8 * 4 * max(n_cols, 1))))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _layerwise_a(
    critic: nn.Module,
    x: tuple[torch.Tensor, torch.Tensor],
    xs: tuple[torch.Tensor, torch.Tensor],
    coef: torch.Tensor,
) -> torch.Tensor:
    """A = diag(coef) G(X*, X) - G(X, X), accumulated block by block into one buffer."""
    feats, _ = _layer_features(critic, *x)
    feats_s, _ = _layer_features(critic, *xs)
    n = x[0].shape[0]
    dev = _gram_device(x[0].device)
    feats = [_to(f, dev) for f in feats]
    feats_s = [_to(f, dev) for f in feats_s]
    coef = coef.to(dev, torch.float64)
    a = torch.empty(n, n, dtype=torch.float64, device=dev)
    for rows in _row_blocks(n, n):
        block = _gram_rows(feats_s, feats, rows)
        block *= coef[rows, None]
        block -= _gram_rows(feats, feats, rows)
        a[rows] = block
    return a


def _to(f: _LayerFeatures, dev: torch.device) -> _LayerFeatures:
    return _LayerFeatures(f.kind, f.x.to(dev), f.g.to(dev), f.weight, f.bias)


# ----------------------------------------------------------------------------- generic path


def _per_sample_grads(
    critic: nn.Module, obs: torch.Tensor, act: torch.Tensor, rows: slice
) -> torch.Tensor:
    """Per-sample gradients [len(rows), P] (float64) via torch.func, or a loop if vmap fails."""
    named = _trainable(critic)
    params = {k: p.detach() for k, p in named}
    frozen = {k: p.detach() for k, p in critic.named_parameters() if not p.requires_grad}
    frozen.update(dict(critic.named_buffers()))

    def q_single(p: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        q = torch.func.functional_call(critic, (p, frozen), (o[None], a[None]))
        return q.reshape(())

    o, a = obs[rows], act[rows]
    try:
        grads = torch.func.vmap(torch.func.grad(q_single), in_dims=(None, 0, 0))(params, o, a)
        return torch.cat([grads[k].reshape(len(o), -1).double() for k, _ in named], 1)
    except Exception as err:  # an op without a batching rule: exact but slower loop
        log.debug("vmap per-sample grads failed (%s); using a loop", err)
    out = []
    ps = [p for _, p in named]
    for i in range(len(o)):
        q = _q_vector(critic(o[i : i + 1], a[i : i + 1]), 1)
        gs = torch.autograd.grad(q.sum(), ps, allow_unused=True)
        flat = [torch.zeros_like(p) if g is None else g for g, p in zip(gs, ps, strict=True)]
        out.append(torch.cat([g.reshape(-1).double() for g in flat]))
    return torch.stack(out)


def _generic_chunk(n: int, p: int) -> int:
    return max(1, min(n, _BLOCK_BYTES // (8 * max(p, 1))))


def _generic_a(
    critic: nn.Module,
    x: tuple[torch.Tensor, torch.Tensor],
    xs: tuple[torch.Tensor, torch.Tensor],
    coef: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(A, None) when coef is given, else (G(X,X), G(X*,X)); per-sample grads, chunked."""
    n = x[0].shape[0]
    p = sum(q.numel() for _, q in _trainable(critic))
    dev = _gram_device(x[0].device)
    step = _generic_chunk(n, p)

    def phi(src: tuple[torch.Tensor, torch.Tensor], rows: slice) -> torch.Tensor:
        return _per_sample_grads(critic, *src, rows).to(dev)

    blocks = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    keep = 2 * n * p * 8 <= _GENERIC_BYTES
    phi_x = torch.cat([phi(x, r) for r in blocks]) if keep else None

    def cols() -> Iterator[tuple[slice, torch.Tensor]]:
        for c in blocks:
            yield c, (phi_x[c] if phi_x is not None else phi(x, c))

    g_xx = torch.empty(n, n, dtype=torch.float64, device=dev)
    g_sx = torch.empty(n, n, dtype=torch.float64, device=dev)
    for r in blocks:
        left_x = phi_x[r] if phi_x is not None else phi(x, r)
        left_s = phi(xs, r)
        for c, right in cols():
            g_xx[r, c] = left_x @ right.T
            g_sx[r, c] = left_s @ right.T
    if coef is None:
        return g_xx, g_sx
    g_sx *= coef.to(dev, torch.float64)[:, None]
    return g_sx.sub_(g_xx), None


# ----------------------------------------------------------------------------- Gram API


def _prepare(critic: nn.Module, *arrays: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
    ref = next(iter(critic.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    out = []
    for arr in arrays:
        t = torch.as_tensor(arr)
        if t.ndim != 2:
            raise ValueError(f"probe inputs must be [n, d] tensors; got shape {tuple(t.shape)}")
        out.append(t.to(device=device, dtype=dtype))
    n = out[0].shape[0]
    if n < 1 or any(t.shape[0] != n for t in out):
        raise ValueError(
            f"obs/act/next_obs/next_act must share n >= 1 rows; got {[t.shape[0] for t in out]}"
        )
    return tuple(out)


def _choose_gram(critic: nn.Module, method: str) -> str:
    if method not in GRAM_METHODS:
        raise ValueError(f"gram method {method!r} unknown; expected one of {GRAM_METHODS}")
    if method == "auto":
        return "layerwise" if layerwise_eligible(critic) else "generic"
    if method == "layerwise" and not layerwise_eligible(critic):
        raise ValueError(f"{type(critic).__name__} is not eligible for the layer-wise Gram")
    return method


def gram_matrices(
    critic: nn.Module,
    obs: torch.Tensor,
    act: torch.Tensor,
    next_obs: torch.Tensor,
    next_act: torch.Tensor,
    *,
    method: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled float64 Grams (G(X, X), G(X*, X)) of the critic's parameter gradients.

    Args:
        critic: module called as critic(obs, act) -> Q of shape [n] or [n, 1].
        obs, act, next_obs, next_act: probe inputs X = (obs, act), X* = (next_obs, next_act).
        method: "auto", "layerwise" or "generic" (for tests; auto falls back when needed).

    Returns:
        (G_xx, G_sx), both [n, n] float64 on the critic's device.
    """
    x0, x1, s0, s1 = _prepare(critic, obs, act, next_obs, next_act)
    chosen = _choose_gram(critic, method)
    with _eval_mode(critic), torch.enable_grad():
        if chosen == "layerwise":
            try:
                feats, _ = _layer_features(critic, x0, x1)
                feats_s, _ = _layer_features(critic, s0, s1)
                n = x0.shape[0]
                full = slice(0, n)
                return _gram_rows(feats, feats, full), _gram_rows(feats_s, feats, full)
            except _NotLayerwise as err:
                if method == "layerwise":
                    raise ValueError(f"layer-wise Gram not applicable: {err}") from err
                log.debug("layer-wise Gram not applicable (%s); generic path", err)
        g_xx, g_sx = _generic_a(critic, (x0, x1), (s0, s1), None)
        assert g_sx is not None
        return g_xx, g_sx


# ----------------------------------------------------------------------------- eigenvalues


def _sort_right(w: np.ndarray) -> np.ndarray:
    return w[np.lexsort((-w.imag, -w.real))]


def _dense_eigs(a: np.ndarray) -> np.ndarray:
    """All eigenvalues (float64 LAPACK geev without vectors), rightmost first."""
    w = scipy.linalg.eigvals(a, check_finite=False)
    return _sort_right(w)


class _BlockKrylov:
    """Growing orthonormal basis of span{X, TX, T^2 X, ...} with A times it kept alongside."""

    def __init__(
        self,
        a: np.ndarray,
        apply: Callable[[np.ndarray], np.ndarray],
        block: int,
        seed: int,
        max_dim: int,
    ) -> None:
        n = a.shape[0]
        self.a, self.apply, self.block = a, apply, block
        self.max_dim = min(max_dim, n - 2 * block)
        self._v = np.empty((n, self.max_dim))
        self._av = np.empty((n, self.max_dim))
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, block)))
        self._v[:, :block] = q
        self.dim = block
        self._av_dim = 0  # columns of A @ basis computed so far (filled lazily, one GEMM)
        self.exhausted = False

    def extend(self, steps: int) -> None:
        b = self.block
        for _ in range(steps):
            if self.exhausted or self.dim + b > self.max_dim:
                self.exhausted = True
                return
            basis = self._v[:, : self.dim]
            w = self.apply(self._v[:, self.dim - b : self.dim])
            for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to working precision
                w -= basis @ (basis.T @ w)
            q, r = np.linalg.qr(w)
            if np.min(np.abs(np.diag(r))) <= 1e-12 * max(1.0, float(np.abs(r).max())):
                self.exhausted = True  # (near-)invariant subspace: Ritz values are exact
                return
            self._v[:, self.dim : self.dim + b] = q
            self.dim += b

    def ritz(self, sigma: float | None = None, count: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rayleigh-Ritz of A on the basis: Ritz values and their true residual norms.

        With sigma, only the `count` Ritz values nearest sigma, nearest first.
        """
        v, av = self._v[:, : self.dim], self._av[:, : self.dim]
        if self._av_dim < self.dim:
            av[:, self._av_dim :] = self.a @ v[:, self._av_dim :]
            self._av_dim = self.dim
        vals, y = scipy.linalg.eig(v.T @ av, check_finite=False)
        if sigma is not None:
            keep = np.argsort(np.abs(vals - sigma))[:count]
            vals, y = vals[keep], y[:, keep]
        y /= np.linalg.norm(y, axis=0)
        resid = np.linalg.norm(av @ y - (v @ y) * vals[None, :], axis=0)
        return vals, resid


def _arnoldi_eigs(a: np.ndarray, k: int) -> np.ndarray | None:
    """The k rightmost eigenvalues of a (||a||_F == 1) by shift-invert block Krylov, or None.

    Plain Krylov resolves the rightmost eigenvalue very slowly when it sits in the dense cluster
    near zero that -G(X, X) produces (a converging critic: thousands of matrix-vector products),
    so: (1) a short block Krylov on `a` locates the right edge and any outlier; (2) one LU of
    a - sigma I, sigma just right of that edge, makes the eigenvalues nearest sigma dominant; a
    block Krylov on the inverse plus Rayleigh-Ritz with `a` gets them to residual ARNOLDI_TOL.
    The answer is accepted only when the wanted Ritz pairs nearest sigma have all converged, lie
    left of sigma, their disk covers the strip between them and sigma, and no localisation Ritz
    value lies further right; otherwise sigma moves (at most SHIFT_ROUNDS) and then None (dense).
    """
    n = a.shape[0]
    if n < 128:
        return None
    local = _BlockKrylov(a, lambda x: a @ x, 8, seed=1, max_dim=48)
    local.extend(5)
    theta, rho = local.ritz()
    edge = float(theta.real.max())
    outliers = float(np.max(theta.real - rho))
    sigma = edge + max(abs(edge), 1e-6)
    for attempt in range(SHIFT_ROUNDS):
        try:
            shifted = a.copy()
            shifted.flat[:: n + 1] -= sigma
            lu = scipy.linalg.lu_factor(shifted, check_finite=False, overwrite_a=True)
        except (ValueError, np.linalg.LinAlgError):
            return None
        space = _BlockKrylov(
            a,
            lambda x, lu=lu: scipy.linalg.lu_solve(lu, x, check_finite=False),
            8,
            seed=2 + attempt,
            max_dim=KRYLOV_MAX_DIM,
        )
        best, radius = math.inf, 0.0
        space.extend(12)
        while True:
            vals, resid = space.ritz(sigma, max(k, 1) + 64)
            # Ritz values converge nearest-first: keep the converged prefix; its farthest
            # member bounds the disk inside which every eigenvalue has been found.
            bad = np.flatnonzero(resid > ARNOLDI_TOL)
            found = vals[: bad[0] if bad.size else vals.size]
            if found.size >= max(k, 1):
                radius = float(abs(found[-1] - sigma))
                if bad.size:  # half-way to the first unconverged Ritz value is still searched
                    radius = max(radius, 0.5 * float(abs(vals[bad[0]] - sigma)))
                best = float(found.real.max())
                if best >= sigma:
                    break
                covered = radius >= 1.5 * (sigma - best) or sigma - best <= ARNOLDI_SLACK
                if covered and outliers <= best + ARNOLDI_SLACK:
                    return _sort_right(found)[: max(k, 1)]
            if space.exhausted:
                break
            space.extend(6)
        log.debug(
            "shift-invert round %d: sigma=%.3g best=%.3g radius=%.3g outliers=%.3g",
            attempt,
            sigma,
            best,
            radius,
            outliers,
        )
        if not math.isfinite(best):
            return None
        # Closer to the edge when the disk stayed too small; further right when inside.
        sigma = best + (radius / 10 if best < sigma else max(sigma - edge, radius, 1e-6))
    return None


def _eigs(a: np.ndarray, method: str, k: int) -> tuple[np.ndarray, str]:
    if method not in EIG_METHODS:
        raise ValueError(f"eig method {method!r} unknown; expected one of {', '.join(EIG_METHODS)}")
    n = a.shape[0]
    # "auto" is dense: the shift-invert certificate is a heuristic and was seen to miss a
    # rightmost complex pair (LayerNorm critic, n=2560), so Arnoldi is opt-in only.
    if method == "arnoldi" and n > 2:
        vals = _arnoldi_eigs(a, k)
        if vals is not None:
            return vals, "arnoldi"
    return _dense_eigs(a)[: max(k, 1)], "dense"


def rightmost_eigenvalue(a: np.ndarray, method: str = "auto") -> tuple[complex, str]:
    """The rightmost eigenvalue of a square real matrix and the solver that found it.

    Args:
        a: [n, n] real matrix (any scale; solved as a / ||a||_F in float64).
        method: "dense", "arnoldi" (falls back to dense when unverified) or "auto".

    Returns:
        (eigenvalue in a's scale, "dense" or "arnoldi").
    """
    a = np.asarray(a, dtype=np.float64)
    frob = _frob(a)
    if frob == 0.0:
        return 0j, "dense"
    vals, used = _eigs(a / frob, method, 1)
    return complex(vals[0]) * frob, used


def _frob(a: np.ndarray) -> float:
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return peak
    return peak * float(np.linalg.norm(a / peak))


# ----------------------------------------------------------------------------- SEEM


def compute_seem(
    critic: nn.Module,
    obs: torch.Tensor,
    act: torch.Tensor,
    next_obs: torch.Tensor,
    next_act: torch.Tensor,
    gamma: float = 0.99,
    *,
    done: torch.Tensor | None = None,
    mask_terminals: bool = False,
    eig: str = "auto",
    top_k: int = 0,
    scale_by_params: bool = True,
    gram: str = "auto",
) -> SeemResult:
    """SEEM of `critic` on the probe X = (obs, act), X* = (next_obs, next_act).

    Args:
        critic: module called as critic(obs, act) -> Q [n] or [n, 1]; evaluated in eval mode
            (its modes are restored) without touching `.grad`. Samples must not interact.
        obs, act, next_obs, next_act: [n, d] probe tensors (next_act = pi(next_obs)).
        gamma: discount in A = gamma G(X*, X) - G(X, X).
        done: [n] terminal flags, used only with mask_terminals (row i of the gamma term
            times 1 - done_i; the paper ignores done).
        eig: "auto" or "dense" (exact dense float64 eigvals), or "arnoldi" (opt-in, faster on
            large probes; residual-checked shift-invert Krylov whose rightmost-ness is only
            heuristically certified, dense fallback when unverified).
        top_k: also return the top_k rightmost eigenvalues of A.
        scale_by_params: divide A by P (the official 1/sqrt(P) per gradient); SEEM itself
            is scale-invariant.
        gram: "auto", "layerwise" or "generic" Gram path (auto picks the fastest exact one).

    Returns:
        SeemResult with seem, max_eig, frob, timings and the methods used.
    """
    t0 = time.perf_counter()
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be finite; got {gamma!r}")
    if eig not in EIG_METHODS:
        raise ValueError(f"eig={eig!r} unknown; expected one of {', '.join(EIG_METHODS)}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0; got {top_k}")
    x0, x1, s0, s1 = _prepare(critic, obs, act, next_obs, next_act)
    n = x0.shape[0]
    coef = torch.full((n,), float(gamma), dtype=torch.float64)
    if mask_terminals:
        if done is None:
            raise ValueError("mask_terminals=True needs done flags; pass done=batch.done")
        d = torch.as_tensor(done).detach().to("cpu", torch.float64).reshape(-1)
        if d.shape[0] != n:
            raise ValueError(f"done has {d.shape[0]} entries; expected {n} (one per probe row)")
        coef = coef * (1.0 - d)
    num_params = sum(p.numel() for _, p in _trainable(critic))
    if num_params == 0:
        raise ValueError("critic has no trainable parameters: SEEM is undefined")

    chosen = _choose_gram(critic, gram)
    with _eval_mode(critic), torch.enable_grad():
        a_t: torch.Tensor | None = None
        if chosen == "layerwise":
            try:
                a_t = _layerwise_a(critic, (x0, x1), (s0, s1), coef)
            except _NotLayerwise as err:
                if gram == "layerwise":
                    raise ValueError(f"layer-wise Gram not applicable: {err}") from err
                log.debug("layer-wise Gram not applicable (%s); generic path", err)
                chosen = "generic"
        if a_t is None:
            a_t, _ = _generic_a(critic, (x0, x1), (s0, s1), coef)
    a = a_t.cpu().numpy()
    del a_t
    t1 = time.perf_counter()

    scale = 1.0 / num_params if scale_by_params else 1.0
    frob = _frob(a)
    eig_used = "dense"
    top: tuple[complex, ...] = ()
    if not math.isfinite(frob):
        log.warning("SEEM: A has non-finite entries (the critic has diverged); seem=nan")
        lam, seem_val = math.nan, math.nan
    elif frob == 0.0:
        lam, seem_val = 0.0, 0.0
        top = (0j,) * min(top_k, n)
    else:
        a /= frob
        vals, eig_used = _eigs(a, eig, top_k)
        seem_val = float(np.clip(vals[0].real, -1.0, 1.0))
        lam = seem_val * frob * scale
        top = tuple(complex(v) * frob * scale for v in vals[:top_k])
    t2 = time.perf_counter()
    return SeemResult(
        seem=seem_val,
        max_eig=lam,
        frob=frob * scale,
        n=n,
        num_params=num_params,
        seconds=t2 - t0,
        gram_seconds=t1 - t0,
        eig_seconds=t2 - t1,
        method=chosen,
        eig_method=eig_used,
        top_eigs=top,
    )
