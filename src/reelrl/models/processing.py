"""Turn (prompt text, sampled video frames) into model inputs for Qwen-family VLMs.

Why reelrl encodes videos itself
--------------------------------
transformers 5.x implements every Qwen-VL *video* processor on torchvision, and
no CPU build of torchvision can be installed next to the CPU torch wheel here
(PyPI's torchvision wheels link the CUDA libtorch). So ``AutoProcessor`` cannot
load any Qwen-VL processor on a CPU-only box. :class:`ReelProcessor` re-implements
exactly the part of ``Qwen2_5_VLProcessor`` / ``Qwen2VLVideoProcessor`` /
``Qwen3VLProcessor`` that reelrl needs, in plain torch, reading the same
checkpoint files (tokenizer, chat template, ``video_preprocessor_config.json`` or
``preprocessor_config.json``):

1. frames are already sampled (reelrl's sampler picks indices and resizes to
   multiples of ``patch_size * merge_size``): nothing is re-sampled and nothing is
   resized (HF's ``do_sample_frames=False, do_resize=False``); frames that are
   not multiples raise a clear error instead of being silently resized;
2. rescale + normalise with the checkpoint's mean/std (HF's fused
   ``(x - 255*mean) / (255*std)`` in float32), pad the frame count to a multiple
   of ``temporal_patch_size`` by repeating the last frame, and patchify with the
   same permutation as ``Qwen2VLVideoProcessor.patchify``;
3. expand the chat template's single ``<|video_pad|>`` into ``t*h*w / merge**2``
   pads (Qwen2-VL / Qwen2.5-VL), or into per-frame-group
   ``<{t:.1f} seconds><|vision_start|>pads<|vision_end|>`` blocks that replace the
   template's whole ``<|vision_start|><|video_pad|><|vision_end|>`` (Qwen3-VL);
4. ``second_per_grid_ts = temporal_patch_size / fps`` (Qwen2.5-VL only: it
   spaces the temporal M-RoPE ids by ``tokens_per_second * second_per_grid_ts``)
   and ``mm_token_type_ids`` (0 text, 1 image, 2 video), which the 5.x forward
   needs to build 3D RoPE positions (``get_rope_index``).

When transformers' processor *can* load (torchvision present) the outputs are
identical; ``tests/test_models.py`` checks that against the HF processor.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100

#: Families whose video prompt layout this module implements.
#: value: (timestamps-in-text layout, emits second_per_grid_ts)
_LAYOUTS: dict[str, tuple[bool, bool]] = {
    "qwen2_vl": (False, False),
    "qwen2_5_vl": (False, True),
    "qwen3_vl": (True, False),
    "qwen3_vl_moe": (True, False),
}
_PROCESSOR_CLASS = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
}
#: Files of a checkpoint directory that make up its processor (copied verbatim by ``save_pretrained``).
PROCESSOR_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
)
_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VideoSpec:
    """Video patching parameters of a checkpoint (read from its processor config).

    ``min_pixels`` / ``max_pixels`` are the per-frame bounds that reelrl's frame
    sampler should respect; this module itself never resizes.
    """

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = _OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = _OPENAI_CLIP_STD
    rescale_factor: float = 1.0 / 255.0
    do_rescale: bool = True
    do_normalize: bool = True
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 768

    @property
    def factor(self) -> int:
        """Frame heights and widths must be multiples of this (patch_size * merge_size)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "processor config") -> "VideoSpec":
        """Build from an HF (video) preprocessor config dict; missing keys take Qwen2-VL defaults."""
        size = d.get("size") or {}
        kw: dict[str, Any] = {}
        for k in ("patch_size", "temporal_patch_size", "merge_size"):
            if k in d and d[k] is not None:
                if not isinstance(d[k], int):
                    raise ValueError(f"{source}: {k} must be an int, got {d[k]!r}")
                kw[k] = d[k]
        for k in ("image_mean", "image_std"):
            if d.get(k) is not None:
                v = d[k]
                kw[k] = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v, v, v]))
                if len(kw[k]) != 3:
                    raise ValueError(f"{source}: {k} must have 3 entries, got {v!r}")
        for k in ("rescale_factor",):
            if d.get(k) is not None:
                kw[k] = float(d[k])
        for k in ("do_rescale", "do_normalize"):
            if d.get(k) is not None:
                kw[k] = bool(d[k])
        mn = d.get("min_pixels", size.get("shortest_edge", size.get("min_pixels")))
        mx = d.get("max_pixels", size.get("longest_edge", size.get("max_pixels")))
        if mn is not None:
            kw["min_pixels"] = int(mn)
        if mx is not None:
            kw["max_pixels"] = int(mx)
        return cls(**kw)

    def to_hf_dict(self, kind: str, processor_class: str) -> dict[str, Any]:
        """The ``preprocessor_config.json`` / ``video_preprocessor_config.json`` dict HF loads."""
        d: dict[str, Any] = {
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "rescale_factor": self.rescale_factor,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "do_resize": True,
            "do_convert_rgb": True,
            "resample": 3,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "processor_class": processor_class,
        }
        if kind == "image":
            d["image_processor_type"] = "Qwen2VLImageProcessor"
        else:
            d.update(
                video_processor_type="Qwen2VLVideoProcessor",
                do_sample_frames=False,
                cap_pixels_per_frame=False,
            )
        return d


