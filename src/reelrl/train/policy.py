"""The policy's companions in a stage: the frozen reference and the sampling settings of a recipe."""

from __future__ import annotations

import torch
from torch import Tensor

from reelrl.config import RecipeConfig
from reelrl.models.vlm import VLM, EncodedPrompt, token_logprobs
from reelrl.rollout.hf import SamplingParams, StopStrings
from reelrl.rollout.episodes import completion_logits
from reelrl.train.groups import Group

__all__ = ["ReferencePolicy", "sampling_params"]


class ReferencePolicy:
    """Log-probs of the frozen reference: the base model with LoRA disabled, or a frozen copy."""

    def __init__(self, policy: VLM, copy: VLM | None) -> None:
        self.policy, self.copy = policy, copy

    @torch.no_grad()
    def token_logprobs(
        self, prompt: EncodedPrompt, tokens: Tensor, vision, temperature: float, share_prefix: bool, vision_shared: bool
    ) -> Tensor:
        """Reference log-probs of ``tokens`` [N, T] after ``prompt`` -> [N, T]."""
        if self.copy is not None:
            vision = vision if vision_shared else (self.copy.encode_vision(prompt) if vision is not None else None)
            logits = self.copy.completion_logits(prompt, tokens, vision, share_prefix)  # [N, T, V]
        else:
            with self.policy.wrapped.disable_adapter():
                logits = self.policy.completion_logits(prompt, tokens, vision, share_prefix)  # [N, T, V]
        return token_logprobs(logits, tokens, temperature)  # [N, T]

    def logprobs(self, g: Group, temperature: float, share_prefix: bool, vision_shared: bool) -> Tensor:
        if g.rollout.context is not None:  # a multi-turn continuation (its images re-encoded by the copy's tower)
            return self._continuation_logprobs(g, temperature, share_prefix, vision_shared)
        return self.token_logprobs(g.prompt, g.rollout.tokens, g.vision, temperature, share_prefix, vision_shared)

    @torch.no_grad()
    def _continuation_logprobs(self, g: Group, temperature: float, share_prefix: bool, vision_shared: bool) -> Tensor:
        if self.copy is not None:
            vision = g.vision if vision_shared else (self.copy.encode_vision(g.prompt) if g.vision is not None else None)
            logits = completion_logits(self.copy, g.prompt, g.rollout, vision, share_prefix, not vision_shared)
        else:
            with self.policy.wrapped.disable_adapter():
                logits = completion_logits(self.policy, g.prompt, g.rollout, g.vision, share_prefix, not vision_shared)
        return token_logprobs(logits, g.rollout.tokens, temperature)  # [G, T]

    @torch.no_grad()
    def logprobs_many(self, groups: list[Group], temperature: float, share_prefix: bool, vision_shared: bool):
        """Reference log-probs ``[G, T]`` of each group's completions; one pass for all (shared prefixes)."""
        if len(groups) == 1 or not share_prefix or any(g.rollout.context is not None for g in groups):
            return [self.logprobs(g, temperature, share_prefix, vision_shared) for g in groups]
        prompts, tokens = [g.prompt for g in groups], [g.rollout.tokens for g in groups]
        visions = [g.vision for g in groups]
        if self.copy is not None:
            visions = visions if vision_shared else [None] * len(groups)  # the copy's own tower encodes the pixels
            logits = self.copy.completion_logits_many(prompts, tokens, visions)
        else:
            with self.policy.wrapped.disable_adapter():
                logits = self.policy.completion_logits_many(prompts, tokens, visions)
        return [token_logprobs(lg, t, temperature) for lg, t in zip(logits, tokens)]  # [G, T]


def sampling_params(cfg: RecipeConfig, tokenizer, vlm: VLM, max_new_tokens: int | None = None) -> SamplingParams:
    """Rollout sampling settings of a recipe (EOS ids from the tokenizer and generation config)."""
    return SamplingParams(
        max_new_tokens=max_new_tokens or cfg.rl.max_new_tokens,
        temperature=cfg.rl.temperature,
        top_p=cfg.rl.top_p,
        eos_ids=tuple(_eos_ids(tokenizer, vlm)),
        stop_strings=StopStrings(tokenizer, cfg.rl.stop),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        suppress_ids=tuple(_vision_token_ids(vlm)),
    )


def _vision_token_ids(vlm: VLM) -> list[int]:
    """Vision placeholder ids of the model config: a completion must never contain one."""
    cfg = vlm.model.config
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({int(i) for i in (getattr(cfg, n, None) for n in names) if isinstance(i, int)})


def _eos_ids(tokenizer, vlm: VLM) -> list[int]:
    ids = set()
    gen_eos = getattr(getattr(vlm.model, "generation_config", None), "eos_token_id", None)
    for e in [tokenizer.eos_token_id, gen_eos]:
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(e)
    return sorted(ids)
