"""Frame sampling and frame sizing for video-language models (pure, no I/O).

The rules follow ``qwen-vl-utils`` ``vision_process.py`` (``smart_nframes``,
``smart_resize`` and the pixel budget of ``fetch_video``; versions 0.0.11 to
0.0.14, which agree on every rule below for Qwen2.5-VL's factor 28) so that a
model post-trained with reelrl sees videos exactly as it saw them in
pre-training:

* how many frames: :func:`num_sampled_frames` (``smart_nframes``)
* which frames: :func:`sample_indices` (``torch.linspace(0, n - 1, k).round()``);
  for a variable-frame-rate stream, :func:`sample_times` (uniform over its timeline)
* what size: :func:`smart_resize` and :func:`frame_size`, with the per-frame
  cap of :func:`frame_max_pixels` (``fetch_video``'s ``total_pixels`` budget,
  applied by default as there)
* the effective frame rate of the sample: :func:`sampled_fps` (for a
  variable-frame-rate stream :func:`timestamps_fps`), from which the temporal
  RoPE input is ``second_per_grid_ts = frame_factor / sampled_fps``.

Intended differences from qwen-vl-utils:

* Robustness, changing no case qwen-vl-utils accepts: qwen-vl-utils raises
  when the frame count ends below ``frame_factor`` (a 1-frame video) or when
  ``nframes`` exceeds the frames in the file; here the count is raised to
  ``frame_factor`` and the uniform sample then repeats frames (duplicate
  indices), which is what the Qwen processor does to pad the temporal patch
  anyway. ``smart_resize`` keeps each side at least ``factor`` in its
  downscaling branch (as 0.0.11; 0.0.14 dropped that guard).
* ``fps`` and ``nframes`` may both be set; ``nframes`` wins (qwen-vl-utils
  asserts that only one is given).
* The default ``total_pixels`` (``auto``) is qwen-vl-utils' ``int(128000 *
  factor**2 * 0.9)`` as a recipe field; the environment variables
  qwen-vl-utils reads to change it (``VIDEO_MAX_PIXELS`` in 0.0.11,
  ``MODEL_SEQ_LEN`` in 0.0.14) are not read, so that the resolved sampling
  written into each stage directory (``video_sampling.json``) says what was
  used. ``total_pixels: null`` turns the budget off (not possible there).
* An explicit ``max_pixels`` above ``768 * factor**2`` is honoured (the budget
  still caps it); qwen-vl-utils clamps it to ``768 * factor**2`` with a
  warning. At or below that constant the two rules give the same cap.
* The checkpoint decides the factors: ``size_factor`` (patch size x spatial
  merge: 28 for Qwen2-VL / Qwen2.5-VL, 32 for Qwen3-VL) and ``frame_factor``
  (the temporal patch) default to ``None``, filled in from the checkpoint's
  processor by :meth:`VideoSampling.resolve`; a value the checkpoint cannot
  use is an error there. The pixel defaults are qwen-vl-utils 0.0.14's for
  that factor (``fetch_video(image_patch_size=...)``): ``min_pixels = 128 *
  factor**2``, ``max_pixels = 768 * factor**2`` and ``total_pixels =
  128000 * factor**2 * 0.9`` (for factor 28 the 0.0.11 constants). A
  :class:`VideoSampling` that was never resolved uses Qwen2.5-VL's factors.
* An explicit ``resized_height``/``resized_width`` is only rounded to
  ``size_factor``; qwen-vl-utils also passes it through ``smart_resize`` with
  its image bounds (4 * 28 * 28 .. 16384 * 28 * 28 pixels), which changes
  only sizes whose rounded area is below 56 * 56 or above 3584 * 3584.
* ``video_start`` / ``video_end`` clipping is not supported: the whole file
  is sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ASPECT_RATIO = 200
"""Largest long/short side ratio :func:`smart_resize` accepts (as Qwen)."""

VIDEO_MIN_TOKENS = 128
"""qwen-vl-utils' ``VIDEO_MIN_TOKEN_NUM``: the per-frame floor is this many ``factor x factor`` patches."""

VIDEO_MAX_TOKENS = 768
"""qwen-vl-utils' ``VIDEO_MAX_TOKEN_NUM``: the per-frame cap is this many ``factor x factor`` patches."""

