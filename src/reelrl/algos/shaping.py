"""What happens to a batch between scoring and advantages: reward shaping and group filters.

Pure tensor functions in two registries, plus the T-GRPO temporal bonus rule.

- :data:`REWARD_SHAPING`: ``fn(rewards [B, G], *, lengths [B, G], truncated [B, G],
  accuracy [B, G], max_len, **params) -> delta [B, G]``; the trainer adds ``delta``
  to the rewards before the advantage estimator and logs it as a reward column.
  ``overlong_penalty`` (DAPO soft overlong punishment), ``length_bonus`` (Video-R1).
- :data:`GROUP_FILTERS`: ``fn(rewards [B, G], accuracy [B, G], *, generator, **params)
  -> keep [B]`` (bool). ``dynamic_sampling`` (DAPO), ``drop_all_correct`` (VerIPO).
- :func:`temporal_bonus`: T-GRPO's reward for ordered-frame completions.

DAPO overlong *filtering* (the loss of truncated completions is masked) acts on
the loss mask, not on the rewards: see ``rl.overlong_filter`` and
:func:`overlong_keep`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from reelrl.algos.advantages import drop_all_correct, dynamic_sampling_mask
from reelrl.registry import Registry

__all__ = ["GROUP_FILTERS", "REWARD_SHAPING", "overlong_keep", "temporal_bonus"]

ShapingFn = Callable[..., Tensor]
FilterFn = Callable[..., Tensor]

REWARD_SHAPING: Registry[ShapingFn] = Registry("reward shaping")
GROUP_FILTERS: Registry[FilterFn] = Registry("group filter")


def _same_shape(name: str, **tensors: Tensor) -> tuple[int, int]:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"{name}: inputs must all be [B, G], got {shapes}")
    return next(iter(shapes.values()))  # type: ignore[return-value]


# ------------------------------------------------------------------ reward shaping


@REWARD_SHAPING.register("overlong_penalty")
def overlong_penalty(
    rewards: Tensor,
    *,
    lengths: Tensor,
    truncated: Tensor,
    accuracy: Tensor,
    max_len: int,
    cache_len: int | None = None,
    penalty: float = 1.0,
) -> Tensor:
    """DAPO soft overlong punishment, added to the task reward.

    Paper: Yu et al. 2025, "DAPO", eq. 13. With ``L_exp = max_len - cache_len``::

        delta = 0                                   if |y| <= L_exp
        delta = penalty * (L_exp - |y|) / cache_len if L_exp < |y| <= max_len
        delta = -penalty                            if |y| > max_len

    DAPO uses max_len 20480 and cache_len 4096 (20 %). ``cache_len=None`` picks
    ``round(0.2 * max_len)`` (at least 1). A completion cut at ``max_len``
    therefore gets exactly ``-penalty``. ``truncated`` and ``accuracy`` are unused.
    """
    del truncated, accuracy
    _same_shape("overlong_penalty", rewards=rewards, lengths=lengths)
    if max_len < 1:
        raise ValueError(f"overlong_penalty: max_len must be >= 1, got {max_len}")
    cache = max(1, round(0.2 * max_len)) if cache_len is None else int(cache_len)
    if not 1 <= cache <= max_len:
        raise ValueError(f"overlong_penalty: cache_len must lie in [1, max_len={max_len}], got {cache}")
    n = lengths.float()  # [B, G]
    expected = float(max_len - cache)
    soft = (expected - n) / cache  # [B, G]
    delta = torch.where(n <= expected, torch.zeros_like(n), soft)  # [B, G]
    delta = torch.where(n > max_len, torch.full_like(n, -1.0), delta)  # [B, G]
    return penalty * delta  # [B, G]


@REWARD_SHAPING.register("length_bonus")
def length_bonus(
    rewards: Tensor,
    *,
    lengths: Tensor,
    truncated: Tensor,
    accuracy: Tensor,
    max_len: int,
    min_tokens: int = 320,
    max_tokens: int = 512,
    bonus: float = 0.2,
    correct_threshold: float = 1.0,
) -> Tensor:
    """Video-R1 length reward: +``bonus`` to correct completions of ``min_tokens..max_tokens`` tokens.

    Applies only in groups where more than one completion is correct
    (``accuracy >= correct_threshold``). Paper: Feng et al. 2025, "Video-R1"
    (320..512 tokens, +0.2). Choice: "correct" means accuracy >= 1 by default
    (the published threshold is not stated). ``max_len`` / ``truncated`` unused.
    """
    del truncated, max_len
    _same_shape("length_bonus", rewards=rewards, lengths=lengths, accuracy=accuracy)
    correct = accuracy.float() >= correct_threshold  # [B, G]
    several = correct.sum(dim=1, keepdim=True) > 1  # [B, 1]
    in_range = (lengths >= min_tokens) & (lengths <= max_tokens)  # [B, G]
    return torch.where(correct & several & in_range, bonus, 0.0).to(rewards.dtype)  # [B, G]


def overlong_keep(truncated: Tensor) -> Tensor:
    """DAPO overlong filtering: per-completion loss weight, 0 for truncated completions, else 1.

    ``truncated`` [G] or [B, G] bool -> float of the same shape. The trainer
    multiplies the completion's loss mask by it; the completion still counts in
    the group's reward statistics (DAPO masks the loss only).
    """
    return (~truncated.bool()).float()  # [..., G]


# ------------------------------------------------------------------ T-GRPO


def temporal_bonus(
    acc_ordered: Tensor,
    acc_shuffled: Tensor,
    *,
    ratio: float = 0.8,
    bonus: float = 0.3,
    threshold: float = 0.1,
) -> Tensor:
    """T-GRPO temporal reward for the completions on ordered frames.

    Paper: Feng et al. 2025, "Video-R1" (T-GRPO). Per group, p = mean accuracy
    of the G ordered completions ``acc_ordered`` [B, G], q = mean accuracy of the
    S completions on the frame-shuffled video ``acc_shuffled`` [B, S]. If
    ``p >= ratio * q`` every ordered completion with accuracy ``> threshold``
    gets ``+bonus``; otherwise nothing. Published code: ratio 0.8, bonus 0.3,
    threshold 0.1. Returns the bonus [B, G] (to add to the rewards).
    """
    if acc_ordered.dim() != 2 or acc_shuffled.dim() != 2 or acc_ordered.shape[0] != acc_shuffled.shape[0]:
        raise ValueError(
            f"temporal_bonus: need acc_ordered [B, G] and acc_shuffled [B, S], got "
            f"{tuple(acc_ordered.shape)} and {tuple(acc_shuffled.shape)}"
        )
    p = acc_ordered.float().mean(dim=1, keepdim=True)  # [B, 1]
    q = acc_shuffled.float().mean(dim=1, keepdim=True)  # [B, 1]
    gate = p >= ratio * q  # [B, 1]
    return torch.where(gate & (acc_ordered.float() > threshold), bonus, 0.0)  # [B, G]


# ------------------------------------------------------------------ group filters


@GROUP_FILTERS.register("dynamic_sampling")
def dynamic_sampling(
    rewards: Tensor, accuracy: Tensor, *, generator: torch.Generator | None = None, signal: str = "reward",
    eps: float = 1e-6,
) -> Tensor:
    """DAPO dynamic sampling: keep groups whose ``signal`` values ("reward" or "accuracy") are not all equal.

    DAPO drops prompts whose accuracy is all 0 or all 1 (``signal="accuracy"``);
    ``signal="reward"`` (default) drops exactly the groups with zero advantage.
    Returns keep [B]. ``generator`` is unused (the rule is deterministic).
    """
    del generator
    if signal not in ("reward", "accuracy"):
        raise ValueError(f"group filter 'dynamic_sampling': signal must be 'reward' or 'accuracy', got {signal!r}")
    return dynamic_sampling_mask(rewards if signal == "reward" else accuracy, eps=eps)  # [B]


@GROUP_FILTERS.register("drop_all_correct")
def drop_all_correct_filter(
    rewards: Tensor, accuracy: Tensor, *, generator: torch.Generator | None = None, drop_frac: float = 0.8
) -> Tensor:
    """VerIPO: drop each group whose accuracy is all 1 with probability ``drop_frac`` (0.8).

    See :func:`reelrl.algos.advantages.drop_all_correct`. Returns keep [B].
    """
    del rewards
    return drop_all_correct(accuracy, drop_frac, generator)  # [B]
