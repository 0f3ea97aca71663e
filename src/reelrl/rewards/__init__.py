"""Rewards: answer extraction, registered reward functions, weighted combination.

``REWARDS`` maps names to functions with TRL's calling convention
(``fn(completions, **columns) -> list[float | None]``); ``compute_rewards``
turns a list of :class:`RewardSpec` into a total reward tensor plus per-reward
columns.
"""

from reelrl.data.answers import (
    extract_tag,
    has_format,
    parse_choice,
    parse_choices,
    parse_number,
    parse_span,
)
from reelrl.rewards.combine import RewardSpec, compute_rewards, resolve_reward
from reelrl.rewards.functions import REWARDS, RewardFn, score_answer
from reelrl.rewards import clues as _clues  # noqa: F401 - registers clue, clue_format
from reelrl.rewards import judge as _judge  # noqa: F401 - registers judge (rule / local-model judges)
from reelrl.rewards import stvg as _stvg  # noqa: F401 - registers stvg (STVG-R1: tIoU + ID + format)
from reelrl.rewards import turns as _turns  # noqa: F401 - registers env_reward (an environment's own reward)

__all__ = [
    "REWARDS",
    "RewardFn",
    "RewardSpec",
    "compute_rewards",
    "resolve_reward",
    "score_answer",
    "extract_tag",
    "has_format",
    "parse_choice",
    "parse_choices",
    "parse_number",
    "parse_span",
]
