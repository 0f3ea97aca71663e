"""Decode sampled video frames with PyAV, and write videos (H.264 MP4).

Decoding cost follows the frames sampled, not the frames in the file:
:func:`decode_frames` seeks to the keyframe before a wanted frame whenever
that keyframe lies ahead of the decoder, and otherwise decodes forward. The
module-level :data:`DECODE_STATS` counts decoded frames and seeks so tests and
benchmarks can check the cost.

Every error about a file is a :class:`VideoError` whose message names the file.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image

from reelrl.video.sample import (
    VideoInfo,
    VideoSampling,
    frame_size,
    sample_indices,
    sampled_fps,
)

__all__ = [
    "DECODE_STATS",
    "DecodeStats",
    "SampledVideo",
    "VideoError",
    "decode_frames",
    "load_video",
    "probe",
    "write_video",
]


class VideoError(ValueError):
    """A video file is missing, not a video, truncated or undecodable; the message names it."""


class DecodeStats:
    """Thread-safe counters of decoding work (module singleton :data:`DECODE_STATS`).

    Attributes:
        frames_decoded: frames the decoder produced (wanted or skipped over).
        seeks: container seeks performed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_decoded = 0
        self.seeks = 0

    def add(self, frames: int = 0, seeks: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self.frames_decoded += frames
            self.seeks += seeks

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.frames_decoded = 0
            self.seeks = 0


DECODE_STATS = DecodeStats()


@dataclass
class SampledVideo:
    """Frames sampled from one video, ready for a processor.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        indices: ``[T]`` int64 frame indices in the file.
        timestamps: ``[T]`` float64 seconds from the stream start (``indices / fps``).
        fps: effective frame rate of the sample (:func:`reelrl.video.sample.sampled_fps`).
        info: what :func:`probe` found.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    info: VideoInfo


# ---------------------------------------------------------------- opening / probing


def _open(path: str | Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    """Open ``path`` and return the container and its first video stream."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: video file not found")
    if not p.is_file():
        raise VideoError(f"{p}: not a file")
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"{p}: not a readable video container ({e.__class__.__name__}: {e.strerror})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: no video stream")
    return container, container.streams.video[0]


def _stream_rate(path: str | Path, stream: av.VideoStream) -> Fraction:
    """Average frame rate of ``stream`` as a fraction (raises when unknown)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    raise VideoError(f"{path}: video stream has no frame rate")


def _start_pts(stream: av.VideoStream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def _probe_open(path: str | Path, container: av.container.InputContainer, stream: av.VideoStream) -> VideoInfo:
    """:func:`probe` on an already opened container."""
    rate = _stream_rate(path, stream)
    tb = stream.time_base
    duration: float | None = None
    if stream.duration is not None and tb is not None and stream.duration > 0:
        duration = float(stream.duration * tb)
    elif container.duration is not None and container.duration > 0:
        duration = container.duration / av.time_base
    num_frames = int(stream.frames or 0)
    if num_frames <= 0 and duration is not None:
        num_frames = int(round(duration * float(rate)))
    if num_frames <= 0:  # no header count and no duration: count packets (demux only, no decode)
        try:
            num_frames = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: cannot read packets ({e.__class__.__name__}: {e.strerror})") from None
        container.seek(0)
    if num_frames <= 0:
        raise VideoError(f"{path}: video stream has no frames")
    if duration is None:
        duration = num_frames / float(rate)
    cc = stream.codec_context
    if not cc.width or not cc.height:
        raise VideoError(f"{path}: video stream has no frame size")
    return VideoInfo(
        path=str(path),
        num_frames=num_frames,
        fps=float(rate),
        duration=duration,
        width=int(cc.width),
        height=int(cc.height),
    )


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps, duration and size of the first video stream of ``path``.

    When the container has no frame count, it is ``round(duration * fps)``;
    with neither, packets are counted (demuxing only).

    Raises:
        VideoError: missing file, not a video container, no video stream.
    """
    container, stream = _open(path)
    try:
        return _probe_open(path, container, stream)
    finally:
        container.close()


# ---------------------------------------------------------------- decoding


