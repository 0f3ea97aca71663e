"""The served progress conversation as token pieces: goal head, one piece per frame, question tail.

The text is :mod:`reelrl.data.progress_prompt`'s, rendered by the
checkpoint's own chat template; it is cut at the image slots into

- ``head``: everything before the first frame (system turn, user turn opening, goal text),
- ``frame``: one image slot (``<|vision_start|><|image_pad|>*n<|vision_end|>``), preceded for frames
  after the first by whatever the template writes between two images (nothing for Qwen),
- ``tail``: the question, the end of the user turn, the generation prompt and ``<answer>``.

The conversation after ``t`` frames is ``head + frame_1 + ... + frame_t + tail``;
:class:`ProgressPrompt` checks when it is built that these pieces tokenise to the
same ids as the whole rendered text.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reelrl.data.progress_prompt import ANSWER_OPEN, progress_messages
from reelrl.models.processing import ReelProcessor, patchify_frames
from reelrl.serve.errors import FrameError

__all__ = ["ProgressPrompt"]

_PROBE_GOAL = "\x00reelrl-goal\x00"


class ProgressPrompt:
    """Token pieces of the served progress conversation for one processor (module docstring)."""

    def __init__(self, processor: ReelProcessor) -> None:
        if processor.image_token_id is None:
            raise ValueError(f"the tokenizer of this {processor.family} checkpoint has no {processor.image_token!r} "
                             "token: it cannot be shown frames as images")
        self.processor = processor
        self.image_id: int = processor.image_token_id
        slot = processor.vision_start_token + processor.image_token + processor.vision_end_token
        text = processor.apply_chat_template(progress_messages(_PROBE_GOAL, 2), True) + ANSWER_OPEN
        parts = text.split(slot)
        if len(parts) != 3 or parts[0].count(_PROBE_GOAL) != 1:
            raise ValueError(f"the chat template does not write each image as {slot!r} after the goal text")
        self._head, self._between, self._tail = parts  # texts around the two image slots
        self._tail_ids = self._ids(self._tail)
        self._special = [t for t in processor.tokenizer.all_special_tokens] + [
            processor.image_token, processor.video_token, processor.vision_start_token, processor.vision_end_token]
        self._check()

    # ------------------------------------------------------------------ pieces
    def _ids(self, text: str) -> list[int]:
        return list(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def image_tokens(self, frame_shape: tuple[int, ...]) -> int:
        """Number of ``<|image_pad|>`` tokens of a frame of shape ``[H, W, 3]``."""
        spec = self.processor.spec
        return (frame_shape[0] // spec.patch_size) * (frame_shape[1] // spec.patch_size) // spec.merge_size**2

    def head_ids(self, goal: str) -> list[int]:
        """Tokens before the first frame, for ``goal`` (raises :class:`FrameError` on a goal holding special tokens)."""
        for tok in self._special:
            if tok in goal:
                raise FrameError(f"goal: must not contain the special token {tok!r}")
        return self._ids(self._head.replace(_PROBE_GOAL, goal))

    def frame_ids(self, n_image_tokens: int, first: bool) -> list[int]:
        """Tokens of one frame's image slot (``first``: the episode's first frame)."""
        proc = self.processor
        text = ("" if first else self._between) + proc.vision_start_token + proc.image_token * n_image_tokens \
            + proc.vision_end_token
        return self._ids(text)

    def tail_ids(self) -> list[int]:
        """Tokens after the last frame: question, end of the user turn, generation prompt, ``<answer>``."""
        return list(self._tail_ids)

    def full_text(self, goal: str, frame_tokens: list[int]) -> str:
        """The whole rendered conversation for ``goal`` and frames of ``frame_tokens[k]`` image tokens each."""
        proc = self.processor
        slot = proc.vision_start_token + proc.image_token + proc.vision_end_token
        text = proc.apply_chat_template(progress_messages(goal, len(frame_tokens)), True) + ANSWER_OPEN
        pieces = text.split(slot)
        out = pieces[0]
        for n, piece in zip(frame_tokens, pieces[1:]):
            out += proc.vision_start_token + proc.image_token * n + proc.vision_end_token + piece
        return out

    def _check(self) -> None:
        """Pieces tokenise as the whole text (a template or tokenizer that merges across a cut is refused)."""
        goal = "move the red block onto the green square"
        n = 4
        pieced = self.head_ids(goal) + self.frame_ids(n, True) + self.frame_ids(n, False) + self.tail_ids()
        whole = self._ids(self.full_text(goal, [n, n]))
        if pieced != whole:
            raise ValueError("the served progress prompt tokenises differently piece by piece than whole; "
                             "its goal / frame / question cuts must fall on vision tokens")

    # ------------------------------------------------------------------ frames
    def check_frame(self, frame: np.ndarray, max_pixels: int) -> None:
        """Raise :class:`FrameError` naming the problem unless ``frame`` is a servable ``[H, W, 3]`` uint8 image."""
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"frame: expected a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise FrameError(f"frame: dtype must be uint8, got {frame.dtype}")
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise FrameError(f"frame: shape must be [H, W, 3], got {list(frame.shape)}")
        factor = self.processor.spec.factor
        h, w = int(frame.shape[0]), int(frame.shape[1])
        if h < factor or w < factor or h % factor or w % factor:
            raise FrameError(f"frame: size {h}x{w} must be a positive multiple of {factor} (patch_size*merge_size) "
                             "on both sides; the server never resizes")
        if h * w > max_pixels:
            raise FrameError(f"frame: {h}x{w} = {h * w} pixels is above the server's limit of {max_pixels}")

    def patchify(self, frame: np.ndarray) -> tuple[Tensor, Tensor]:
        """A frame's patches ``[h*w, C*tp*p*p]`` and grid ``[1, 3]`` ``(1, h, w)``, as Qwen's image processor."""
        pv, grid = patchify_frames(frame[None], self.processor.spec)  # [h*w, d], (1, h, w)
        return pv, torch.tensor([grid], dtype=torch.long)  # [h*w, d], [1, 3]
