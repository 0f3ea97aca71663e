"""Algorithm core: advantage estimators, KL estimators, policy and pair losses.

Everything here is a pure tensor function looked up by name in a registry:

- :data:`ADVANTAGES` (``grpo``, ``dr_grpo``, ``batch_std``, ``rloo``, ``reinforce``,
  ``reg_grpo``): rewards [B, G] -> advantages [B, G].
- :data:`KL_ESTIMATORS` (``k1``, ``k2``, ``k3``, ``low_var_kl``): per-token KL.
- :data:`LOSSES` (``grpo``, ``dapo``, ``dr_grpo``, ``gspo``, ``tw_grpo``,
  ``reg_grpo``, ``sft``): :class:`PolicyBatch` -> :class:`LossOutput`.
- :data:`AGGREGATIONS` (``token-mean``, ``seq-mean-token-mean``,
  ``seq-mean-token-sum``) used through :func:`aggregate`.
- :data:`PAIR_LOSSES` (``dpo``, ``ipo``): sequence log-probs of pairs -> LossOutput.
"""

from reelrl.algos.advantages import ADVANTAGES, drop_all_correct, dynamic_sampling_mask
from reelrl.algos.dpo import PAIR_LOSSES, dpo_loss, ipo_loss, sequence_logp
from reelrl.algos.kl import KL_ESTIMATORS
from reelrl.algos.losses import AGGREGATIONS, LOSSES, LossOutput, PolicyBatch, aggregate
from reelrl.algos.token_weights import tw_grpo_weights, tw_grpo_weights_from_logits

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "LOSSES",
    "PAIR_LOSSES",
    "LossOutput",
    "PolicyBatch",
    "aggregate",
    "dpo_loss",
    "drop_all_correct",
    "dynamic_sampling_mask",
    "ipo_loss",
    "sequence_logp",
    "tw_grpo_weights",
    "tw_grpo_weights_from_logits",
]
