"""From dataset rows to encoded prompts: decode + sample frames, apply the chat template.

:class:`PromptEncoder` is the one place where a row's video is read. It keeps a
bounded in-memory cache of encoded prompts (keyed by row id and frame variant)
so that a video seen again in the same run is not decoded again, and counts the
rows whose video could not be read.

:meth:`PromptEncoder.prefetch` starts decoding a batch's rows in one background
thread, in order, so that the decode of row b+1 overlaps the model's work on
row b; :meth:`PromptEncoder.encode` then waits for that row's result. The
prompts are the same tensors the synchronous path builds, and a broken video
still surfaces in :meth:`PromptEncoder.try_encode` as a counted skip naming the
row. Results are looked up by row (callers may ask for rows in any order or
not at all), so a plain keyed executor is used rather than an ordered iterator.

Every prompt records where its video came from in ``meta`` (``video``,
``sampling``, ``variant``): the on-disk embedding cache
(:mod:`reelrl.models.embed_cache`) keys on them.

A row's extra images (``VideoRow.images``: PRIMO R1's initial- and
current-state images, :mod:`reelrl.data.images`) go into the same user turn,
before or after the video; the prompt carries their patches beside the
video's and :meth:`reelrl.models.vlm.VLM.encode_vision` encodes them once.

A template with ``frames_as_images`` (``served_progress``) prompts a row as
``reelrl serve`` does: the row's images are an episode's frames, shown after
its goal (the row's question) as images, then the progress question, with no
video and no system turn (:mod:`reelrl.data.progress_prompt`), so a critic
trained on such rows is served with the conversation it learnt.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from reelrl.data.images import row_images
from reelrl.data.progress_prompt import progress_messages
from reelrl.data.schema import VideoRow
from reelrl.data.templates import PromptTemplate, Stage, get_template
from reelrl.models.processing import append_target, encode_image_chat, encode_prompt, encode_sft_example
from reelrl.models.turns import TurnEncoder, extend_sft_example
from reelrl.models.vlm import PROMPT_KEYS, EncodedPrompt
from reelrl.video.decode import SampledVideo, VideoError, load_video
from reelrl.video.sample import VideoSampling
from reelrl.video.transforms import FrameTransform

log = logging.getLogger(__name__)


class PromptTooLong(ValueError):
    """A row's prompt exceeds ``data.max_prompt_tokens``: a counted skip, like an unreadable video."""



