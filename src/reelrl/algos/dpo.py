"""Preference (pair) losses on sequence log-probs: DPO and IPO (VerIPO's DPO stage).

Each loss is a pure function registered in :data:`PAIR_LOSSES` with the signature::

    fn(policy_chosen_logp [P], policy_rejected_logp [P], ref_chosen_logp [P],
       ref_rejected_logp [P], *, beta=..., num_pairs=None, **params) -> LossOutput

where every input is a sequence log-prob (sum of the completion's token
log-probs, see :func:`sequence_logp`) of P preference pairs. Reference inputs
are detached. ``num_pairs`` is the pair count of the whole (global) batch for
gradient accumulation: the sum over micro-batches then equals the full-batch
loss; by default each call averages over its own P pairs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from reelrl.algos.losses import LossOutput
from reelrl.registry import Registry

__all__ = ["PAIR_LOSSES", "dpo_loss", "ipo_loss", "sequence_logp"]

PairLossFn = Callable[..., LossOutput]

PAIR_LOSSES: Registry[PairLossFn] = Registry("pair_loss")


def sequence_logp(token_logp: Tensor, mask: Tensor) -> Tensor:
    """Sum of token log-probs [N, T] over the completion mask [N, T] -> [N].

    Masked positions are zeroed with ``torch.where`` (NaN/inf there cannot leak).
    """
    if token_logp.shape != mask.shape or token_logp.dim() != 2:
        raise ValueError(
            f"sequence_logp: token_logp {tuple(token_logp.shape)} and mask {tuple(mask.shape)} must both be [N, T]"
        )
    clean = torch.where(mask > 0, token_logp, torch.zeros_like(token_logp))  # [N, T]
    return clean.sum(dim=-1)  # [N]


def _pair_inputs(
    name: str, pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate four [P] tensors; cast to float32; detach the reference ones."""
    shapes = {t.shape for t in (pc, pr, rc, rr)}
    if len(shapes) != 1 or pc.dim() != 1:
        raise ValueError(
            f"pair loss {name!r}: the four sequence log-prob inputs must all be [P]; got "
            f"{[tuple(t.shape) for t in (pc, pr, rc, rr)]}"
        )
    return pc.float(), pr.float(), rc.detach().float(), rr.detach().float()  # 4 x [P]


def _mean(x: Tensor, num_pairs: float | None) -> Tensor:
    if num_pairs is None:
        return x.mean() if x.numel() else x.sum()  # []
    if num_pairs <= 0:
        raise ValueError(f"pair loss: num_pairs must be > 0, got {num_pairs}")
    return x.sum() / float(num_pairs)  # []


def _pair_metrics(beta: float, pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> dict[str, float]:
    """Implicit rewards beta * (logp - ref_logp) and their margin / accuracy (local means)."""
    with torch.no_grad():
        chosen = beta * (pc - rc)  # [P]
        rejected = beta * (pr - rr)  # [P]
        margin = chosen - rejected  # [P]
        if margin.numel() == 0:
            return {}
        return {
            "rewards_chosen": float(chosen.mean()),
            "rewards_rejected": float(rejected.mean()),
            "reward_margin": float(margin.mean()),
            "reward_accuracy": float((margin > 0).float().mean()),
        }


@PAIR_LOSSES.register("dpo")
def dpo_loss(
    policy_chosen_logp: Tensor,
    policy_rejected_logp: Tensor,
    ref_chosen_logp: Tensor,
    ref_rejected_logp: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    num_pairs: float | None = None,
) -> LossOutput:
    """DPO: -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r))), mean over pairs.

    Paper: Rafailov et al. 2023, "Direct Preference Optimization"; beta 0.1 as
    in VerIPO. ``label_smoothing`` eps > 0 gives conservative DPO (cDPO):
    -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). Metrics: implicit
    rewards of chosen / rejected, their margin and accuracy (margin > 0).
    """
    if beta <= 0:
        raise ValueError(f"pair loss 'dpo': beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"pair loss 'dpo': label_smoothing must be in [0, 0.5), got {label_smoothing}")
    pc, pr, rc, rr = _pair_inputs("dpo", policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp)
    h = (pc - rc) - (pr - rr)  # [P]
    losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)  # [P]
    loss = _mean(losses, num_pairs)  # []
    return LossOutput(loss=loss, metrics={"dpo_loss": float(loss.detach()), **_pair_metrics(beta, pc, pr, rc, rr)})


@PAIR_LOSSES.register("ipo")
def ipo_loss(
    policy_chosen_logp: Tensor,
    policy_rejected_logp: Tensor,
    ref_chosen_logp: Tensor,
    ref_rejected_logp: Tensor,
    *,
    beta: float = 0.1,
    num_pairs: float | None = None,
) -> LossOutput:
    """IPO: (h - 1 / (2 beta))^2 with h = (logp_c - ref_c) - (logp_r - ref_r), mean over pairs.

    Paper: Azar et al. 2023, "A General Theoretical Paradigm to Understand
    Learning from Human Preferences". Deviation: h uses summed (not
    length-averaged) sequence log-probs, like the DPO loss here.
    """
    if beta <= 0:
        raise ValueError(f"pair loss 'ipo': beta must be > 0, got {beta}")
    pc, pr, rc, rr = _pair_inputs("ipo", policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp)
    h = (pc - rc) - (pr - rr)  # [P]
    losses = (h - 1.0 / (2.0 * beta)) ** 2  # [P]
    loss = _mean(losses, num_pairs)  # []
    return LossOutput(loss=loss, metrics={"ipo_loss": float(loss.detach()), **_pair_metrics(beta, pc, pr, rc, rr)})
