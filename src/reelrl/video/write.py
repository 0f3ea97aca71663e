"""Write videos (H.264 MP4 by default) with PyAV, reproducibly: the same frames give the same file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["X264_PARAMS", "write_video"]


X264_PARAMS = "threads=1:rc-lookahead=0:mbtree=0:b-adapt=0:weightp=0:scenecut=0"
"""x264 options of :func:`write_video`: no lookahead analysis, so the same frames give the same file."""


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int = 18,
    preset: str = "fast",
) -> Path:
    """Encode ``frames`` ``[T, H, W, 3]`` uint8 RGB as a video file (H.264 MP4 by default).

    Pixels are stored as yuv420p, so height and width must be even. With
    ``gop`` the keyframe interval is exactly ``gop`` frames (scene-cut keyframes
    off); ``crf`` (x264/x265/VP9 quality, lower is better; 18 is visually
    lossless) keeps colours close to the input. MP4/MOV files get their index
    at the front (``movflags=+faststart``). Parent folders are created.

    Returns:
        the written path.

    Raises:
        ValueError: bad frames array, odd size, fps <= 0, gop < 1, unknown codec.
    """
    p = Path(path)
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"write_video({p}): frames must be [T>=1, H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"write_video({p}): frames must be uint8, got {arr.dtype}")
    t, h, w, _ = arr.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_video({p}): yuv420p needs even height and width, got {h}x{w}")
    if not fps > 0:
        raise ValueError(f"write_video({p}): fps must be > 0, got {fps}")
    if gop is not None and gop < 1:
        raise ValueError(f"write_video({p}): gop must be >= 1, got {gop}")
    if codec not in av.codecs_available:
        raise ValueError(f"write_video({p}): codec {codec!r} is not available in this FFmpeg build")
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    p.parent.mkdir(parents=True, exist_ok=True)
    container_opts = {"movflags": "+faststart"} if p.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    try:
        container = av.open(str(p), mode="w", options=container_opts)
    except av.FFmpegError as e:
        raise ValueError(f"write_video({p}): cannot create the file ({e.strerror})") from None
    try:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        opts: dict[str, str] = {}
        if codec in ("libx264", "libx265"):
            opts.update(crf=str(crf), preset=preset)
            if codec == "libx264":
                # no lookahead analysis (mb-tree, adaptive B-frames, weighted prediction, scene cuts): it made
                # the output vary from run to run for the same frames (a few gym videos in 8192 per build)
                opts["x264-params"] = X264_PARAMS
            if codec == "libx265":
                opts["x265-params"] = "log-level=error"
        elif codec.startswith("libvpx"):
            opts.update(crf=str(crf), b="0")
        if gop is not None:
            stream.codec_context.gop_size = gop
            opts.update(g=str(gop), keyint_min=str(gop), sc_threshold="0")
        stream.options = opts
        tb = Fraction(1) / rate
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[i]), format="rgb24")  # [H, W, 3]
            frame.pts = i
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        p.unlink(missing_ok=True)  # leave no half-written file behind
        raise
    container.close()
    return p
