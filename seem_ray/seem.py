"""SEEM: the self-excite eigenvalue measure of a critic on a fixed probe batch (Yue et al. 2023).

Flow position: the loop calls `compute_seem` every K steps on the online critic (one head, see
`probe_critic`) and a fixed probe batch; the value goes to the divergence predictors. Pure: no I/O,
no Ray/MLflow/Optuna.

    A = diag(gamma * (1 - done)) G(X*, X) - G(X, X),   G(X1, X2)[i, j] = <g(X1_i), g(X2_j)>
    SEEM = max Re eig(A) / ||A||_F  in [-1, 1]

with g(x) = grad_theta Q(x) over all trainable parameters (docs/seem.md sections 1-4).

Two exact Gram paths: "layerwise" builds G from per-layer inputs and output-gradients (one
backward per input set, seem.md section 4) for MLPs of Linear (plain, weight-normed or
spectral-normed, by the chain rule through the reparametrisation), LayerNorm, RMSNorm,
BatchNorm1d (in eval mode a fixed affine map) and elementwise activations; "generic" uses
torch.func per-sample gradients (chunked) for any other module.
Duplicate probe rows (probes are drawn with replacement) are merged first: with E the N x u
indicator of unique rows and D = diag(multiplicities), A = E A_u E^T, so A's nonzero eigenvalues
are those of D^1/2 A_u D^1/2 (u x u, same Frobenius norm as A) plus N - u exact zeros.
The rightmost eigenvalue comes from dense float64 eigvals (small probes) or from a float32 full
spectrum refined by float64 inverse iteration ("mixed", see `_mixed_eigs`), dense as fallback.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn.utils import parametrize

from seem_ray.config import EIG_METHODS
from seem_ray.hessenberg import eigvals_hessenberg

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

# Probes up to this size use dense float64 eigvals under "auto"; larger ones "mixed".
DENSE_MAX_N = 768
# Mixed accepts a refined eigenpair when ||A v - lam v|| <= MIXED_TOL (A scaled to ||A||_F = 1)
MIXED_TOL = 1e-10
# ... and when it lies within MIXED_LOCATE of the float32 eigenvalue it was refined from.
MIXED_LOCATE = 1e-4
# Float32 candidates this far right of the best refined eigenvalue are refined as well.
MIXED_MARGIN = 2.5e-7
# Refinements (one LU each) before the dense fallback.
MIXED_MAX_REFINE = 4
# Inverse-iteration steps per refinement (2-3 usually; tens inside tight clusters).
MIXED_ITERS = 40
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
    """Eigen-solver that produced the answer: "dense" or "mixed"."""
    top_eigs: tuple[complex, ...] = ()
    """The top_k rightmost eigenvalues of A (complex), rightmost first; empty when top_k=0."""
    unique_rows: int = 0
    """Distinct probe rows the eigen-problem was solved on (n when nothing was merged)."""


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


def _reparam_kind(module: nn.Module) -> str | None:
    """ "plain", "weight" or "spectral" for a Linear the layer-wise path handles, else None.

    Handled: no parametrization, or torch's weight_norm / spectral_norm (dim 0) alone on the
    weight; their parameter gradients are fixed linear maps of the effective weight's.
    """
    if not parametrize.is_parametrized(module):
        return "plain"
    plist = getattr(module, "parametrizations", {})
    if set(plist.keys()) != {"weight"} or len(plist["weight"]) != 1:
        return None
    p = plist["weight"][0]
    if getattr(p, "dim", None) != 0:
        return None
    name = type(p).__name__
    if name == "_WeightNorm":
        return "weight"
    if name == "_SpectralNorm" and module.weight.ndim == 2:
        return "spectral"
    return None


def _fixed_stats_batchnorm(module: nn.Module) -> bool:
    """BatchNorm1d with running statistics: in eval mode a per-feature affine map per sample."""
    return (
        isinstance(module, nn.BatchNorm1d)
        and module.track_running_stats
        and module.running_mean is not None
        and module.running_var is not None
    )


def _running_stats(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(running_mean, running_var, eps) of a fixed-statistics BatchNorm1d, else None."""
    if not (_fixed_stats_batchnorm(module) and isinstance(module, nn.BatchNorm1d)):
        return None
    mean, var = module.running_mean, module.running_var
    assert mean is not None and var is not None  # _fixed_stats_batchnorm checked them
    return mean, var, module.eps


