"""Method hooks of the RL trainer: every paper-specific step lives here, not in the loop.

The trainer (:class:`reelrl.train.rl.RLTrainer`) calls a :class:`Hooks` object
at four fixed points of a step, and each hook is built from a recipe field:

=================  ===============================================  ==============================
hook point         what runs there                                  recipe field
=================  ===============================================  ==============================
``view``           row / frame / prompt augmentation before          ``rl.augment``
                   encoding (QA inversion, curriculum masking)
``after_score``    after rewards, before advantages: augmented       ``rl.augment``,
                   re-rollouts (DeepVideo-R1), T-GRPO shuffled       ``rl.temporal``,
                   rollouts + temporal bonus, reward shaping,        ``rl.reward_shaping``,
                   overlong filtering                                ``rl.overlong_filter``
``keep``           group filter (DAPO dynamic sampling, VerIPO)      ``rl.group_filter``
``token_weights``  per-token loss weights (TW-GRPO)                  ``rl.token_weights``
=================  ===============================================  ==============================

The hooks of one stage are built from the recipe by
:class:`reelrl.train.method.Hooks`, next to the row source (``rl.row_source``).

A hook sees the trainer through a narrow interface (:class:`HookHost`): the
config, the step index, the rows, the row source, the prompt encoder, and two
methods: ``rollout_many([(view, index, key, n), ...])`` (one decode batch;
``rollout`` for a single prompt) and ``score(groups)``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from reelrl.algos import (
    GROUP_FILTERS,
    REWARD_SHAPING,
    TOKEN_WEIGHTS,
    overlong_keep,
    temporal_bonus,
)
from reelrl.config import (
    ComponentSpec,
    GroupFilterConfig,
    RecipeConfig,
    RLConfig,
    TemporalConfig,
    TokenWeightsConfig,
)
from reelrl.data.curriculum import RowSource
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.seeding import rng, seed_of
from reelrl.train.groups import Group, GroupStats, PromptView
from reelrl.video.transforms import shuffle_frames

# Tags that separate the random streams of the hooks (seed keys [seed, step, row, TAG]).
TAG_SHUFFLE = 101
TAG_FILTER = 102


RolloutRequest = tuple[PromptView, int, tuple[int, ...], "int | None"]
"""``(view, row index, seed key, n)``: one prompt to roll out ``n`` times (None: G)."""


class HookHost(Protocol):
    """What a hook may use of the trainer."""

    cfg: RecipeConfig
    rl: RLConfig
    step_idx: int
    rows: list[VideoRow]
    source: RowSource
    encoder: Any
    dims: ParallelDims  # gather per-group values over the data-parallel ranks with dims.gather

    def rollout(self, view: PromptView, index: int, key: tuple[int, ...], n: int | None = None) -> Group | None: ...

    def rollout_many(self, requests: list[RolloutRequest]) -> list[Group | None]: ...

    def score(self, groups: list[Group]) -> None: ...


class Hook:
    """Base class: every hook point is a no-op; subclasses override what they need."""

    def view(self, host: HookHost, index: int, view: PromptView) -> PromptView:
        """Change what is encoded for row ``index`` (default: nothing)."""
        return view

    def after_score(self, host: HookHost, groups: list[Group]) -> list[Group]:
        """Edit rewards / replace groups after scoring, before advantages (default: nothing)."""
        return groups

    def metrics(self) -> dict[str, float]:
        """Metrics since the last call (then reset)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def _stack(groups: Sequence[Any], get: Callable[[Any], Tensor]) -> Tensor:
    return torch.stack([get(g).detach().float().cpu() for g in groups])  # [B, G]


# ------------------------------------------------------------------ T-GRPO


class TemporalContrast(Hook):
    """T-GRPO (Feng et al. 2025, "Video-R1"): rewards for using the frame order.

    For each group, ``S`` (``rl.temporal.shuffled``, default G // 2) more
    completions are sampled on the same video with its frames permuted
    (:func:`reelrl.video.transforms.shuffle_frames`, never the identity),
    encoded through the same prompt path as the ordered frames, so the
    temporal RoPE input stays. They are scored with the recipe's rewards and
    :func:`reelrl.algos.temporal_bonus` adds the bonus to the ordered
    completions' rewards (column ``temporal_bonus``). The shuffled completions
    are not trained on (as in Video-R1). Deviation: the permutation is drawn
    per (step, row) from the run seed; Video-R1 draws it from the global RNG.
    """

    def __init__(self, cfg: TemporalConfig) -> None:
        self.cfg = cfg
        self._acc: dict[str, list[float]] = {"ordered": [], "shuffled": [], "gate": []}

    def after_score(self, host: HookHost, groups: list[Group]) -> list[Group]:
        n = self.cfg.shuffled or host.rl.group_size // 2
        requests = []
        for g in groups:
            seed = seed_of(host.cfg.seed, host.step_idx, g.index, TAG_SHUFFLE, *g.key)
            view = g.view.with_transform(
                f"shuffle({seed})", lambda f, s=seed: shuffle_frames(f, rng(s))
            )
            requests.append((view, g.index, (*g.key, TAG_SHUFFLE), n))
        for g, shuffled in zip(groups, host.rollout_many(requests)):  # every shuffled copy in one decode batch
            acc_o = g.columns["accuracy"].float()[None]  # [1, G]
            if shuffled is None:  # unreadable video: no contrast, no bonus
                bonus = torch.zeros_like(acc_o[0])  # [G]
            else:
                host.score([shuffled])
                acc_s = shuffled.columns["accuracy"].float()[None]  # [1, S]
                bonus = temporal_bonus(
                    acc_o, acc_s, ratio=self.cfg.ratio, bonus=self.cfg.bonus, threshold=self.cfg.threshold
                )[0]  # [G]
                self._acc["shuffled"].append(float(acc_s.mean()))
                self._acc["gate"].append(float(acc_o.mean() >= self.cfg.ratio * acc_s.mean()))
            self._acc["ordered"].append(float(acc_o.mean()))
            g.rewards = g.rewards + bonus.to(g.rewards)  # [G]
            g.columns["temporal_bonus"] = bonus
        return groups

    def metrics(self) -> dict[str, float]:
        names = {"ordered": "temporal/ordered_acc", "shuffled": "temporal/shuffled_acc", "gate": "temporal/gate_rate"}
        out = {names[k]: float(np.mean(v)) for k, v in self._acc.items() if v}
        self._acc = {k: [] for k in self._acc}
        return out


