"""The extra images of a row's prompt (``VideoRow.images``), read and sized for the processor.

PRIMO R1 anchors the video between an initial-state image and a current-state
image. A row names such images in ``images``: a frame of its own video
(``frame``, negative counting from the end) or an image file (``path``).

Sizes: a frame of the video is decoded at the size of the video's sampled
frames (``[H, W]`` of :attr:`SampledVideo.frames`, the same PIL bicubic resize),
so it costs the tokens of one video frame group; an image file keeps its aspect
ratio and is resized (Qwen's :func:`~reelrl.video.sample.smart_resize`, sides
multiples of ``factor``) to at most ``H * W`` pixels. Images are returned in
prompt order, split into those before and after the video.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from reelrl.data.schema import DataError, ImageRef, VideoRow
from reelrl.video.decode import SampledVideo, VideoError, decode_frames
from reelrl.video.sample import smart_resize

__all__ = ["frame_index", "row_images"]


def frame_index(ref: ImageRef, num_frames: int, where: str) -> int:
    """The file frame index of ``ref.frame`` (negative: from the end); DataError naming ``where`` when out of range."""
    assert ref.frame is not None
    idx = ref.frame if ref.frame >= 0 else num_frames + ref.frame
    if not 0 <= idx < num_frames:
        raise DataError(f"{where}.frame: frame {ref.frame} lies outside the video's {num_frames} frames")
    return idx


def _read_file(path: str, size_cap: int, factor: int, where: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise VideoError(f"{where}.path: unreadable image {path} ({e})") from None
    h, w = smart_resize(rgb.height, rgb.width, factor, min_pixels=factor * factor, max_pixels=max(size_cap, factor**2))
    if (rgb.height, rgb.width) != (h, w):
        rgb = rgb.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)  # [h, w, 3]


def row_images(row: VideoRow, video: SampledVideo, factor: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(before, after)``: the row's images as uint8 ``[H, W, 3]`` arrays, in prompt order (module docstring).

    Raises DataError (a frame index out of range) or VideoError (an unreadable image), naming the row and
    the field ``images[i]``.
    """
    if not row.images:
        return [], []
    h, w = int(video.frames.shape[1]), int(video.frames.shape[2])
    out: dict[int, np.ndarray] = {}
    frames = {i: frame_index(im, video.info.num_frames, f"row {row.id}: field images[{i}]")
              for i, im in enumerate(row.images) if im.frame is not None}
    if frames:
        try:
            got = decode_frames(row.video, list(frames.values()), size=(h, w))  # [k, H, W, 3]
        except VideoError as e:
            raise VideoError(f"row {row.id}: field images: {e}") from None
        out.update({i: got[k] for k, i in enumerate(frames)})
    for i, im in enumerate(row.images):
        if im.path is not None:
            out[i] = _read_file(im.path, h * w, factor, f"row {row.id}: field images[{i}]")
    before = [out[i] for i, im in enumerate(row.images) if im.position == "before"]
    after = [out[i] for i, im in enumerate(row.images) if im.position == "after"]
    return before, after