def _tensor_attr(module: nn.Module, name: str) -> torch.Tensor:
    """A parameter or buffer by name, as a Tensor (nn.Module's __getattr__ is typed loosely)."""
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor), f"{type(module).__name__}.{name} is no tensor"
    return value


def layerwise_eligible(critic: nn.Module) -> bool:
    """Static check for the layer-wise path: trainable params only in layers it handles.

    Leaf modules must be Linear (plain, weight-normed or spectral-normed), LayerNorm, RMSNorm,
    BatchNorm1d with running statistics (SEEM evaluates in eval mode), a known elementwise
    activation or Dropout; parents may be any container without trainable parameters of its
    own. A runtime check (each such layer called exactly once on an [n, d] input, outputs not
    modified in place) completes it.
    """
    inside_linear: set[nn.Module] = set()
    for module in critic.modules():
        if module in inside_linear:
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if isinstance(module, nn.Linear):
            if _reparam_kind(module) is None:
                return False
            inside_linear.update(m for m in module.modules() if m is not module)
            continue
        if parametrize.is_parametrized(module):
            return False
        children = list(module.children())
        if not children:
            if isinstance(module, nn.LayerNorm | nn.RMSNorm):
                if len(module.normalized_shape) != 1:
                    return False
                continue
            if _fixed_stats_batchnorm(module):
                continue
            if isinstance(module, _ELEMENTWISE) and not own:
                continue
            return False
        if own:
            return False
    return True


@dataclass(frozen=True)
class _LayerFeatures:
    """Per-layer factors of the Gram block G_l(X1, X2) (seem.md section 4).

    linear: (x1 x2^T [+ 1 for a bias merged in]) * (g1 g2^T)  +  low1 low2^T  +  gb1 gb2^T
    norm:   feature products of the affine (g * x for the weight, g for the bias)
    """

    kind: str  # "linear" or "norm"
    x: torch.Tensor  # Linear input a, or normalised pre-affine n  [N, d_in]
    g: torch.Tensor  # dQ/d(output), scaled per output unit for reparametrised weights [N, d_out]
    weight: bool  # weight trainable
    bias: bool  # bias trainable
    g_bias: torch.Tensor | None = None  # the bias's own dQ/d(output) when g was scaled
    low_left: torch.Tensor | None = None  # extra low-rank terms of reparametrised weights [N, k]
    low_right: torch.Tensor | None = None


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
        if isinstance(m, (nn.Linear, nn.BatchNorm1d, *_NORMS))
        and any(p.requires_grad for p in m.parameters())
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
    for (layer, x, out), g in zip(feats_in, grads, strict=True):
        g = torch.zeros_like(out) if g is None else g
        x, g = x.detach(), g.detach()
        bias = getattr(layer, "bias", None)
        b = bias is not None and bias.requires_grad
        if isinstance(layer, nn.Linear):
            feats.append(_linear_features(layer, x, g, b))
            continue
        weight = getattr(layer, "weight", None)
        w = weight is not None and weight.requires_grad
        with torch.no_grad():
            if isinstance(layer, nn.LayerNorm):
                normed = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
            elif isinstance(layer, nn.RMSNorm):
                normed = F.rms_norm(x, layer.normalized_shape, eps=layer.eps)
            elif (stats := _running_stats(layer)) is not None:
                mean, var, eps = stats
                normed = (x - mean) / torch.sqrt(var + eps)
            else:
                raise _NotLayerwise(f"{type(layer).__name__} without running statistics")
        feats.append(_LayerFeatures("norm", normed, g, w, b))
    return feats, q.detach()