class _Keyframes:
    """Where the keyframes are: from the demuxer's index, else learned while decoding.

    Only steers the seek-or-decode-forward choice; correctness never depends on it.
    Matroska loads its index on the first seek, so the index is re-read when it grows.
    """

    def __init__(self, stream: av.VideoStream, rate: Fraction) -> None:
        self._stream = stream
        self._scale = Fraction(stream.time_base) * rate if stream.time_base is not None else None
        self._n_entries = -1
        self._indexed: list[int] = []  # keyframe indices from the demuxer index
        self._seen: list[int] = []  # keyframe indices met while decoding (sorted)
        self._prev_key: int | None = None  # last keyframe met since the last seek
        self._gop = 0  # largest keyframe distance met while decoding forward

    def _refresh(self) -> None:
        try:
            entries = self._stream.index_entries
            n = len(entries)
            if n == self._n_entries:
                return
            stamps = [e.timestamp for e in entries if e.is_keyframe]
        except (AttributeError, av.FFmpegError):  # older PyAV, or no index
            self._n_entries = 0
            return
        self._n_entries = n
        if stamps and self._scale is not None:
            # MP4 index stamps are decode timestamps, shifted from presentation stamps by
            # the B-frame delay; the first keyframe is shown at the stream start.
            self._indexed = sorted({round((ts - stamps[0]) * self._scale) for ts in stamps})

    @property
    def gop(self) -> int:
        """Largest keyframe distance met while decoding forward (0 before two keyframes)."""
        return self._gop

    def seeked(self) -> None:
        """Forget the decoding run (after a seek)."""
        self._prev_key = None

    def observe(self, index: int, is_key: bool) -> None:
        """Record a frame decoded in sequence since the last seek."""
        if not is_key:
            return
        if self._prev_key is not None and index > self._prev_key:
            self._gop = max(self._gop, index - self._prev_key)
        self._prev_key = index
        j = bisect.bisect_left(self._seen, index)
        if j == len(self._seen) or self._seen[j] != index:
            self._seen.insert(j, index)

    def worth_seeking(self, last: int, target: int) -> bool:
        """Whether a keyframe ``k`` with ``last + 1 < k <= target`` exists (or must, given the GOP seen).

        Seeking then lands on ``k`` or later and skips decoding ``last+1 .. k-1``.
        """
        self._refresh()
        known = self._indexed or self._seen
        j = bisect.bisect_right(known, target) - 1  # last known keyframe <= target
        if j >= 0 and known[j] > last + 1:
            return True
        return not self._indexed and self._gop > 0 and target - (last + 1) >= self._gop


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """Decoded frame -> ``[H, W, 3]`` uint8 RGB, resized (PIL bicubic) to ``size=(h, w)``."""
    rgb = frame.to_ndarray(format="rgb24")  # [H0, W0, 3]
    if size is not None and (rgb.shape[0], rgb.shape[1]) != tuple(size):
        h, w = size
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))  # [h, w, 3]
    return rgb


def decode_frames(
    path: str | Path,
    indices: np.ndarray | list[int],
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, duplicates allowed).

    Frames are identified by presentation timestamp:
    ``index = round((pts - start_time) * time_base * fps)``. Wanted indices are
    visited in increasing order; for each one the decoder seeks
    (``container.seek(..., backward=True, stream=stream)``) when the target lies
    behind the decoder or when a keyframe lies after the decoder position and
    at/before the target; otherwise it decodes forward. Keyframes come from the
    demuxer's index (MP4, MKV/WebM); without one (e.g. MPEG-TS) they are learned
    while decoding, and a target at least one observed GOP ahead triggers a seek.
    With an index the cost is at most one GOP per wanted frame.

    Args:
        path: video file.
        indices: ``[T]`` frame indices in ``[0, num_frames)``.
        size: ``(height, width)`` to resize to with PIL bicubic; ``None`` keeps the source size.

    Returns:
        ``[T, H, W, 3]`` uint8 RGB, frame ``t`` being the file's frame ``indices[t]``.

    Raises:
        VideoError: unreadable file, corrupt data, or fewer decodable frames than the container claims.
        ValueError: an index out of range.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # [T]
    container, stream = _open(path)
    try:
        info = _probe_open(path, container, stream)
        if idx.size and (idx.min() < 0 or idx.max() >= info.num_frames):
            raise ValueError(
                f"{path}: frame indices must lie in [0, {info.num_frames}), got min {idx.min()} max {idx.max()}"
            )
        wanted = sorted(set(idx.tolist()))
        got = _decode_sorted(path, container, stream, info, wanted, size)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: undecodable video data ({e.__class__.__name__}: {e.strerror})") from None
    finally:
        container.close()
    if not wanted:
        h, w = size if size is not None else (info.height, info.width)
        return np.zeros((0, h, w, 3), dtype=np.uint8)  # [0, H, W, 3]
    return np.stack([got[i] for i in idx.tolist()])  # [T, H, W, 3]


