"""Per-token KL estimators between the policy and the reference model.

Each estimator is a pure function registered in :data:`KL_ESTIMATORS` with the
signature ``fn(logp: Tensor [N, T], ref_logp: Tensor [N, T]) -> Tensor [N, T]``,
where both inputs are log-probabilities of the sampled tokens (sampled from the
policy). The estimators follow J. Schulman, "Approximating KL Divergence" (2020):
k1 is unbiased but high-variance, k3 is unbiased and always >= 0.

Gradients flow into ``logp`` only; ``ref_logp`` is detached here so that a
reference tensor that accidentally requires grad never receives one.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from reelrl.registry import Registry

KLFn = Callable[[Tensor, Tensor], Tensor]

KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")


def _check(logp: Tensor, ref_logp: Tensor, name: str) -> None:
    """Shapes must match exactly (no silent broadcasting)."""
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"kl {name!r}: logp shape {tuple(logp.shape)} != ref_logp shape {tuple(ref_logp.shape)}"
        )


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp (Schulman 2020). Unbiased for KL(pi || ref), can be negative."""
    _check(logp, ref_logp, "k1")
    return logp - ref_logp.detach()  # [N, T]


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2 (Schulman 2020). Biased, low variance, >= 0."""
    _check(logp, ref_logp, "k2")
    diff = logp - ref_logp.detach()  # [N, T]
    return 0.5 * diff * diff  # [N, T]


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor, *, clamp: float = 10.0) -> Tensor:
    """k3 = exp(d) - d - 1 with d = ref_logp - logp clamped to [-clamp, clamp].

    Schulman 2020; the GRPO paper's KL term. The clamp of d to +-10 follows
    Video-R1's trainer (it keeps exp(d) finite; gradient is 0 where clamped).
    """
    _check(logp, ref_logp, "k3")
    d = (ref_logp.detach() - logp).clamp(-clamp, clamp)  # [N, T]
    return torch.exp(d) - d - 1.0  # [N, T]


@KL_ESTIMATORS.register("low_var_kl")
def kl_low_var(logp: Tensor, ref_logp: Tensor, *, d_clamp: float = 20.0, clamp: float = 10.0) -> Tensor:
    """verl's "low_var_kl": k3 with d clamped to +-20, then the result clamped to [-10, 10].

    Used by Long-RL / LongVILA-R1 (verl-based, beta 0.01) and VST. Deviation from
    plain ``k3``: the inner clamp on d is +-20 (verl) instead of +-10, and the
    estimate itself is capped at 10 so a single runaway token cannot dominate.
    """
    _check(logp, ref_logp, "low_var_kl")
    d = (ref_logp.detach() - logp).clamp(-d_clamp, d_clamp)  # [N, T]
    k3 = torch.exp(d) - d - 1.0  # [N, T]
    return k3.clamp(-clamp, clamp)  # [N, T]