@torch.no_grad()
def _linear_features(m: nn.Linear, x: torch.Tensor, g: torch.Tensor, b: bool) -> _LayerFeatures:
    """Gram factors of one Linear; reparametrised weights by the chain rule through them.

    weight norm, W_o = g_o v_o / |v_o|, c_o = (g_o / |v_o|)^2, s = x . v_o/|v_o|:
        dQ/dv_o . dQ/dv_o' = c_o d_o d_o' (x.x' - s_o s_o'),  dQ/dg_o . = d_o s_o d_o' s_o'
    spectral norm, W = V / sigma, sigma = u^T V v (u, v fixed buffers), a = d^T W x, p = (d.u)(x.v):
        dQ/dV . dQ/dV' = ((d.d')(x.x') - a' p - a p' + a a' |u|^2 |v|^2) / sigma^2
    """
    kind = _reparam_kind(m)
    if kind == "plain":
        return _LayerFeatures("linear", x, g, m.weight.requires_grad, b)
    plist = cast(nn.ModuleDict, m.parametrizations)["weight"]
    if kind == "weight":
        g_param, v = _tensor_attr(plist, "original0"), _tensor_attr(plist, "original1")
        vnorm = v.norm(dim=1)
        c = (g_param.reshape(-1) / vnorm) ** 2
        gs = g * (x @ (v / vnorm[:, None]).T)
        v_tr, g_tr = v.requires_grad, g_param.requires_grad
        low = gs * (float(g_tr) - c * float(v_tr))
        return _LayerFeatures(
            "linear", x, g * c.sqrt(), v_tr, b, g_bias=g, low_left=low, low_right=gs
        )
    sn = cast(nn.ModuleList, plist)[0]
    orig = _tensor_attr(plist, "original")
    u, v = _tensor_attr(sn, "_u"), _tensor_attr(sn, "_v")
    sigma = torch.vdot(u, torch.mv(orig, v))
    if not orig.requires_grad:
        return _LayerFeatures("linear", x, g, False, b)
    alpha = (g * (x @ m.weight.T)).sum(1)
    p = (g @ u) * (x @ v)
    uv2 = (u @ u) * (v @ v)
    left = torch.stack([p, alpha, alpha * uv2], 1) / sigma
    right = torch.stack([-alpha, -p, alpha], 1) / sigma
    return _LayerFeatures("linear", x, g / sigma, True, b, g_bias=g, low_left=left, low_right=right)


@dataclass(frozen=True)
class _Hadamard:
    """One layer's Gram block (x1 x2^T [+ 1]) * (g1 g2^T), kept as factors until accumulated."""

    x1: torch.Tensor
    x2: torch.Tensor
    g1: torch.Tensor
    g2: torch.Tensor
    plus_one: bool  # a bias merged into the input side


def _linear_block(
    f1: _LayerFeatures, f2: _LayerFeatures, rows: slice
) -> tuple[_Hadamard | None, list[torch.Tensor], list[torch.Tensor]]:
    """Rows `rows` of one layer's Gram as (its Hadamard block or None, left and right low-rank
    factors)."""
    x1, g1 = f1.x[rows].double(), f1.g[rows].double()
    x2, g2 = f2.x.double(), f2.g.double()
    d_in, d_out = x1.shape[1], g1.shape[1]
    left: list[torch.Tensor] = []
    right: list[torch.Tensor] = []
    if f1.low_left is not None and f2.low_right is not None:
        left.append(f1.low_left[rows].double())
        right.append(f2.low_right.double())
    merged_bias = f1.bias and f1.g_bias is None
    if f1.bias and f1.g_bias is not None and f2.g_bias is not None:
        left.append(f1.g_bias[rows].double())
        right.append(f2.g_bias.double())
    if f1.kind == "norm" or d_in * d_out <= d_in + d_out or not f1.weight:
        # Explicit per-sample gradients are no wider than the factors (norm affines, the
        # output layer).
        if f1.weight and f1.kind == "norm":
            left.append(g1 * x1)
            right.append(g2 * x2)
        elif f1.weight:
            left.append((g1[:, :, None] * x1[:, None, :]).reshape(len(x1), -1))
            right.append((g2[:, :, None] * x2[:, None, :]).reshape(len(x2), -1))
        if merged_bias:
            left.append(g1)
            right.append(g2)
        return None, left, right
    return _Hadamard(x1, x2, g1, g2, merged_bias), left, right


