"""Multi-turn rollouts: the model answers, an environment shows the next turn, the model answers again.

The general case of which a single-turn GRPO group is the one-turn instance.
Per prompt, its ``n`` trajectories share the first turn's prefix: the prompt
(video and question) is prefilled once and its KV cache forked ``n`` ways, as
in :mod:`reelrl.rollout.hf`. After each model turn every live trajectory's
environment (:mod:`reelrl.envs.base`) gets the decoded text and returns the
turn's reward columns and the next observation; the observation's tokens
(:class:`reelrl.models.turns.TurnEncoder`) and images are *appended to the
cached context* of that trajectory: its images go through the vision tower
once, in one call for the whole batch, and one forward pass over the appended
tokens extends every row's cache. A trajectory whose environment ends stops
taking tokens (masked out); the batch decodes until every trajectory has ended
or ``max_turns`` model turns were taken.

Positions are exactly those of the whole conversation as one sequence
(:meth:`reelrl.models.vlm.VLM.sequence_positions`: 3D RoPE over the video of
the first turn and the images and video clips of later turns, text after
each visual input continuing at its maximum plus one; a later clip's temporal
ids are spaced by its own ``second_per_grid_ts``, as transformers does for
several videos in one sequence). The trajectory is kept as one
*continuation* of the first prompt: every token after it (model turns and
environment turns) in ``Rollout.tokens [G, T]``, with ``Rollout.mask`` 1 on the
model's tokens only (the loss never sees environment tokens), and a
:class:`Continuation` (the continuation's positions and images) in
``Rollout.context``. :func:`continuation_logits` scores it with a shared-prefix
forward; ``share_prefix=False`` runs the whole conversation as one plain
forward pass, which the shared path equals up to float rounding (tested).

Sampling: every trajectory draws all of its turns from its own generator, so a
trajectory's tokens do not depend on the other trajectories of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from reelrl.envs.base import Environment
from reelrl.models.turns import TurnEncoder, TurnTokens
from reelrl.models.vlm import VLM, EncodedPrompt
from reelrl.rollout.hf import (
    DecodeState,
    Rollout,
    SamplingParams,
    decode_loop,
    flat_generators,
    pack_rollout,
    prefill_group,
    start_decode,
)

__all__ = ["Continuation", "EpisodeGroup", "EpisodeRequest", "continuation_logits", "rollout_episodes"]


@dataclass
class Continuation:
    """What a multi-turn continuation needs beyond its tokens to be scored."""

    positions: Tensor  # [3, G, T] RoPE positions of the continuation tokens (pads: 0)
    pixel_values: Tensor | None = None  # [N, d] patches of every trajectory's later images, row-major, turn order
    image_grid_thw: Tensor | None = None  # [k, 3]
    image_embeds: BaseModelOutputWithPooling | None = None  # their embeddings at rollout time (no grad)
    pixel_values_videos: Tensor | None = None  # [M, d] patches of every trajectory's later clips, row-major
    video_grid_thw: Tensor | None = None  # [m, 3]
    clip_embeds: BaseModelOutputWithPooling | None = None  # their embeddings at rollout time (no grad)
    clips_per_row: list[int] = field(default_factory=list)  # [G] later clips of each trajectory
    images_per_row: list[int] = field(default_factory=list)  # [G] later images of each trajectory

    def images(self, vlm: VLM, recompute: bool) -> dict:
        """``mm_encoder_outputs`` entries for the later images and clips: cached, or recomputed (a training
        vision tower)."""
        out = {}
        if self.pixel_values is not None:
            out["image"] = (vlm.encode_images(self.pixel_values, self.image_grid_thw)
                            if recompute or self.image_embeds is None else self.image_embeds)
        if self.pixel_values_videos is not None:
            out["video"] = (vlm.encode_videos(self.pixel_values_videos, self.video_grid_thw)
                            if recompute or self.clip_embeds is None else self.clip_embeds)
        return out

    def whole_vision(self, vlm: VLM, prompt_vision: dict, later: dict) -> dict:
        """``mm_encoder_outputs`` of G whole conversations: per trajectory the prompt's visual inputs (its video
        and its own images), then that trajectory's later images and clips (``later``, from :meth:`images`), the
        order the model meets their placeholders of each kind in a ``[G, P+T]`` batch."""
        g = self.positions.shape[1]
        if not later:
            return vlm.repeat_vision(prompt_vision, g)
        counts = {"image": self.images_per_row, "video": self.clips_per_row}
        at = dict.fromkeys(later, 0)
        parts = []
        for row in range(g):
            mine = {}
            for kind, out in later.items():
                n = counts[kind][row]
                if n:
                    mine[kind] = vlm.select_videos(out, at[kind], at[kind] + n)
                at[kind] += n
            parts += [prompt_vision, mine] if mine else [prompt_vision]
        return vlm.merge_vision(parts)


@dataclass
class EpisodeRequest:
    """``len(envs)`` trajectories of one prompt, one environment each."""

    prompt: EncodedPrompt
    envs: list[Environment]
    generators: list[torch.Generator] | None = None
    vision: dict | None = None  # the prompt's cached video embeddings


@dataclass
class EpisodeGroup:
    """The trajectories of one prompt: a :class:`Rollout` over the continuation, and each turn's text and columns."""

    rollout: Rollout  # tokens [G, T] after the prompt; mask [G, T] 1 on model tokens; context: Continuation
    turn_texts: list[list[str]]  # [G][turns] decoded model turns
    turn_columns: list[list[dict[str, Any] | None]]  # [G][turns] reward columns the environment gave each turn
    infos: list[list[dict[str, Any]]] = field(default_factory=list)  # [G][turns]
    turn_lengths: list[list[int]] = field(default_factory=list)  # [G][turns] model tokens of each turn