class ReelProcessor:
    """Tokenizer + chat template + video patching of one Qwen-family checkpoint.

    Attributes:
        tokenizer: the transformers tokenizer (``decode`` / ``pad_token_id`` live here).
        chat_template: the jinja chat template string.
        spec: :class:`VideoSpec` of the video processor.
        family: ``model_type`` of the checkpoint ("qwen2_5_vl", ...); picks the
            video prompt layout.
        end_of_turn: token that closes an assistant turn ("<|im_end|>").
    """

    video_token = "<|video_pad|>"
    image_token = "<|image_pad|>"
    vision_start_token = "<|vision_start|>"
    vision_end_token = "<|vision_end|>"

    def __init__(
        self,
        tokenizer: Any,
        chat_template: str,
        spec: VideoSpec,
        family: str,
        end_of_turn: str = "<|im_end|>",
    ) -> None:
        if family not in _LAYOUTS:
            raise ValueError(f"unsupported model family {family!r}; reelrl encodes videos for: {', '.join(_LAYOUTS)}")
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.spec = spec
        self.family = family
        self.end_of_turn = end_of_turn
        self.timestamps_in_text, self.emits_second_per_grid_ts = _LAYOUTS[family]
        vocab = tokenizer.get_vocab()
        for tok in (self.video_token, self.vision_start_token, self.vision_end_token, end_of_turn):
            if tok not in vocab:
                raise ValueError(f"tokenizer of family {family!r} lacks the token {tok!r}")
        self.video_token_id: int = vocab[self.video_token]
        self.image_token_id: int | None = vocab.get(self.image_token)
        self.end_of_turn_id: int = vocab[end_of_turn]
        self.source_dir: Path | None = None  # the checkpoint directory it was read from (save copies its files)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path, family: str | None = None) -> "ReelProcessor":
        """Load from a local checkpoint directory (never touches the network).

        ``family`` defaults to ``model_type`` in ``config.json``. The chat
        template comes from ``chat_template.jinja``, ``chat_template.json`` or the
        tokenizer config; the video spec from ``video_preprocessor_config.json``,
        ``processor_config.json["video_processor"]`` or ``preprocessor_config.json``.
        """
        from transformers import AutoTokenizer

        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"processor directory {root} does not exist")
        if family is None:
            cfg_file = root / "config.json"
            if not cfg_file.is_file():
                raise FileNotFoundError(f"{root} holds no config.json; pass family= explicitly")
            family = json.loads(cfg_file.read_text()).get("model_type")
            if not family:
                raise ValueError(f"{cfg_file}: no model_type field")
        tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
        template = _read_chat_template(root, tokenizer)
        spec = VideoSpec.from_dict(*_read_video_config(root))
        proc = cls(tokenizer, template, spec, family)
        proc.source_dir = root
        return proc

    def save_pretrained(self, out_dir: str | Path) -> list[str]:
        """Write the processor next to a saved model; returns the file names written.

        A processor read from a checkpoint directory is saved as that
        directory's own files, byte for byte (tokenizer, chat template, image /
        video processor configs: :data:`PROCESSOR_FILES`), so the saved model
        is processed exactly as its base, and ``processor_source.json`` says
        where they came from and that nothing was changed. Training never
        changes the processor; only a processor built in memory (no source
        directory) is written from its fields (:func:`write_processor_files`).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        src = self.source_dir
        if src is None:
            write_processor_files(out, self.tokenizer, self.chat_template, self.spec, self.family)
            return sorted(p.name for p in out.iterdir() if p.name in PROCESSOR_FILES)
        copied = []
        for name in PROCESSOR_FILES:
            if (src / name).is_file() and (src / name).resolve() != (out / name).resolve():
                shutil.copyfile(src / name, out / name)
                copied.append(name)
        note = {"copied_from": str(src), "files": copied, "changed": [],
                "note": "processor files copied unchanged from the base checkpoint"}
        (out / "processor_source.json").write_text(json.dumps(note, indent=2) + "\n")
        return copied

    # ---------------------------------------------------------------- text side
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render ``messages`` with the checkpoint's chat template (a string, not token ids)."""
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Decode one sequence of token ids."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids: Sequence[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = True) -> list[str]:
        """Decode a batch of token-id sequences."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)

    # --------------------------------------------------------------- video side
    def video_placeholder(self, grid_thw: tuple[int, int, int], frame_times: Sequence[float]) -> str:
        """The text that replaces one ``<|video_pad|>`` of the chat template."""
        t, h, w = grid_thw
        per_frame = h * w // self.spec.merge_size**2
        if not self.timestamps_in_text:
            return self.video_token * (t * per_frame)
        tp = self.spec.temporal_patch_size
        times = list(frame_times) + [frame_times[-1]] * (-len(frame_times) % tp)
        group_times = [(times[i] + times[i + tp - 1]) / 2 for i in range(0, len(times), tp)]
        return "".join(
            f"<{gt:.1f} seconds>" + self.vision_start_token + self.video_token * per_frame + self.vision_end_token
            for gt in group_times
        )


def _read_chat_template(root: Path, tokenizer: Any) -> str:
    """Chat template from chat_template.jinja / chat_template.json / the tokenizer, in that order."""
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    js = root / "chat_template.json"
    if js.is_file():
        data = json.loads(js.read_text())
        if isinstance(data.get("chat_template"), str):
            return data["chat_template"]
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        return template
    raise FileNotFoundError(f"{root}: no chat template (chat_template.jinja, chat_template.json or tokenizer config)")


def _read_video_config(root: Path) -> tuple[dict[str, Any], str]:
    """The video processor config dict of a checkpoint dir, and the file it came from."""
    f = root / "video_preprocessor_config.json"
    if f.is_file():
        return json.loads(f.read_text()), str(f)
    f = root / "processor_config.json"
    if f.is_file():
        data = json.loads(f.read_text())
        for key in ("video_processor", "image_processor"):
            if isinstance(data.get(key), dict):
                return data[key], f"{f}[{key}]"
    f = root / "preprocessor_config.json"
    if f.is_file():
        return json.loads(f.read_text()), str(f)
    raise FileNotFoundError(
        f"{root}: no video_preprocessor_config.json, processor_config.json or preprocessor_config.json"
    )


def write_processor_files(out_dir: str | Path, tokenizer: Any, chat_template: str, spec: VideoSpec, family: str) -> None:
    """Write the files ``AutoProcessor`` / ``ReelProcessor`` read: tokenizer, template, configs.

    The layout is the one of the Qwen2.5-VL hub checkpoints: tokenizer files,
    ``chat_template.jinja``, ``preprocessor_config.json`` (image processor) and
    ``video_preprocessor_config.json`` (video processor, ``do_sample_frames`` off).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor_class = _PROCESSOR_CLASS.get(family, "Qwen2_5_VLProcessor")
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template)
    for name, kind in (("preprocessor_config.json", "image"), ("video_preprocessor_config.json", "video")):
        (out / name).write_text(json.dumps(spec.to_hf_dict(kind, processor_class), indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------- public API
def build_messages(prompt_text: str, system: str | None = None, images_before: int = 0,
                   images_after: int = 0) -> list[dict[str, Any]]:
    """Chat messages for one video question: [system?] + user turn with ``images_before`` images, the video,
    ``images_after`` images, then the text (PRIMO R1's initial-state image, video, current-state image)."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    content = ([{"type": "image"}] * images_before + [{"type": "video"}] + [{"type": "image"}] * images_after
               + [{"type": "text", "text": prompt_text}])
    messages.append({"role": "user", "content": [dict(c) for c in content]})
    return messages


def _check_frames(frames: np.ndarray, fps: float, spec: VideoSpec) -> None:
    """Raise ``ValueError`` naming the problem when frames / fps are unusable."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array [T, H, W, 3] uint8, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    t, h, w, _ = frames.shape
    if t < 1:
        raise ValueError("frames holds no frame")
    if h % spec.factor or w % spec.factor:
        raise ValueError(
            f"frame size {h}x{w} is not a multiple of {spec.factor} (patch_size*merge_size); "
            "resize frames in the sampler (reelrl never resizes twice)"
        )
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")


def video_grid_thw(spec: VideoSpec, frames_shape: Sequence[int]) -> tuple[int, int, int]:
    """(t, h, w) patch grid of a [T, H, W(, C)] clip (T padded up to the temporal patch)."""
    t, h, w = int(frames_shape[0]), int(frames_shape[1]), int(frames_shape[2])
    if h % spec.factor or w % spec.factor:
        raise ValueError(f"frame size {h}x{w} is not a multiple of {spec.factor}")
    return (-(-t // spec.temporal_patch_size), h // spec.patch_size, w // spec.patch_size)


def video_token_count(processor: ReelProcessor, frames_shape: Sequence[int]) -> int:
    """Number of ``<|video_pad|>`` tokens a clip of shape [T, H, W(, C)] expands to."""
    t, h, w = video_grid_thw(processor.spec, frames_shape)
    return t * h * w // processor.spec.merge_size**2


def patchify_frames(frames: np.ndarray, spec: VideoSpec) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Normalise and patchify frames exactly like ``Qwen2VLVideoProcessor`` (no resize).

    Returns ``pixel_values_videos`` [t*h*w, C*tp*p*p] float32 and the grid (t, h, w).
    """
    p, tp, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32)  # [T, C, H, W]
    if spec.do_normalize:
        scale = 1.0 / spec.rescale_factor if spec.do_rescale else 1.0
        mean = torch.tensor(spec.image_mean, dtype=torch.float32).view(1, 3, 1, 1) * scale  # [1, C, 1, 1]
        std = torch.tensor(spec.image_std, dtype=torch.float32).view(1, 3, 1, 1) * scale  # [1, C, 1, 1]
        x = (x - mean) / std  # [T, C, H, W]
    elif spec.do_rescale:
        x = x * spec.rescale_factor  # [T, C, H, W]
    if pad := -x.shape[0] % tp:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)], dim=0)  # [T', C, H, W], T' % tp == 0
    n_t, c, hh, ww = x.shape
    gt, gh, gw = n_t // tp, hh // p, ww // p
    x = x.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)  # [gt, tp, C, gh/m, m, p, gw/m, m, p]
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # [gt, gh/m, gw/m, m, m, C, tp, p, p]
    return x.reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)  # [N, C*tp*p*p]


def video_slot(processor: ReelProcessor, text: str) -> str:
    """The text of a chat template's video slot that :meth:`ReelProcessor.video_placeholder` replaces."""
    wrapped = processor.vision_start_token + processor.video_token + processor.vision_end_token
    if processor.timestamps_in_text and wrapped in text:
        # Qwen3-VL: every frame group carries its own vision_start/end, so the template's outer pair is
        # replaced with the slot (Qwen3VLProcessor; transformers >= 5.25 and the original Qwen3-VL release)
        return wrapped
    return processor.video_token


def encode_prompt(
    processor: ReelProcessor,
    prompt_text: str,
    frames: np.ndarray,
    fps: float,
    *,
    system: str | None = None,
    frame_times: Sequence[float] | None = None,
    images_before: Sequence[np.ndarray] = (),
    images_after: Sequence[np.ndarray] = (),
) -> dict[str, torch.Tensor]:
    """Encode one (question, clip) pair into model inputs, generation prompt included.

    ``images_before`` / ``images_after``: uint8 ``[H, W, 3]`` images shown before / after the video in the
    same user turn (sizes multiples of ``spec.factor``; never resized), patchified as transformers'
    Qwen2-VL image processor does (:func:`encode_images`); they add ``pixel_values`` and ``image_grid_thw``.

    Args:
        processor: a :class:`ReelProcessor`.
        prompt_text: the user text (question + options + format instruction).
        frames: uint8 [T, H, W, 3], already sampled and resized to multiples of
            ``processor.spec.factor``; they are neither re-sampled nor resized.
        fps: the sampling rate of ``frames`` (frames per second of video time).
        system: optional system message (``None``: the template's default).
        frame_times: seconds of each frame (Qwen3-VL timestamps); default i / fps.

    Returns:
        dict with ``input_ids`` [1, P], ``attention_mask`` [1, P],
        ``mm_token_type_ids`` [1, P], ``pixel_values_videos`` [N, C*tp*p*p],
        ``video_grid_thw`` [1, 3] and, for Qwen2.5-VL, ``second_per_grid_ts`` [1]
        (= temporal_patch_size / fps).
    """
    spec = processor.spec
    _check_frames(frames, fps, spec)
    n_frames = frames.shape[0]
    if frame_times is None:
        frame_times = [i / fps for i in range(n_frames)]
    elif len(frame_times) != n_frames:
        raise ValueError(f"frame_times has {len(frame_times)} entries for {n_frames} frames")
    pixel_values, grid = patchify_frames(frames, spec)  # [N, C*tp*p*p]

    images = [*images_before, *images_after]
    messages = build_messages(prompt_text, system, len(images_before), len(images_after))
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    n_slots = text.count(processor.video_token)
    if n_slots != 1:
        raise ValueError(f"chat template produced {n_slots} {processor.video_token} slots for one video")
    text = text.replace(video_slot(processor, text), processor.video_placeholder(grid, frame_times))
    image_pixels, image_grids = encode_images(processor, images)  # [N_img, C*tp*p*p], [k, 3]
    if images:
        text = expand_image_slots(processor, text, image_grids.tolist())
    ids = torch.tensor([processor.tokenizer(text)["input_ids"]], dtype=torch.long)  # [1, P]
    n_video = int((ids == processor.video_token_id).sum())
    expected = grid[0] * grid[1] * grid[2] // spec.merge_size**2
    if n_video != expected:
        raise RuntimeError(f"tokenizer produced {n_video} video tokens, expected {expected}")
    if images and int((ids == processor.image_token_id).sum()) != int(image_pixels.shape[0]) // spec.merge_size**2:
        raise RuntimeError("tokenizer produced another number of image tokens than the images' patches need")

    out: dict[str, torch.Tensor] = {
        "input_ids": ids,  # [1, P]
        "attention_mask": torch.ones_like(ids),  # [1, P]
        "mm_token_type_ids": mm_token_type_ids(processor, ids),  # [1, P]
        "pixel_values_videos": pixel_values,  # [N, C*tp*p*p]
        "video_grid_thw": torch.tensor([grid], dtype=torch.long),  # [1, 3]
    }
    if processor.emits_second_per_grid_ts:
        out["second_per_grid_ts"] = torch.tensor([spec.temporal_patch_size / fps], dtype=torch.float32)  # [1]
    if images:
        out["pixel_values"] = image_pixels  # [N_img, C*tp*p*p]
        out["image_grid_thw"] = image_grids  # [k, 3]
    return out


def encode_image_chat(processor: ReelProcessor, messages: list[dict[str, Any]],
                      images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Encode a chat whose visual inputs are images only (no video), generation prompt included.

    ``messages``: chat messages whose content parts hold one ``{"type": "image"}`` per entry of ``images``,
    in order (e.g. :func:`reelrl.data.progress_prompt.progress_messages`, the served progress
    conversation); ``images``: uint8 ``[H, W, 3]`` arrays, sides multiples of ``spec.factor`` (never
    resized), patchified as :func:`encode_images`. Returns ``input_ids`` [1, P], ``attention_mask``
    [1, P], ``mm_token_type_ids`` [1, P], ``pixel_values`` [N, C*tp*p*p] and ``image_grid_thw`` [k, 3].
    """
    if not images:
        raise ValueError("encode_image_chat: a chat without a video needs at least one image")
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    if processor.video_token in text:
        raise ValueError(f"encode_image_chat: the messages hold a video slot ({processor.video_token}); "
                         "use encode_prompt for a video prompt")
    image_pixels, image_grids = encode_images(processor, images)  # [N, C*tp*p*p], [k, 3]
    text = expand_image_slots(processor, text, image_grids.tolist())
    ids = torch.tensor([processor.tokenizer(text)["input_ids"]], dtype=torch.long)  # [1, P]
    if int((ids == processor.image_token_id).sum()) != int(image_pixels.shape[0]) // processor.spec.merge_size**2:
        raise RuntimeError("tokenizer produced another number of image tokens than the images' patches need")
    return {
        "input_ids": ids,  # [1, P]
        "attention_mask": torch.ones_like(ids),  # [1, P]
        "mm_token_type_ids": mm_token_type_ids(processor, ids),  # [1, P]
        "pixel_values": image_pixels,  # [N, C*tp*p*p]
        "image_grid_thw": image_grids,  # [k, 3]
    }


def encode_images(processor: ReelProcessor, images: Sequence[np.ndarray]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Patchify still images as transformers' Qwen2-VL image processor does for an image already at a multiple
    of ``patch * merge`` (the image repeated ``temporal_patch_size`` times): ``pixel_values [N, C*tp*p*p]`` of
    all images in order and ``image_grid_thw [k, 3]`` (one ``(1, h, w)`` per image); ``(None, None)`` for none."""
    if not images:
        return None, None
    if processor.image_token_id is None:
        raise ValueError(f"the tokenizer of this {processor.family} checkpoint has no {processor.image_token!r} token")
    parts, grids = [], []
    for k, img in enumerate(images):
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8):
            raise ValueError(f"image {k} must be a [H, W, 3] uint8 array, got {getattr(img, 'shape', type(img))} "
                             f"{getattr(img, 'dtype', '')}")
        if img.shape[0] % processor.spec.factor or img.shape[1] % processor.spec.factor:
            raise ValueError(f"image {k} of {img.shape[0]}x{img.shape[1]} is not a multiple of "
                             f"{processor.spec.factor} (patch_size*merge_size); images are never resized here")
        pv, grid = patchify_frames(img[None], processor.spec)  # [h*w, C*tp*p*p], (1, h, w)
        parts.append(pv)
        grids.append(grid)
    return torch.cat(parts), torch.tensor(grids, dtype=torch.long)  # [N, C*tp*p*p], [k, 3]


def expand_image_slots(processor: ReelProcessor, text: str, grids: list[list[int]]) -> str:
    """Replace the template's k ``<|image_pad|>`` slots, in order, by ``t*h*w / merge**2`` pads each."""
    pieces = text.split(processor.image_token)
    if len(pieces) - 1 != len(grids):
        raise ValueError(f"the chat template wrote {len(pieces) - 1} image slots for {len(grids)} images")
    out = pieces[0]
    for piece, (t, h, w) in zip(pieces[1:], grids):
        out += processor.image_token * (t * h * w // processor.spec.merge_size**2) + piece
    return out


def mm_token_type_ids(processor: ReelProcessor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token modality ids (0 text, 1 image, 2 video), same shape as ``input_ids``."""
    types = torch.zeros_like(input_ids)  # [B, L]
    if processor.image_token_id is not None:
        types[input_ids == processor.image_token_id] = 1
    types[input_ids == processor.video_token_id] = 2
    return types  # [B, L]


def encode_sft_example(
    processor: ReelProcessor,
    prompt_text: str,
    frames: np.ndarray,
    fps: float,
    target_text: str,
    *,
    system: str | None = None,
    images_before: Sequence[np.ndarray] = (),
    images_after: Sequence[np.ndarray] = (),
) -> dict[str, torch.Tensor]:
    """Encode prompt + assistant answer for supervised fine-tuning (images as in :func:`encode_prompt`).

    The assistant tokens are ``tokenize(target_text + end_of_turn)`` appended to
    the prompt ids at the token level (exactly what a rollout would produce), so
    the prompt/answer boundary never depends on BPE merges across it.

    Returns the :func:`encode_prompt` dict over the full sequence (length L) plus
    ``labels`` [1, L]: the token id on assistant tokens (target and the closing
    ``<|im_end|>``), ``-100`` on every prompt token.
    """
    enc = encode_prompt(processor, prompt_text, frames, fps, system=system, images_before=images_before,
                        images_after=images_after)
    return append_target(processor, enc, target_text)


def append_target(processor: ReelProcessor, enc: dict[str, torch.Tensor], target_text: str) -> dict[str, torch.Tensor]:
    """An encoded prompt (:func:`encode_prompt`, :func:`encode_image_chat`) plus the assistant answer: the SFT
    example of :func:`encode_sft_example` (``labels`` [1, L] on the answer tokens and ``<|im_end|>`` only)."""
    target = processor.tokenizer(target_text + processor.end_of_turn, add_special_tokens=False)["input_ids"]
    tgt = torch.tensor([target], dtype=torch.long)  # [1, A]
    prompt_len = enc["input_ids"].shape[1]
    ids = torch.cat([enc["input_ids"], tgt], dim=1)  # [1, L]
    labels = torch.cat([torch.full_like(enc["input_ids"], IGNORE_INDEX), tgt], dim=1)  # [1, L]
    out = dict(enc)
    out["input_ids"] = ids  # [1, L]
    out["attention_mask"] = torch.ones_like(ids)  # [1, L]
    out["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(tgt)], dim=1)  # [1, L]
    out["labels"] = labels  # [1, L]
    assert labels.shape[1] == prompt_len + tgt.shape[1]
    return out


__all__ = [
    "IGNORE_INDEX",
    "PROCESSOR_FILES",
    "ReelProcessor",
    "VideoSpec",
    "append_target",
    "build_messages",
    "encode_image_chat",
    "video_slot",
    "encode_images",
    "encode_prompt",
    "encode_sft_example",
    "expand_image_slots",
    "mm_token_type_ids",
    "patchify_frames",
    "video_grid_thw",
    "video_token_count",
    "write_processor_files",
]