def _gram_parts(
    feats1: list[_LayerFeatures], feats2: list[_LayerFeatures], rows: slice
) -> tuple[list[_Hadamard], torch.Tensor | None, torch.Tensor | None]:
    """Rows `rows` of G(X1, X2) as (Hadamard blocks, left, right): G = sum(blocks) + left right^T."""
    blocks: list[_Hadamard] = []
    lefts: list[torch.Tensor] = []
    rights: list[torch.Tensor] = []
    for f1, f2 in zip(feats1, feats2, strict=True):
        block, left, right = _linear_block(f1, f2, rows)
        lefts += left
        rights += right
        if block is not None:
            blocks.append(block)
    if not lefts:
        return blocks, None, None
    return blocks, torch.cat(lefts, 1), torch.cat(rights, 1)


def _accumulate(
    out: torch.Tensor,
    blocks: list[_Hadamard],
    scratch: tuple[torch.Tensor, torch.Tensor],
    *,
    filled: bool,
    sign: float,
) -> bool:
    """out (+)= sign * sum of the Hadamard blocks; returns whether out now holds a value.

    Each block's two products go into the same two scratch buffers: at n = 2560 a fresh n x n
    float64 buffer costs ~14 ms of page faults here, about half a product's own time.
    """
    xx, gg = scratch
    for b in blocks:
        torch.mm(b.x1, b.x2.T, out=xx)
        if b.plus_one:
            xx += 1.0
        torch.mm(b.g1, b.g2.T, out=gg)
        if filled:
            out.addcmul_(xx, gg, value=sign)
        else:
            torch.mul(xx, gg, out=out)
            if sign != 1.0:
                out.mul_(sign)
            filled = True
    return filled


def _add_low_rank(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, filled: bool) -> None:
    """out (+)= left right^T."""
    if filled:
        out.addmm_(left, right.T)
    else:
        torch.mm(left, right.T, out=out)


def _gram_rows(
    feats1: list[_LayerFeatures], feats2: list[_LayerFeatures], rows: slice
) -> torch.Tensor:
    """Rows `rows` of G(X1, X2) from layer features (seem.md section 4)."""
    blocks, left, right = _gram_parts(feats1, feats2, rows)
    n_rows, n_cols = len(range(*rows.indices(feats1[0].x.shape[0]))), feats2[0].x.shape[0]
    out = torch.empty(n_rows, n_cols, dtype=torch.float64, device=feats1[0].x.device)
    scratch = (torch.empty_like(out), torch.empty_like(out)) if blocks else (out, out)
    filled = _accumulate(out, blocks, scratch, filled=False, sign=1.0)
    if left is not None and right is not None:
        _add_low_rank(out, left, right, filled)
        filled = True
    assert filled
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
    feats = [_gram_ready(f, dev) for f in feats]
    feats_s = [_gram_ready(f, dev) for f in feats_s]
    coef = coef.to(dev, torch.float64)
    a = torch.empty(n, n, dtype=torch.float64, device=dev)
    blocks_rows = list(_row_blocks(n, n))
    rows_max = blocks_rows[0].stop - blocks_rows[0].start
    scratch_buf = torch.empty(2, rows_max, n, dtype=torch.float64, device=dev)
    for rows in blocks_rows:
        out = a[rows]
        scratch = (scratch_buf[0, : out.shape[0]], scratch_buf[1, : out.shape[0]])
        c = coef[rows, None]
        blocks_s, left_s, right = _gram_parts(feats_s, feats, rows)
        blocks, left, _ = _gram_parts(feats, feats, rows)
        filled = _accumulate(out, blocks_s, scratch, filled=False, sign=1.0)
        if filled:
            out *= c
        filled = _accumulate(out, blocks, scratch, filled=filled, sign=-1.0)
        # Both Grams share the right factors (features of X): one product for their difference.
        if left_s is not None and left is not None and right is not None:
            _add_low_rank(out, torch.mul(left_s, c).sub_(left), right, filled)
            filled = True
        assert filled
    return a