MODEL_SEQ_LEN = 128000
"""qwen-vl-utils' ``MODEL_SEQ_LEN``: the pixel budget is ``0.9 *`` this many ``factor x factor`` patches."""

VIDEO_MIN_PIXELS = 128 * 28 * 28
"""qwen-vl-utils' default fewest pixels per video frame (100352)."""

VIDEO_MAX_PIXELS = 768 * 28 * 28
"""qwen-vl-utils' default most pixels per video frame (602112)."""

VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
"""qwen-vl-utils' default pixel budget over all frames of a video (90316800).

That is 128000 tokens' worth of 28 x 28 patches, times 0.9: the budget counts
pixels per temporal patch of ``frame_factor`` frames, so a video stays within
90316800 / 784 = 115200 visual tokens -- unless the per-frame floor
``int(min_pixels * 1.05)`` binds, past ~1714 frames with the defaults.
"""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`reelrl.video.decode.probe` learns about a video file.

    Attributes:
        path: the file.
        num_frames: frames in the video stream (from the container, or
            ``duration * fps`` when the container does not say).
        fps: average frame rate of the stream (frames per second); for a
            variable-rate stream ``num_frames / duration``.
        duration: stream duration in seconds.
        width: width in pixels of the frames as displayed (after ``rotation``).
        height: height in pixels of the frames as displayed (after ``rotation``).
        rotation: counter-clockwise degrees (0, 90, 180, 270) the stored frames
            are turned for display (display matrix or ``rotate`` tag).
        variable_rate: frames are not on a constant-rate grid; they are sampled
            by time (:func:`sample_times`) instead of by index.
        last_time: seconds from the stream start to the last frame of a
            variable-rate stream (``None`` otherwise: ``(num_frames - 1) / fps``).
    """

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int = 0
    variable_rate: bool = False
    last_time: float | None = None


class VideoSampling(BaseModel):
    """How frames are picked from a video and how large they are.

    Defaults are those of qwen-vl-utils for Qwen2.5-VL videos, the
    ``total_pixels`` budget included (see the module docstring for the
    differences).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fps: float | None = Field(
        default=2.0,
        gt=0,
        description="Frames sampled per second of video (ignored when `nframes` is set).",
    )
    nframes: int | None = Field(
        default=None,
        ge=1,
        description="Fixed number of frames per video (rounded to `frame_factor`); wins over `fps`.",
    )
    min_frames: int = Field(default=4, ge=1, description="Fewest frames in fps mode.")
    max_frames: int = Field(default=768, ge=1, description="Most frames in fps mode.")
    frame_factor: int | None = Field(
        default=None,
        ge=1,
        description="Frame counts are multiples of this; null = the checkpoint's temporal_patch_size (2 for Qwen).",
    )
    min_pixels: int | None = Field(
        default=None, ge=1, description="Fewest pixels per frame; null = qwen-vl-utils' 128 * size_factor**2."
    )
    max_pixels: int | None = Field(
        default=None, ge=1, description="Most pixels per frame; null = qwen-vl-utils' 768 * size_factor**2."
    )
    total_pixels: int | Literal["auto"] | None = Field(
        default="auto",
        description=(
            "Pixel budget over all frames; auto = qwen-vl-utils' int(128000 * size_factor**2 * 0.9) "
            "(90316800 for factor 28): per-frame max_pixels becomes min(max_pixels, max(min(max_pixels, "
            "total_pixels / nframes * frame_factor), int(min_pixels * 1.05))). null: no budget, max_pixels alone."
        ),
    )
    size_factor: int | None = Field(
        default=None,
        ge=1,
        description="Frame height and width are multiples of this; null = the checkpoint's patch_size x "
        "merge_size (28 Qwen2/2.5-VL, 32 Qwen3-VL). A value that is not a multiple of it is an error at load.",
    )
    resized_height: int | None = Field(
        default=None, ge=1, description="Explicit frame height (rounded to `size_factor`); needs `resized_width`."
    )
    resized_width: int | None = Field(
        default=None, ge=1, description="Explicit frame width (rounded to `size_factor`); needs `resized_height`."
    )

    @model_validator(mode="after")
    def _check_fields(self) -> "VideoSampling":
        if self.fps is None and self.nframes is None:
            raise ValueError("VideoSampling: set `fps` or `nframes` (both are None)")
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"VideoSampling: min_frames ({self.min_frames}) must be <= max_frames ({self.max_frames})"
            )
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(
                f"VideoSampling: min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})"
            )
        if isinstance(self.total_pixels, int) and self.total_pixels < 1:
            raise ValueError(f"VideoSampling: total_pixels must be >= 1, 'auto' or null, got {self.total_pixels}")
        if (self.resized_height is None) != (self.resized_width is None):
            raise ValueError(
                "VideoSampling: set both `resized_height` and `resized_width` or neither "
                f"(got resized_height={self.resized_height}, resized_width={self.resized_width})"
            )
        return self

    @property
    def resolved(self) -> bool:
        """Every factor and pixel bound is a number (see :meth:`resolve`)."""
        return None not in (self.size_factor, self.frame_factor, self.min_pixels, self.max_pixels) and (
            self.total_pixels != "auto"
        )

    def resolve(
        self, patch_factor: int | None = None, temporal_patch: int | None = None, source: str = "the checkpoint"
    ) -> "VideoSampling":
        """A copy with every ``None`` / ``auto`` filled in for a checkpoint.

        Args:
            patch_factor: the checkpoint's ``patch_size * merge_size`` (frame sides must be
                multiples); ``None``: no checkpoint, Qwen2.5-VL's 28 and no check.
            temporal_patch: its ``temporal_patch_size`` (frame counts are padded to
                multiples); ``None``: 2 and no check.
            source: names the checkpoint in errors.

        Raises:
            ValueError: naming the ``video.`` field when a set ``size_factor`` is
                not a multiple of ``patch_factor`` or a set ``frame_factor`` not
                a multiple of ``temporal_patch`` (the frames could not be patched:
                a configuration error, never a per-video skip).
        """
        sf, ff = self.size_factor, self.frame_factor
        if sf is not None and patch_factor is not None and sf % patch_factor:
            raise ValueError(
                f"video.size_factor={sf} does not fit {source}: its frames need sides that are multiples of "
                f"{patch_factor} (patch_size x merge_size); remove the override (null takes the checkpoint's)"
            )
        if ff is not None and temporal_patch is not None and ff % temporal_patch:
            raise ValueError(
                f"video.frame_factor={ff} does not fit {source}: its temporal patch is {temporal_patch} frames; "
                "remove the override (null takes the checkpoint's)"
            )
        sf = (patch_factor or 28) if sf is None else sf
        ff = (temporal_patch or 2) if ff is None else ff
        mn = VIDEO_MIN_TOKENS * sf * sf if self.min_pixels is None else self.min_pixels
        mx = VIDEO_MAX_TOKENS * sf * sf if self.max_pixels is None else self.max_pixels
        if mn > mx:
            raise ValueError(f"video: min_pixels ({mn}) must be <= max_pixels ({mx}) for {source}")
        total = int(MODEL_SEQ_LEN * sf * sf * 0.9) if self.total_pixels == "auto" else self.total_pixels
        return self.model_copy(
            update=dict(size_factor=sf, frame_factor=ff, min_pixels=mn, max_pixels=mx, total_pixels=total)
        )


