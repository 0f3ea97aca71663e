"""Policy losses over token log-probs, as pure functions in the :data:`LOSSES` registry.

Conventions: ``N = B*G`` sequences ordered group-major (rows ``g*G .. g*G+G-1``
are one prompt's group); ``T`` = completion length (right-padded); ``mask``
``[N, T]`` is 1.0 on completion tokens (EOS included) and 0.0 after.

Every loss has the signature::

    fn(batch: PolicyBatch, *, agg: str = ..., num_tokens=None, num_seqs=None,
       max_len=None, **params) -> LossOutput

``num_tokens`` / ``num_seqs`` are the totals of the whole (global) batch. With
them, the sum of the losses of the micro-batches equals the loss of the full
batch, so batch 1 x accumulation k == batch k x accumulation 1 exactly (see
:func:`aggregate`). Without them each call normalises by its own counts.

Masked positions (mask == 0) never influence the loss or the gradient, even
when they hold NaN/inf garbage: every input is passed through ``torch.where``
before any arithmetic. All maths runs in float32 whatever the input dtype.

Losses registered with ``advantage_weighted=True`` multiply every policy term
by the advantage: with ``beta = 0`` a sequence of zero advantage adds exactly
nothing to the gradient, whatever its ratio, so the trainer may skip it
(``rl.skip_zero_advantage``). Reg-GRPO is not one (it regresses the ratio
onto the advantage).

Metrics: ``pg_loss`` / ``kl_loss`` / ``reg_loss`` are contributions to the loss
(with the same normalisation, so they sum over micro-batches like the loss);
rate metrics (``clip_frac*``, ``ratio_mean``, ``kl``) are token means over the
tokens of this call only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from reelrl.algos.kl import KL_ESTIMATORS
from reelrl.registry import Registry

__all__ = [
    "AGGREGATIONS",
    "LOSSES",
    "LossOutput",
    "PolicyBatch",
    "aggregate",
]


# --------------------------------------------------------------------------- data


@dataclass(kw_only=True)
class PolicyBatch:
    """Inputs of a policy loss for ``N`` sequences of ``T`` completion tokens.

    Fields (all tensors on one device):
      - ``logp`` [N, T]: log-probs of the sampled tokens under the current policy
        (requires grad).
      - ``old_logp`` [N, T] or None: behaviour-policy log-probs (detached here).
        None means a single on-policy update: ``old_logp = logp.detach()``.
      - ``ref_logp`` [N, T] or None: reference-model log-probs (detached here);
        needed only when a loss uses ``beta > 0``.
      - ``advantages`` [N] (per sequence) or [N, T] (per token); detached here.
        Every registered loss needs them (PolicyBatch itself accepts None).
      - ``mask`` [N, T]: 1.0 on completion tokens (EOS included), 0.0 after.
      - ``token_weights`` [N, T] or None: per-token weights (TW-GRPO); detached.
      - ``group_size``: G, the number of completions per prompt; ``N % G == 0``.
    """

    logp: Tensor
    mask: Tensor
    old_logp: Tensor | None = None
    ref_logp: Tensor | None = None
    advantages: Tensor | None = None
    token_weights: Tensor | None = None
    group_size: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.logp, Tensor) or self.logp.dim() != 2:
            shape = tuple(self.logp.shape) if isinstance(self.logp, Tensor) else type(self.logp).__name__
            raise ValueError(f"PolicyBatch.logp must be a [N, T] tensor, got {shape}")
        n, t = self.logp.shape
        if not isinstance(self.mask, Tensor) or tuple(self.mask.shape) != (n, t):
            raise ValueError(f"PolicyBatch.mask must have shape {(n, t)} like logp, got {_shape(self.mask)}")
        if not bool(((self.mask == 0) | (self.mask == 1)).all()):
            raise ValueError("PolicyBatch.mask must contain only 0 and 1")
        for name in ("old_logp", "ref_logp", "token_weights"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Tensor) or tuple(value.shape) != (n, t):
                raise ValueError(f"PolicyBatch.{name} must have shape {(n, t)} like logp, got {_shape(value)}")
            setattr(self, name, value.detach())
        if self.old_logp is None:
            self.old_logp = self.logp.detach()  # [N, T]
        if self.advantages is not None:
            adv = self.advantages
            if not isinstance(adv, Tensor) or tuple(adv.shape) not in ((n,), (n, t)):
                raise ValueError(
                    f"PolicyBatch.advantages must have shape ({n},) or {(n, t)}, got {_shape(adv)}"
                )
            self.advantages = adv.detach()
        if not isinstance(self.group_size, int) or self.group_size < 1 or n % self.group_size != 0:
            raise ValueError(
                f"PolicyBatch.group_size must be a positive int dividing N={n}, got {self.group_size!r}"
            )

    @property
    def num_seqs(self) -> int:
        """Number of sequences N in this batch."""
        return int(self.logp.shape[0])

    @property
    def num_tokens(self) -> float:
        """Number of completion tokens (mask sum) in this batch."""
        return float(self.mask.sum())


@dataclass
class LossOutput:
    """A scalar loss to backpropagate and float metrics to log."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


