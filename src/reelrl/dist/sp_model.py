"""MR-SP for the three per-prompt forward passes of RL post-training: vision, completion scoring, prefill.

LongVILA-R1 (Chen et al., 2025, "Scaling RL to Long Videos") introduces
Multi-modal Reinforcement Sequence Parallelism (MR-SP): stage 1 encodes a long
video with its frames split over the sequence-parallel (SP) ranks and
all-gathers the embeddings (reused by every pass of the step); stage 2 runs the
language model over the prompt + completion sequence split into contiguous
shards, with Ulysses attention (Jacobs et al., 2023, "DeepSpeed Ulysses": an
all-to-all trades the sequence shard for a head shard inside attention). This
module wires both stages into a :class:`reelrl.models.vlm.VLM`:

- :func:`sp_encode_vision`: stage 1 (:func:`reelrl.dist.sharded_vision.encode_video_sharded`),
  returned in the structure of :meth:`VLM.encode_vision` (``{"video": BaseModelOutputWithPooling}``
  with ``pooler_output`` a tuple of one ``[tokens, D]`` tensor per video; ``"image"`` too for a
  prompt with extra images, encoded whole on every rank).
- :func:`sp_completion_logits` / :func:`sp_completion_logprobs`: stage 2 for the
  old / reference / update log-prob passes; equal to
  ``VLM.completion_logits(prompt, completions, vision, share_prefix=False)``
  (and :func:`reelrl.models.vlm.token_logprobs` of it).
- :func:`sp_prefill`: stage 2 for the rollout prefill; the per-layer key/value
  shards (post-RoPE, as the cache stores them) are all-gathered into an ordinary
  full ``DynamicCache`` so that :meth:`VLM.decode_step` and
  :func:`reelrl.rollout.hf.decode_groups` decode on one process, unchanged.

Input embeddings are built per shard with the model's own pieces, in the same
way as ``Qwen2_5_VLModel.forward``: ``get_input_embeddings()(ids)``, then
``get_placeholder_mask`` + ``masked_scatter`` with the vision features of the
placeholders that fall in the shard. The 3D RoPE positions are
``VLM.positions(prompt)`` followed by ``VLM.continuation_positions``.

Memory per rank (sequence length S, SP degree P, G completions of length T):
the decoder activations, the embeddings and (in :func:`sp_completion_logprobs`)
the vocabulary-size logits are ``S/P`` long per rank. Replicated on every rank:
the token ids and positions (integers, ``[G, S]`` / ``[3, G, S]``), the video
embeddings ``[n_video_tokens, D]`` (MR-SP stage 1 gathers them by design), and
the outputs: ``[G, T]`` log-probs, or ``[G, T, V]`` logits for
:func:`sp_completion_logits` (it gathers the ``[G, T, D]`` final hidden states
of the completion positions, not logits, and applies ``lm_head`` on every rank;
prefer :func:`sp_completion_logprobs` with ``with_entropy=True`` when the
caller only needs log-probs and entropies), and the full KV cache of
:func:`sp_prefill` (decoding then runs unsharded).

Gradients follow :mod:`reelrl.dist.env`: every gather's backward sums over the
group, so when every rank computes the same loss on the (identical) outputs,
replicated weights need their gradients *averaged* over the SP group (the DDP /
FSDP default) to give the one-process gradient.

Deviations from LongVILA-R1's MR-SP and from one-process transformers:

- padding: the sequence is right-padded to a multiple of P (pad token: the
  lowest id that is no vision placeholder, position 0); causal attention keeps
  the pads invisible to real tokens and their outputs are dropped (never enter
  the cache or the returned logits);
- Ulysses only (no ring attention); the query head count must be divisible by
  P, kv heads are split when divisible, else repeated (see :mod:`reelrl.dist.ulysses`);
- no sliding-window layers, no ``output_attentions``, batch of one prompt
  (its G completions are the rows);
- gradient checkpointing must be non-reentrant (transformers' default): the
  replayed layers re-enter Ulysses in the backward (:func:`reelrl.dist.ulysses.sequence_parallel`);
  :func:`sp_prefill` refuses to run where checkpointing would drop the cache;
- :func:`sp_encode_vision` returns ``last_hidden_state=None`` (the unmerged
  patch-level tower output is never gathered; ``VLM.merge_vision`` and the
  model's forward read only ``pooler_output``);
- load balance: the completion tokens sit at the end of the sequence, so the
  last rank(s) compute all the vocabulary-size logits (no zigzag layout);
- Qwen3-VL's deepstack features (vision features added inside the first
  decoder layers) are not supported: ``NotImplementedError``.

Memory per rank is what ``logging.memory`` reports for every step
(:mod:`reelrl.monitor.memory`; ``benchmarks/scaling.py`` measures it for long videos).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from reelrl.dist import env
from reelrl.dist.sharded_vision import encode_video_sharded
from reelrl.dist.ulysses import pad_to_multiple, sequence_parallel
from reelrl.models.vlm import VLM, EncodedPrompt, token_entropy, token_logprobs

_KINDS = (("image", 0), ("video", 1))  # mm_encoder_outputs key, index in get_placeholder_mask's result


# --------------------------------------------------------------------------- checks and helpers
def _check_supported(vlm: VLM, vision: dict | None = None) -> None:
    """Raise for models / vision outputs this module does not handle (Qwen3-VL deepstack)."""
    if vlm.has_deepstack():
        raise NotImplementedError(
            "reelrl.dist.sp_model: Qwen3-VL deepstack features (vision features injected into the first "
            "decoder layers) are not supported by the sequence-parallel passes"
        )
    for out in (vision or {}).values():
        if out is not None and getattr(out, "deepstack_features", None) is not None:
            raise NotImplementedError("reelrl.dist.sp_model: vision outputs with deepstack_features are not supported")


def _language_model(vlm: VLM) -> nn.Module:
    lm = getattr(vlm.core, "language_model", None)
    if lm is None:
        raise ValueError("reelrl.dist.sp_model: the model has no language_model (Qwen2-VL / Qwen2.5-VL expected)")
    return lm


def _placeholder_ids(vlm: VLM) -> dict[str, int | None]:
    cfg = vlm.core.config
    return {"image": getattr(cfg, "image_token_id", None), "video": getattr(cfg, "video_token_id", None)}


def _pad_token(vlm: VLM) -> int:
    """The lowest token id that is no vision placeholder (fills the tail padding)."""
    taken = {i for i in _placeholder_ids(vlm).values() if i is not None}
    return next(i for i in range(len(taken) + 1) if i not in taken)


def _overlap(start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """``[start, end) ∩ [lo, hi)`` as a (possibly empty) interval inside ``[start, end)``."""
    a = min(max(start, lo), end)
    return a, max(a, min(end, hi))


@dataclass(frozen=True)
class _Layout:
    """Where this rank's shard sits in the padded sequence."""

    length: int  # S, real tokens
    padded: int  # S_pad, a multiple of the world size
    shard: int  # S_pad / P
    world: int
    rank: int

    @property
    def start(self) -> int:
        return self.rank * self.shard

    @property
    def end(self) -> int:
        return self.start + self.shard

    def sizes(self, lo: int, hi: int) -> list[int]:
        """How many positions of ``[lo, hi)`` each rank holds."""
        out = []
        for r in range(self.world):
            a, b = _overlap(r * self.shard, (r + 1) * self.shard, lo, hi)
            out.append(b - a)
        return out