# ------------------------------------------------------------------ reward shaping / overlong filtering


class RewardShaping(Hook):
    """Adds each ``rl.reward_shaping`` term (reelrl.algos.REWARD_SHAPING) to the rewards; logs it as a column."""

    def __init__(self, specs: list[ComponentSpec], max_len: int) -> None:
        self.specs, self.max_len = specs, max_len

    def after_score(self, host: HookHost, groups: list[Group]) -> list[Group]:
        rewards = _stack(groups, lambda g: g.rewards)  # [B, G]
        lengths = _stack(groups, lambda g: g.rollout.lengths).long()  # [B, G]
        truncated = _stack(groups, lambda g: g.rollout.truncated).bool()  # [B, G]
        accuracy = _stack(groups, lambda g: g.columns["accuracy"])  # [B, G]
        for s in self.specs:
            delta = REWARD_SHAPING.get(s.name)(
                rewards, lengths=lengths, truncated=truncated, accuracy=accuracy, max_len=self.max_len, **s.kwargs
            )  # [B, G]
            rewards = rewards + delta  # [B, G]
            for g, d in zip(groups, delta):
                g.columns[s.name] = d
        for g, r in zip(groups, rewards):
            g.rewards = r.to(g.rewards)  # [G]
        return groups


class OverlongFilter(Hook):
    """DAPO overlong filtering: truncated completions get no loss (``Group.seq_keep``)."""

    def after_score(self, host: HookHost, groups: list[Group]) -> list[Group]:
        for g in groups:
            g.seq_keep = overlong_keep(g.rollout.truncated)  # [G]
        return groups


# ------------------------------------------------------------------ group filter / token weights


class GroupFilter:
    """Applies ``rl.group_filter`` (reelrl.algos.GROUP_FILTERS) to the groups of one generation batch.

    It sees every group of the batch (the statistics gathered from every
    data-parallel rank, in step order), so its decisions and random draws are
    those of a one-process run; each rank then keeps its own kept groups.
    """

    def __init__(self, cfg: GroupFilterConfig) -> None:
        self.cfg = cfg
        self.seen, self.kept = 0, 0

    def __call__(self, host: HookHost, stats: Sequence[GroupStats], round_idx: int) -> list[bool]:
        """Keep flags, one per group of ``stats``."""
        rewards = _stack(stats, lambda g: g.rewards)  # [B, G]
        accuracy = _stack(stats, lambda g: g.columns["accuracy"])  # [B, G]
        gen = torch.Generator().manual_seed(seed_of(host.cfg.seed, host.step_idx, round_idx, TAG_FILTER))
        keep = GROUP_FILTERS.get(self.cfg.name)(rewards, accuracy, generator=gen, **self.cfg.kwargs)  # [B]
        self.seen += len(stats)
        self.kept += int(keep.sum())
        return [bool(k) for k in keep.tolist()]

    def metrics(self) -> dict[str, float]:
        out = {"filter/kept_frac": self.kept / self.seen} if self.seen else {}
        self.seen, self.kept = 0, 0
        return out


class TokenWeighter:
    """``rl.token_weights``: weights [G, T] from the behaviour logits [G, T, V], computed without gradient."""

    def __init__(self, cfg: TokenWeightsConfig, temperature: float) -> None:
        self.cfg, self.temperature = cfg, temperature if temperature > 0 else 1.0

    @torch.no_grad()
    def __call__(self, logits: Tensor, mask: Tensor, group_size: int) -> Tensor:
        fn = TOKEN_WEIGHTS.get(self.cfg.name)
        w = fn(logits.detach(), mask, self.cfg.alpha, group_size=group_size, temperature=self.temperature,
               chunk_size=self.cfg.chunk_size)  # [G, T]
        return w.detach()