@dataclass
class PromptEncoder:
    """Turns rows into :class:`EncodedPrompt` (and SFT examples) for one processor."""

    processor: object
    video: VideoSampling
    template: str | PromptTemplate  # a registered name, module:factory, or a format string with {question}
    system: str | None = None  # None: the template's system turn for the stage
    device: torch.device | str = "cpu"
    cache_size: int = 256
    stage: Stage = "rl"  # which of the template's texts: sft, rl (and DPO), eval
    max_prompt_tokens: int | None = None  # longer prompts raise PromptTooLong (data.max_prompt_tokens)
    skipped: dict[str, str] = field(default_factory=dict)  # row id -> reason
    _cache: OrderedDict = field(default_factory=OrderedDict)
    _pending: dict[str, Future] = field(default_factory=dict)  # prompt key -> prefetch in flight
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.prompt = get_template(self.template)
        if self.prompt.frames_as_images and self.system is not None:
            raise ValueError(f"prompt.system: prompt template {self.prompt.name!r} is the served progress "
                             "conversation, which has no system turn of its own (reelrl serve uses the chat "
                             "template's default); leave prompt.system unset")
        if self.system is None:
            self.system = self.prompt.system_text(self.stage)
        spec = getattr(self.processor, "spec", None)
        if spec is not None:  # the checkpoint's patching decides the factors (ValueError on a mismatch)
            self.video = self.video.resolve(spec.factor, spec.temporal_patch_size,
                                            source=f"this {getattr(self.processor, 'family', 'model')} checkpoint")

    def user_text(self, row: VideoRow, hint: str | None = None) -> str:
        text = self.prompt.user_text(row, self.stage)
        return f"{text}\n{hint}" if hint else text

    def check_rows(self, rows: Iterable[VideoRow]) -> None:
        """Raise DataError naming the first row the template cannot prompt (before any training)."""
        for row in rows:
            self.prompt.check_row(row)

    def target(self, row: VideoRow, mode: str = "error") -> str | None:
        """The SFT target of ``row`` in the template's layout; ``mode`` for rows without reasoning
        (``error``, ``skip``: None, ``answer_only``)."""
        if row.reasoning is None:
            if mode == "error":
                raise ValueError(f"row {row.id} has no reasoning trace (set sft.rows_without_reasoning)")
            if mode == "skip":
                return None
        return self.prompt.target(row.reasoning, row.answer)

    def frames(self, row: VideoRow) -> SampledVideo:
        """Decode the sampled frames of ``row.video``; raises VideoError naming the row and file."""
        try:
            return load_video(row.video, self.video)
        except VideoError as e:
            raise VideoError(f"row {row.id}: {e}") from None

    def images(self, row: VideoRow, video: SampledVideo) -> tuple[list, list]:
        """The row's extra images (``VideoRow.images``) before and after its video (:func:`row_images`)."""
        spec = getattr(self.processor, "spec", None)
        return row_images(row, video, spec.factor if spec is not None else 28)

    def episode_frames(self, row: VideoRow, video: SampledVideo) -> list:
        """A ``frames_as_images`` row's frames: its images in order, uint8 ``[H, W, 3]`` each (:func:`row_images`)."""
        before, after = self.images(row, video)  # [H, W, 3] each
        return before + after

    def _encode_frames_chat(self, row: VideoRow, video: SampledVideo, transform: FrameTransform | None) -> dict:
        """The served progress conversation of a ``frames_as_images`` row (:func:`progress_messages`): the goal
        (``row.question``), its frames as images (``transform`` applied to them as one clip), the question."""
        frames = self.episode_frames(row, video)
        if transform is not None:
            frames = list(transform(np.stack(frames)))  # [t, H, W, 3] -> t x [H, W, 3]
        return encode_image_chat(self.processor, progress_messages(row.question, len(frames)), frames)

    def _to_prompt(self, key: str, enc: dict) -> EncodedPrompt:
        dev = self.device
        return EncodedPrompt(
            key=key,
            input_ids=enc["input_ids"].to(dev),
            vision_inputs={k: enc[k].to(dev) for k in PROMPT_KEYS if k in enc},
            mm_token_type_ids=enc["mm_token_type_ids"].to(dev) if "mm_token_type_ids" in enc else None,
        )

    @staticmethod
    def _key(row: VideoRow, variant: str, hint: str | None) -> str:
        return f"{row.id}|{variant}|{hint or ''}"

    def _build(
        self, key: str, row: VideoRow, transform: FrameTransform | None, variant: str, hint: str | None
    ) -> EncodedPrompt:
        """Decode, transform and process one row, uncached (runs in the prefetch thread too)."""
        text = self.user_text(row, hint)
        self.check_length(row, text)
        video = self.frames(row)
        if self.prompt.frames_as_images:
            enc = self._encode_frames_chat(row, video, transform)
        else:
            frames = transform(video.frames) if transform is not None else video.frames  # [T, H, W, 3]
            before, after = self.images(row, video)  # [H, W, 3] each; a frame transform edits the video only
            enc = encode_prompt(self.processor, text, frames, video.fps, system=self.system, images_before=before,
                                images_after=after)
        self.check_length(row, tokens=int(enc["input_ids"].shape[-1]))
        prompt = self._to_prompt(key, enc)
        prompt.meta.update(
            fps=video.fps,
            video=str(row.video),
            variant=variant,
            sampling=self.video.model_dump_json(),
            unnamed_transform=transform is not None and not variant,
        )
        return prompt

    def encode(
        self, row: VideoRow, *, transform: FrameTransform | None = None, variant: str = "", hint: str | None = None
    ) -> EncodedPrompt:
        """Encode one row; ``transform`` edits the frames (``variant`` names it for caching).

        If :meth:`prefetch` queued this row (same variant and hint), waits for
        that result instead of decoding again; its exception, if any, is raised here.
        """
        key = self._key(row, variant, hint)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            pending = self._pending.pop(key, None)
        prompt = pending.result() if pending is not None else self._build(key, row, transform, variant, hint)
        with self._lock:
            self._cache[key] = prompt
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return prompt

    def prefetch(
        self,
        rows: Iterable[VideoRow],
        *,
        transform: FrameTransform | None = None,
        variant: str = "",
        hint: str | None = None,
    ) -> int:
        """Start encoding ``rows`` in a background thread, in order; returns how many were queued.

        Rows already cached or already queued are skipped. Call :meth:`encode`
        / :meth:`try_encode` with the same ``variant`` and ``hint`` to collect a
        result. A single worker keeps the decode order equal to the row order,
        so the first row is ready first.
        """
        queued = 0
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reelrl-prefetch")
            for row in rows:
                key = self._key(row, variant, hint)
                if key in self._cache or key in self._pending:
                    continue
                self._pending[key] = self._executor.submit(self._build, key, row, transform, variant, hint)
                queued += 1
        return queued

    def close(self) -> None:
        """Cancel queued prefetches, wait for a running one, stop the worker thread. Idempotent."""
        with self._lock:
            executor, self._executor = self._executor, None
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.cancel()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def check_length(self, row: VideoRow, text: str | None = None, tokens: int | None = None) -> None:
        """Raise :class:`PromptTooLong` if ``text`` alone (before any video is decoded) or the whole prompt
        (``tokens``) is longer than ``max_prompt_tokens``."""
        if self.max_prompt_tokens is None:
            return
        what = "the whole prompt"
        if text is not None:
            tokenizer = getattr(self.processor, "tokenizer", self.processor)
            tokens, what = len(tokenizer(text, add_special_tokens=False)["input_ids"]), "its text alone"
        if tokens is not None and tokens > self.max_prompt_tokens:
            raise PromptTooLong(f"row {row.id}: prompt too long ({what} is {tokens} tokens, data.max_prompt_tokens "
                                f"is {self.max_prompt_tokens})")

    def try_encode(self, row: VideoRow, **kw) -> EncodedPrompt | None:
        """Like :meth:`encode` but a broken video or a too-long prompt is a counted, logged skip."""
        try:
            return self.encode(row, **kw)
        except (VideoError, PromptTooLong) as e:
            if row.id not in self.skipped:
                log.warning("skipping %s", e)
            self.skipped[row.id] = str(e)
            return None

    def encode_sft(self, row: VideoRow, target: str) -> dict:
        """Full conversation with labels on the assistant tokens only (the prompt's text checked by
        :meth:`check_length` first)."""
        self.check_length(row, self.user_text(row))
        video = self.frames(row)
        if self.prompt.frames_as_images:
            return append_target(self.processor, self._encode_frames_chat(row, video, None), target)
        before, after = self.images(row, video)  # [H, W, 3] each
        return encode_sft_example(
            self.processor, self.user_text(row), video.frames, video.fps, target, system=self.system,
            images_before=before, images_after=after,
        )

    def encode_sft_episode(self, row: VideoRow, targets: list[str], observations: list) -> dict:
        """A whole gold episode as one SFT example: ``targets[0]`` after the row's prompt, then each
        observation's user turn and the next target (:func:`reelrl.models.turns.extend_sft_example`)."""
        first = self.encode_sft(row, targets[0])
        return extend_sft_example(first, TurnEncoder(self.processor, self.system), observations, targets[1:])
