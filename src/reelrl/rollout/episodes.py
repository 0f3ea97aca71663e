"""Multi-turn RL in the GRPO trainer (``rl.env``): an environment per trajectory, per-turn scoring.

With ``rl.env`` set, :class:`EpisodeRunner` replaces the rollout engine's
single-turn generation: each prompt's G trajectories get one environment each
(``ENVS.resolve(name)(row, video, **kwargs)``, ``video`` being the row's frames
as the model saw them, decoded once more per group), and
:func:`reelrl.rollout.multiturn.rollout_episodes` runs them together. A
group's ``rollout`` is then the continuation of the first prompt (model and
environment tokens, the loss mask on the model's only) with its
:class:`~reelrl.rollout.multiturn.Continuation`; every pass that scores it
(old, reference and policy log-probs) goes through :func:`completion_logits`.

Scoring (:func:`score_episodes`): ``rl.rewards`` score every turn's text over
the row's columns overlaid with the turn's columns from the environment; a
trajectory's reward is the sum over its turns. Per-reward columns are the
mean over the turns a trajectory took, and ``turn<k>/<reward>`` holds turn k's
value (NaN where a trajectory ended earlier), so the logs show each turn.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from reelrl.config import ComponentSpec
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.envs import ENVS
from reelrl.models.turns import TurnEncoder
from reelrl.models.vlm import VLM, EncodedPrompt
from reelrl.rewards import RewardSpec, compute_rewards
from reelrl.rollout.engine import GenerationRequest
from reelrl.rollout.hf import Rollout, SamplingParams
from reelrl.rollout.multiturn import Continuation, EpisodeGroup, EpisodeRequest, continuation_logits, rollout_episodes

__all__ = ["EpisodeRunner", "completion_logits", "score_episodes"]


class EpisodeRunner:
    """Runs ``rl.env`` episodes for the trainer's generation requests."""

    def __init__(self, spec: ComponentSpec, vlm: VLM, encoder: PromptEncoder, sampling: SamplingParams,
                 share_prefix: bool) -> None:
        self.factory = ENVS.resolve(spec.name)
        self.kwargs = dict(spec.kwargs)
        self.vlm, self.encoder, self.sampling, self.share_prefix = vlm, encoder, sampling, share_prefix
        self.turns = TurnEncoder(encoder.processor, encoder.system)

    def generate(self, items: list[tuple[VideoRow, GenerationRequest]]) -> list[EpisodeGroup]:
        """One :class:`EpisodeGroup` per ``(row, request)``: ``request.n`` trajectories, one environment each."""
        requests = []
        for row, r in items:
            video = self.encoder.frames(row)
            envs = [self.factory(row, video, **self.kwargs) for _ in range(r.n)]
            requests.append(EpisodeRequest(r.prompt, envs, r.generators, r.vision))
        return rollout_episodes(self.vlm, self.turns, requests, self.sampling, self.share_prefix)


def completion_logits(vlm: VLM, prompt: EncodedPrompt, rollout: Rollout, vision, share_prefix: bool,
                      recompute_images: bool = False) -> Tensor:
    """Logits ``[G, T, V]`` predicting a group's tokens: single-turn completions or multi-turn continuations."""
    ctx = rollout.context
    if isinstance(ctx, Continuation):
        return continuation_logits(vlm, prompt, rollout.tokens, ctx, vision, share_prefix, recompute_images)
    return vlm.completion_logits(prompt, rollout.tokens, vision, share_prefix)


def score_episodes(specs: list[RewardSpec], metric_specs: list[RewardSpec], rows: list[VideoRow],
                   episodes: list[EpisodeGroup]) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """Rewards ``[G]`` and per-reward columns ``{name: [G]}`` of each group (module docstring)."""
    texts: list[str] = []
    cols: list[dict[str, Any]] = []
    owner: list[tuple[int, int, int]] = []  # (group, trajectory, turn) of every scored turn
    for gi, (row, ep) in enumerate(zip(rows, episodes)):
        base = row.model_dump()
        for i, (tt, tc) in enumerate(zip(ep.turn_texts, ep.turn_columns)):
            for k, (text, c) in enumerate(zip(tt, tc)):
                texts.append(text)
                cols.append({**base, **c})
                owner.append((gi, i, k))
    keys = sorted({k for c in cols for k in c})
    columns = {k: [c.get(k) for c in cols] for k in keys}
    total, per = compute_rewards(specs, texts, columns)  # [M], {name: [M]}
    _, extra = compute_rewards(metric_specs, texts, columns)
    per = {**extra, **per}
    max_turns = max((k + 1 for _, _, k in owner), default=1)
    out = []
    for gi, ep in enumerate(episodes):
        g = len(ep.turn_texts)
        rewards = torch.zeros(g)  # [G]
        sums = {n: torch.zeros(g) for n in per}  # [G] each
        turns = {f"turn{k + 1}/{n}": torch.full((g,), math.nan) for k in range(max_turns) for n in per}
        counts = torch.zeros(g)  # [G]
        for m, (og, i, k) in enumerate(owner):
            if og != gi:
                continue
            rewards[i] += total[m]
            counts[i] += 1
            for n, v in per.items():
                sums[n][i] += torch.nan_to_num(v[m], nan=0.0)
                turns[f"turn{k + 1}/{n}"][i] = v[m]
        means = {n: s / counts.clamp_min(1) for n, s in sums.items()}  # [G] each
        out.append((rewards, {**means, **turns}))
    return out