def _gram_ready(f: _LayerFeatures, dev: torch.device) -> _LayerFeatures:
    """Features on the Gram's device in its precision (float64), converted once instead of in
    every row block."""

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(dev, torch.float64)

    return _LayerFeatures(
        f.kind,
        f.x.to(dev, torch.float64),
        f.g.to(dev, torch.float64),
        f.weight,
        f.bias,
        move(f.g_bias),
        move(f.low_left),
        move(f.low_right),
    )


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


def _all_eigvals(a: np.ndarray) -> np.ndarray:
    """All eigenvalues of `a` (overwritten) in a's precision: Hessenberg QR without geev's
    balancing (seem_ray.hessenberg, ~20% faster at n = 2560), geev where that is unavailable."""
    w = eigvals_hessenberg(a)
    if w is None:
        w = scipy.linalg.eigvals(a, check_finite=False, overwrite_a=True)
    return w


def _fortran_copy(a: np.ndarray, dtype: type) -> np.ndarray:
    """A Fortran-ordered copy of a matrix with a's eigenvalues: the transpose of a C-ordered
    matrix is already Fortran-ordered, so LAPACK gets it without a transposing copy."""
    return np.array(a.T if a.flags.c_contiguous else a, dtype=dtype, order="F")


def _dense_eigs(a: np.ndarray) -> np.ndarray:
    """All eigenvalues in float64, rightmost first."""
    return _sort_right(_all_eigvals(_fortran_copy(a, np.float64)))


def _mixed_eigs(a: np.ndarray) -> np.ndarray | None:
    """The rightmost eigenvalue of a (||a||_F == 1), located in float32 and refined in float64.

    Why the SEEM error stays far below 1e-6 (SEEM = lam / ||a||_F, so errors are in units of 1):
    the float32 Hessenberg QR (like sgeev) is backward stable, so its eigenvalues c are exact
    for a + E, ||E|| ~ eps32 (~1e-7), each within delta ~ kappa(lam) * ||E|| of an eigenvalue
    of a. Inverse iteration with a
    float64 LU of a - c I (complex LU for complex c) converges to the eigenvalue of a nearest c;
    it is accepted only at residual ||a v - lam v|| <= MIXED_TOL with ||v|| = 1 (lam exact for
    a + F, ||F|| <= 1e-10: the float64 answer dense eigvals would give) and |lam - c| <=
    MIXED_LOCATE. Candidates are refined rightmost first until the next one lies left of
    best + margin, where margin (<= MIXED_MARGIN = 2.5e-7) is four times the observed float32
    error of the top one; a missed eigenvalue therefore lies below best + margin + delta. In
    ill-conditioned clusters float32 may reorder eigenvalues: each refined candidate still
    lands on the float64 eigenvalue nearest it, and the rightmost of those is kept. Any failed
    check (no convergence, distant eigenvalue, > MIXED_MAX_REFINE candidates) returns None and
    the caller uses dense float64. Tested against dense on critics with/without LayerNorm,
    gamma 0/0.99/1.2, trained critics, near-zero clusters and complex rightmost pairs.
    """
    n = int(a.shape[0])
    w32 = _all_eigvals(_fortran_copy(a, np.float32))
    if not np.all(np.isfinite(w32)):
        return None
    cands = _sort_right(w32.astype(np.complex128))
    cands = cands[cands.imag >= 0]  # one member per conjugate pair
    rng = np.random.default_rng(0)
    start = rng.standard_normal(n) + rng.standard_normal(n) * 1j
    best: complex | None = None
    margin = MIXED_MARGIN
    for refined, c in enumerate(cands):
        if best is not None and c.real <= best.real + margin:
            break
        if refined == MIXED_MAX_REFINE:
            log.debug("mixed eig: %d candidates right of %.3g; dense", refined, best)
            return None
        lam = _inverse_iteration(a, complex(c), start)
        if lam is None:
            return None
        if best is None:
            # Observed float32 error of the top eigenvalue: the noise level of the others.
            margin = min(max(4.0 * abs(lam - c), 1e-9), MIXED_MARGIN)
        if best is None or lam.real > best.real:
            best = lam
    assert best is not None
    return np.array([best])


