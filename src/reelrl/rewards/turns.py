"""Rewards of multi-turn episodes: every turn scored by the recipe's rewards, a trajectory's reward their sum.

Each model turn is scored by the registered rewards over the row's columns
overlaid with the columns the environment gave that turn (its gold answer and
problem type: :mod:`reelrl.envs.base`), so one recipe's ``accuracy`` scores
a first turn by temporal IoU and a second by box IoU. A trajectory's reward is
the sum of its turns' weighted totals. Per-reward columns are the mean over
the turns a trajectory took, and ``turn<k>/<reward>`` holds turn k's value
(NaN where a trajectory ended before turn k), so logs and evaluations show
each turn.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from reelrl.data.schema import VideoRow
from reelrl.rewards.combine import RewardSpec, compute_rewards
from reelrl.rewards.functions import REWARDS

__all__ = ["score_turns"]


@REWARDS.register("env_reward")
def env_reward(completions: list[Any], env_reward: list[Any] | None = None, **columns: Any) -> list[float | None]:
    """The reward an environment computed itself for a turn (``Turn.columns["env_reward"]``; None where it gave
    none): how an environment's ``step -> reward`` enters a recipe's ``rl.rewards``."""
    values = env_reward if env_reward is not None else [None] * len(completions)
    out: list[float | None] = []
    for v in values:
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"env_reward must be a finite number or None, got {v!r}")
        out.append(None if v is None else float(v))
    return out


def score_turns(specs: list[RewardSpec], metric_specs: list[RewardSpec], rows: list[VideoRow],
                turn_texts: list[list[list[str]]], turn_columns: list[list[list[dict[str, Any]]]],
                max_turns: int = 1) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """Rewards ``[G]`` and per-reward columns ``{name: [G]}`` of each group (module docstring).

    ``turn_texts[g][i][k]`` / ``turn_columns[g][i][k]``: group g, trajectory i, turn k. ``turn<k>/`` columns
    exist for every k up to ``max_turns`` (the environment's), so every step logs the same keys.
    """
    texts: list[str] = []
    cols: list[dict[str, Any]] = []
    owner: list[tuple[int, int, int]] = []  # (group, trajectory, turn) of every scored turn
    for gi, (row, texts_g, cols_g) in enumerate(zip(rows, turn_texts, turn_columns)):
        base = row.model_dump()
        for i, (tt, tc) in enumerate(zip(texts_g, cols_g)):
            for k, (text, c) in enumerate(zip(tt, tc)):
                if c is None:  # an unscored turn (a streaming thought): no reward, NaN in turn<k>/ columns
                    continue
                texts.append(text)
                cols.append({**base, **c})
                owner.append((gi, i, k))
    keys = sorted({k for c in cols for k in c})
    columns = {k: [c.get(k) for c in cols] for k in keys}
    total, per = compute_rewards(specs, texts, columns)  # [M], {name: [M]}
    _, extra = compute_rewards(metric_specs, texts, columns)
    per = {**extra, **per}
    max_turns = max([max_turns] + [k + 1 for _, _, k in owner])
    groups = []
    for texts_g in turn_texts:
        g = len(texts_g)
        groups.append({"reward": torch.zeros(g), "count": torch.zeros(g),  # [G] each
                    "sums": {n: torch.zeros(g) for n in per},
                    "turns": {f"turn{k + 1}/{n}": torch.full((g,), math.nan) for k in range(max_turns) for n in per}})
    for m, (gi, i, k) in enumerate(owner):  # every scored turn into its group's trajectory
        acc = groups[gi]
        acc["reward"][i] += total[m]
        acc["count"][i] += 1
        for n, v in per.items():
            acc["sums"][n][i] += torch.nan_to_num(v[m], nan=0.0)
            acc["turns"][f"turn{k + 1}/{n}"][i] = v[m]
    return [(a["reward"], {**{n: s / a["count"].clamp_min(1) for n, s in a["sums"].items()}, **a["turns"]})
            for a in groups]