@dataclass
class _Traj:
    """Book-keeping of one trajectory during the rollout."""

    prompt: EncodedPrompt
    env: Environment
    cont: list[int] = field(default_factory=list)  # every token after the prompt
    model: list[int] = field(default_factory=list)  # 1 where cont holds a model token
    types: list[int] = field(default_factory=list)  # modality id per cont token (0 text, 1 image, 2 video)
    grids: list[Tensor] = field(default_factory=list)  # [k, 3] per turn with images
    pixels: list[Tensor] = field(default_factory=list)  # [n, d] per turn with images
    vgrids: list[Tensor] = field(default_factory=list)  # [m, 3] per turn with clips
    vsecs: list[Tensor] = field(default_factory=list)  # [m] per turn with clips (Qwen2.5-VL)
    vpixels: list[Tensor] = field(default_factory=list)  # [M, d] per turn with clips
    embeds: list[Tensor] = field(default_factory=list)  # [tokens, D] per later image, as the rollout encoded it
    vembeds: list[Tensor] = field(default_factory=list)  # [tokens, D] per later clip, as the rollout encoded it
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # model tokens per turn
    columns: list[dict[str, Any] | None] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    live: bool = True
    truncated: bool = False

    def positions(self, vlm: VLM) -> Tensor:
        """Positions ``[3, len(cont)]`` of the continuation, from the whole conversation's RoPE index."""
        p = self.prompt
        dev = p.input_ids.device
        ids = torch.cat([p.input_ids, torch.tensor([self.cont], dtype=torch.long, device=dev)], 1)  # [1, P+C]
        prompt_types = p.mm_token_type_ids if p.mm_token_type_ids is not None else torch.zeros_like(p.input_ids)
        types = torch.cat([prompt_types, torch.tensor([self.types], dtype=prompt_types.dtype, device=dev)], 1)
        grid = torch.cat(self.grids).to(dev) if self.grids else None  # [k, 3]
        vgrid = torch.cat(self.vgrids).to(dev) if self.vgrids else None  # [m, 3]
        vsecs = torch.cat(self.vsecs).to(dev) if self.vsecs else None  # [m]
        return vlm.sequence_positions(p, ids, types, grid, vgrid, vsecs)[:, 0, p.length:]  # [3, C]


