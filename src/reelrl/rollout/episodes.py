"""Episodes for the stages (``rl.env``): an environment per trajectory, and scoring their continuations.

With ``rl.env`` set, :class:`EpisodeRunner` replaces the rollout engine's
single-turn generation in the RL trainer and in evaluation: each prompt's G trajectories get one environment each
(``ENVS.resolve(name)(row, video, **kwargs)``, ``video`` being the row's frames
as the model saw them, decoded once more per group), and
:func:`reelrl.rollout.multiturn.rollout_episodes` runs them together. A
group's ``rollout`` is then the continuation of the first prompt (model and
environment tokens, the loss mask on the model's only) with its
:class:`~reelrl.rollout.multiturn.Continuation`; every pass that scores it
(old, reference and policy log-probs) goes through :func:`completion_logits`.

Scoring: :func:`reelrl.rewards.turns.score_turns` (every turn scored, a
trajectory's reward the sum over its turns).
"""

from __future__ import annotations

from torch import Tensor

from reelrl.config import ComponentSpec
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.envs import ENVS
from reelrl.models.turns import TurnEncoder
from reelrl.models.vlm import VLM, EncodedPrompt
from reelrl.rollout.engine import GenerationRequest
from reelrl.rollout.hf import Rollout, SamplingParams
from reelrl.rollout.multiturn import Continuation, EpisodeGroup, EpisodeRequest, continuation_logits, rollout_episodes

__all__ = ["EpisodeRunner", "completion_logits"]


class EpisodeRunner:
    """Runs ``rl.env`` episodes for the trainer's generation requests."""

    def __init__(self, spec: ComponentSpec, vlm: VLM, encoder: PromptEncoder, sampling: SamplingParams,
                 share_prefix: bool) -> None:
        self.factory = ENVS.resolve(spec.name)
        self.kwargs = dict(spec.kwargs)
        self.vlm, self.encoder, self.sampling, self.share_prefix = vlm, encoder, sampling, share_prefix
        self.turns = TurnEncoder(encoder.processor, encoder.system)
        self.max_turns = 1  # the most turns of any environment built so far (fixes the per-turn metric keys)

    def generate(self, items: list[tuple[VideoRow, GenerationRequest]],
                 sampling: SamplingParams | None = None) -> list[EpisodeGroup]:
        """One :class:`EpisodeGroup` per ``(row, request)``: ``request.n`` trajectories, one environment each
        (sampled with ``sampling``, default the runner's)."""
        requests = []
        for row, r in items:
            video = self.encoder.frames(row)
            envs = [self.factory(row, video, **self.kwargs) for _ in range(r.n)]
            self.max_turns = max([self.max_turns] + [int(e.max_turns) for e in envs])
            requests.append(EpisodeRequest(r.prompt, envs, r.generators, r.vision))
        return rollout_episodes(self.vlm, self.turns, requests, sampling or self.sampling, self.share_prefix)


def completion_logits(vlm: VLM, prompt: EncodedPrompt, rollout: Rollout, vision, share_prefix: bool,
                      recompute_images: bool = False) -> Tensor:
    """Logits ``[G, T, V]`` predicting a group's tokens: single-turn completions or multi-turn continuations."""
    ctx = rollout.context
    if isinstance(ctx, Continuation):
        return continuation_logits(vlm, prompt, rollout.tokens, ctx, vision, share_prefix, recompute_images)
    return vlm.completion_logits(prompt, rollout.tokens, vision, share_prefix)