def _layout(length: int, group: env.Group) -> _Layout:
    world = env.world_size(group)
    padded = length + (-length) % world
    return _Layout(length=length, padded=padded, shard=padded // world, world=world, rank=env.rank(group))


def _local_embeds(vlm: VLM, ids: Tensor, vision: dict | None, lay: _Layout) -> Tensor:
    """Input embeddings of this rank's shard ``[B, S_pad/P, D]``, vision features scattered in.

    ``ids [B, S_pad]``: every row holds the same prompt (and no placeholder after
    it), so a shard's placeholders are the same run of vision features in every
    row; the scatter (``get_placeholder_mask`` + ``masked_scatter``, as in
    ``Qwen2_5_VLModel.forward``) fills them row after row.
    """
    core = vlm.core
    local_ids = ids[:, lay.start : lay.end]  # [B, L]
    embeds = core.get_input_embeddings()(local_ids)  # [B, L, D]
    batch, dim = local_ids.shape[0], embeds.shape[-1]
    token_ids = _placeholder_ids(vlm)
    for kind, index in _KINDS:
        out = (vision or {}).get(kind)
        if out is None:
            continue
        feats = torch.cat(tuple(out.pooler_output), dim=0)  # [N, D] one copy of the prompt's features
        row = ids[0] == token_ids[kind]  # [S_pad]
        if int(row.sum()) != feats.shape[0]:
            raise ValueError(
                f"reelrl.dist.sp_model: the prompt has {int(row.sum())} {kind} placeholders, "
                f"the {kind} features have {feats.shape[0]} rows"
            )
        if batch > 1 and not bool((ids == token_ids[kind]).eq(row).all()):
            raise ValueError(f"reelrl.dist.sp_model: rows differ in their {kind} placeholders (a completion holds one?)")
        before = int(row[: lay.start].sum())
        inside = int(row[lay.start : lay.end].sum())
        local = feats[before : before + inside]  # [n, D]
        local = local.unsqueeze(0).expand(batch, -1, -1).reshape(-1, dim).to(embeds.device, embeds.dtype)  # [B*n, D]
        masks = core.get_placeholder_mask(local_ids, inputs_embeds=embeds, **{f"{kind}_features": local})
        embeds = embeds.masked_scatter(masks[index], local)  # [B, L, D]
    return embeds


def _sp_hidden(
    vlm: VLM,
    ids: Tensor,
    positions: Tensor,
    vision: dict | None,
    group: env.Group,
    cache: DynamicCache | None = None,
) -> tuple[Tensor, _Layout]:
    """Final hidden states of this rank's shard ``[B, S_pad/P, D]`` of ``ids [B, S]`` at ``positions [3, B, S]``."""
    _check_supported(vlm, vision)
    lay = _layout(ids.shape[1], group)
    ids = pad_to_multiple(ids, dim=1, multiple=lay.world, value=_pad_token(vlm))  # [B, S_pad]
    positions = pad_to_multiple(positions, dim=2, multiple=lay.world)  # [3, B, S_pad]
    embeds = _local_embeds(vlm, ids, vision, lay)  # [B, S_pad/P, D]
    lm = _language_model(vlm)
    with sequence_parallel(lm, group):
        hidden = lm(
            inputs_embeds=embeds,
            position_ids=positions[:, :, lay.start : lay.end],  # [3, B, S_pad/P]
            cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state  # [B, S_pad/P, D]
    return hidden, lay


def _vision(vlm: VLM, prompt: EncodedPrompt, vision: dict | None, group: env.Group) -> dict:
    return vision if vision is not None else sp_encode_vision(vlm, prompt, group)


# --------------------------------------------------------------------------- stage 1: vision
def sp_encode_vision(vlm: VLM, prompt: EncodedPrompt, group: env.Group = None) -> dict[str, BaseModelOutputWithPooling]:
    """The prompt's video encoded with its temporal groups sharded over ``group`` (MR-SP stage 1).

    Returns, on every rank, ``{"video": BaseModelOutputWithPooling(pooler_output=(emb_0, ...))}``
    with one ``[tokens_i, D]`` tensor per video, as :meth:`VLM.encode_vision` (and
    ``get_video_features(..., return_dict=True)``) does, so it can be passed as
    ``vision`` / ``mm_encoder_outputs`` anywhere. ``last_hidden_state`` is None.
    A prompt's extra images (``VideoRow.images``: a PRIMO-style initial- and
    current-state frame) are few and small next to a long video: every rank
    encodes them whole (``"image"``, :meth:`VLM.encode_images`), unsharded.
    Differentiable (gradient convention of :mod:`reelrl.dist.env`: each rank's
    image gradient comes from the image tokens of its own sequence shard, so the
    SP-averaged gradient is the one-process one, as for the text embeddings).
    """
    _check_supported(vlm)
    visual = vlm.vision_tower()
    vi = prompt.vision_inputs
    out: dict[str, BaseModelOutputWithPooling] = {}
    if "pixel_values_videos" in vi:
        grid = vi["video_grid_thw"]  # [n_videos, 3]
        emb = encode_video_sharded(visual, vi["pixel_values_videos"], grid, group)  # [n_tokens, D]
        merge = int(visual.spatial_merge_size)
        split = (grid.prod(-1) // merge**2).tolist()
        out["video"] = BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=torch.split(emb, split))
    if "pixel_values" in vi:
        out["image"] = vlm.encode_images(vi["pixel_values"], vi["image_grid_thw"])  # replicated on every rank
    return out


# --------------------------------------------------------------------------- stage 2: completion scoring
def _completion_hidden(
    vlm: VLM, prompt: EncodedPrompt, completions: Tensor, vision: dict | None, group: env.Group
) -> tuple[Tensor, _Layout, int, int]:
    """This rank's final hidden states at the positions predicting completion tokens, ``[G, n_r, D]``.

    Also returns the layout and the rank's slice ``[c0, c1)`` of completion token indices.
    """
    g, t = completions.shape
    p = prompt.length
    pos, _ = vlm.positions(prompt)  # [3, 1, P]
    ids = torch.cat([prompt.input_ids.expand(g, -1), completions], dim=1)  # [G, P+T]
    positions = torch.cat(
        [pos.expand(3, g, -1), vlm.continuation_positions(prompt, p, t, g)], dim=2
    )  # [3, G, P+T]
    hidden, lay = _sp_hidden(vlm, ids, positions, _vision(vlm, prompt, vision, group), group)  # [G, S_pad/P, D]
    a, b = _overlap(lay.start, lay.end, p - 1, p + t - 1)  # query positions P-1 .. P+T-2 predict tokens 0 .. T-1
    return hidden[:, a - lay.start : b - lay.start], lay, a - (p - 1), b - (p - 1)  # [G, n_r, D]


def sp_completion_logits(
    vlm: VLM, prompt: EncodedPrompt, completions: Tensor, vision: dict | None = None, group: env.Group = None
) -> Tensor:
    """Logits predicting each completion token, ``completions [G, T] -> [G, T, V]``, the same on every rank.

    The G rows of prompt + completion run sequence-parallel (Ulysses over
    ``group``); only the ``[G, T, D]`` final hidden states of the completion
    positions are all-gathered and ``lm_head`` runs on every rank (vocab-size
    tensors are never communicated). ``vision``: the prompt's embeddings (from
    :func:`sp_encode_vision` or :meth:`VLM.encode_vision`); None encodes the video
    here with :func:`sp_encode_vision`. Equal to
    ``vlm.completion_logits(prompt, completions, vision, share_prefix=False)`` up
    to float rounding. Differentiable; average replicated gradients over the group.
    """
    p = prompt.length
    t = completions.shape[1]
    mine, lay, _, _ = _completion_hidden(vlm, prompt, completions, vision, group)  # [G, n_r, D]
    full = env.all_gather_autograd(mine, sizes=lay.sizes(p - 1, p + t - 1), dim=1, group=group)  # [G, T, D]
    return vlm.model.get_output_embeddings()(full)  # [G, T, V]


def sp_completion_logprobs(
    vlm: VLM,
    prompt: EncodedPrompt,
    completions: Tensor,
    vision: dict | None = None,
    group: env.Group = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probs of the completion tokens ``[G, T]`` (float32), the same on every rank.

    ``token_logprobs(sp_completion_logits(...), completions, temperature)``
    without any ``[G, T, V]`` tensor on one rank: each rank computes the logits
    of its own completion positions only (``[G, ~T/P, V]``) and just the
    ``[G, T]`` log-probs are all-gathered. ``with_entropy`` also returns the
    next-token entropies ``[G, T]`` of the untempered logits (no gradient, as
    :func:`reelrl.models.vlm.token_entropy`). Differentiable; average replicated
    gradients over the group.
    """
    p = prompt.length
    t = completions.shape[1]
    mine, lay, c0, c1 = _completion_hidden(vlm, prompt, completions, vision, group)  # [G, n_r, D]
    logits = vlm.model.get_output_embeddings()(mine)  # [G, n_r, V]
    sizes = lay.sizes(p - 1, p + t - 1)
    logp = token_logprobs(logits, completions[:, c0:c1], temperature)  # [G, n_r]
    logp = env.all_gather_autograd(logp, sizes=sizes, dim=1, group=group)  # [G, T]
    if not with_entropy:
        return logp
    with torch.no_grad():
        ent = env.all_gather_autograd(token_entropy(logits), sizes=sizes, dim=1, group=group)  # [G, T]
    return logp, ent


# --------------------------------------------------------------------------- stage 2: prefill
def sp_prefill(
    vlm: VLM, prompt: EncodedPrompt, vision: dict | None = None, group: env.Group = None
) -> tuple[Tensor, DynamicCache]:
    """The prompt run sequence-parallel: last-position logits ``[1, V]`` and a full KV cache, on every rank.

    Each layer's key/value shards ``[1, K, S_pad/P, d]`` (post-RoPE, as written
    by the attention layers into a local cache) are all-gathered along the
    sequence, the tail padding is cut, and the result is an ordinary
    ``DynamicCache`` of batch 1 and ``P`` positions -- what :meth:`VLM.prefill`
    returns -- so decoding continues on one process with :meth:`VLM.decode_step`
    or :func:`reelrl.rollout.hf.decode_groups` unchanged. The last real
    position's final hidden state ``[1, 1, D]`` is gathered from the rank that
    holds it and ``lm_head`` runs on every rank. Differentiable (convention of
    :mod:`reelrl.dist.env`).
    """
    p = prompt.length
    pos, _ = vlm.positions(prompt)  # [3, 1, P]
    config = vlm.model.config
    local = DynamicCache(config=config)
    hidden, lay = _sp_hidden(vlm, prompt.input_ids, pos, _vision(vlm, prompt, vision, group), group, cache=local)
    if local.get_seq_length() != lay.shard:
        raise RuntimeError(
            "reelrl.dist.sp_model.sp_prefill: the layers wrote no KV cache (gradient checkpointing drops it in "
            "training mode with gradients enabled); prefill under torch.no_grad() or in eval mode"
        )
    a, b = _overlap(lay.start, lay.end, p - 1, p)
    last = hidden[:, a - lay.start : b - lay.start]  # [1, 0 or 1, D]
    last = env.all_gather_autograd(last, sizes=lay.sizes(p - 1, p), dim=1, group=group)  # [1, 1, D]
    logits = vlm.model.get_output_embeddings()(last)[:, -1, :]  # [1, V]
    cache = DynamicCache(config=config)
    for li, layer in enumerate(local.layers):
        keys = env.all_gather_autograd(layer.keys, sizes=None, dim=2, group=group)  # [1, K, S_pad, d]
        values = env.all_gather_autograd(layer.values, sizes=None, dim=2, group=group)  # [1, K, S_pad, d]
        cache.update(keys[:, :, :p], values[:, :, :p], li)  # [1, K, P, d]: padding dropped
    return logits, cache


# --------------------------------------------------------------------------- the trainer's view
class SequenceParallelVLM(VLM):
    """A :class:`VLM` whose long prompts run MR-SP over an SP group; short prompts run as on one process.

    A prompt is long when it holds more than ``threshold`` tokens. For a long
    prompt, :meth:`encode_vision` is :func:`sp_encode_vision`, :meth:`prefill`
    is :func:`sp_prefill` (decoding then continues on every rank from the full
    cache) and :meth:`completion_logits` is, with ``share_prefix`` (the
    default, as on one process), :func:`sp_prefill` of the prompt once followed
    by the G completions run on every rank from the gathered cache -- the
    prompt's activations are ``S/P`` per rank and it runs once, not G times --
    else (or under gradient checkpointing, which drops caches)
    :func:`sp_completion_logits` of the G full rows;
    :meth:`completion_logits_many` scores the long prompts of a batch one by
    one this way and the short ones together. Every rank of the SP group works
    on the same prompts in the same order (the trainers share work over the
    data-parallel ranks only); SFT examples whose prompt is long score their
    labelled tail as a completion (:meth:`sft_nll`), so the collectives match; replicated gradients
    are then averaged over the SP group (:meth:`reelrl.dist.parallel.ParallelDims.reduce_gradients`).
    The trainers see only the VLM interface: long and short prompts share a step.
    """

    def __init__(self, model: nn.Module, group: env.Group, threshold: int) -> None:
        super().__init__(model)
        self.sp_group, self.threshold = group, threshold
        self._passes = {"encode": 0, "prefill": 0, "score": 0}

    def is_long(self, prompt: EncodedPrompt) -> bool:
        return prompt.length > self.threshold

    def metrics(self) -> dict[str, float]:
        """Sequence-parallel passes since the last call (``sp/encode``, ``sp/prefill``, ``sp/score``)."""
        out = {f"sp/{k}": float(v) for k, v in self._passes.items()}
        self._passes = dict.fromkeys(self._passes, 0)
        return out

    def encode_vision(self, prompt: EncodedPrompt) -> dict[str, BaseModelOutputWithPooling]:
        if self.is_long(prompt):
            self._passes["encode"] += 1
            return sp_encode_vision(self, prompt, self.sp_group)
        return super().encode_vision(prompt)

    def prefill(self, prompt: EncodedPrompt, vision=None, copies: int = 1) -> tuple[Tensor, DynamicCache]:
        if not self.is_long(prompt):
            return super().prefill(prompt, vision, copies)
        self._passes["prefill"] += 1
        last, cache = sp_prefill(self, prompt, vision, self.sp_group)  # [1, V]
        if copies > 1:  # the naive baseline's copies: the same cache, repeated
            cache.batch_repeat_interleave(copies)
        return last.expand(copies, -1), cache  # [copies, V]

    def completion_logits(
        self, prompt: EncodedPrompt, completions: Tensor, vision=None, share_prefix: bool = True
    ) -> Tensor:
        if not self.is_long(prompt):
            return super().completion_logits(prompt, completions, vision, share_prefix)
        self._passes["score"] += 1
        if not (share_prefix and self.keeps_cache()):
            return sp_completion_logits(self, prompt, completions, vision, self.sp_group)  # [G, T, V]
        g, t = completions.shape
        last, cache = sp_prefill(self, prompt, vision, self.sp_group)  # [1, V]; full cache on every rank
        first = last.unsqueeze(1).expand(g, 1, -1)  # [G, 1, V]
        if t == 1:
            return first
        cache.batch_repeat_interleave(g)
        rest = self.step(completions[:, :-1], cache, prompt, 0)  # [G, T-1, V]: replicated on the SP ranks
        return torch.cat([first, rest], dim=1)  # [G, T, V]

    def sft_nll(self, examples: list[dict[str, Tensor]], pad_id: int) -> Tensor:
        """Summed NLL of the SFT examples: long ones as prompt + labelled completion through
        :func:`sp_completion_logprobs` (one by one), the short ones in one ordinary forward."""
        long = [e for e in examples if self.is_long(self.sft_prompt(e)[0])]
        short = [e for e in examples if not any(e is x for x in long)]
        total = super().sft_nll(short, pad_id) if short else torch.zeros((), device=self.device)
        for e in long:
            self._passes["score"] += 1
            prompt, target = self.sft_prompt(e, self.device)  # target [1, A]
            total = total - sp_completion_logprobs(self, prompt, target, None, self.sp_group).sum()
        return total

    def completion_logits_many(
        self, prompts: list[EncodedPrompt], completions: list[Tensor], visions: list | None = None
    ) -> list[Tensor]:
        visions = visions if visions is not None else [None] * len(prompts)
        out: list[Tensor | None] = [None] * len(prompts)
        short = [i for i, p in enumerate(prompts) if not self.is_long(p)]
        for i, p in enumerate(prompts):
            if self.is_long(p):
                out[i] = self.completion_logits(p, completions[i], visions[i])  # [G_i, T_i, V]
        if short:
            many = super().completion_logits_many([prompts[i] for i in short], [completions[i] for i in short],
                                                  [visions[i] for i in short])
            for i, logits in zip(short, many):
                out[i] = logits  # [G_i, T_i, V]
        return out  # type: ignore[return-value]
