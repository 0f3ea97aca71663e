"""Combine several named rewards into one weighted reward per completion.

A recipe lists :class:`RewardSpec` entries (name, weight, extra kwargs); the
trainer calls :func:`compute_rewards` once per batch of completions and gets
the weighted total plus one column per reward for logging. Names are looked up
in :data:`~reelrl.rewards.functions.REWARDS`, or imported when written as
``"package.module:function"`` (user rewards, TRL calling convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from reelrl.rewards.functions import REWARDS, RewardFn

__all__ = ["RewardSpec", "compute_rewards", "resolve_reward"]


@dataclass
class RewardSpec:
    """One reward of a recipe.

    name:   a registered reward ("format", "accuracy", ...) or "module.path:function".
    weight: multiplier of this reward in the total (0 keeps it as a logged metric only).
    kwargs: extra keyword arguments passed to the function on every call
            (must not collide with dataset column names).
    """

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


def resolve_reward(name: str) -> RewardFn:
    """The reward function for ``name``: registry name, or ``"module.path:function"`` to import."""
    return REWARDS.resolve(name)


def _as_float(value: Any, name: str, row: int) -> float:
    """A reward value as a finite float, or NaN for ``None``; anything else is an error naming the reward."""
    if value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"reward {name!r} returned {value!r} for row {row}; expected a number or None") from None
    if not math.isfinite(x):
        raise ValueError(f"reward {name!r} returned {x} for row {row}; use None for 'not applicable'")
    return x


def compute_rewards(
    specs: Sequence[RewardSpec], completions: list[Any], columns: dict[str, list[Any]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted total reward and per-reward columns for N completions.

    Each function is called as ``fn(completions, **columns, **spec.kwargs)``
    and must return N values. ``None`` ("not applicable") becomes NaN in its
    column and contributes 0 to the total, as TRL's ``GRPOTrainer`` does
    (``(rewards_per_func * reward_weights).nansum(dim=1)``). A row for which
    every reward is ``None`` is an error here; TRL warns and gives it 0 (a
    recipe whose rewards skip a row entirely is a configuration mistake, and
    a silent 0 would train on it). Returns ``(total [N], {spec.name: values [N]})``,
    float32 on CPU.
    """
    if not specs:
        raise ValueError("compute_rewards needs at least one RewardSpec")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate reward names: {dupes}")
    n = len(completions)
    for key, col in columns.items():
        if len(col) != n:
            raise ValueError(f"column {key!r} has {len(col)} entries for {n} completions")
    per_reward: dict[str, torch.Tensor] = {}
    total = torch.zeros(n, dtype=torch.float32)  # [N]
    for spec in specs:
        clash = sorted(set(spec.kwargs) & set(columns))
        if clash:
            raise ValueError(f"reward {spec.name!r}: kwargs {clash} collide with dataset columns")
        values = resolve_reward(spec.name)(completions, **columns, **spec.kwargs)
        if values is None or len(values) != n:
            got = "None" if values is None else f"{len(values)} values"
            raise ValueError(f"reward {spec.name!r} returned {got} for {n} completions")
        col = torch.tensor([_as_float(v, spec.name, i) for i, v in enumerate(values)], dtype=torch.float32)  # [N]
        per_reward[spec.name] = col
        total = total + spec.weight * torch.nan_to_num(col, nan=0.0)  # [N]
    if n:
        stacked = torch.stack(list(per_reward.values()))  # [R, N]
        empty = torch.isnan(stacked).all(dim=0)  # [N]
        if empty.any():
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"rows {rows}: every reward returned None (rewards: {', '.join(names)})")
    return total, per_reward
