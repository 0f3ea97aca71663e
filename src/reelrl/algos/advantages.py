"""Advantage estimators: group rewards ``[B, G]`` -> advantages ``[B, G]``.

Every estimator is a pure function registered in :data:`ADVANTAGES` with the
signature ``fn(rewards: Tensor [B, G], *, eps: float = ..., **kw) -> Tensor [B, G]``.
Row ``b`` holds the ``G`` rewards of one prompt's group; the trainer flattens the
result group-major (``adv.reshape(-1)`` -> ``[B*G]``) to match the sequence order.

Standard deviations follow TRL's ``GRPOTrainer`` (and verl): ``torch.std`` with
its default Bessel correction (``unbiased=True``). Each estimator that divides
by a standard deviation takes ``unbiased`` so a recipe can switch to the
population std. Groups of size 1 have no defined group statistics; estimators
that need them raise ``ValueError``.

Also here: batch filters that act on groups, :func:`dynamic_sampling_mask`
(DAPO) and :func:`drop_all_correct` (VerIPO).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from reelrl.registry import Registry

AdvantageFn = Callable[..., Tensor]

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage")


def _check_rewards(rewards: Tensor, name: str, min_group: int = 2) -> Tensor:
    """Validate a ``[B, G]`` reward tensor and return it as float32."""
    if not isinstance(rewards, Tensor):
        raise TypeError(f"advantage {name!r}: rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 2:
        raise ValueError(
            f"advantage {name!r}: rewards must have shape [B, G] (one row per prompt group), "
            f"got shape {tuple(rewards.shape)}"
        )
    if rewards.shape[1] < min_group:
        raise ValueError(
            f"advantage {name!r}: needs group size G >= {min_group}, got rewards of shape {tuple(rewards.shape)}"
        )
    if not torch.isfinite(rewards).all():
        raise ValueError(f"advantage {name!r}: rewards contain NaN or inf")
    return rewards.float()  # [B, G]


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: Tensor, *, eps: float = 1e-4, unbiased: bool = True) -> Tensor:
    """Group-normalised advantage, A_i = (r_i - mean_G r) / (std_G r + eps).

    Paper: Shao et al. 2024, "DeepSeekMath" (GRPO); eps 1e-4 and the Bessel
    corrected std (``unbiased=True``) follow TRL's ``GRPOTrainer`` and Video-R1.
    Deviations: none. A group whose rewards are all equal gets A = 0.
    """
    r = _check_rewards(rewards, "grpo")  # [B, G]
    mean = r.mean(dim=1, keepdim=True)  # [B, 1]
    std = r.std(dim=1, keepdim=True, unbiased=unbiased)  # [B, 1]
    return (r - mean) / (std + eps)  # [B, G]


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, *, eps: float = 1e-4) -> Tensor:
    """Mean-centred advantage without std scaling, A_i = r_i - mean_G r.

    Paper: Liu et al. 2025, "Understanding R1-Zero-Like Training" (Dr. GRPO);
    also VST's advantage. ``eps`` is accepted for a uniform signature and unused.
    """
    del eps
    r = _check_rewards(rewards, "dr_grpo", min_group=1)  # [B, G]
    return r - r.mean(dim=1, keepdim=True)  # [B, G]


@ADVANTAGES.register("batch_std")
def batch_std_advantages(rewards: Tensor, *, eps: float = 1e-4, unbiased: bool = True) -> Tensor:
    """Group-centred, batch-scaled advantage, A_i = (r_i - mean_G r) / (std_batch r + eps).

    The std runs over all ``B*G`` rewards of the batch (TRL ``scale_rewards="batch"``;
    REINFORCE++-baseline style). Deviations: none.
    """
    r = _check_rewards(rewards, "batch_std", min_group=1)  # [B, G]
    if r.numel() < 2:
        raise ValueError("advantage 'batch_std': needs at least 2 rewards in the batch")
    centred = r - r.mean(dim=1, keepdim=True)  # [B, G]
    std = r.std(unbiased=unbiased)  # []
    return centred / (std + eps)  # [B, G]


@ADVANTAGES.register("rloo")
def rloo_advantages(rewards: Tensor, *, eps: float = 1e-4) -> Tensor:
    """Leave-one-out baseline, A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_G r).

    Paper: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
    Optimization" (RLOO). ``eps`` is accepted for a uniform signature and unused.
    """
    del eps
    r = _check_rewards(rewards, "rloo")  # [B, G]
    g = r.shape[1]
    loo_mean = (r.sum(dim=1, keepdim=True) - r) / (g - 1)  # [B, G]
    return r - loo_mean  # [B, G]


@ADVANTAGES.register("reinforce")
def reinforce_advantages(rewards: Tensor, *, eps: float = 1e-4) -> Tensor:
    """REINFORCE with a batch-mean baseline, A_i = r_i - mean_batch r.

    Paper: Williams 1992. ``eps`` is accepted for a uniform signature and unused.
    """
    del eps
    r = _check_rewards(rewards, "reinforce", min_group=1)  # [B, G]
    return r - r.mean()  # [B, G]


@ADVANTAGES.register("reg_grpo")
def reg_grpo_advantages(rewards: Tensor, *, eps: float = 1e-6, unbiased: bool = True) -> Tensor:
    """Regression target of Reg-GRPO, A_i = (r_i - mean_G r) / std_G r.

    Paper: Park et al. 2025, "DeepVideo-R1" (Reg-GRPO). The paper divides by the
    bare std; we add a small ``eps`` (1e-6) so that a group with equal rewards
    gets A = 0 instead of NaN. The std convention (``unbiased``) must match the
    one of the ``reg_grpo`` loss so that target and prediction live on the same
    scale (both default to the Bessel-corrected std).
    """
    r = _check_rewards(rewards, "reg_grpo")  # [B, G]
    mean = r.mean(dim=1, keepdim=True)  # [B, 1]
    std = r.std(dim=1, keepdim=True, unbiased=unbiased)  # [B, 1]
    return (r - mean) / (std + eps)  # [B, G]


def dynamic_sampling_mask(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """Keep-mask of groups whose rewards are not all equal (DAPO dynamic sampling).

    Paper: Yu et al. 2025, "DAPO". A group whose rewards all coincide has zero
    group-normalised advantage and contributes no policy gradient; DAPO drops
    such groups and samples more. Returns a bool tensor ``[B]``, True = keep
    (max - min of the group's rewards > eps).
    """
    r = _check_rewards(rewards, "dynamic_sampling", min_group=1)  # [B, G]
    spread = r.max(dim=1).values - r.min(dim=1).values  # [B]
    return spread > eps  # [B]


def drop_all_correct(
    acc: Tensor,
    drop_frac: float = 0.8,
    generator: torch.Generator | None = None,
    *,
    tol: float = 1e-6,
) -> Tensor:
    """Keep-mask that randomly drops groups whose every rollout is correct (VerIPO).

    Paper: Li et al. 2025, "VerIPO": during GRPO, drop 80% of the groups whose
    mean accuracy is 1. Deviation / choice: the paper does not say how the 80%
    are drawn; here each all-correct group is dropped independently with
    probability ``drop_frac`` (a Bernoulli draw from ``generator``), so the
    expected dropped fraction is ``drop_frac`` whatever the batch size.
    ``acc`` is ``[B, G]`` accuracy in [0, 1]; a group counts as all-correct when
    its mean accuracy is >= 1 - tol. Returns bool ``[B]``, True = keep.
    """
    if not 0.0 <= drop_frac <= 1.0:
        raise ValueError(f"drop_all_correct: drop_frac must be in [0, 1], got {drop_frac}")
    a = _check_rewards(acc, "drop_all_correct", min_group=1)  # [B, G]
    all_correct = a.mean(dim=1) >= 1.0 - tol  # [B]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(a.shape[0], generator=generator, device=gen_device).to(a.device)  # [B]
    dropped = all_correct & (u < drop_frac)  # [B]
    return ~dropped  # [B]