def _inverse_iteration(a: np.ndarray, c: complex, start: np.ndarray) -> complex | None:
    """The float64 eigenvalue of a nearest c (one LU of a - c I), or None when unverified."""
    n = a.shape[0]
    real = c.imag == 0.0
    sigma: complex | float = c.real if real else c
    v = start.real.copy() if real else start.copy()
    for offset in (0.0, 1e-12, 1e-9):  # an exactly singular shift would give inf: nudge it
        # LU of (a - sigma I)^T, Fortran-ordered without a transposing copy; solved with trans=1.
        m = _fortran_copy(a, np.float64 if real else np.complex128)
        transposed = a.flags.c_contiguous  # _fortran_copy took a.T
        m.flat[:: n + 1] -= sigma + offset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            lu = scipy.linalg.lu_factor(m, check_finite=False, overwrite_a=True)
        del m
        if np.all(np.diag(lu[0]) != 0):
            break
    else:
        return None
    v /= np.linalg.norm(v)
    for _ in range(MIXED_ITERS):
        y = scipy.linalg.lu_solve(lu, v, trans=1 if transposed else 0, check_finite=False)
        norm = float(np.linalg.norm(y))
        if not math.isfinite(norm) or norm == 0.0:
            return None
        v = y / norm
        av = a @ v if real else a @ v.real + 1j * (a @ v.imag)
        lam = complex(np.vdot(v, av))
        if float(np.linalg.norm(av - lam * v)) <= MIXED_TOL:
            if abs(lam - c) > MIXED_LOCATE:
                log.debug("mixed eig: float32 candidate %s refined to distant %s", c, lam)
                return None
            return complex(lam.real, 0.0) if real else lam
    log.debug("mixed eig: inverse iteration at %s did not reach residual %.0e", c, MIXED_TOL)
    return None


def _eigs(a: np.ndarray, method: str, k: int) -> tuple[np.ndarray, str]:
    """The max(k, 1) rightmost eigenvalues of a (||a||_F == 1) and the solver that found them."""
    if method not in EIG_METHODS:
        raise ValueError(f"eig method {method!r} unknown; expected one of {', '.join(EIG_METHODS)}")
    n = a.shape[0]
    if method == "auto":
        method = "dense" if n <= DENSE_MAX_N else "mixed"
    # Mixed refines one eigenvalue: top_k > 1 needs the whole float64 spectrum anyway.
    if method == "mixed" and k <= 1 and n > 2:
        vals = _mixed_eigs(a)
        if vals is not None:
            return vals, "mixed"
        log.debug("mixed eig unverified at n=%d; dense float64", n)
    return _dense_eigs(a)[: max(k, 1)], "dense"


