"""The rollout engine: the one interface through which every stage generates completions.

The RL trainer, DPO's pair sampler and evaluation never call a decoding loop
directly; they hand a :class:`RolloutEngine` a list of
:class:`GenerationRequest` (an encoded prompt, how many completions, their
random generators, optionally the prompt's cached video embeddings) and get
one :class:`reelrl.rollout.hf.Rollout` per request back. The engine is chosen
by name in the recipe (``rollout.engine``, registry :data:`ROLLOUT_ENGINES`),
so an engine that generates elsewhere (a vLLM or SGLang server, a colocated
inference engine holding its own copy of the weights) plugs in by registering
a factory, without touching the trainers:

- ``generate(requests, params)``: the completions, in request order. Tokens
  are right-padded with ``params.pad_id``; ``mask`` / ``lengths`` /
  ``truncated`` as in :class:`~reelrl.rollout.hf.Rollout`. An engine that
  cannot use ``request.vision`` (embeddings computed by the trainer) encodes
  the pixels of ``request.prompt`` itself. The per-sequence generators are
  the reproducibility contract of the default engine; an external engine may
  seed from them or ignore them, and says so in its docstring.
- ``sync_weights()``: called by a trainer after every optimizer step, so an
  engine with its own copy of the weights can reload them. Engines that run
  the policy module in place do nothing.

A factory is called as ``factory(vlm, share_prefix=..., **rollout.engine_kwargs)``;
``rollout.engine`` is a registered name or ``"module.path:Factory"`` (imported,
so an engine of one's own needs no change to reelrl).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from reelrl.models.vlm import VLM, EncodedPrompt
from reelrl.registry import Registry
from reelrl.rollout.hf import Rollout, SamplingParams, decode_groups, prefill_group

__all__ = ["ROLLOUT_ENGINES", "GenerationRequest", "KVCacheEngine", "RolloutEngine", "build_engine"]


@dataclass
class GenerationRequest:
    """``n`` completions of one prompt."""

    prompt: EncodedPrompt
    n: int = 1
    generators: list[torch.Generator] | None = None  # one per completion; None draws from the global RNG
    vision: dict | None = None  # the prompt's cached video embeddings (VLM.encode_vision), or None


class RolloutEngine(Protocol):
    """What a stage needs from whatever generates its completions (module docstring)."""

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Rollout]: ...

    def sync_weights(self) -> None: ...


ROLLOUT_ENGINES: Registry[Callable[..., RolloutEngine]] = Registry("rollout engine")


@ROLLOUT_ENGINES.register("kv_cache")
class KVCacheEngine:
    """The default engine: the policy itself, in this process (:mod:`reelrl.rollout.hf`).

    Each prompt is prefilled once (its cached video embeddings reused) and its
    KV cache forked ``n`` ways (``share_prefix``; false prefills ``n`` copies,
    the naive baseline); all requests then decode in one batch, each sequence
    drawing from its own generator, so a group's tokens do not depend on the
    other requests of the batch. Under MR-SP the model's long prompts prefill
    sequence-parallel (:class:`reelrl.dist.sp_model.SequenceParallelVLM`) and
    decode on every rank of the SP group. ``sync_weights`` is a no-op: the
    engine runs the trained module.
    """

    def __init__(self, vlm: VLM, share_prefix: bool = True) -> None:
        self.vlm, self.share_prefix = vlm, share_prefix

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Rollout]:
        if not requests:
            return []
        prefills = [prefill_group(self.vlm, r.prompt, r.n, r.vision, self.share_prefix) for r in requests]
        return decode_groups(self.vlm, prefills, params, [r.generators for r in requests])

    def sync_weights(self) -> None:
        return None


def build_engine(name: str, vlm: VLM, share_prefix: bool = True, **kwargs) -> RolloutEngine:
    """The engine ``name`` (registered, or ``"module.path:Factory"``) for ``vlm``; unknown names list the valid ones."""
    return ROLLOUT_ENGINES.resolve(name)(vlm, share_prefix=share_prefix, **kwargs)
