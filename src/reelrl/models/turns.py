"""Follow-up turns of a conversation: the tokens and image inputs a multi-turn rollout appends.

After a model turn, the next user turn is the text the checkpoint's chat
template writes between the end of an assistant message and the start of the
next assistant message: the assistant turn's closing (``"<|im_end|>\\n"``,
left out when the model's own last token already was ``<|im_end|>``), the user
turn with its images (``<|vision_start|><|image_pad|><|vision_end|>`` per image,
the pad expanded to the image's ``h * w / merge**2`` tokens; then its video
clips, ``<|vision_start|><|video_pad|><|vision_end|>`` per clip, expanded as
the prompt's video is, :meth:`ReelProcessor.video_placeholder`) and the
generation prompt (``"<|im_start|>assistant\\n"``). Both pieces are cut out of
renderings of the template itself, so a real Qwen2-VL / Qwen2.5-VL / Qwen3-VL
template gives its own layout.

Images are patchified exactly as transformers' Qwen2-VL image processor does
for an image already at a size that is a multiple of ``patch * merge``: the
image repeated ``temporal_patch_size`` times, normalised with the checkpoint's
mean / std (:func:`reelrl.models.processing.patchify_frames`), grid
``(1, h / patch, w / patch)``. A clip is patchified as the prompt's video
(:func:`reelrl.models.processing.encode_prompt`): grid ``(T / temporal_patch,
h / patch, w / patch)`` and, for Qwen2.5-VL, ``second_per_grid_ts =
temporal_patch / fps``; its frame times (for Qwen3-VL's timestamps) start at
the clip's ``start``. Images and clips are never resized here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reelrl.models.processing import IGNORE_INDEX, ReelProcessor, mm_token_type_ids, patchify_frames, video_slot

__all__ = ["TurnEncoder", "TurnTokens", "extend_sft_example"]

_PROBE = "\x00reelrl-turn\x00"


@dataclass
class TurnTokens:
    """One follow-up user turn, tokenised."""

    ids: list[int]  # closing of the previous assistant turn + the user turn + the generation prompt
    pixel_values: Tensor | None  # [N, C*tp*p*p] patches of the turn's images, in order
    image_grid_thw: Tensor | None  # [k, 3] one (1, h, w) grid per image
    pixel_values_videos: Tensor | None = None  # [M, C*tp*p*p] patches of the turn's clips, in order
    video_grid_thw: Tensor | None = None  # [m, 3] one (t, h, w) grid per clip
    second_per_grid_ts: Tensor | None = None  # [m] Qwen2.5-VL's temporal RoPE spacing per clip


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

    def user_text(self, text: str, n_images: int, n_clips: int = 0) -> str:
        """The template's text of a user turn holding ``n_images`` images, ``n_clips`` clips and ``text``,
        generation prompt included."""
        content = ([{"type": "image"} for _ in range(n_images)] + [{"type": "video"} for _ in range(n_clips)]
                   + [{"type": "text", "text": text}])
        full = self.processor.apply_chat_template([*self._base, {"role": "user", "content": content}], True)
        if not full.startswith(self._answered):
            raise ValueError("the chat template renders earlier turns differently once a turn is added")
        return full[len(self._answered):]

    def _check_visual(self, img: np.ndarray, what: str, ndim: int) -> None:
        spec = self.processor.spec
        if not (isinstance(img, np.ndarray) and img.ndim == ndim and img.shape[-1] == 3 and img.dtype == np.uint8):
            shape = "[H, W, 3]" if ndim == 3 else "[T, H, W, 3]"
            raise ValueError(f"an observation {what} must be a {shape} uint8 array, got "
                             f"{getattr(img, 'shape', type(img))} {getattr(img, 'dtype', '')}")
        h, w = img.shape[-3:-1]
        if h % spec.factor or w % spec.factor:
            raise ValueError(f"an observation {what} of {h}x{w} is not a multiple of {spec.factor} "
                             "(patch_size*merge_size); visual inputs are never resized here")

    def encode(self, text: str, images: list[np.ndarray], closed: bool, clips: list | None = None) -> TurnTokens:
        """Tokens of the turn after a model turn (``closed``: it ended on the end-of-turn token), its images and
        its clips (:class:`reelrl.envs.base.Clip`: ``frames``, ``fps``, ``start``)."""
        proc, clips = self.processor, list(clips or [])
        closing = self._closing
        if closed and closing.startswith(proc.end_of_turn):
            closing = closing[len(proc.end_of_turn):]
        turn = self.user_text(text, len(images), len(clips))
        if turn.count(proc.image_token) != len(images):
            raise ValueError(f"the chat template wrote {turn.count(proc.image_token)} image slots for {len(images)} images")
        grids, parts = [], []
        for img in images:
            self._check_visual(img, "image", 3)
            pv, grid = patchify_frames(img[None], proc.spec)  # [h*w, C*tp*p*p], (1, h, w)
            parts.append(pv)
            grids.append(grid)
        pieces = turn.split(proc.image_token)
        expanded = pieces[0]
        for piece, (t, h, w) in zip(pieces[1:], grids):
            expanded += proc.image_token * (t * h * w // proc.spec.merge_size**2) + piece
        vgrids, vparts, secs = [], [], []
        if clips:
            slot = video_slot(proc, expanded)
            if expanded.count(slot) != len(clips):
                raise ValueError(f"the chat template wrote {expanded.count(slot)} video slots for {len(clips)} clips")
            vpieces = expanded.split(slot)
            expanded = vpieces[0]
            for piece, clip in zip(vpieces[1:], clips):
                self._check_visual(clip.frames, "clip", 4)
                if not clip.fps > 0:
                    raise ValueError(f"an observation clip needs fps > 0, got {clip.fps}")
                pv, grid = patchify_frames(clip.frames, proc.spec)  # [t*h*w, C*tp*p*p], (t, h, w)
                times = [clip.start + i / clip.fps for i in range(clip.frames.shape[0])]
                expanded += proc.video_placeholder(grid, times) + piece
                vparts.append(pv)
                vgrids.append(grid)
                secs.append(proc.spec.temporal_patch_size / clip.fps)
        ids = proc.tokenizer(closing + expanded, add_special_tokens=False)["input_ids"]
        return TurnTokens(
            ids=list(ids),
            pixel_values=torch.cat(parts) if parts else None,  # [N, C*tp*p*p]
            image_grid_thw=torch.tensor(grids, dtype=torch.long) if grids else None,  # [k, 3]
            pixel_values_videos=torch.cat(vparts) if vparts else None,  # [M, C*tp*p*p]
            video_grid_thw=torch.tensor(vgrids, dtype=torch.long) if vgrids else None,  # [m, 3]
            second_per_grid_ts=(torch.tensor(secs, dtype=torch.float32)
                                if vgrids and proc.emits_second_per_grid_ts else None),  # [m]
        )


def extend_sft_example(example: dict[str, Tensor], turns: TurnEncoder, observations: list,
                       targets: list[str]) -> dict[str, Tensor]:
    """An SFT example of a whole episode: ``example`` (the first turn, :func:`encode_sft_example`, ending on
    ``<|im_end|>``) followed by each observation's user turn (no loss) and the next target (loss).

    ``observations[k]`` (:class:`reelrl.envs.base.Observation`) precedes ``targets[k]``; the images'
    patches and grids are added as ``pixel_values`` / ``image_grid_thw``, the clips' after the prompt's video
    in ``pixel_values_videos`` / ``video_grid_thw`` / ``second_per_grid_ts``; the model's forward reads them
    all to build the 3D RoPE positions of the whole conversation.
    """
    proc = turns.processor
    if len(observations) != len(targets):
        raise ValueError(f"{len(observations)} observations for {len(targets)} later targets")
    ids, labels, types = [example["input_ids"]], [example["labels"]], [example["mm_token_type_ids"]]
    pixels, grids = [], []
    videos = {k: [example[k]] for k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts") if k in example}
    for obs, target in zip(observations, targets):
        t = turns.encode(obs.text, obs.images, closed=True, clips=obs.clips)
        user = torch.tensor([t.ids], dtype=torch.long)  # [1, U]
        answer = torch.tensor([proc.tokenizer(target + proc.end_of_turn, add_special_tokens=False)["input_ids"]],
                              dtype=torch.long)  # [1, A]
        ids += [user, answer]
        labels += [torch.full_like(user, IGNORE_INDEX), answer]
        types += [mm_token_type_ids(proc, user), torch.zeros_like(answer)]
        if t.pixel_values is not None:
            pixels.append(t.pixel_values)
            grids.append(t.image_grid_thw)
        for k, v in (("pixel_values_videos", t.pixel_values_videos), ("video_grid_thw", t.video_grid_thw),
                     ("second_per_grid_ts", t.second_per_grid_ts)):
            if v is not None and k in videos:
                videos[k].append(v.to(videos[k][0].dtype))
    out = dict(example)
    out["input_ids"] = torch.cat(ids, dim=1)  # [1, L]
    out["labels"] = torch.cat(labels, dim=1)  # [1, L]
    out["mm_token_type_ids"] = torch.cat(types, dim=1).to(example["mm_token_type_ids"].dtype)  # [1, L]
    out["attention_mask"] = torch.ones_like(out["input_ids"])  # [1, L]
    if pixels:
        first = [example["pixel_values"]] if "pixel_values" in example else []  # the prompt's own images first
        first_grids = [example["image_grid_thw"]] if "image_grid_thw" in example else []
        out["pixel_values"] = torch.cat([*first, *pixels])  # [N, d]
        out["image_grid_thw"] = torch.cat([*first_grids, *grids])  # [k, 3]
    for k, parts in videos.items():
        out[k] = torch.cat(parts)  # the prompt's video then the clips: [M, d] / [1+m, 3] / [1+m]
    return out
