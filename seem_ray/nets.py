"""Networks: MLPs with normalization by name, the fused critic ensemble, and the actors.

Flow position: config (NetConfig) -> nets -> algorithm update (critic, actor, targets) and the
SEEM probe, which reads one critic head through :meth:`EnsembleCritic.head_module`.

The critic ensemble keeps every head's weights stacked ([E, in, out]) and computes all heads
with one ``bmm`` per layer: twin critics cost one kernel launch per layer instead of two,
and the optimizer and target updates see a handful of large tensors instead of many small ones.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from seem_ray.config import NetConfig

__all__ = [
    "DeterministicActor",
    "EnsembleCritic",
    "GaussianActor",
    "HeadCritic",
    "TanhGaussianActor",
    "build_mlp",
    "gaussian_log_prob",
    "make_activation",
    "tanh_gaussian_sample",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
_FEATURE_NORMS = ("layer", "rms", "batch")
_LN_EPS = 1e-5  # nn.LayerNorm / nn.BatchNorm1d defaults
_BN_MOMENTUM = 0.1
_SN_EPS = 1e-12  # torch spectral_norm default
_SN_INIT_ITERS = 15  # torch spectral_norm runs 15 power iterations when it is registered
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SAC / CORL bounds on the policy log-std


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by config name (see config.ACTIVATIONS)."""
    return _ACTIVATIONS[name]()


def _feature_norm(kind: str, width: int) -> nn.Module | None:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "rms":
        return nn.RMSNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return None


def _layer_kinds(cfg: NetConfig) -> list[str]:
    """The norm kind of each hidden layer ('none' where the config leaves it out)."""
    normed = set(cfg.normed_layers())
    return [cfg.norm if i in normed else "none" for i in range(len(cfg.hidden))]


def build_mlp(
    in_dim: int, out_dim: int, cfg: NetConfig, *, out_act: nn.Module | None = None
) -> nn.Sequential:
    """An MLP whose hidden layers follow `cfg` (actors, IQL's value net, critic heads).

    Hidden block i is ``Linear -> norm -> act`` (``norm_position='before_act'``) or
    ``Linear -> act -> norm`` ('after_act'), then ``Dropout`` when ``cfg.dropout > 0``. Only the
    layers in ``cfg.normed_layers()`` get the norm. 'spectral' and 'weight' reparametrize that
    hidden Linear (torch parametrizations) instead of adding a module. 'batch' is BatchNorm1d
    over the batch, as in CrossQ (Bhatt et al. 2024): its output for one sample depends on the
    rest of the batch in training mode, so probes and evaluation run in eval mode. The output
    Linear never carries a norm.

    Args:
        in_dim: input features.
        out_dim: output features.
        cfg: widths, activation, norm kind and placement, dropout.
        out_act: optional module applied after the output Linear (e.g. ``nn.Tanh()``).

    Returns:
        An ``nn.Sequential`` of plain torch modules.
    """
    layers: list[nn.Module] = []
    d = in_dim
    for width, kind in zip(cfg.hidden, _layer_kinds(cfg), strict=True):
        lin: nn.Module = nn.Linear(d, width)
        if kind == "spectral":
            lin = parametrizations.spectral_norm(lin)
        elif kind == "weight":
            lin = parametrizations.weight_norm(lin)
        layers.append(lin)
        feat = _feature_norm(kind, width)
        act = make_activation(cfg.activation)
        if feat is None:
            layers.append(act)
        elif cfg.norm_position == "before_act":
            layers += [feat, act]
        else:
            layers += [act, feat]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        d = width
    layers.append(nn.Linear(d, out_dim))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# The fused critic ensemble
# --------------------------------------------------------------------------------------------


