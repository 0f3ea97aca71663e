"""Follow-up turns of a conversation: the tokens and image inputs a multi-turn rollout appends.

After a model turn, the next user turn is the text the checkpoint's chat
template writes between the end of an assistant message and the start of the
next assistant message: the assistant turn's closing (``"<|im_end|>\\n"``,
left out when the model's own last token already was ``<|im_end|>``), the user
turn with its images (``<|vision_start|><|image_pad|><|vision_end|>`` per image,
the pad expanded to the image's ``h * w / merge**2`` tokens) and the
generation prompt (``"<|im_start|>assistant\\n"``). Both pieces are cut out of
renderings of the template itself, so a real Qwen2-VL / Qwen2.5-VL / Qwen3-VL
template gives its own layout.

Images are patchified exactly as transformers' Qwen2-VL image processor does
for an image already at a size that is a multiple of ``patch * merge``: the
image repeated ``temporal_patch_size`` times, normalised with the checkpoint's
mean / std (:func:`reelrl.models.processing.patchify_frames`), grid
``(1, h / patch, w / patch)``. Images are never resized here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reelrl.models.processing import IGNORE_INDEX, ReelProcessor, patchify_frames

__all__ = ["TurnEncoder", "TurnTokens", "extend_sft_example"]

_PROBE = "\x00reelrl-turn\x00"


@dataclass
class TurnTokens:
    """One follow-up user turn, tokenised."""

    ids: list[int]  # closing of the previous assistant turn + the user turn + the generation prompt
    pixel_values: Tensor | None  # [N, C*tp*p*p] patches of the turn's images, in order
    image_grid_thw: Tensor | None  # [k, 3] one (1, h, w) grid per image


class TurnEncoder:
    """Encodes follow-up turns for one processor and system prompt (module docstring)."""

    def __init__(self, processor: ReelProcessor, system: str | None = None) -> None:
        if processor.image_token_id is None:
            raise ValueError(f"the tokenizer of this {processor.family} checkpoint has no {processor.image_token!r} "
                             "token: it cannot show images in a later turn")
        self.processor, self.system = processor, system
        base = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system is not None else []
        base.append({"role": "user", "content": [{"type": "text", "text": "question"}]})
        answered = processor.apply_chat_template([*base, {"role": "assistant", "content": _PROBE}], False)
        if answered.count(_PROBE) != 1:
            raise ValueError("the chat template does not write an assistant message's content verbatim")
        self._closing = answered[answered.index(_PROBE) + len(_PROBE):]  # e.g. "<|im_end|>\n"
        self._answered, self._base = answered, [*base, {"role": "assistant", "content": _PROBE}]

    def user_text(self, text: str, n_images: int) -> str:
        """The template's text of a user turn holding ``n_images`` images and ``text``, generation prompt included."""
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        full = self.processor.apply_chat_template([*self._base, {"role": "user", "content": content}], True)
        if not full.startswith(self._answered):
            raise ValueError("the chat template renders earlier turns differently once a turn is added")
        return full[len(self._answered):]

    def encode(self, text: str, images: list[np.ndarray], closed: bool) -> TurnTokens:
        """Tokens of the turn after a model turn (``closed``: it ended on the end-of-turn token) and its images."""
        proc = self.processor
        closing = self._closing
        if closed and closing.startswith(proc.end_of_turn):
            closing = closing[len(proc.end_of_turn):]
        turn = self.user_text(text, len(images))
        if turn.count(proc.image_token) != len(images):
            raise ValueError(f"the chat template wrote {turn.count(proc.image_token)} image slots for {len(images)} images")
        pieces, grids, parts = turn.split(proc.image_token), [], []
        for img in images:
            if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8):
                raise ValueError(f"an observation image must be a [H, W, 3] uint8 array, got "
                                 f"{getattr(img, 'shape', type(img))} {getattr(img, 'dtype', '')}")
            if img.shape[0] % proc.spec.factor or img.shape[1] % proc.spec.factor:
                raise ValueError(f"an observation image of {img.shape[0]}x{img.shape[1]} is not a multiple of "
                                 f"{proc.spec.factor} (patch_size*merge_size); images are never resized here")
            pv, grid = patchify_frames(img[None], proc.spec)  # [h*w, C*tp*p*p], (1, h, w)
            parts.append(pv)
            grids.append(grid)
        expanded = pieces[0]
        for piece, (t, h, w) in zip(pieces[1:], grids):
            expanded += proc.image_token * (t * h * w // proc.spec.merge_size**2) + piece
        ids = proc.tokenizer(closing + expanded, add_special_tokens=False)["input_ids"]
        return TurnTokens(
            ids=list(ids),
            pixel_values=torch.cat(parts) if parts else None,  # [N, C*tp*p*p]
            image_grid_thw=torch.tensor(grids, dtype=torch.long) if grids else None,  # [k, 3]
        )


def extend_sft_example(example: dict[str, Tensor], turns: TurnEncoder, observations: list,
                       targets: list[str]) -> dict[str, Tensor]:
    """An SFT example of a whole episode: ``example`` (the first turn, :func:`encode_sft_example`, ending on
    ``<|im_end|>``) followed by each observation's user turn (no loss) and the next target (loss).

    ``observations[k]`` (:class:`reelrl.envs.base.Observation`) precedes ``targets[k]``; the images'
    patches and grids are added as ``pixel_values`` / ``image_grid_thw``, which the model's forward reads with
    the video's to build the 3D RoPE positions of the whole conversation.
    """
    proc = turns.processor
    if len(observations) != len(targets):
        raise ValueError(f"{len(observations)} observations for {len(targets)} later targets")
    ids, labels, types = [example["input_ids"]], [example["labels"]], [example["mm_token_type_ids"]]
    pixels, grids = [], []
    for obs, target in zip(observations, targets):
        t = turns.encode(obs.text, obs.images, closed=True)
        user = torch.tensor([t.ids], dtype=torch.long)  # [1, U]
        answer = torch.tensor([proc.tokenizer(target + proc.end_of_turn, add_special_tokens=False)["input_ids"]],
                              dtype=torch.long)  # [1, A]
        ids += [user, answer]
        labels += [torch.full_like(user, IGNORE_INDEX), answer]
        types += [(user == proc.image_token_id).long(), torch.zeros_like(answer)]
        if t.pixel_values is not None:
            pixels.append(t.pixel_values)
            grids.append(t.image_grid_thw)
    out = dict(example)
    out["input_ids"] = torch.cat(ids, dim=1)  # [1, L]
    out["labels"] = torch.cat(labels, dim=1)  # [1, L]
    out["mm_token_type_ids"] = torch.cat(types, dim=1).to(example["mm_token_type_ids"].dtype)  # [1, L]
    out["attention_mask"] = torch.ones_like(out["input_ids"])  # [1, L]
    if pixels:
        out["pixel_values"] = torch.cat(pixels)  # [N, d]
        out["image_grid_thw"] = torch.cat(grids)  # [k, 3]
    return out
