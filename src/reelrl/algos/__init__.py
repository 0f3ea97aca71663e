"""Algorithm core: advantage estimators, KL estimators, policy and pair losses.

Everything here is a pure tensor function looked up by name in a registry:

- :data:`ADVANTAGES` (``grpo``, ``dr_grpo``, ``batch_std``, ``rloo``, ``reinforce``,
  ``reg_grpo``): rewards [B, G] -> advantages [B, G].
- :data:`KL_ESTIMATORS` (``k1``, ``k2``, ``k3``, ``low_var_kl``): per-token KL.
- :data:`LOSSES` (``grpo``, ``dapo``, ``dr_grpo``, ``gspo``, ``tw_grpo``,
  ``reg_grpo``): :class:`PolicyBatch` -> :class:`LossOutput`.
- :data:`AGGREGATIONS` (``token-mean``, ``seq-mean-token-mean``,
  ``seq-mean-token-sum``) used through :func:`aggregate`.
- :data:`PAIR_LOSSES` (``dpo``, ``ipo``): sequence log-probs of pairs -> LossOutput.
- :data:`REWARD_SHAPING` (``overlong_penalty``, ``length_bonus``) and
  :data:`GROUP_FILTERS` (``dynamic_sampling``, ``drop_all_correct``): between
  scoring and advantages; :func:`temporal_bonus` (T-GRPO).
- :data:`TOKEN_WEIGHTS` (``tw_grpo``): per-token loss weights from logits.
"""

from reelrl.algos.advantages import ADVANTAGES, drop_all_correct, dynamic_sampling_mask
from reelrl.algos.dpo import PAIR_LOSSES, dpo_loss, ipo_loss, sequence_logp
from reelrl.algos.kl import KL_ESTIMATORS
from reelrl.algos.losses import AGGREGATIONS, LOSSES, LossOutput, PolicyBatch, aggregate
from reelrl.algos.shaping import (
    GROUP_FILTERS,
    REWARD_SHAPING,
    overlong_keep,
    temporal_bonus,
)
from reelrl.algos.token_weights import (
    TOKEN_WEIGHTS,
    tw_grpo_weights,
    tw_grpo_weights_from_logits,
)

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "GROUP_FILTERS",
    "KL_ESTIMATORS",
    "LOSSES",
    "PAIR_LOSSES",
    "REWARD_SHAPING",
    "TOKEN_WEIGHTS",
    "LossOutput",
    "PolicyBatch",
    "aggregate",
    "dpo_loss",
    "drop_all_correct",
    "dynamic_sampling_mask",
    "ipo_loss",
    "overlong_keep",
    "sequence_logp",
    "temporal_bonus",
    "tw_grpo_weights",
    "tw_grpo_weights_from_logits",
]