def _append_turn(vlm: VLM, state: DecodeState, trajs: list[_Traj], fed: list[int],
                 turns: dict[int, TurnTokens], pad_id: int, type_of: dict[int, int]) -> None:
    """Feed each live row its unfed model token(s) and its next user turn in one cached forward pass."""
    dev = state.logits.device
    chunks: list[list[int]] = []
    for i, tr in enumerate(trajs):
        if i not in turns:
            chunks.append([])
            continue
        pending = tr.cont[fed[i]:]  # the model tokens the decode loop sampled but did not feed
        t = turns[i]
        tr.cont += t.ids
        tr.model += [0] * len(t.ids)
        tr.types += [type_of.get(tok, 0) for tok in t.ids]
        if t.image_grid_thw is not None:
            tr.grids.append(t.image_grid_thw)
            tr.pixels.append(t.pixel_values)
        if t.video_grid_thw is not None:
            tr.vgrids.append(t.video_grid_thw)
            tr.vpixels.append(t.pixel_values_videos)
            if t.second_per_grid_ts is not None:
                tr.vsecs.append(t.second_per_grid_ts)
        chunks.append(pending + t.ids)
    width = max(len(c) for c in chunks)
    ids = torch.full((len(trajs), width), pad_id, dtype=torch.long, device=dev)  # [N, L]
    mask = torch.zeros(len(trajs), width, dtype=state.mask.dtype, device=dev)  # [N, L]
    pos = torch.zeros(3, len(trajs), width, dtype=torch.long, device=dev)  # [3, N, L]
    for i, c in enumerate(chunks):
        if c:
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long, device=dev)
            mask[i, : len(c)] = 1
            pos[:, i, : len(c)] = trajs[i].positions(vlm)[:, -len(c):]
    images = [turns[i] for i in sorted(turns) if turns[i].pixel_values is not None]
    clips = [turns[i] for i in sorted(turns) if turns[i].pixel_values_videos is not None]
    mm = {}
    if images:
        mm["image"] = vlm.encode_images(torch.cat([t.pixel_values for t in images]).to(dev),
                                        torch.cat([t.image_grid_thw for t in images]).to(dev))
    if clips:
        mm["video"] = vlm.encode_videos(torch.cat([t.pixel_values_videos for t in clips]).to(dev),
                                        torch.cat([t.video_grid_thw for t in clips]).to(dev))
    for kind, grid_of, store in (("image", "image_grid_thw", "embeds"), ("video", "video_grid_thw", "vembeds")):
        if kind not in mm:
            continue
        pooled, at = mm[kind].pooler_output, 0  # one [tokens, D] per input, in turn order: kept for _pack
        for i in sorted(turns):
            grid = getattr(turns[i], grid_of)
            if grid is not None:
                getattr(trajs[i], store).extend(pooled[at : at + grid.shape[0]])
                at += int(grid.shape[0])
    state.mask = torch.cat([state.mask, mask], dim=1)  # [N, K+L]
    out = vlm.model(input_ids=ids, attention_mask=state.mask, position_ids=pos, cache=state.cache, use_cache=True,
                    mm_encoder_outputs=mm or None)
    last = torch.tensor([max(len(c) - 1, 0) for c in chunks], device=dev)  # [N]
    state.logits = out.logits[torch.arange(len(trajs), device=dev), last]  # [N, V]
    state.start = pos[:, torch.arange(len(trajs), device=dev), last].amax(0) + 1  # [N] next text position
    state.done = torch.tensor([i not in turns for i in range(len(trajs))], device=dev)  # [N]
    state.steps = 0


@torch.no_grad()
def rollout_episodes(
    vlm: VLM,
    turn_encoder: TurnEncoder,
    requests: list[EpisodeRequest],
    params: SamplingParams,
    share_prefix: bool = True,
) -> list[EpisodeGroup]:
    """Roll out every request's trajectories together until each environment ends (module docstring)."""
    if not requests:
        return []
    prefills = [prefill_group(vlm, r.prompt, len(r.envs), r.vision, share_prefix) for r in requests]
    gens = flat_generators(prefills, [r.generators for r in requests])
    state = start_decode(vlm, prefills)
    trajs = [_Traj(r.prompt, env) for r in requests for env in r.envs]
    max_turns = max(env.max_turns for env in (t.env for t in trajs))
    tok = turn_encoder.processor
    type_of = {tok.video_token_id: 2, **({tok.image_token_id: 1} if tok.image_token_id is not None else {})}
    for k in range(max_turns):
        starts = [len(t.cont) for t in trajs]
        seqs = decode_loop(vlm, state, params, gens)
        fed = []
        for tr, seq, s0, done in zip(trajs, seqs, starts, state.done.tolist()):
            if not tr.live:
                fed.append(len(tr.cont))
                continue
            tr.cont += seq
            tr.model += [1] * len(seq)
            tr.types += [0] * len(seq)
            tr.truncated |= not done
            fed.append(s0 + min(len(seq), state.steps))
        turns: dict[int, TurnTokens] = {}
        for i, (tr, seq) in enumerate(zip(trajs, seqs)):
            if not tr.live:
                continue
            text = tok.decode(seq, skip_special_tokens=True)
            step = tr.env.step(text)
            tr.texts.append(text)
            tr.lengths.append(len(seq))
            tr.columns.append(step.columns)
            tr.infos.append(step.info)
            if step.observation is None or len(tr.texts) >= tr.env.max_turns:
                tr.live = False
                continue
            closed = bool(seq) and seq[-1] == tok.end_of_turn_id
            obs = step.observation
            turns[i] = turn_encoder.encode(obs.text, obs.images, closed, obs.clips)
        if not turns:
            break
        _append_turn(vlm, state, trajs, fed, turns, params.pad_id, type_of)
    return _pack(vlm, requests, trajs, params.pad_id)