def _eff(cfg: VideoSampling) -> VideoSampling:
    """``cfg`` with its numbers filled in (Qwen2.5-VL's factors when never resolved)."""
    return cfg if cfg.resolved else cfg.resolve()


def round_by_factor(number: float, factor: int) -> int:
    """Closest multiple of ``factor`` (Python ``round``: halves go to even, as Qwen)."""
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    """Smallest multiple of ``factor`` that is >= ``number``."""
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    """Largest multiple of ``factor`` that is <= ``number``."""
    return math.floor(number / factor) * factor


def num_sampled_frames(info: VideoInfo, cfg: VideoSampling) -> int:
    """How many frames :func:`sample_indices` picks (qwen-vl-utils ``smart_nframes``).

    With ``n = info.num_frames`` and ``f = cfg.frame_factor``:

    * nframes mode: ``round_by_factor(cfg.nframes, f)``;
    * fps mode: ``x = n / info.fps * cfg.fps``, clamped to
      ``[ceil_by_factor(min_frames, f), floor_by_factor(min(max_frames, n), f)]``
      and to ``n``, then ``floor_by_factor(x, f)``;
    * either way at least ``f`` (see the module docstring).
    """
    total = info.num_frames
    if total < 1:
        raise ValueError(f"{info.path}: video has no frames (num_frames={total})")
    cfg = _eff(cfg)
    f = cfg.frame_factor
    if cfg.nframes is not None:
        n = round_by_factor(cfg.nframes, f)
    else:
        assert cfg.fps is not None  # guaranteed by the validator
        if info.fps <= 0:
            raise ValueError(f"{info.path}: video fps must be > 0 for fps sampling, got {info.fps}")
        lo = ceil_by_factor(cfg.min_frames, f)
        hi = floor_by_factor(min(cfg.max_frames, total), f)
        x = total / info.fps * cfg.fps
        x = min(max(x, lo), hi, total)
        n = floor_by_factor(x, f)
    return max(n, f)