def _affine(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h @ weight + bias per head ([E, B, in] x [E, in, out] + [E, 1, out]).

    ``bmm`` then ``add``, not ``baddbmm``: on CPU at 2 threads baddbmm takes ~40% longer for
    two 256x256 heads (it parallelises the bias-seeded GEMM worse); same values.
    """
    return torch.bmm(h, weight) + bias


def _sel(t: torch.Tensor, heads: slice | None) -> torch.Tensor:
    """Rows `heads` of a per-head tensor; None = all heads, without a slice op in the graph."""
    return t if heads is None else t[heads]


class _EnsembleLinear(nn.Module):
    """E Linear layers stored as [E, in, out]; optional per-head spectral or weight norm.

    Spectral norm mirrors ``parametrizations.spectral_norm`` head by head: buffers u [E, out]
    and v [E, in], one power iteration per training-mode forward (no grad), and the effective
    weight W / (u^T W v). Weight norm mirrors ``parametrizations.weight_norm(dim=0)``:
    w = g * v / ||v|| with the norm over each output unit's inputs.
    """

    sn_u: torch.Tensor
    sn_v: torch.Tensor

    def __init__(self, ensemble: int, in_dim: int, out_dim: int, kind: str = "none") -> None:
        super().__init__()
        self.ensemble, self.in_dim, self.out_dim, self.kind = ensemble, in_dim, out_dim, kind
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim))
        if kind == "weight":
            self.weight_g = nn.Parameter(torch.empty(ensemble, 1, out_dim))
            self.weight_v = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        else:
            self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        if kind == "spectral":
            self.register_buffer("sn_u", torch.empty(ensemble, out_dim))
            self.register_buffer("sn_v", torch.empty(ensemble, in_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """PyTorch's nn.Linear init per head: U(+-1/sqrt(fan_in)) for weight and bias."""
        bound = 1.0 / math.sqrt(self.in_dim)
        w = torch.empty(self.ensemble, self.in_dim, self.out_dim).uniform_(-bound, bound)
        self.bias.uniform_(-bound, bound)
        if self.kind == "weight":
            self.weight_v.copy_(w)
            self.weight_g.copy_(w.norm(dim=1, keepdim=True))
        else:
            self.weight.copy_(w)
        if self.kind == "spectral":
            self.sn_u.copy_(F.normalize(torch.randn_like(self.sn_u), dim=1, eps=_SN_EPS))
            self.sn_v.copy_(F.normalize(torch.randn_like(self.sn_v), dim=1, eps=_SN_EPS))
            for _ in range(_SN_INIT_ITERS):
                self._power_iteration(None)

    @torch.no_grad()
    def _power_iteration(self, heads: slice | None) -> None:
        # torch's order: u <- normalize(W v), then v <- normalize(W^T u)
        w = _sel(self.weight, heads)
        u = F.normalize(torch.einsum("eio,ei->eo", w, _sel(self.sn_v, heads)), dim=1, eps=_SN_EPS)
        v = F.normalize(torch.einsum("eio,eo->ei", w, u), dim=1, eps=_SN_EPS)
        _sel(self.sn_u, heads).copy_(u)
        _sel(self.sn_v, heads).copy_(v)

    def effective_weight(self, heads: slice | None = None) -> torch.Tensor:
        """The weight the layer applies, [e, in, out] (after spectral/weight normalization)."""
        if self.kind == "weight":
            v = _sel(self.weight_v, heads)
            return v * (_sel(self.weight_g, heads) / v.norm(dim=1, keepdim=True))
        w = _sel(self.weight, heads)
        if self.kind != "spectral":
            return w
        if self.training:
            self._power_iteration(heads)
        u, v = _sel(self.sn_u, heads).clone(), _sel(self.sn_v, heads).clone()
        sigma = torch.einsum("eo,eio,ei->e", u, w, v)
        return w / sigma[:, None, None]

    def forward(self, h: torch.Tensor, heads: slice | None = None) -> torch.Tensor:
        return _affine(h, self.effective_weight(heads), _sel(self.bias, heads))


class _EnsembleFeatureNorm(nn.Module):
    """Per-head LayerNorm / RMSNorm (affine [E, 1, d]) or BatchNorm1d (stats [E, d])."""

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, kind: str, ensemble: int, width: int) -> None:
        super().__init__()
        self.kind, self.width = kind, width
        if kind == "batch":
            self.weight = nn.Parameter(torch.ones(ensemble, width))
            self.bias = nn.Parameter(torch.zeros(ensemble, width))
            self.register_buffer("running_mean", torch.zeros(ensemble, width))
            self.register_buffer("running_var", torch.ones(ensemble, width))
            self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))
        else:
            self.weight = nn.Parameter(torch.ones(ensemble, 1, width))
            if kind == "layer":
                self.bias = nn.Parameter(torch.zeros(ensemble, 1, width))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(1.0)
        if self.kind in ("layer", "batch"):
            self.bias.zero_()
        if self.kind == "batch":
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def forward(self, h: torch.Tensor, heads: slice | None = None) -> torch.Tensor:
        if self.kind == "layer":
            normed = F.layer_norm(h, (self.width,), eps=_LN_EPS)
            return torch.addcmul(_sel(self.bias, heads), normed, _sel(self.weight, heads))
        if self.kind == "rms":
            return F.rms_norm(h, (self.width,)) * _sel(self.weight, heads)
        # BatchNorm per head = BatchNorm over E*d channels of the [B, E*d] view.
        e, b, d = h.shape
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = F.batch_norm(
            h.transpose(0, 1).reshape(b, e * d),
            _sel(self.running_mean, heads).view(-1),
            _sel(self.running_var, heads).view(-1),
            _sel(self.weight, heads).reshape(-1),
            _sel(self.bias, heads).reshape(-1),
            training=self.training,
            momentum=_BN_MOMENTUM,
            eps=_LN_EPS,
        )
        return flat.view(b, e, d).transpose(0, 1)


