"""The served progress critic: episodes held as KV caches, frames appended, progress decoded per frame.

Per episode the critic keeps the conversation of :mod:`reelrl.data.progress_prompt`
up to its last frame as a KV cache (:class:`Episode`). A new frame of an episode:

1. is patchified and goes through the vision tower once (all frames of a batch in one call);
2. its tokens (the goal head too, for an episode's first frame) and the question tail
   (question, end of the user turn, generation prompt, ``<answer>``) run in one forward pass
   over the cached context, at the conversation's own 3D RoPE positions (image ``(t, h, w)``
   indices from the text position after the previous frame; text continuing at the image's
   maximum plus one, as ``get_rope_index`` over the whole conversation gives);
3. the number is decoded greedily within :class:`~reelrl.serve.answer.AnswerGrammar`;
4. the cache is cut back to end at the frame: the context holds only goal and frames, and the
   next frame's question is asked afresh after it.

Batching: :meth:`ProgressCritic.add_frames` takes one frame each of several episodes and runs
them as one batch: the caches are stacked left-padded (zeros, masked out) to the longest
context, the new chunks right-padded (masked), one forward and ``<= 2 + decimals`` decode
steps for all, then each episode's cache is cut out of the batch again. Steps 2-4 cost
O(chunk x context) attention but no re-reading of earlier frames, so a frame's cost stays
nearly flat as the episode grows. ``reuse_context=False`` is the baseline that re-reads
the whole episode (every frame through the vision tower, every token through the model)
for each new frame.

The critic is thread-safe: one lock around every change of its state (opening, closing, evicting,
adding frames); lookups are plain reads. The server runs its frames from one worker thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from reelrl.models.processing import ReelProcessor
from reelrl.models.vlm import VLM
from reelrl.serve.answer import AnswerGrammar
from reelrl.serve.errors import CapacityError, EpisodeFull, FrameError, ServeError, UnknownEpisode
from reelrl.serve.prompt import ProgressPrompt

__all__ = ["CriticLimits", "Episode", "FrameResult", "ProgressCritic", "chunk_positions"]


@dataclass
class CriticLimits:
    """What the critic holds at most (refusals name the limit)."""

    max_episodes: int = 64  # episodes held at once; a new one beyond evicts an idle one or is refused (429)
    evict_idle_s: float = 300.0  # an episode idle this long may be evicted to make room for a new one
    max_frames: int = 512  # frames per episode (409 beyond)
    max_pixels: int = 448 * 448  # pixels per frame (422 beyond)
    max_goal_chars: int = 2000  # characters of a goal (422 beyond)


@dataclass
class Episode:
    """One episode's context: goal and frames so far, as tokens and (with reuse) a KV cache."""

    id: str
    goal: str
    head: list[int]  # tokens before the first frame (fed with the first frame)
    ids: list[int] = field(default_factory=list)  # tokens of the context: head + frames (empty before a frame)
    cache: DynamicCache | None = None  # KV of ``ids`` (batch 1), reuse_context only
    next_pos: int = 0  # text position after the last frame
    progress: list[float] = field(default_factory=list)  # one per frame
    pixels: list[Tensor] = field(default_factory=list)  # [n, d] per frame, without reuse only
    grids: list[Tensor] = field(default_factory=list)  # [1, 3] per frame, without reuse only
    last_used: float = field(default_factory=time.monotonic)

    @property
    def frames(self) -> int:
        return len(self.progress)


@dataclass
class FrameResult:
    """The critic's answer for one added frame."""

    episode_id: str
    t: int  # index of the frame in its episode (0-based)
    progress: float  # in [0, 1]
    answer: str  # the decoded number as written, e.g. "0.42"
    logprobs: list[float]  # model log-probability of each answer token chosen (full vocabulary)
    batch_size: int  # frames in the forward pass this one ran in
    context_tokens: int  # tokens of the episode's context after this frame


def chunk_positions(vlm: VLM, ids: list[int], image_id: int, grids: Tensor | None, start: int) -> Tensor:
    """3D RoPE positions ``[3, L]`` of tokens ``ids`` that follow a context ending before text position ``start``.

    ``get_rope_index`` over the chunk alone, shifted by ``start``: every index it
    writes is an offset from the previous maximum plus one, so this equals the
    positions of these tokens in the whole conversation. ``grids [k, 3]``: the
    chunk's images in order.
    """
    dev = vlm.device
    t = torch.tensor([ids], dtype=torch.long, device=dev)  # [1, L]
    if not vlm.has_mrope:
        return torch.arange(start, start + len(ids), device=dev).view(1, -1).expand(3, -1)  # [3, L]
    types = (t == image_id).int()  # [1, L]
    pos, _ = vlm.core.get_rope_index(t, mm_token_type_ids=types, image_grid_thw=grids, attention_mask=torch.ones_like(t))
    return pos[:, 0] + start  # [3, L]