def _pack(vlm: VLM, requests: list[EpisodeRequest], trajs: list[_Traj], pad_id: int) -> list[EpisodeGroup]:
    out, row = [], 0
    for r in requests:
        mine = trajs[row : row + len(r.envs)]
        row += len(r.envs)
        ro = pack_rollout([t.cont for t in mine], torch.tensor([not t.truncated for t in mine]), pad_id,
                          r.prompt.input_ids.device)
        width = ro.tokens.shape[1]
        ro.mask = torch.zeros_like(ro.mask)  # [G, T]
        pos = torch.zeros(3, len(mine), width, dtype=torch.long, device=ro.tokens.device)  # [3, G, T]
        for i, t in enumerate(mine):
            ro.mask[i, : len(t.model)] = torch.tensor(t.model, dtype=ro.mask.dtype)
            if t.cont:
                pos[:, i, : len(t.cont)] = t.positions(vlm)
        pixels = [p for t in mine for p in t.pixels]
        grids = [g for t in mine for g in t.grids]
        dev = ro.tokens.device
        ctx = Continuation(pos, clips_per_row=[sum(int(g.shape[0]) for g in t.vgrids) for t in mine],
                           images_per_row=[sum(int(g.shape[0]) for g in t.grids) for t in mine])
        if pixels:
            ctx.pixel_values = torch.cat(pixels).to(dev)  # [N, d]
            ctx.image_grid_thw = torch.cat(grids).to(dev)  # [k, 3]
            ctx.image_embeds = _embeds([e for t in mine for e in t.embeds])
        vpixels = [p for t in mine for p in t.vpixels]
        if vpixels:
            ctx.pixel_values_videos = torch.cat(vpixels).to(dev)  # [M, d]
            ctx.video_grid_thw = torch.cat([g for t in mine for g in t.vgrids]).to(dev)  # [m, 3]
            ctx.clip_embeds = _embeds([e for t in mine for e in t.vembeds])
        ro.context = ctx
        out.append(EpisodeGroup(ro, [t.texts for t in mine], [t.columns for t in mine], [t.infos for t in mine],
                                [t.lengths for t in mine]))
    return out


def _embeds(pooled: list[Tensor]) -> BaseModelOutputWithPooling:
    """The rollout's own embeddings of a group's later images or clips (one ``[tokens, D]`` each, in order),
    as one tower output: no second pass through the vision tower to score the group."""
    return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=tuple(pooled))


def continuation_logits(
    vlm: VLM, prompt: EncodedPrompt, tokens: Tensor, ctx: Continuation, vision=None, share_prefix: bool = True,
    recompute_images: bool = False,
) -> Tensor:
    """Logits predicting each continuation token: ``tokens [G, T] -> [G, T, V]`` (module docstring).

    ``share_prefix`` prefills the prompt once, forks its cache and runs the
    continuations (with their images) in one forward pass; otherwise (or where
    a forward would drop the cache, :meth:`VLM.keeps_cache`) every conversation
    runs whole in one plain forward pass.
    """
    g, t = tokens.shape
    images = ctx.images(vlm, recompute_images)
    if share_prefix and vlm.keeps_cache():
        last, cache = vlm.prefill(prompt, vision)  # [1, V]
        cache.batch_repeat_interleave(g)
        first = last.unsqueeze(1).expand(g, 1, -1)  # [G, 1, V]
        if t == 1:
            return first
        out = vlm.model(input_ids=tokens[:, :-1], attention_mask=torch.ones(g, prompt.length + t - 1,
                        dtype=torch.long, device=tokens.device), position_ids=ctx.positions[:, :, :-1],
                        cache=cache, use_cache=True, mm_encoder_outputs=images or None)
        return torch.cat([first, out.logits], dim=1)  # [G, T, V]
    pos, _ = vlm.positions(prompt)
    ids = torch.cat([prompt.input_ids.expand(g, -1), tokens], dim=1)  # [G, P+T]
    own = vision if vision is not None else vlm.encode_vision(prompt)
    out = vlm.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                    position_ids=torch.cat([pos.expand(3, g, -1), ctx.positions], dim=2),  # [3, G, P+T]
                    use_cache=False, logits_to_keep=t + 1,
                    mm_encoder_outputs=ctx.whole_vision(vlm, own, images))
    return out.logits[:, :-1, :]  # [G, T, V]