class HeadCritic(nn.Module):
    """One critic head as a plain MLP on cat(obs, act): ``m(obs, act) -> Q [B]``."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)


class EnsembleCritic(nn.Module):
    """E critic heads Q_e(s, a) computed together: ``forward(obs, act) -> [E, B]``.

    Each head has exactly the architecture :func:`build_mlp` gives for ``cfg`` (same norm kind,
    placement, activation and dropout) and its own parameters, initialised like nn.Linear.

    Args:
        obs_dim: observation features.
        act_dim: action features.
        cfg: hidden widths, activation, norm and placement, dropout.
        ensemble: number of heads E (2 = twin critics).
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: NetConfig, ensemble: int) -> None:
        super().__init__()
        if ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {ensemble}")
        self.obs_dim, self.act_dim, self.cfg, self.ensemble = obs_dim, act_dim, cfg, ensemble
        self.kinds = _layer_kinds(cfg)
        dims = [obs_dim + act_dim, *cfg.hidden]
        self.linears = nn.ModuleList(
            _EnsembleLinear(
                ensemble, dims[i], dims[i + 1], k if k in ("spectral", "weight") else "none"
            )
            for i, k in enumerate(self.kinds)
        )
        self.norms = nn.ModuleList(
            _EnsembleFeatureNorm(k, ensemble, w) if k in _FEATURE_NORMS else nn.Identity()
            for k, w in zip(self.kinds, cfg.hidden, strict=True)
        )
        self.out = _EnsembleLinear(ensemble, dims[-1], 1)
        self.act = make_activation(cfg.activation)
        self.after_act = cfg.norm_position == "after_act"
        # Plain weights, no dropout, no batch statistics: _run calls the kernels directly
        # (a module call costs ~5 us; a critic forward makes 6-8 of them, 3-4 forwards a step).
        self._direct = cfg.dropout == 0 and all(k in ("none", "layer", "rms") for k in self.kinds)
        self._act_fn = torch.relu if cfg.activation == "relu" else self.act

    def reset_parameters(self) -> None:
        """Re-initialise every head (nn.Linear default init; norms to identity)."""
        for m in self.modules():
            if isinstance(m, _EnsembleLinear | _EnsembleFeatureNorm):
                m.reset_parameters()

    def _run(self, x: torch.Tensor, heads: slice | None) -> torch.Tensor:
        e = self.ensemble if heads is None else len(range(self.ensemble)[heads])
        h = x.unsqueeze(0).expand(e, *x.shape)
        if self._direct:
            act = self._act_fn
            for lin, norm, kind in zip(self.linears, self.norms, self.kinds, strict=True):
                h = _affine(
                    h,
                    _sel(cast(torch.Tensor, lin.weight), heads),
                    _sel(cast(torch.Tensor, lin.bias), heads),
                )
                if kind == "none":
                    h = act(h)
                elif self.after_act:
                    h = norm.forward(act(h), heads)
                else:
                    h = act(norm.forward(h, heads))
            return _affine(h, _sel(self.out.weight, heads), _sel(self.out.bias, heads))[..., 0]
        for lin, norm, kind in zip(self.linears, self.norms, self.kinds, strict=True):
            h = lin(h, heads)
            feat = kind in _FEATURE_NORMS
            if feat and not self.after_act:
                h = norm(h, heads)
            h = self.act(h)
            if feat and self.after_act:
                h = norm(h, heads)
            if self.cfg.dropout > 0:
                h = F.dropout(h, self.cfg.dropout, self.training)
        return self.out(h, heads).squeeze(-1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q of every head, [E, B]."""
        return self._run(torch.cat([obs, act], dim=-1), None)

    def forward_head(self, obs: torch.Tensor, act: torch.Tensor, head: int) -> torch.Tensor:
        """Q of one head, [B], computing only that head (e.g. TD3's actor loss on Q_1)."""
        return self._run(torch.cat([obs, act], dim=-1), slice(head, head + 1))[0]

    @torch.no_grad()
    def layer_weight_norms(self) -> list[torch.Tensor]:
        """Frobenius norm of each Linear's effective weight over all heads (0-dim tensors, no sync)."""
        out = []
        for lin in [*self.linears, self.out]:
            lin = cast(_EnsembleLinear, lin)
            if lin.kind == "spectral":  # W / sigma with the current u, v, no power step
                sigma = torch.einsum("eo,eio,ei->e", lin.sn_u, lin.weight, lin.sn_v)
                out.append((lin.weight / sigma[:, None, None]).norm())
            else:
                out.append(lin.effective_weight().norm())
        return out

    @torch.no_grad()
    def head_module(self, i: int) -> HeadCritic:
        """An independent plain-torch copy of head `i`, in eval mode, computing the same Q_i.

        Linear/LayerNorm/RMSNorm/activations are plain modules (the SEEM fast path sees them);
        spectral and weight norm use torch parametrizations on nn.Linear holding copies of the
        original parameters (and u, v), so gradients are w.r.t. the real parameters; batch norm
        is nn.BatchNorm1d with this head's running statistics. Matches ``self.eval()`` output.
        """
        if not 0 <= i < self.ensemble:
            raise IndexError(f"head {i} out of range for an ensemble of {self.ensemble}")
        with torch.random.fork_rng(devices=[]):  # spectral_norm draws u, v at registration
            net = build_mlp(self.obs_dim + self.act_dim, 1, self.cfg)
        net = net.to(device=self.out.bias.device, dtype=self.out.bias.dtype)
        linears: list[Any] = [m for m in net if isinstance(m, nn.Linear)]
        feats: list[Any] = [
            m for m in net if isinstance(m, nn.LayerNorm | nn.RMSNorm | nn.BatchNorm1d)
        ]
        for lin, dst in zip([*self.linears, self.out], linears, strict=True):
            src = cast(_EnsembleLinear, lin)
            dst.bias.copy_(src.bias[i, 0])
            if src.kind == "weight":
                pw = dst.parametrizations.weight
                pw.original0.copy_(src.weight_g[i].T)
                pw.original1.copy_(src.weight_v[i].T)
            elif src.kind == "spectral":
                pw = dst.parametrizations.weight
                pw.original.copy_(src.weight[i].T)
                pw[0]._u.copy_(src.sn_u[i])
                pw[0]._v.copy_(src.sn_v[i])
            else:
                dst.weight.copy_(src.weight[i].T)
        src_feats = [n for n in self.norms if isinstance(n, _EnsembleFeatureNorm)]
        for norm, dst in zip(src_feats, feats, strict=True):
            dst.weight.copy_(norm.weight[i].reshape(-1))
            if isinstance(dst, nn.LayerNorm | nn.BatchNorm1d):
                dst.bias.copy_(norm.bias[i].reshape(-1))
            if isinstance(dst, nn.BatchNorm1d):
                bn: Any = dst  # its stats are Optional in the stubs; set here
                bn.running_mean.copy_(norm.running_mean[i])
                bn.running_var.copy_(norm.running_var[i])
                bn.num_batches_tracked.copy_(norm.num_batches_tracked)
        return HeadCritic(net).eval()


# --------------------------------------------------------------------------------------------
# Actors
# --------------------------------------------------------------------------------------------


class DeterministicActor(nn.Module):
    """TD3's policy: ``max_action * tanh(MLP(obs))``."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: NetConfig, max_action: float) -> None:
        super().__init__()
        self.net = build_mlp(obs_dim, act_dim, cfg, out_act=nn.Tanh())
        self.max_action = float(max_action)
        # Only plain Linear/ReLU/Tanh: call the kernels directly, not 7 module calls.
        self._direct = all(type(m) in (nn.Linear, nn.ReLU, nn.Tanh) for m in self.net)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self._direct:
            return self.max_action * self.net(obs)
        h = obs
        for m in self.net:
            if type(m) is nn.Linear:
                h = F.linear(h, m.weight, m.bias)
            elif type(m) is nn.ReLU:
                h = torch.relu(h)
            else:
                h = torch.tanh(h)
        return h if self.max_action == 1.0 else self.max_action * h


class GaussianActor(nn.Module):
    """IQL's policy (as in CORL): Normal(max_action * tanh(MLP(obs)), exp(log_std)).

    The log-std is one learned, state-independent vector. The advantage-weighted regression
    maximises the (unsquashed) Normal log-likelihood of dataset actions; the deterministic
    action is the tanh mean. ``forward`` returns (mean, log_std) so that a DDP wrapper sees
    every parameter in its forward.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: NetConfig, max_action: float) -> None:
        super().__init__()
        self.net = build_mlp(obs_dim, act_dim, cfg, out_act=nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.max_action = float(max_action)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.max_action * self.net(obs)
        return mean, self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Log-density of `act` under a diagonal Normal, summed over action dims: [B]."""
    z = (act - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class TanhGaussianActor(nn.Module):
    """SAC's policy for CQL: a = max_action * tanh(u), u ~ Normal(mean(obs), std(obs)).

    ``forward`` returns (mean, log_std) of u; sampling goes through
    :func:`tanh_gaussian_sample` with noise drawn from the algorithm's own generator.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: NetConfig, max_action: float) -> None:
        super().__init__()
        self.net = build_mlp(obs_dim, 2 * act_dim, cfg)
        self.max_action = float(max_action)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor, max_action: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparametrized tanh-Gaussian sample and its log-density.

    Args:
        mean, log_std: [..., A] parameters of the pre-tanh Normal.
        noise: standard-normal draws of the same shape.
        max_action: action scale; its Jacobian is included so the density is of the action.

    Returns:
        (action [..., A], log_prob [...]).
    """
    u = mean + noise * log_std.exp()
    log_normal = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), stable for large |u|
    log_jac = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    log_prob = log_normal - log_jac - mean.shape[-1] * math.log(max_action)
    return max_action * torch.tanh(u), log_prob
