"""The method of one RL stage, built from ``cfg.rl``: its hooks in their fixed order and its row source.

:class:`Hooks` holds every hook of :mod:`reelrl.train.hooks` and the
augmentations of :mod:`reelrl.train.augments` that the recipe names;
:class:`DataState` bundles the row source's and the hooks' state, which every
checkpoint saves as the stage's data position.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from reelrl.config import RecipeConfig
from reelrl.data.curriculum import ROW_SOURCES, RowSource
from reelrl.data.schema import VideoRow
from reelrl.train.augments import AUGMENTS
from reelrl.train.groups import Group, GroupStats, PromptView
from reelrl.train.hooks import (
    GroupFilter,
    Hook,
    HookHost,
    OverlongFilter,
    RewardShaping,
    TemporalContrast,
    TokenWeighter,
)


def build_row_source(cfg: RecipeConfig, rows: Sequence[VideoRow]) -> RowSource:
    """The recipe's row source; a factory with a ``shuffle`` parameter gets ``data.shuffle`` unless set."""
    spec = cfg.rl.row_source
    factory = ROW_SOURCES.get(spec.name)
    kwargs = dict(spec.kwargs)
    if "shuffle" in inspect.signature(factory).parameters and "shuffle" not in kwargs:
        kwargs["shuffle"] = cfg.data.shuffle
    return factory(rows, cfg.rl.prompts_per_step, cfg.seed, **kwargs)



class Hooks:
    """The hooks of one RL stage, in a fixed order, built from ``cfg.rl``.

    after_score order: augmentations (which may re-roll a group), T-GRPO,
    reward shaping, overlong filtering. So shaping sees the final rollouts and
    the T-GRPO bonus, and advantages see everything.
    """

    def __init__(self, host: HookHost) -> None:
        rl = host.rl
        self.augments: list[Hook] = [AUGMENTS.get(a.name)(host, **a.kwargs) for a in rl.augment]
        self.scored: list[Hook] = list(self.augments)
        if rl.temporal is not None:
            self.scored.append(TemporalContrast(rl.temporal))
        if rl.reward_shaping:
            self.scored.append(RewardShaping(rl.reward_shaping, rl.max_new_tokens))
        if rl.overlong_filter:
            self.scored.append(OverlongFilter())
        self.group_filter = GroupFilter(rl.group_filter) if rl.group_filter is not None else None
        self.max_refills = rl.group_filter.max_refills if rl.group_filter is not None else 0
        self.token_weights = TokenWeighter(rl.token_weights, rl.temperature) if rl.token_weights is not None else None

    def view(self, host: HookHost, index: int) -> PromptView:
        view = PromptView(host.rows[index])
        for h in self.augments:
            view = h.view(host, index, view)
        return view

    def after_score(self, host: HookHost, groups: list[Group]) -> list[Group]:
        for h in self.scored:
            groups = h.after_score(host, groups)
        return groups

    def keep(self, host: HookHost, stats: list[GroupStats], round_idx: int) -> list[bool]:
        """Which groups of a generation batch (all ranks', in step order) train."""
        return [True] * len(stats) if self.group_filter is None else self.group_filter(host, stats, round_idx)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for h in [*self.scored, *([self.group_filter] if self.group_filter else [])]:
            out.update(h.metrics())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"augment": [h.state_dict() for h in self.augments]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("augment", [])
        if len(saved) != len(self.augments):
            raise ValueError(f"checkpoint has state for {len(saved)} augmentations, the recipe has {len(self.augments)}")
        for h, s in zip(self.augments, saved):
            h.load_state_dict(s)


class DataState:
    """The checkpointed data position of an RL stage: the row source's and the hooks' state."""

    def __init__(self, source: RowSource, hooks: Hooks) -> None:
        self.source, self.hooks = source, hooks

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "hooks": self.hooks.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "source" not in state:
            raise ValueError("checkpoint was written by an older trainer (no row-source state); start the stage again")
        self.source.load_state_dict(state["source"])
        self.hooks.load_state_dict(state["hooks"])