def _decode_sorted(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    info: VideoInfo,
    wanted: list[int],
    size: tuple[int, int] | None,
) -> dict[int, np.ndarray]:
    """Decode the sorted unique indices ``wanted``; see :func:`decode_frames`."""
    if stream.time_base is None:
        raise VideoError(f"{path}: video stream has no time base")
    rate = _stream_rate(path, stream)
    tb = Fraction(stream.time_base)
    start = _start_pts(stream)
    keyframes = _Keyframes(stream, rate)
    exact_count = bool(stream.frames)
    sequential = False  # set when frames lack timestamps: decode from the start, count frames

    out: dict[int, np.ndarray] = {}
    frames: Iterator[av.VideoFrame] | None = None
    last = -1  # index of the last decoded frame (-1: none since the last seek)
    last_frame: av.VideoFrame | None = None
    highest = -1  # highest frame index decoded so far (for error messages)

    def seek(i: int, to_first_byte: bool = False) -> None:
        """Seek to the keyframe at/before frame ``i`` (or to the file start); the decoder restarts there."""
        nonlocal frames, last, last_frame
        if to_first_byte:  # timestamp seeks of some formats (MPEG-TS) land late; bytes do not
            try:
                container.seek(0, unsupported_byte_offset=True)
            except av.FFmpegError:
                raise VideoError(f"{path}: cannot seek to frame {i}: seeking lands after it") from None
        else:
            container.seek(start + round(Fraction(i) / rate / tb), backward=True, stream=stream)
        DECODE_STATS.add(seeks=1)
        keyframes.seeked()
        frames, last, last_frame = container.decode(stream), -1, None

    def next_frame() -> tuple[av.VideoFrame, int] | None:
        """Decode one frame and return it with its index (``None`` at the end of the stream)."""
        nonlocal sequential, highest
        assert frames is not None
        try:
            frame = next(frames, None)
        except av.FFmpegError as e:
            raise VideoError(
                f"{path}: undecodable video data after frame {highest} of {info.num_frames} "
                f"(truncated or corrupt file? {e.__class__.__name__}: {e.strerror})"
            ) from None
        if frame is None:
            return None
        DECODE_STATS.add(frames=1)
        if frame.pts is not None and not sequential:
            index = round((frame.pts - start) * tb * rate)
            keyframes.observe(index, frame.key_frame)
            highest = max(highest, index)
            return frame, index
        if not sequential:  # no timestamps: restart from frame 0 and count from there on
            sequential = True
            seek(0)
            return next_frame()
        highest = max(highest, last + 1)
        return frame, last + 1

    for target in wanted:
        if last_frame is not None and target == last:
            out[target] = _to_rgb(last_frame, size)
            continue
        if frames is None or (not sequential and (target <= last or keyframes.worth_seeking(last, target))):
            # Seek; if the seek lands after the target (a poor index), back off further.
            back = 0
            while True:
                seek(max(0, target - back), to_first_byte=back < 0)
                got = next_frame()
                if (got is not None and got[1] <= target) or back < 0 or sequential:
                    break
                back = -1 if target - back <= 0 else (max(8, keyframes.gop) if back == 0 else 4 * back)
        else:
            got = next_frame()
        while True:
            if got is None:  # end of stream before the target
                if last_frame is not None and not exact_count and target - last <= 1:
                    out[target] = _to_rgb(last_frame, size)  # estimated frame count off by one
                    break
                raise VideoError(
                    f"{path}: fewer decodable frames than the container claims "
                    f"(wanted frame {target} of {info.num_frames}; the last decodable frame is {highest})"
                )
            frame, cur = got
            if cur > target:
                raise VideoError(f"{path}: frame {target} is missing from the stream (next decodable frame is {cur})")
            last, last_frame = cur, frame
            if cur == target:
                out[target] = _to_rgb(frame, size)
                break
            got = next_frame()
    return out


def load_video(path: str | Path, cfg: VideoSampling) -> SampledVideo:
    """Probe, sample indices, size and decode one video per ``cfg``.

    Returns:
        :class:`SampledVideo` with ``frames`` ``[T, H, W, 3]`` where ``T`` is
        :func:`reelrl.video.sample.num_sampled_frames` and ``(H, W)`` is
        :func:`reelrl.video.sample.frame_size`.
    """
    info = probe(path)
    idx = sample_indices(info, cfg)  # [T]
    size = frame_size(info, cfg, len(idx))
    frames = decode_frames(path, idx, size)  # [T, H, W, 3]
    return SampledVideo(
        frames=frames,
        indices=idx,
        timestamps=idx.astype(np.float64) / info.fps,  # [T]
        fps=sampled_fps(idx, info),
        info=info,
    )


# ---------------------------------------------------------------- writing


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