# ------------------------------------------------------------------ aggregation

AggFn = Callable[..., Tensor]

AGGREGATIONS: Registry[AggFn] = Registry("loss aggregation")


def _seq_denominator(values: Tensor, num_seqs: float | None) -> float | Tensor:
    if num_seqs is None:
        return float(values.shape[0])
    if num_seqs <= 0:
        raise ValueError(f"aggregate: num_seqs must be > 0, got {num_seqs}")
    return float(num_seqs)


@AGGREGATIONS.register("token-mean")
def _agg_token_mean(
    values: Tensor, mask: Tensor, *, num_tokens: float | None, num_seqs: float | None, max_len: int | None
) -> Tensor:
    """sum over all tokens / number of tokens (DAPO)."""
    if num_tokens is None:
        denom: float | Tensor = mask.sum().clamp(min=1.0)  # []
    elif num_tokens <= 0:
        raise ValueError(f"aggregate: num_tokens must be > 0, got {num_tokens}")
    else:
        denom = float(num_tokens)
    return values.sum() / denom  # []


@AGGREGATIONS.register("seq-mean-token-mean")
def _agg_seq_mean_token_mean(
    values: Tensor, mask: Tensor, *, num_tokens: float | None, num_seqs: float | None, max_len: int | None
) -> Tensor:
    """mean over sequences of each sequence's token mean (original GRPO).

    A sequence with no tokens contributes 0 but still counts in the sequence
    denominator (as in TRL).
    """
    per_seq = values.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)  # [N]
    return per_seq.sum() / _seq_denominator(values, num_seqs)  # []