def sample_indices(info: VideoInfo, cfg: VideoSampling) -> np.ndarray:
    """Indices of the frames to decode, uniform over the whole video (Qwen convention).

    ``n = num_sampled_frames(info, cfg)`` (see there for the exact count rule), then
    qwen-vl-utils' ``torch.linspace(0, info.num_frames - 1, n).round().long()``,
    computed with torch as there: the linspace is float32 and ``round`` sends
    halves to even. A float64 linspace would differ by one frame at some
    indices of videos longer than ~33k frames (33597 frames, n = 256: index 253
    is 33332.50196 in float64, exactly 33332.5 in float32, so 33333 vs 33332).
    The first and last frames are always included; indices repeat when
    ``n > info.num_frames``.

    Returns:
        int64 array of shape ``[n]``, non-decreasing, within ``[0, num_frames)``.
    """
    n = num_sampled_frames(info, cfg)
    idx = torch.linspace(0, info.num_frames - 1, n).round().long()  # [n] float32 linspace, as qwen-vl-utils
    return idx.numpy().astype(np.int64)  # [n]


def sample_times(info: VideoInfo, cfg: VideoSampling) -> np.ndarray:
    """Seconds (from the stream start) at which a variable-rate stream is sampled.

    ``n = num_sampled_frames(info, cfg)`` times, uniform from the first frame to
    the last: ``linspace(0, last_time, n)``. The decoder picks, for each time,
    the frame shown then (the last frame whose timestamp is <= the time), so
    the first and the last frames are always included, as with
    :func:`sample_indices`.

    Returns:
        float64 array of shape ``[n]``, non-decreasing.
    """
    n = num_sampled_frames(info, cfg)
    last = info.last_time if info.last_time is not None else (info.num_frames - 1) / info.fps
    return np.linspace(0.0, max(0.0, last), n)  # [n]


