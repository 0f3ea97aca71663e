"""TW-GRPO token weights: up-weight positions where a group's completions disagree.

Paper: "TW-GRPO" (token weighting for video reasoning). Per group and position t:
take the G full-vocabulary log-prob vectors log pi_i,t (behaviour policy, no
grad; positions past EOS filled with the uniform -log|V|), their mean L_t, and

    d_i,t = clamp(L_t - log pi_i,t, -11, 11)
    s_t   = mean_i sum_v (exp(d_i,t,v) - d_i,t,v - 1)
    w_t   = 1 + (alpha - 1) * (s_t - min s) / (max s - min s + 1e-8)

with min / max over the positions that lie inside at least one completion of
the group. Every sequence of the group gets the same w_t. alpha = 1.7 (paper;
the released code defaults to 1.4). Positions inside no completion get w = 1
(they are masked out of the loss anyway). The result is detached.

Two entry points: :func:`tw_grpo_weights` takes log-probs ``[N, T, V]``;
:func:`tw_grpo_weights_from_logits` takes logits and works in chunks over T so
only ``G x chunk x V`` float32 values are alive at once.

:data:`TOKEN_WEIGHTS` registers weightings the trainer can use by name
(``rl.token_weights.name``), each called as ``fn(logits [N, T, V], mask [N, T],
alpha, *, group_size, temperature, chunk_size) -> weights [N, T]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reelrl.registry import Registry

__all__ = ["TOKEN_WEIGHTS", "tw_grpo_weights", "tw_grpo_weights_from_logits"]

D_CLAMP = 11.0  # clamp of d_i,t (paper code)
RANGE_EPS = 1e-8  # keeps 0/0 = 0 when all s_t are equal


def _check(x: Tensor, mask: Tensor, group_size: int | None, what: str) -> tuple[int, int]:
    """Validate ``x`` [N, T, V] / ``mask`` [N, T]; return (B, G)."""
    if x.dim() != 3:
        raise ValueError(f"tw_grpo weights: {what} must be [N, T, V], got {tuple(x.shape)}")
    n, t, v = x.shape
    if tuple(mask.shape) != (n, t):
        raise ValueError(f"tw_grpo weights: mask must be {(n, t)} like {what}, got {tuple(mask.shape)}")
    if v < 2:
        raise ValueError(f"tw_grpo weights: vocabulary size must be >= 2, got {v}")
    g = n if group_size is None else group_size
    if g < 1 or n % g != 0:
        raise ValueError(f"tw_grpo weights: group_size={group_size} must divide N={n}")
    return n // g, g


def _scores(logprobs: Tensor, mask: Tensor) -> Tensor:
    """Divergence scores s [B, t] from log-probs [B, G, t, V] and mask [B, G, t]."""
    v = logprobs.shape[-1]
    uniform = torch.full_like(logprobs, -math.log(v))  # [B, G, t, V]
    lp = torch.where(mask[..., None] > 0, logprobs, uniform)  # [B, G, t, V]
    mean_lp = lp.mean(dim=1, keepdim=True)  # [B, 1, t, V]
    d = (mean_lp - lp).clamp(-D_CLAMP, D_CLAMP)  # [B, G, t, V]
    div = (torch.exp(d) - d - 1.0).sum(dim=-1)  # [B, G, t]
    return div.mean(dim=1)  # [B, t]


def _weights(s: Tensor, valid: Tensor, alpha: float) -> Tensor:
    """Min-max scale s [B, T] over valid positions [B, T] into [1, alpha]."""
    big = torch.finfo(s.dtype).max
    s_min = torch.where(valid, s, torch.full_like(s, big)).min(dim=1, keepdim=True).values  # [B, 1]
    s_max = torch.where(valid, s, torch.full_like(s, -big)).max(dim=1, keepdim=True).values  # [B, 1]
    any_valid = valid.any(dim=1, keepdim=True)  # [B, 1]
    s_min = torch.where(any_valid, s_min, torch.zeros_like(s_min))  # [B, 1]
    s_max = torch.where(any_valid, s_max, torch.zeros_like(s_max))  # [B, 1]
    w = 1.0 + (alpha - 1.0) * (s - s_min) / (s_max - s_min + RANGE_EPS)  # [B, T]
    return torch.where(valid, w, torch.ones_like(w))  # [B, T]


@torch.no_grad()
def tw_grpo_weights(
    logprobs: Tensor,
    mask: Tensor,
    alpha: float = 1.7,
    *,
    group_size: int | None = None,
) -> Tensor:
    """TW-GRPO weights [N, T] from full-vocabulary log-probs [N, T, V].

    ``logprobs`` is the log-softmax over the vocabulary at each completion
    position (behaviour policy, same temperature as sampling); ``mask`` [N, T]
    the completion mask. ``group_size=None`` treats all N rows as one group
    (the paper's per-group call with N = G); otherwise rows are group-major
    groups of ``group_size``. Returns detached float32 weights in [1, alpha].
    """
    b, g = _check(logprobs, mask, group_size, "logprobs")
    n, t, v = logprobs.shape
    lp = logprobs.detach().float().view(b, g, t, v)  # [B, G, T, V]
    m = mask.detach().view(b, g, t)  # [B, G, T]
    s = _scores(lp, m)  # [B, T]
    valid = (m > 0).any(dim=1)  # [B, T]
    w = _weights(s, valid, alpha)  # [B, T]
    return w[:, None, :].expand(b, g, t).reshape(n, t)  # [N, T]


@torch.no_grad()
def tw_grpo_weights_from_logits(
    logits: Tensor,
    mask: Tensor,
    alpha: float = 1.7,
    *,
    group_size: int | None = None,
    temperature: float = 1.0,
    chunk_size: int = 64,
) -> Tensor:
    """Memory-aware TW-GRPO weights [N, T] from logits [N, T, V] (any float dtype).

    Same result as :func:`tw_grpo_weights` on ``log_softmax(logits / temperature)``,
    but the float32 log-softmax is formed ``chunk_size`` positions at a time.
    """
    b, g = _check(logits, mask, group_size, "logits")
    if chunk_size < 1:
        raise ValueError(f"tw_grpo weights: chunk_size must be >= 1, got {chunk_size}")
    if temperature <= 0:
        raise ValueError(f"tw_grpo weights: temperature must be > 0, got {temperature}")
    n, t, v = logits.shape
    x = logits.detach().view(b, g, t, v)  # [B, G, T, V]
    m = mask.detach().view(b, g, t)  # [B, G, T]
    chunks = []
    for start in range(0, t, chunk_size):
        stop = min(start + chunk_size, t)
        lp = torch.log_softmax(x[:, :, start:stop].float() / temperature, dim=-1)  # [B, G, c, V]
        chunks.append(_scores(lp, m[:, :, start:stop]))  # [B, c]
    s = torch.cat(chunks, dim=1) if chunks else x.new_zeros(b, 0, dtype=torch.float32)  # [B, T]
    valid = (m > 0).any(dim=1)  # [B, T]
    w = _weights(s, valid, alpha)  # [B, T]
    return w[:, None, :].expand(b, g, t).reshape(n, t)  # [N, T]


TOKEN_WEIGHTS: Registry = Registry("token weights")
TOKEN_WEIGHTS.register("tw_grpo")(tw_grpo_weights_from_logits)