@AGGREGATIONS.register("seq-mean-token-sum")
def _agg_seq_mean_token_sum(
    values: Tensor, mask: Tensor, *, num_tokens: float | None, num_seqs: float | None, max_len: int | None
) -> Tensor:
    """mean over sequences of (token sum / max_len) (Dr. GRPO's constant normaliser)."""
    if max_len is None or max_len <= 0:
        raise ValueError(
            "aggregate 'seq-mean-token-sum' needs max_len > 0 (the generation budget, "
            f"max completion tokens), got {max_len!r}"
        )
    longest = float(mask.sum(dim=-1).max()) if mask.numel() else 0.0
    if longest > max_len:
        raise ValueError(f"aggregate 'seq-mean-token-sum': a sequence has {longest:g} tokens > max_len={max_len}")
    per_seq = values.sum(dim=-1) / float(max_len)  # [N]
    return per_seq.sum() / _seq_denominator(values, num_seqs)  # []


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Reduce per-token ``values`` [N, T] over ``mask`` [N, T] to a scalar.

    Modes (:data:`AGGREGATIONS`): ``"token-mean"`` (sum / token count),
    ``"seq-mean-token-mean"`` (mean over sequences of per-sequence token means),
    ``"seq-mean-token-sum"`` (mean over sequences of token sum / ``max_len``).

    Gradient accumulation: pass the global ``num_tokens`` (token-mean) or
    ``num_seqs`` (seq-mean modes) of the whole batch; then the sum over
    micro-batches equals the full-batch value exactly. Masked positions are
    zeroed with ``torch.where`` so NaN/inf there cannot leak.
    """
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(
            f"aggregate: values {tuple(values.shape)} and mask {tuple(mask.shape)} must both be [N, T]"
        )
    fn = AGGREGATIONS.get(mode)
    m = mask.to(values.dtype)  # [N, T]
    clean = torch.where(m > 0, values, torch.zeros_like(values))  # [N, T]
    return fn(clean, m, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)


# ----------------------------------------------------------------- shared parts

LossFn = Callable[..., LossOutput]

LOSSES: Registry[LossFn] = Registry("loss")


@dataclass
class _Clean:
    """Float32 inputs with masked positions replaced by neutral values."""

    logp: Tensor  # [N, T], 0 where masked (grad flows at mask == 1 only)
    old_logp: Tensor  # [N, T], 0 where masked
    ref_logp: Tensor | None  # [N, T], 0 where masked
    adv: Tensor | None  # [N, T], 0 where masked
    weights: Tensor | None  # [N, T], 1 where masked
    mask: Tensor  # [N, T] float32


def _prepare(batch: PolicyBatch, name: str) -> _Clean:
    """Cast to float32 and neutralise masked positions (garbage there must not leak)."""
    if not isinstance(batch, PolicyBatch):
        raise TypeError(f"loss {name!r}: expected a PolicyBatch, got {type(batch).__name__}")
    m = batch.mask.float()  # [N, T]
    keep = m > 0  # [N, T]
    zero = torch.zeros_like(m)  # [N, T]

    def clean(x: Tensor | None, fill: Tensor) -> Tensor | None:
        return None if x is None else torch.where(keep, x.float(), fill)  # [N, T]

    adv = batch.advantages
    if adv is None:
        raise ValueError(f"loss {name!r} needs PolicyBatch.advantages ([N] or [N, T])")
    if adv is not None and adv.dim() == 1:
        adv = adv[:, None].expand_as(m)  # [N, T]
    assert batch.old_logp is not None  # set in PolicyBatch.__post_init__
    return _Clean(
        logp=clean(batch.logp, zero),  # type: ignore[arg-type]
        old_logp=clean(batch.old_logp, zero),  # type: ignore[arg-type]
        ref_logp=clean(batch.ref_logp, zero),
        adv=clean(adv, zero),
        weights=clean(batch.token_weights, torch.ones_like(m)),
        mask=m,
    )


def _check_clip(name: str, clip_low: float, clip_high: float) -> None:
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"loss {name!r}: clip_low must be in [0, 1), got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"loss {name!r}: clip_high must be >= 0, got {clip_high}")


def _token_mean(x: Tensor, mask: Tensor) -> float:
    """Local token mean for metrics (0.0 when there are no tokens)."""
    return float((x * mask).sum() / mask.sum().clamp(min=1.0))


def _kl_term(
    c: _Clean,
    name: str,
    *,
    beta: float,
    kl_estimator: str,
    agg: str,
    num_tokens: float | None,
    num_seqs: float | None,
    max_len: int | None,
) -> tuple[Tensor | None, dict[str, float]]:
    """beta * aggregated KL(policy || ref), or None when beta == 0."""
    if beta < 0:
        raise ValueError(f"loss {name!r}: beta must be >= 0, got {beta}")
    if beta == 0:
        return None, {}
    if c.ref_logp is None:
        raise ValueError(
            f"loss {name!r}: beta={beta} > 0 needs PolicyBatch.ref_logp (reference-model log-probs); "
            "pass ref_logp or set beta=0"
        )
    kl = KL_ESTIMATORS.get(kl_estimator)(c.logp, c.ref_logp)  # [N, T]
    kl_agg = aggregate(kl, c.mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)  # []
    term = beta * kl_agg  # []
    return term, {"kl": _token_mean(kl.detach(), c.mask), "kl_loss": float(term.detach())}


def _clipped_pg(
    c: _Clean,
    ratio: Tensor,
    name: str,
    *,
    clip_low: float,
    clip_high: float,
    beta: float,
    kl_estimator: str,
    agg: str,
    num_tokens: float | None,
    num_seqs: float | None,
    max_len: int | None,
) -> LossOutput:
    """PPO clipped surrogate on ``ratio`` [N, T] (+ optional token weights, + beta * KL)."""
    _check_clip(name, clip_low, clip_high)
    assert c.adv is not None
    surr_unclipped = ratio * c.adv  # [N, T]
    surr_clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * c.adv  # [N, T]
    per_token = -torch.minimum(surr_unclipped, surr_clipped)  # [N, T]
    if c.weights is not None:
        per_token = per_token * c.weights  # [N, T]
    pg = aggregate(per_token, c.mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)  # []
    kl_term, kl_metrics = _kl_term(
        c, name, beta=beta, kl_estimator=kl_estimator, agg=agg,
        num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len,
    )
    loss = pg if kl_term is None else pg + kl_term  # []
    with torch.no_grad():
        r = ratio.detach()  # [N, T]
        low = ((r < 1.0 - clip_low) & (c.adv < 0)).float()  # [N, T]
        high = ((r > 1.0 + clip_high) & (c.adv > 0)).float()  # [N, T]
        metrics = {
            "pg_loss": float(pg.detach()),
            "clip_frac_low": _token_mean(low, c.mask),
            "clip_frac_high": _token_mean(high, c.mask),
            "clip_frac": _token_mean(low + high, c.mask),
            "ratio_mean": _token_mean(r, c.mask),
            **kl_metrics,
        }
    return LossOutput(loss=loss, metrics=metrics)


def _ratio(c: _Clean, sequence: bool) -> Tensor:
    """Importance ratio ``[N, T]``: per token ``exp(logp - old_logp)``, or GSPO's sequence ratio.

    The sequence ratio is taken in the GSPO-token form ``s_i,t = sg[s_i] * pi_t /
    sg[pi_t]`` with ``s_i = exp(mean_t log(pi / pi_old))``: its value is
    ``s_i`` and its gradient on token t is ``s_i * grad log pi_t``. Masked
    positions hold 1 (token form) or ``s_i`` (sequence form); the aggregation
    never reads them.
    """
    if not sequence:
        return torch.exp(c.logp - c.old_logp)  # [N, T]
    log_ratio = c.logp - c.old_logp  # [N, T] (0 at masked positions)
    seq_log_ratio = log_ratio.sum(dim=-1) / c.mask.sum(dim=-1).clamp(min=1.0)  # [N]
    return torch.exp(seq_log_ratio.detach()[:, None] + c.logp - c.logp.detach())  # [N, T]


def clipped_policy_gradient(
    batch: PolicyBatch,
    *,
    name: str,
    agg: str,
    num_tokens: float | None,
    num_seqs: float | None,
    max_len: int | None,
    clip_low: float,
    clip_high: float,
    beta: float,
    kl_estimator: str,
    sequence_ratio: bool = False,
    needs_token_weights: bool = False,
) -> LossOutput:
    """The one clipped policy-gradient body behind ``grpo``, ``dapo``, ``dr_grpo``, ``tw_grpo`` and ``gspo``.

    Per token: ``-min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A)``,
    times ``batch.token_weights`` when set, aggregated with ``agg`` (global
    normalisers ``num_tokens`` / ``num_seqs`` / ``max_len``), plus
    ``beta * KL(policy || ref)`` aggregated the same way when ``beta > 0``.
    ``rho`` is the token ratio, or GSPO's sequence ratio with ``sequence_ratio``.
    The registered methods differ only in their defaults (see each one's docstring).
    """
    if needs_token_weights and batch.token_weights is None:
        raise ValueError(
            f"loss {name!r} needs PolicyBatch.token_weights [N, T] "
            "(compute them with reelrl.algos.token_weights.tw_grpo_weights)"
        )
    c = _prepare(batch, name)
    out = _clipped_pg(
        c, _ratio(c, sequence_ratio), name, clip_low=clip_low, clip_high=clip_high, beta=beta,
        kl_estimator=kl_estimator, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len,
    )
    if sequence_ratio:
        has_tokens = c.mask.sum(dim=-1) > 0  # [N]
        s = (c.logp - c.old_logp).detach().sum(dim=-1) / c.mask.sum(dim=-1).clamp(min=1.0)  # [N]
        out.metrics["seq_ratio_mean"] = float(s.exp()[has_tokens].mean()) if bool(has_tokens.any()) else 1.0
    return out


def _clipped_method(
    name: str, doc: str, *, agg: str, clip_low: float, clip_high: float, beta: float, **flags: bool
) -> LossFn:
    """Register :func:`clipped_policy_gradient` as loss ``name`` with that method's defaults."""

    def loss(
        batch: PolicyBatch,
        *,
        agg: str = agg,
        num_tokens: float | None = None,
        num_seqs: float | None = None,
        max_len: int | None = None,
        clip_low: float = clip_low,
        clip_high: float = clip_high,
        beta: float = beta,
        kl_estimator: str = "k3",
    ) -> LossOutput:
        return clipped_policy_gradient(
            batch, name=name, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len,
            clip_low=clip_low, clip_high=clip_high, beta=beta, kl_estimator=kl_estimator, **flags,
        )

    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    loss.__doc__ = doc
    return LOSSES.register(name, advantage_weighted=True)(loss)


grpo_loss = _clipped_method(
    "grpo",
    """GRPO: -min(rho*A, clip(rho, 1-clip_low, 1+clip_high)*A) + beta*KL, per token.

    Paper: Shao et al. 2024, "DeepSeekMath" (GRPO); defaults follow Video-R1
    (eps 0.2, beta 0.04, k3 KL with d clamped to +-10, seq-mean-token-mean).
    ``beta = 0`` needs no reference log-probs. If ``batch.token_weights`` is
    set, it multiplies the per-token surrogate (not the KL term; TW-GRPO).
    Deviations: none (the KL is added per token before aggregation, as in TRL).
    """,
    agg="seq-mean-token-mean", clip_low=0.2, clip_high=0.2, beta=0.04,
)

dapo_loss = _clipped_method(
    "dapo",
    """DAPO: the GRPO surrogate with clip-higher (eps_high 0.28) and token-mean aggregation.

    Paper: Yu et al. 2025, "DAPO". No KL by default (beta 0). Dynamic sampling
    is a group filter (``dynamic_sampling`` in :data:`reelrl.algos.GROUP_FILTERS`);
    the overlong reward shaping belongs to the rewards. Deviations: none.
    """,
    agg="token-mean", clip_low=0.2, clip_high=0.28, beta=0.0,
)

dr_grpo_loss = _clipped_method(
    "dr_grpo",
    """Dr. GRPO: the GRPO surrogate summed over tokens / max_len, mean over sequences.

    Paper: Liu et al. 2025, "Understanding R1-Zero-Like Training". Pair with the
    ``dr_grpo`` advantage (no std scaling). ``max_len`` (the generation budget)
    is required by the ``seq-mean-token-sum`` aggregation. No KL by default.
    Deviations: none.
    """,
    agg="seq-mean-token-sum", clip_low=0.2, clip_high=0.2, beta=0.0,
)

tw_grpo_loss = _clipped_method(
    "tw_grpo",
    """TW-GRPO: loss = -sum_t w_t * clipped surrogate * m / sum_t m, mean over sequences.

    Paper: "TW-GRPO" (token weighting + soft multi-choice reward); weights from
    :func:`reelrl.algos.token_weights.tw_grpo_weights`, beta 0. Requires
    ``batch.token_weights``. Deviations: none.
    """,
    agg="seq-mean-token-mean", clip_low=0.2, clip_high=0.2, beta=0.0, needs_token_weights=True,
)

gspo_loss = _clipped_method(
    "gspo",
    """GSPO: clipped surrogate on the sequence-level ratio s_i = exp(mean_t log(pi/pi_old)).

    Paper: Zheng et al. 2025, "Group Sequence Policy Optimization". Implemented
    in the GSPO-token form: s_i,t = sg[s_i] * pi_t / sg[pi_t], whose value is s_i
    and whose gradient on token t is s_i * grad log pi_t; with the default
    seq-mean-token-mean aggregation the gradient equals that of the sequence
    objective -1/G sum_i min(s_i A_i, clip(s_i) A_i). Clip range 3e-4 / 4e-4
    (paper). Advantages are normally per sequence ([N]); [N, T] gives GSPO-token.
    Deviations: none.
    """,
    agg="seq-mean-token-mean", clip_low=3e-4, clip_high=4e-4, beta=0.0, sequence_ratio=True,
)


_VAR_FLOOR = 1e-12  # floor under the variance of rho: keeps sqrt's gradient finite at rho == const


@LOSSES.register("reg_grpo")
def reg_grpo_loss(
    batch: PolicyBatch,
    *,
    agg: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    max_len: int | None = None,
    beta: float = 0.1,
    kl_estimator: str = "k3",
    eps: float = 1e-4,
    unbiased: bool = True,
) -> LossOutput:
    """Reg-GRPO: regress the group-normalised log-ratio onto the normalised advantage.

    Paper: Park et al. 2025, "DeepVideo-R1". With rho_i = sum_t (logp - old_logp) * m
    (sequence log-ratio), per group A_hat_i = (rho_i - mean rho) / (std rho + eps),
    loss = mean_i (A_i - A_hat_i)^2 + beta * KL (k3, aggregated with ``agg``,
    token-mean by default). No clipping, no min. ``batch.advantages`` must be
    per sequence ([N]) and come from the ``reg_grpo`` estimator with the same
    ``unbiased`` convention; ``batch.group_size`` must be G >= 2 and each call
    (micro-batch) must hold whole groups.

    Deviations / choices: ``eps`` (1e-4) is added to std rho (the paper divides
    by the bare std) and the variance is floored at 1e-12 before the square
    root. At the first update on a fresh rollout logp == old_logp, so rho = 0,
    std = 0 and A_hat = 0: the loss is mean_i A_i^2 and the gradient is finite
    (the floor keeps sqrt differentiable) and points every sequence's
    log-prob along its advantage, scaled by 1 / (1e-6 + eps), which is large;
    the trainer's gradient-norm clipping (or Adam's normalisation) bounds the
    step. The mean over sequences uses ``num_seqs`` when given.
    """
    c = _prepare(batch, "reg_grpo")
    g = batch.group_size
    if g < 2:
        raise ValueError("loss 'reg_grpo' needs PolicyBatch.group_size >= 2 (it normalises within groups)")
    assert batch.advantages is not None
    if batch.advantages.dim() != 1:
        raise ValueError(
            f"loss 'reg_grpo' needs per-sequence advantages [N], got {tuple(batch.advantages.shape)}"
        )
    rho = (c.logp - c.old_logp).sum(dim=-1)  # [N]
    rho_g = rho.view(-1, g)  # [B, G]
    mean = rho_g.mean(dim=1, keepdim=True)  # [B, 1]
    var = rho_g.var(dim=1, keepdim=True, unbiased=unbiased)  # [B, 1]
    std = var.clamp(min=_VAR_FLOOR).sqrt()  # [B, 1]
    a_hat = (rho_g - mean) / (std + eps)  # [B, G]
    target = batch.advantages.float().view(-1, g)  # [B, G]
    sq = (target - a_hat) ** 2  # [B, G]
    reg = sq.sum() / _seq_denominator(rho[:, None], num_seqs)  # []
    kl_term, kl_metrics = _kl_term(
        c, "reg_grpo", beta=beta, kl_estimator=kl_estimator, agg=agg,
        num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len,
    )
    loss = reg if kl_term is None else reg + kl_term  # []
    metrics = {
        "reg_loss": float(reg.detach()),
        "rho_abs_mean": float(rho.detach().abs().mean()),
        "a_hat_abs_mean": float(a_hat.detach().abs().mean()),
        **kl_metrics,
    }
    return LossOutput(loss=loss, metrics=metrics)