class ProgressCritic:
    """Serves a progress critic over streamed episodes (module docstring)."""

    def __init__(self, model: torch.nn.Module, processor: ReelProcessor, *, reuse_context: bool = True,
                 limits: CriticLimits | None = None) -> None:
        self.vlm = VLM(model)
        self.model = self.vlm.model
        self.processor = processor
        self.prompt = ProgressPrompt(processor)
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self.grammar = AnswerGrammar(processor.tokenizer, vocab)
        self.reuse_context = reuse_context
        self.limits = limits or CriticLimits()
        self.pad_id = int(processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None
                          else processor.end_of_turn_id)
        self.episodes: OrderedDict[str, Episode] = OrderedDict()  # least recently used first
        self._evicted: OrderedDict[str, None] = OrderedDict()  # ids evicted lately (for a clearer 404)
        self._lock = threading.RLock()
        self.stats = {"batches": 0, "frames": 0, "evicted": 0}

    # ------------------------------------------------------------- episodes
    def open(self, goal: str) -> Episode:
        """A new episode towards ``goal``; evicts the longest-idle episode past ``evict_idle_s`` when full."""
        if not isinstance(goal, str) or not goal.strip():
            raise FrameError("goal: must be a non-empty string")
        if len(goal) > self.limits.max_goal_chars:
            raise FrameError(f"goal: {len(goal)} characters, above the limit of {self.limits.max_goal_chars}")
        head = self.prompt.head_ids(goal)
        with self._lock:
            if len(self.episodes) >= self.limits.max_episodes:
                self._evict_idle()
            if len(self.episodes) >= self.limits.max_episodes:
                raise CapacityError(f"the server holds {len(self.episodes)} episodes, its limit (max_episodes); "
                                    f"close one (DELETE /episodes/ID) or retry once one has been idle "
                                    f"{self.limits.evict_idle_s:g} s")
            ep = Episode(uuid.uuid4().hex, goal, head)
            self.episodes[ep.id] = ep
            return ep

    def _evict_idle(self) -> None:
        now = time.monotonic()
        for eid, ep in self.episodes.items():  # least recently used first
            if now - ep.last_used >= self.limits.evict_idle_s:
                del self.episodes[eid]
                self._evicted[eid] = None
                if len(self._evicted) > 4096:
                    self._evicted.popitem(last=False)
                self.stats["evicted"] += 1
                return

    def get(self, episode_id: str) -> Episode:
        """The episode of that id, or :class:`UnknownEpisode` (a read: it does not wait for a running batch)."""
        ep = self.episodes.get(episode_id)
        if ep is None:
            why = "it was evicted after idling (open a new one)" if episode_id in self._evicted else \
                "never opened or already closed"
            raise UnknownEpisode(f"episode_id: no episode {episode_id!r} is held: {why}")
        return ep

    def close(self, episode_id: str) -> Episode:
        """Drop an episode and its cache; returns it."""
        with self._lock:
            ep = self.get(episode_id)
            del self.episodes[episode_id]
            return ep

    def check(self, episode_id: str, frame: np.ndarray) -> Episode:
        """Raise the :class:`ServeError` a frame for this episode would get; else the episode.

        A read (no lock): the handlers call it before queueing a frame, :meth:`add_frames` again under the lock.
        """
        self.prompt.check_frame(frame, self.limits.max_pixels)
        ep = self.get(episode_id)
        if ep.frames >= self.limits.max_frames:
            raise EpisodeFull(f"episode {episode_id!r} holds {ep.frames} frames, the limit (max_frames); "
                              "open a new episode")
        return ep

    # --------------------------------------------------------------- frames
    @torch.no_grad()
    def add_frames(self, items: list[tuple[str, np.ndarray]]) -> list[FrameResult | ServeError]:
        """Append one frame each to distinct episodes and decode their progress, in one batch (module docstring).

        Returns per item its :class:`FrameResult`, or the :class:`ServeError` refusing it
        (the other items still run).
        """
        with self._lock:
            out: list[FrameResult | ServeError | None] = [None] * len(items)
            live: list[tuple[int, Episode, np.ndarray]] = []
            seen: set[str] = set()
            for i, (eid, frame) in enumerate(items):
                try:
                    ep = self.check(eid, frame)
                    if eid in seen:
                        raise ServeError(f"episode_id: two frames of episode {eid!r} in one batch")
                    seen.add(eid)
                    live.append((i, ep, frame))
                except ServeError as e:
                    out[i] = e
            if live:
                eps, frames = [e for _, e, _ in live], [f for _, _, f in live]
                results = self._step_cached(eps, frames) if self.reuse_context else \
                    [self._step_uncached(e, f) for e, f in zip(eps, frames)]
                for (i, ep, _), (answer, logps) in zip(live, results):
                    ep.progress.append(float(answer))
                    ep.last_used = time.monotonic()
                    self.episodes.move_to_end(ep.id)
                    out[i] = FrameResult(ep.id, ep.frames - 1, float(answer), answer, logps, len(live), len(ep.ids))
                self.stats["batches"] += 1
                self.stats["frames"] += len(live)
            return out  # type: ignore[return-value]

    def _frame_chunk(self, ep: Episode, frame: np.ndarray) -> list[int]:
        """The tokens a frame adds to the context (the goal head first, for the first frame)."""
        first = not ep.ids
        return (ep.head if first else []) + self.prompt.frame_ids(self.prompt.image_tokens(frame.shape), first)

    def _step_cached(self, eps: list[Episode], frames: list[np.ndarray]) -> list[tuple[str, list[float]]]:
        """Steps 1-4 of the module docstring for one frame each of ``eps``."""
        dev, b = self.vlm.device, len(eps)
        patches = [self.prompt.patchify(f) for f in frames]  # ([n_i, d], [1, 3]) per frame
        tail = self.prompt.tail_ids()
        kept = [self._frame_chunk(ep, f) for ep, f in zip(eps, frames)]  # tokens each context keeps
        chunks = [k + tail for k in kept]
        pos_rows = [chunk_positions(self.vlm, c, self.prompt.image_id, g.to(dev), ep.next_pos)
                    for c, (_, g), ep in zip(chunks, patches, eps)]  # [3, C_i] each
        lens = [len(ep.ids) for ep in eps]
        k_max, width = max(lens), max(len(c) for c in chunks)
        cache = self._stack(eps, lens, k_max)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long, device=dev)  # [B, W]
        new_mask = torch.zeros(b, width, dtype=torch.long, device=dev)  # [B, W]
        pos = torch.zeros(3, b, width, dtype=torch.long, device=dev)  # [3, B, W]
        for i, (c, p) in enumerate(zip(chunks, pos_rows)):
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long, device=dev)
            new_mask[i, : len(c)] = 1
            pos[:, i, : len(c)] = p
        old_mask = (torch.arange(k_max, device=dev) >= k_max - torch.tensor(lens, device=dev).view(-1, 1)).long()  # [B, K]
        mask = torch.cat([old_mask, new_mask], dim=1)  # [B, K+W]
        images = self.vlm.encode_images(torch.cat([p for p, _ in patches]).to(dev),
                                        torch.cat([g for _, g in patches]).to(dev))
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                         mm_encoder_outputs={"image": images})
        last = torch.tensor([len(c) - 1 for c in chunks], device=dev)  # [B]
        rows = torch.arange(b, device=dev)  # [B]
        logits = out.logits[rows, last]  # [B, V]
        start = pos[:, rows, last].amax(0) + 1  # [B] text position of the first answer token
        answers = self._decode(out.cache, mask, logits, start)
        for i, (ep, k, p) in enumerate(zip(eps, kept, pos_rows)):
            ep.cache = self._unstack(out.cache, i, k_max - lens[i], k_max + len(k))
            ep.ids = ep.ids + k
            ep.next_pos = int(p[:, : len(k)].max()) + 1
        return answers

    def _stack(self, eps: list[Episode], lens: list[int], k_max: int) -> DynamicCache:
        """The episodes' caches as one batch, left-padded with zeros to ``k_max`` positions."""
        cache = DynamicCache(config=self.model.config)
        if k_max == 0:
            return cache
        ref = next(ep.cache for ep in eps if ep.cache is not None)
        for li, layer in enumerate(ref.layers):
            keys, values = [], []
            for ep, n in zip(eps, lens):
                if ep.cache is None:
                    shape = (1, layer.keys.shape[1], k_max, layer.keys.shape[3])
                    keys.append(layer.keys.new_zeros(shape))  # [1, H, K, D]
                    values.append(layer.values.new_zeros(shape))
                    continue
                k, v = ep.cache.layers[li].keys, ep.cache.layers[li].values  # [1, H, n, D]
                keys.append(torch.nn.functional.pad(k, (0, 0, k_max - n, 0)))  # [1, H, K, D]
                values.append(torch.nn.functional.pad(v, (0, 0, k_max - n, 0)))
            cache.update(torch.cat(keys), torch.cat(values), li)  # [B, H, K, D]
        return cache

    def _unstack(self, batch: DynamicCache, row: int, begin: int, end: int) -> DynamicCache:
        """Row ``row``'s positions ``begin:end`` of a batch cache, as its own batch-1 cache (a copy)."""
        cache = DynamicCache(config=self.model.config)
        for li, layer in enumerate(batch.layers):
            cache.update(layer.keys[row : row + 1, :, begin:end].clone(),  # [1, H, n, D]
                         layer.values[row : row + 1, :, begin:end].clone(), li)
        return cache

    def _step_uncached(self, ep: Episode, frame: np.ndarray) -> tuple[str, list[float]]:
        """The baseline: the whole conversation so far (goal, every frame, question) in one fresh forward pass."""
        dev = self.vlm.device
        pv, grid = self.prompt.patchify(frame)  # [n, d], [1, 3]
        kept = self._frame_chunk(ep, frame)
        ep.pixels.append(pv)
        ep.grids.append(grid)
        ep.ids = ep.ids + kept
        ids = ep.ids + self.prompt.tail_ids()
        grids = torch.cat(ep.grids).to(dev)  # [t, 3]
        pos = chunk_positions(self.vlm, ids, self.prompt.image_id, grids, 0)  # [3, L]
        t = torch.tensor([ids], dtype=torch.long, device=dev)  # [1, L]
        mask = torch.ones_like(t)  # [1, L]
        out = self.model(input_ids=t, attention_mask=mask, position_ids=pos.unsqueeze(1),
                         pixel_values=torch.cat(ep.pixels).to(dev), image_grid_thw=grids,
                         cache=DynamicCache(config=self.model.config), use_cache=True, logits_to_keep=1)
        ep.next_pos = int(pos[:, : len(ep.ids)].max()) + 1
        return self._decode(out.cache, mask, out.logits[:, -1], pos[:, -1].max().view(1) + 1)[0]

    def _decode(self, cache: DynamicCache, mask: Tensor, logits: Tensor, start: Tensor) -> list[tuple[str, list[float]]]:
        """Greedy within the answer grammar for every row: ``logits [B, V]`` after ``<answer>``, ``start [B]``."""
        b, dev = logits.shape[0], logits.device
        texts, logps = [""] * b, [[] for _ in range(b)]
        live = [True] * b
        pos = start.clone()  # [B]
        for _ in range(self.grammar.max_tokens()):
            lp = torch.log_softmax(logits.float(), dim=-1)  # [B, V]
            allowed = torch.stack([self.grammar.mask(t, dev) for t in texts])  # [B, V]
            choice = lp.masked_fill(~allowed, float("-inf")).argmax(-1).tolist()  # [B]
            feed = []
            for i in range(b):
                if not live[i]:
                    feed.append(self.pad_id)
                    continue
                logps[i].append(float(lp[i, choice[i]]))
                if choice[i] == self.grammar.end_id:
                    live[i] = False
                else:
                    texts[i] += self.grammar.id_char[choice[i]]
                    live[i] = bool(self.grammar.allowed(texts[i]))  # complete: </answer> is forced
                feed.append(choice[i] if live[i] else self.pad_id)
            if not any(live):
                break
            step_mask = torch.tensor(live, dtype=mask.dtype, device=dev).view(-1, 1)  # [B, 1]
            mask = torch.cat([mask, step_mask], dim=1)  # [B, K+1]
            tok = torch.tensor(feed, dtype=torch.long, device=dev).view(-1, 1)  # [B, 1]
            out = self.model(input_ids=tok, attention_mask=mask, position_ids=pos.view(1, -1, 1).expand(3, -1, -1),
                             cache=cache, use_cache=True)
            logits = out.logits[:, -1]  # [B, V]
            pos = pos + 1  # [B]
        return list(zip(texts, logps))
