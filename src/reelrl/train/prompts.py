"""From dataset rows to encoded prompts: decode + sample frames, apply the chat template.

:class:`PromptEncoder` is the one place where a row's video is read. It keeps a
bounded in-memory cache of encoded prompts (keyed by row id and frame variant)
so that a video seen again in the same run is not decoded again, and counts the
rows whose video could not be read.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from reelrl.data.schema import VideoRow
from reelrl.models.processing import encode_prompt, encode_sft_example
from reelrl.models.vlm import VISION_KEYS, EncodedPrompt
from reelrl.video.decode import SampledVideo, VideoError, load_video
from reelrl.video.sample import VideoSampling

log = logging.getLogger(__name__)

# A frame transform (augmentation, shuffling for T-GRPO, masking): frames [T,H,W,3] uint8 -> same shape.
FrameTransform = Callable[[np.ndarray], np.ndarray]


@dataclass
class PromptEncoder:
    """Turns rows into :class:`EncodedPrompt` (and SFT examples) for one processor."""

    processor: object
    video: VideoSampling
    template: str
    system: str | None = None
    device: torch.device | str = "cpu"
    cache_size: int = 256
    skipped: dict[str, str] = field(default_factory=dict)  # row id -> reason
    _cache: OrderedDict = field(default_factory=OrderedDict)

    def user_text(self, row: VideoRow, hint: str | None = None) -> str:
        text = self.template.format(question=row.prompt_text())
        return f"{text}\n{hint}" if hint else text

    def frames(self, row: VideoRow) -> SampledVideo:
        """Decode the sampled frames of ``row.video``; raises VideoError naming the row and file."""
        try:
            return load_video(row.video, self.video)
        except VideoError as e:
            raise VideoError(f"row {row.id}: {e}") from None

    def _to_prompt(self, key: str, enc: dict) -> EncodedPrompt:
        dev = self.device
        return EncodedPrompt(
            key=key,
            input_ids=enc["input_ids"].to(dev),
            vision_inputs={k: enc[k].to(dev) for k in VISION_KEYS if k in enc},
            mm_token_type_ids=enc["mm_token_type_ids"].to(dev) if "mm_token_type_ids" in enc else None,
        )

    def encode(
        self, row: VideoRow, *, transform: FrameTransform | None = None, variant: str = "", hint: str | None = None
    ) -> EncodedPrompt:
        """Encode one row; ``transform`` edits the frames (``variant`` names it for caching)."""
        key = f"{row.id}|{variant}|{hint or ''}"
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        video = self.frames(row)
        frames = transform(video.frames) if transform is not None else video.frames  # [T, H, W, 3]
        enc = encode_prompt(self.processor, self.user_text(row, hint), frames, video.fps, system=self.system)
        prompt = self._to_prompt(key, enc)
        prompt.meta["fps"] = video.fps
        self._cache[key] = prompt
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prompt

    def try_encode(self, row: VideoRow, **kw) -> EncodedPrompt | None:
        """Like :meth:`encode` but a broken video is a counted, logged skip."""
        try:
            return self.encode(row, **kw)
        except VideoError as e:
            if row.id not in self.skipped:
                log.warning("skipping %s", e)
            self.skipped[row.id] = str(e)
            return None

    def encode_sft(self, row: VideoRow, target: str) -> dict:
        """Full conversation with labels on the assistant tokens only."""
        video = self.frames(row)
        return encode_sft_example(
            self.processor, self.user_text(row), video.frames, video.fps, target, system=self.system
        )


def target_text(row: VideoRow, mode: str = "error") -> str | None:
    """The SFT target ``<think>reasoning</think><answer>answer</answer>`` of a row."""
    if row.reasoning is None:
        if mode == "error":
            raise ValueError(f"row {row.id} has no reasoning trace (set sft.rows_without_reasoning)")
        if mode == "skip":
            return None
        return f"<answer>{row.answer}</answer>"
    return f"<think>{row.reasoning}</think><answer>{row.answer}</answer>"
