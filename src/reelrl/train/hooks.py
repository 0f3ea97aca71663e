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

The row source (``rl.row_source``) is built by :func:`build_row_source`;
:class:`DataState` bundles its state and the hooks' state for checkpoints.

A hook sees the trainer through a narrow interface (:class:`HookHost`): the
config, the step index, the rows, the row source, the prompt encoder, and two
methods: ``rollout_many([(view, index, key, n), ...])`` (one decode batch;
``rollout`` for a single prompt) and ``score(groups)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from reelrl.algos import GROUP_FILTERS, REWARD_SHAPING, TOKEN_WEIGHTS, overlong_keep, temporal_bonus
from reelrl.config import ComponentSpec, GroupFilterConfig, RecipeConfig, RLConfig, TemporalConfig, TokenWeightsConfig
from reelrl.data.curriculum import ROW_SOURCES, RowSource
from reelrl.data.schema import VideoRow
from reelrl.train.groups import Group, PromptView
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


def build_component(field: str, factory: Callable, *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``; a wrong keyword becomes a ValueError naming the recipe field."""
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"{field}: {e}") from None
    return factory(*args, **kwargs)


def seed_of(*key: int) -> int:
    """A 32-bit seed derived from an integer key (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def build_row_source(cfg: RecipeConfig, rows: Sequence[VideoRow]) -> RowSource:
    """The recipe's row source; a factory with a ``shuffle`` parameter gets ``data.shuffle`` unless set."""
    spec = cfg.rl.row_source
    factory = ROW_SOURCES.get(spec.name)
    kwargs = dict(spec.kwargs)
    if "shuffle" in inspect.signature(factory).parameters and "shuffle" not in kwargs:
        kwargs["shuffle"] = cfg.data.shuffle
    return build_component("rl.row_source.kwargs", factory, rows, cfg.rl.prompts_per_step, cfg.seed, **kwargs)


def _stack(groups: list[Group], get: Callable[[Group], Tensor]) -> Tensor:
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
                f"shuffle({seed})", lambda f, s=seed: shuffle_frames(f, np.random.default_rng(s))
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
        for i, s in enumerate(specs):
            fn = REWARD_SHAPING.get(s.name)
            try:
                inspect.signature(fn).bind(None, lengths=None, truncated=None, accuracy=None, max_len=1, **s.kwargs)
            except TypeError as e:
                raise ValueError(f"rl.reward_shaping[{i}].kwargs: {e}") from None

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
    """Applies ``rl.group_filter`` (reelrl.algos.GROUP_FILTERS) to the groups of one generation batch."""

    def __init__(self, cfg: GroupFilterConfig) -> None:
        self.cfg = cfg
        fn = GROUP_FILTERS.get(cfg.name)
        try:
            inspect.signature(fn).bind(None, None, generator=None, **cfg.kwargs)
        except TypeError as e:
            raise ValueError(f"rl.group_filter.kwargs: {e}") from None
        self.seen, self.kept = 0, 0

    def __call__(self, host: HookHost, groups: list[Group], round_idx: int) -> list[Group]:
        rewards = _stack(groups, lambda g: g.rewards)  # [B, G]
        accuracy = _stack(groups, lambda g: g.columns["accuracy"])  # [B, G]
        gen = torch.Generator().manual_seed(seed_of(host.cfg.seed, host.step_idx, round_idx, TAG_FILTER))
        keep = GROUP_FILTERS.get(self.cfg.name)(rewards, accuracy, generator=gen, **self.cfg.kwargs)  # [B]
        self.seen += len(groups)
        self.kept += int(keep.sum())
        return [g for g, k in zip(groups, keep.tolist()) if k]

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


# ------------------------------------------------------------------ all hooks of a stage


class Hooks:
    """The hooks of one RL stage, in a fixed order, built from ``cfg.rl``.

    after_score order: augmentations (which may re-roll a group), T-GRPO,
    reward shaping, overlong filtering. So shaping sees the final rollouts and
    the T-GRPO bonus, and advantages see everything.
    """

    def __init__(self, host: HookHost) -> None:
        from reelrl.train.augments import AUGMENTS

        rl = host.rl
        self.augments: list[Hook] = [
            build_component(f"rl.augment[{i}].kwargs", AUGMENTS.get(a.name), host, **a.kwargs)
            for i, a in enumerate(rl.augment)
        ]
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

    def keep(self, host: HookHost, groups: list[Group], round_idx: int) -> list[Group]:
        return groups if self.group_filter is None else self.group_filter(host, groups, round_idx)

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