def timestamps_fps(timestamps: np.ndarray, info: VideoInfo) -> float:
    """Frame rate of a sample from its real timestamps: one over their mean spacing.

    ``(T - 1) / (timestamps[-1] - timestamps[0])`` for the ``[T]`` sorted
    timestamps of the frames picked; with fewer than two distinct times (a
    one-frame video) it falls back to :func:`sampled_fps`.
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)  # [T]
    span = float(ts[-1] - ts[0]) if ts.size >= 2 else 0.0
    if span > 0:
        return (ts.size - 1) / span
    return sampled_fps(ts, info)


def sampled_fps(indices: np.ndarray, info: VideoInfo) -> float:
    """Effective frame rate of a uniform sample: ``len(indices) / num_frames * fps``.

    This is qwen-vl-utils' ``sample_fps``; the temporal RoPE input of Qwen2.5-VL
    is ``second_per_grid_ts = frame_factor / sampled_fps``.
    """
    if info.num_frames < 1:
        raise ValueError(f"{info.path}: video has no frames")
    return len(indices) / info.num_frames * info.fps


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: float = 128 * 28 * 28,
    max_pixels: float = 768 * 28 * 28,
) -> tuple[int, int]:
    """Qwen's resize rule: sides multiples of ``factor``, aspect kept, area in bounds.

    The steps are qwen-vl-utils' ``smart_resize``; its default bounds are the
    IMAGE ones (``4 * factor**2`` .. ``16384 * factor**2``), these defaults
    are the per-frame VIDEO ones of ``fetch_video`` (reelrl calls it for video
    frames; image callers pass their bounds).

    1. ``h, w = max(factor, round_by_factor(height)), max(factor, round_by_factor(width))``.
    2. If ``h * w > max_pixels``: ``beta = sqrt(height * width / max_pixels)`` and
       ``h, w = floor_by_factor(height / beta), floor_by_factor(width / beta)`` (at least ``factor``).
    3. Elif ``h * w < min_pixels``: ``beta = sqrt(min_pixels / (height * width))`` and
       ``h, w = ceil_by_factor(height * beta), ceil_by_factor(width * beta)``.

    Returns:
        ``(h, w)``.

    Raises:
        ValueError: non-positive sides or an aspect ratio above :data:`MAX_ASPECT_RATIO`.
    """
    if height < 1 or width < 1:
        raise ValueError(f"smart_resize: height and width must be >= 1, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"smart_resize: aspect ratio must be <= {MAX_ASPECT_RATIO}, got {height}x{width}"
        )
    h = max(factor, round_by_factor(height, factor))
    w = max(factor, round_by_factor(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, floor_by_factor(height / beta, factor))
        w = max(factor, floor_by_factor(width / beta, factor))
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = ceil_by_factor(height * beta, factor)
        w = ceil_by_factor(width * beta, factor)
    return h, w


def frame_max_pixels(cfg: VideoSampling, nframes: int) -> float:
    """Per-frame pixel cap after the ``total_pixels`` budget (qwen-vl-utils ``fetch_video``).

    With ``total_pixels`` (by default :data:`VIDEO_TOTAL_PIXELS`) it is
    ``min(max_pixels, max(min(max_pixels, total_pixels / nframes * frame_factor),
    int(min_pixels * 1.05)))`` -- the budget is per temporal patch of
    ``frame_factor`` frames, and never pushes a frame below ~``min_pixels``.
    The value is NOT truncated to an integer: qwen-vl-utils hands the float
    budget to ``smart_resize``, whose ``beta = sqrt(h * w / max_pixels)``
    sees the fraction. Truncating would change sizes: 1080x1920 at 324 frames
    has the budget 90316800 / 324 * 2 = 557511.11 = 2073600 * (14/27)**2, so
    ``1080 / beta`` is exactly 560 (kept: 560 x 980), while 557511 gives
    559.9999 and 532 x 980.
    qwen-vl-utils computes ``max(min(VIDEO_MAX_PIXELS, budget), int(min_pixels
    * 1.05))`` and then takes the min with a given ``max_pixels``: the same
    value whenever ``max_pixels <= VIDEO_MAX_PIXELS`` (see the module
    docstring for larger ones). With ``total_pixels=None`` it is ``max_pixels``.

    With the defaults the cap drops below ``max_pixels`` once ``nframes > 300``
    (``90316800 / 300 * 2 = 602112``): a 1080p video of 600 sampled frames
    gets 392 x 728 frames (109200 visual tokens) instead of 560 x 1008 (216000
    tokens, past Qwen2.5-VL's 128k context). Short samples are unchanged.
    """
    cfg = _eff(cfg)
    if cfg.total_pixels is None:
        return cfg.max_pixels
    if nframes < 1:
        raise ValueError(f"frame_max_pixels: nframes must be >= 1, got {nframes}")
    budget = cfg.total_pixels / nframes * cfg.frame_factor  # float, as qwen-vl-utils
    px = max(min(cfg.max_pixels, budget), int(cfg.min_pixels * 1.05))
    return min(cfg.max_pixels, px)


def frame_size(info: VideoInfo, cfg: VideoSampling, nframes: int) -> tuple[int, int]:
    """``(height, width)`` every sampled frame is resized to.

    An explicit ``resized_height``/``resized_width`` is only rounded to
    ``size_factor`` (at least one factor per side). Otherwise the source size
    goes through :func:`smart_resize` with ``cfg.min_pixels`` and the cap of
    :func:`frame_max_pixels` for ``nframes`` frames.
    """
    cfg = _eff(cfg)
    f = cfg.size_factor
    if cfg.resized_height is not None and cfg.resized_width is not None:
        return max(f, round_by_factor(cfg.resized_height, f)), max(f, round_by_factor(cfg.resized_width, f))
    return smart_resize(info.height, info.width, f, cfg.min_pixels, frame_max_pixels(cfg, nframes))