def rightmost_eigenvalue(a: np.ndarray, method: str = "auto") -> tuple[complex, str]:
    """The rightmost eigenvalue of a square real matrix and the solver that found it.

    Args:
        a: [n, n] real matrix (any scale; solved as a / ||a||_F in float64).
        method: "dense", "mixed" (float32 locate + float64 refine, dense when unverified)
            or "auto" (dense up to DENSE_MAX_N, else mixed).

    Returns:
        (eigenvalue in a's scale, "dense" or "mixed").
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


def _unique_rows(
    x0: torch.Tensor, x1: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor, coef: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray | None]:
    """One representative per distinct probe row and the multiplicities (None: all distinct).

    Identical rows of (obs, act, next_obs, next_act, coef) have identical gradients, hence
    identical rows and columns in A; merging them is exact (module docstring).
    """
    n = x0.shape[0]
    key = torch.cat([t.detach().double() for t in (x0, x1, s0, s1)], 1)
    key = torch.cat([key, coef.to(key.device, torch.float64)[:, None]], 1)
    # Rows whose random projections all differ are all distinct: a 1-D check instead of
    # torch.unique(dim=0), which compares rows one pair at a time (~25 ms at n = 2560).
    direction = torch.randn(key.shape[1], generator=torch.Generator().manual_seed(0))
    if torch.unique(key @ direction.to(key.device, torch.float64)).shape[0] == n:
        return x0, x1, s0, s1, coef, None
    _, inverse, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    u = counts.shape[0]
    if u == n:
        return x0, x1, s0, s1, coef, None
    order = torch.arange(n, device=inverse.device)
    first = torch.full((u,), n, dtype=order.dtype, device=inverse.device)
    first = first.scatter_reduce(0, inverse, order, reduce="amin")
    log.debug("SEEM probe: %d of %d rows distinct; eigen-problem is %d x %d", u, n, u, u)
    pick = first.to(x0.device)
    mult = counts.cpu().numpy().astype(np.float64)
    return x0[pick], x1[pick], s0[pick], s1[pick], coef[first.cpu()], mult


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
    dedupe: bool = True,
) -> SeemResult:
    """SEEM of `critic` on the probe X = (obs, act), X* = (next_obs, next_act).

    Args:
        critic: module called as critic(obs, act) -> Q [n] or [n, 1]; evaluated in eval mode
            (its modes are restored) without touching `.grad`. Samples must not interact.
        obs, act, next_obs, next_act: [n, d] probe tensors (next_act = pi(next_obs)).
        gamma: discount in A = gamma G(X*, X) - G(X, X).
        done: [n] terminal flags, used only with mask_terminals (row i of the gamma term
            times 1 - done_i; the paper ignores done).
        eig: "dense" (float64 eigvals), "mixed" (float32 spectrum to locate the rightmost
            eigenvalue, float64 inverse iteration to refine it; dense fallback when a check
            fails; top_k > 1 always dense) or "auto" (dense up to DENSE_MAX_N rows, else mixed).
        top_k: also return the top_k rightmost eigenvalues of A.
        scale_by_params: divide A by P (the official 1/sqrt(P) per gradient); SEEM itself
            is scale-invariant.
        gram: "auto", "layerwise" or "generic" Gram path (auto picks the fastest exact one).
        dedupe: merge identical probe rows (obs, act, next_obs, next_act, gamma coefficient)
            before the Gram; exact (module docstring), False only for tests.

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
    mult: np.ndarray | None = None
    if dedupe:
        x0, x1, s0, s1, coef, mult = _unique_rows(x0, x1, s0, s1, coef)
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
    u = a.shape[0]
    if mult is not None:  # D^1/2 A_u D^1/2: A's nonzero spectrum and its Frobenius norm
        root = np.sqrt(mult)
        a *= root[:, None]
        a *= root[None, :]
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
        # LAPACK through numpy uses OpenBLAS's own pool (all cores); with other processes on the
        # cores that pool thrashes (5-10x slower measured here). Match torch's intra-op setting.
        with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
            vals, eig_used = _eigs(a, eig, top_k)
        if u < n:  # the N - u exact zero eigenvalues of the duplicated rows
            zeros = np.zeros(min(max(top_k, 1), n - u), dtype=np.complex128)
            vals = _sort_right(np.concatenate([vals, zeros]))
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
        unique_rows=u,
    )
