"""Augmentation hooks (``rl.augment``), registered by name in :data:`AUGMENTS`.

Each entry is a factory ``(host, **kwargs) -> Hook`` (see :mod:`reelrl.train.hooks`):

* ``qa_inversion`` -- TW-GRPO question-answer inversion of choice rows, before encoding.
* ``curriculum_mask`` -- VideoTG-R1: blank part of hard rows' videos away from the
  annotated moment, eased over training by the row source's ``mask_schedule``.
* ``difficulty_aware`` -- DeepVideo-R1: after scoring, easy groups are rolled out
  again on noisy / masked frames and hard groups with a reasoning hint.

Every random choice is seeded by ``[seed, step, row index, tag]``, so a
resumed run makes the same choices. An entry may carry a ``check`` trait,
``check(rl, **kwargs)``, that :func:`reelrl.train.catalog.check_recipe` calls
when the recipe loads, so bad arguments fail before any model is built.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from reelrl.config import RLConfig
from reelrl.data.augment import ReplayDifficulty, difficulty_augmentation, qa_inversion
from reelrl.data.curriculum import irrelevant_spans
from reelrl.registry import Registry
from reelrl.seeding import rng
from reelrl.train.groups import Group, PromptView
from reelrl.train.hooks import Hook, HookHost
from reelrl.video.decode import VideoError, probe
from reelrl.video.transforms import mask_span

AUGMENTS: Registry[Callable[..., Hook]] = Registry("augment")

TAG_INVERT = 201
TAG_DIFFICULTY = 202


def _rates(counts: Counter, total: int, prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}_frac": v / total for k, v in counts.items()} if total else {}


def _check_qa_inversion(rl: RLConfig, *, p: float = 0.5) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"qa_inversion: p must lie in [0, 1], got {p}")


def _check_curriculum_mask(rl: RLConfig, *, fill: int = 0) -> None:
    if rl.row_source.name != "difficulty_curriculum":
        raise ValueError(
            "curriculum_mask needs a row source with mask_schedule "
            f"(rl.row_source.name: difficulty_curriculum), got {rl.row_source.name!r}"
        )
    if not 0 <= fill <= 255:
        raise ValueError(f"curriculum_mask: fill must be a pixel value in [0, 255], got {fill}")


_PLAN_ARGS = [k for k in inspect.signature(difficulty_augmentation).parameters if k not in ("row", "dR", "rng")]


def _check_difficulty_aware(rl: RLConfig, *, window: int = 100, **plan_kwargs: Any) -> None:
    bad = sorted(k for k in plan_kwargs if k not in _PLAN_ARGS)
    if bad:
        allowed = [k for k in _PLAN_ARGS if k != "trace"]
        raise ValueError(f"difficulty_aware: unknown kwargs {bad}; allowed: window, {allowed}")
    if window < 1:
        raise ValueError(f"difficulty_aware: window must be >= 1, got {window}")


@AUGMENTS.register("qa_inversion", check=_check_qa_inversion)
class QAInversion(Hook):
    """TW-GRPO question-answer inversion (:func:`reelrl.data.augment.qa_inversion`) with probability ``p``.

    Paper: "TW-GRPO" (inverted questions turn single-answer choice data into
    multi-answer data for the soft multi-choice reward). Applies to
    ``multiple_choice`` rows; others pass unchanged. ``p`` was not published;
    the default 0.5 is a choice.
    """

    def __init__(self, host: HookHost, *, p: float = 0.5) -> None:
        self.p = p
        self.counts: Counter = Counter()

    def view(self, host: HookHost, index: int, view: PromptView) -> PromptView:
        rand = rng(host.cfg.seed, host.step_idx, index, TAG_INVERT)
        row = qa_inversion(view.row, rand, p=self.p)
        self.counts["total"] += 1
        self.counts["inverted"] += row is not view.row
        return view if row is view.row else replace(view, row=row)

    def metrics(self) -> dict[str, float]:
        out = {"augment/inverted_frac": self.counts["inverted"] / self.counts["total"]} if self.counts["total"] else {}
        self.counts = Counter()
        return out


@AUGMENTS.register("curriculum_mask", check=_check_curriculum_mask)
class CurriculumMask(Hook):
    """VideoTG-R1 masking curriculum: blank ``frac`` of a hard row's video outside its annotated span.

    ``frac = source.mask_schedule(step, row)`` (the row source must be a
    ``difficulty_curriculum``: hard rows start at ``mask_max_frac`` and are
    un-masked linearly until ``unmask_steps``). The masked time is taken
    outside ``row.time_span`` (:func:`reelrl.data.curriculum.irrelevant_spans`),
    so the relevant moment stays visible and the search space shrinks.

    Choices (the schedule was not published): fractions are of the whole
    video (frames are sampled uniformly over it), its duration comes from the
    container (:func:`reelrl.video.decode.probe`, cached per video); rows
    without ``time_span`` are not masked (counted in ``augment/no_span_frac``).
    Boundary reflection (dropping samples that point outside the annotated
    span) is not implemented.
    """

    def __init__(self, host: HookHost, *, fill: int = 0) -> None:
        self.fill = fill
        self._durations: dict[str, float] = {}
        self.counts: Counter = Counter()

    def _duration(self, video: str) -> float | None:
        if video not in self._durations:
            try:
                self._durations[video] = probe(video).duration
            except VideoError:
                return None  # the encoder reports the broken video
        return self._durations[video]

    def view(self, host: HookHost, index: int, view: PromptView) -> PromptView:
        self.counts["total"] += 1
        frac = host.source.mask_schedule(host.step_idx, host.rows[index])
        if frac <= 0:
            return view
        row = view.row
        duration = self._duration(row.video)
        if row.time_span is None or not duration:
            self.counts["no_span"] += 1
            return view
        spans = irrelevant_spans(frac, row.time_span, duration)
        if not spans:
            return view
        self.counts["masked"] += 1
        fill = self.fill

        def blank(frames: np.ndarray) -> np.ndarray:
            for s, e in spans:
                frames = mask_span(frames, s, e, fill)  # [T, H, W, 3]
            return frames

        name = "tgmask(" + ",".join(f"{s:.4f}-{e:.4f}" for s, e in spans) + f",fill={fill})"
        return view.with_transform(name, blank)

    def metrics(self) -> dict[str, float]:
        total = self.counts.pop("total", 0)
        out = _rates(self.counts, total, "augment")
        self.counts = Counter()
        return out


@AUGMENTS.register("difficulty_aware", check=_check_difficulty_aware)
class DifficultyAware(Hook):
    """DeepVideo-R1 difficulty-aware augmentation (Park et al. 2025).

    After scoring, each group's difficulty gap is ``dR = mean(replay buffer) -
    mean_i r_i`` over the last ``window`` (100) groups' mean rewards
    (:class:`reelrl.data.augment.ReplayDifficulty`; the gaps of a batch are
    taken before the batch enters the buffer). A group with ``dR != 0`` gets
    an :class:`~reelrl.data.augment.AugmentPlan`
    (:func:`~reelrl.data.augment.difficulty_augmentation`, keyword arguments
    from the recipe): easy groups (dR < 0) are rolled out again on noisy (or
    masked) frames, hard groups (dR > 0) with a hint; the strength grows with
    ``|dR|``. The augmented group replaces the original one in the batch.

    Deviations: the hint is a prefix of the row's dataset reasoning, not the
    best trace generated with the answer in the prompt; the original rollouts
    only measure difficulty (they are not trained on). An empty buffer gives
    dR = 0, so the first batch is not augmented.
    """

    def __init__(self, host: HookHost, *, window: int = 100, **plan_kwargs: Any) -> None:
        self.buffer = ReplayDifficulty(window)
        self.plan_kwargs = plan_kwargs
        self.counts: Counter = Counter()
        self.gaps: list[float] = []

    def after_score(self, host: HookHost, groups: list[Group]) -> list[Group]:
        means = [float(g.rewards.mean()) for g in groups]
        gaps = [self.buffer.gap(m) for m in means]
        every = sorted(x for part in host.dims.gather([(g.key, m) for g, m in zip(groups, means)]) for x in part)
        self.buffer.observe([m for _, m in every])  # the whole step's groups, in step order, on every rank
        requests, slots = [], []  # augmented views, rolled out in one decode batch
        for i, (g, gap) in enumerate(zip(groups, gaps)):
            rand = rng(host.cfg.seed, host.step_idx, g.index, TAG_DIFFICULTY, *g.key)
            plan = difficulty_augmentation(g.view.row, gap, rand, **self.plan_kwargs)
            self.counts[plan.kind] += 1
            self.gaps.append(abs(gap))
            if plan.kind == "none":
                continue
            view = g.view
            if plan.frame_transform is not None:
                view = view.with_transform(plan.variant, plan.frame_transform)
            if plan.hint is not None:
                view = view.with_hint(plan.hint)
            requests.append((view, g.index, (*g.key, TAG_DIFFICULTY), None))
            slots.append(i)
        out = list(groups)
        new = [(i, g) for i, g in zip(slots, host.rollout_many(requests)) if g is not None]
        if new:
            host.score([g for _, g in new])
        for i, g in new:  # an unreadable augmented video keeps the original group
            out[i] = g
        return out

    def metrics(self) -> dict[str, float]:
        total = sum(self.counts.values())
        out = _rates(self.counts, total, "augment")
        if self.gaps:
            out["augment/abs_gap"] = float(np.mean(self.gaps))
        self.counts, self.gaps = Counter(), []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
