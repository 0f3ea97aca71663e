"""Decode sampled video frames with PyAV.

Decoding cost follows the frames sampled, not the frames in the file:
:func:`decode_frames` seeks to the keyframe before a wanted frame whenever
that keyframe lies ahead of the decoder, and otherwise decodes forward. The
module-level :data:`DECODE_STATS` counts decoded frames and seeks so tests and
benchmarks can check the cost.

Frames come out upright: the display matrix (or ``rotate`` tag) of the stream
is applied (:class:`reelrl.video.probe.Orientation`). A constant-rate stream is
sampled by frame index (:func:`decode_frames`); a variable-rate one (phones,
screen recordings) by time (:func:`decode_times`), each time giving the frame
shown then. :func:`load_video` picks the way from :func:`probe`, and falls back
to times when an index-sampled stream turns out to have frames off its grid.

Every error about a file is a :class:`VideoError` whose message names the file.
Probing lives in :mod:`reelrl.video.probe`, writing in :mod:`reelrl.video.write`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from reelrl.video.probe import (
    DECODE_STATS,
    DecodeStats,
    Keyframes,
    Orientation,
    VideoError,
    frame_orientation,
    open_video,
    probe,
    probe_open,
    start_pts,
    stream_rate,
)
from reelrl.video.sample import (
    VideoInfo,
    VideoSampling,
    frame_size,
    sample_indices,
    sample_times,
    sampled_fps,
    timestamps_fps,
)
from reelrl.video.write import X264_PARAMS, write_video

__all__ = [
    "DECODE_STATS",
    "X264_PARAMS",
    "DecodeStats",
    "OffGridError",
    "SampledVideo",
    "VideoError",
    "decode_frames",
    "decode_times",
    "load_video",
    "probe",
    "write_video",
]


class OffGridError(VideoError):
    """A frame index the container's frame rate predicts has no frame: the stream is not constant-rate."""


@dataclass
class SampledVideo:
    """Frames sampled from one video, ready for a processor.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB, upright.
        indices: ``[T]`` int64 frame indices in the file; for a variable-rate
            stream the nominal index ``round(timestamps * info.fps)``.
        timestamps: ``[T]`` float64 seconds from the stream start (``indices / fps``;
            for a variable-rate stream the timestamps of the frames picked).
        fps: effective frame rate of the sample (:func:`reelrl.video.sample.sampled_fps`;
            for a variable-rate stream :func:`reelrl.video.sample.timestamps_fps`).
        info: what :func:`probe` found.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    info: VideoInfo


# ---------------------------------------------------------------- decoding


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, orient: Orientation | None = None) -> np.ndarray:
    """Decoded frame -> ``[H, W, 3]`` uint8 RGB, upright per ``orient``, resized (PIL bicubic) to ``size=(h, w)``."""
    rgb = frame.to_ndarray(format="rgb24")  # [H0, W0, 3]
    if orient is not None and not orient.identity:
        rgb = orient.apply(rgb)  # [H1, W1, 3] upright
    if size is not None and (rgb.shape[0], rgb.shape[1]) != tuple(size):
        h, w = size
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))  # [h, w, 3]
    return rgb


def _ffmpeg_error(path: str | Path, e: av.FFmpegError) -> VideoError:
    return VideoError(f"{path}: undecodable video data ({e.__class__.__name__}: {e.strerror})")


def decode_frames(
    path: str | Path,
    indices: np.ndarray | list[int],
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, duplicates allowed), upright.

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
        size: ``(height, width)`` of the upright frames, resized with PIL bicubic;
            ``None`` keeps the source size.

    Returns:
        ``[T, H, W, 3]`` uint8 RGB, frame ``t`` being the file's frame ``indices[t]``.

    Raises:
        OffGridError: (a VideoError) a wanted index has no frame: the stream is
            not constant-rate (sample it with :func:`decode_times`).
        VideoError: unreadable file, corrupt data, or fewer decodable frames than the container claims.
        ValueError: an index out of range.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # [T]
    container, stream = open_video(path)
    try:
        info = probe_open(path, container, stream, decode=False)
        if idx.size and (idx.min() < 0 or idx.max() >= info.num_frames):
            raise ValueError(
                f"{path}: frame indices must lie in [0, {info.num_frames}), got min {idx.min()} max {idx.max()}"
            )
        wanted = sorted(set(idx.tolist()))
        if not wanted:
            info = probe_open(path, container, stream)  # the upright size
            h, w = size if size is not None else (info.height, info.width)
            return np.zeros((0, h, w, 3), dtype=np.uint8)  # [0, H, W, 3]
        got = _decode_sorted(path, container, stream, info, wanted, size)
    except av.FFmpegError as e:
        raise _ffmpeg_error(path, e) from None
    finally:
        container.close()
    return np.stack([got[i] for i in idx.tolist()])  # [T, H, W, 3]


def _decode_sorted(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    info: VideoInfo,
    wanted: list[int],
    size: tuple[int, int] | None,
    strict: bool = False,
) -> dict[int, np.ndarray]:
    """Decode the sorted unique indices ``wanted``; see :func:`decode_frames`.

    With ``strict``, two frames decoded in a row whose indices are not
    consecutive (a gap, or two frames in one slot) also raise :class:`OffGridError`.
    """
    if stream.time_base is None:
        raise VideoError(f"{path}: video stream has no time base")
    rate = stream_rate(path, stream)
    tb = Fraction(stream.time_base)
    start = start_pts(stream)
    keyframes = Keyframes(stream, tb * rate)
    exact_count = bool(stream.frames)
    sequential = False  # set when frames lack timestamps: decode from the start, count frames

    out: dict[int, np.ndarray] = {}
    frames: Iterator[av.VideoFrame] | None = None
    last = -1  # index of the last decoded frame (-1: none since the last seek)
    last_frame: av.VideoFrame | None = None
    highest = -1  # highest frame index decoded so far (for error messages)
    orient: Orientation | None = None  # from the first frame decoded

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
        nonlocal sequential, highest, orient
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
        if orient is None:
            orient = frame_orientation(frame, stream)
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
            out[target] = _to_rgb(last_frame, size, orient)
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
                    out[target] = _to_rgb(last_frame, size, orient)  # estimated frame count off by one
                    break
                raise VideoError(
                    f"{path}: fewer decodable frames than the container claims "
                    f"(wanted frame {target} of {info.num_frames}; the last decodable frame is {highest})"
                )
            frame, cur = got
            if cur > target:
                raise OffGridError(
                    f"{path}: frame {target} is missing from the stream (next decodable frame is {cur}): "
                    "frames are not on a constant-rate grid (variable frame rate or dropped frames)"
                )
            if strict and not sequential and last >= 0 and (cur == last or cur > last + 1):
                raise OffGridError(
                    f"{path}: frame {last} is followed by frame {cur}: "
                    "frames are not on a constant-rate grid (variable frame rate or dropped frames)"
                )
            last, last_frame = cur, frame
            if cur == target:
                out[target] = _to_rgb(frame, size, orient)
                break
            got = next_frame()
    return out


def decode_times(
    path: str | Path,
    times: np.ndarray | list[float],
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode, for each time, the frame shown then: the last frame whose timestamp is <= the time.

    For variable-frame-rate streams, where frames are not on an index grid.
    Times are seconds from the stream start, rounded to the stream's time base;
    a time before the first frame gives the first frame, one after the last
    frame the last frame. Wanted times are visited in increasing order; the
    decoder seeks to the keyframe at/before a time when a keyframe lies between
    its position and that time (or behind it), else decodes forward, so the
    cost is at most about one GOP per wanted time (plus one frame of look-ahead).

    Args:
        path: video file.
        times: ``[T]`` seconds (any order, duplicates allowed).
        size: ``(height, width)`` of the upright frames (PIL bicubic); ``None`` keeps the source size.

    Returns:
        ``frames`` ``[T, H, W, 3]`` uint8 RGB and ``timestamps`` ``[T]`` float64,
        the seconds (from the stream start) at which each returned frame starts showing.

    Raises:
        VideoError: unreadable file, corrupt data, frames without timestamps, or
            a stream ending before the last frame the container announces.
    """
    container, stream = open_video(path)
    try:
        info = probe_open(path, container, stream, decode=False)
        return _decode_times_open(path, container, stream, info, times, size)
    except av.FFmpegError as e:
        raise _ffmpeg_error(path, e) from None
    finally:
        container.close()


def _decode_times_open(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    info: VideoInfo,
    times: np.ndarray | list[float],
    size: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_times` on an opened container."""
    if stream.time_base is None:
        raise VideoError(f"{path}: video stream has no time base")
    tb = Fraction(stream.time_base)
    start = start_pts(stream)
    secs = np.asarray(times, dtype=np.float64).reshape(-1)  # [T]
    if not np.isfinite(secs).all():
        raise ValueError(f"{path}: times must be finite, got {secs.tolist()}")
    ticks = [start + max(0, round(Fraction(float(t)) / tb)) for t in secs.tolist()]  # [T] stream ticks
    got = _decode_at(path, container, stream, info, sorted(set(ticks)), size)
    if not ticks:
        h, w = size if size is not None else (info.height, info.width)
        return np.zeros((0, h, w, 3), dtype=np.uint8), np.zeros(0)  # [0, H, W, 3], [0]
    frames = np.stack([got[t][0] for t in ticks])  # [T, H, W, 3]
    stamps = np.array([float((got[t][1] - start) * tb) for t in ticks])  # [T]
    return frames, stamps


def _decode_at(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    info: VideoInfo,
    targets: list[int],
    size: tuple[int, int] | None,
) -> dict[int, tuple[np.ndarray, int]]:
    """For each sorted unique tick in ``targets``: the frame shown then, as ``(rgb, pts)``."""
    tb = Fraction(stream.time_base)
    start = start_pts(stream)
    keyframes = Keyframes(stream, Fraction(1))  # positions in ticks
    out: dict[int, tuple[np.ndarray, int]] = {}
    frames: Iterator[av.VideoFrame] | None = None
    shown: tuple[av.VideoFrame, int] | None = None  # last frame decoded with pts <= the current target
    ahead: tuple[av.VideoFrame, int] | None = None  # a decoded frame past the current target, not yet used
    orient: Orientation | None = None
    highest: float = -1.0  # latest timestamp decoded (seconds, for error messages)

    def seek(ts: int, to_first_byte: bool = False) -> None:
        nonlocal frames, shown, ahead
        if to_first_byte:
            try:
                container.seek(0, unsupported_byte_offset=True)
            except av.FFmpegError:
                at = float((ts - start) * tb)
                raise VideoError(f"{path}: cannot seek to {at:.3f} s: seeking lands after it") from None
        else:
            container.seek(ts, backward=True, stream=stream)
        DECODE_STATS.add(seeks=1)
        keyframes.seeked()
        frames, shown, ahead = container.decode(stream), None, None

    def next_frame() -> tuple[av.VideoFrame, int] | None:
        nonlocal orient, highest
        assert frames is not None
        try:
            frame = next(frames, None)
        except av.FFmpegError as e:
            raise VideoError(
                f"{path}: undecodable video data after {highest:.3f} s of {info.duration:.3f} s "
                f"(truncated or corrupt file? {e.__class__.__name__}: {e.strerror})"
            ) from None
        if frame is None:
            return None
        DECODE_STATS.add(frames=1)
        if frame.pts is None:
            raise VideoError(f"{path}: frames carry no timestamps; cannot sample a variable-rate stream by time")
        if orient is None:
            orient = frame_orientation(frame, stream)
        keyframes.observe(frame.pts - start, frame.key_frame)
        highest = max(highest, float((frame.pts - start) * tb))
        return frame, frame.pts

    step = max(1, round(Fraction(1) / tb))  # first back-off: one second
    for target in targets:
        latest = ahead or shown
        if frames is None or (latest is not None and keyframes.worth_seeking(latest[1] - start, target - start)):
            # Seek; if the seek lands after the target (a poor index, or B-frames), back off further.
            back = 0
            while target - back > start:
                seek(target - back)
                ahead = next_frame()
                if ahead is None or ahead[1] <= target:
                    break
                back = max(step, 4 * back, keyframes.gop)
            else:  # from the stream start; timestamp seeks of some formats (MPEG-TS) land late, bytes do not
                seek(start)
                ahead = next_frame()
                if ahead is not None and ahead[1] > target:
                    late = ahead[1]
                    try:
                        seek(0, to_first_byte=True)
                        ahead = next_frame()
                    except VideoError:  # the format cannot seek by bytes
                        ahead = None
                    if ahead is None or ahead[1] >= late:  # bytes did no better: the timestamp seek stands
                        seek(start)
                        ahead = next_frame()
        while True:
            if ahead is None:
                ahead = next_frame()
                if ahead is None:  # end of stream
                    break
            if ahead[1] > target:
                break
            shown, ahead = ahead, None
        pick = shown if shown is not None else ahead  # before the first frame: the first frame
        if pick is None:
            raise VideoError(f"{path}: no decodable frame at or before {float((target - start) * tb):.3f} s")
        if ahead is None and info.last_time is not None and float((pick[1] - start) * tb) < info.last_time - 1e-6:
            raise VideoError(
                f"{path}: fewer decodable frames than the container claims (the stream ends at "
                f"{float((pick[1] - start) * tb):.3f} s; its last frame is at {info.last_time:.3f} s)"
            )
        out[target] = (_to_rgb(pick[0], size, orient), pick[1])
    return out


def load_video(path: str | Path, cfg: VideoSampling) -> SampledVideo:
    """Probe, sample, size and decode one video per ``cfg`` (one open of the file).

    A constant-rate stream is sampled by index (:func:`sample_indices`,
    :func:`decode_frames`); a variable-rate one by time (:func:`sample_times`,
    :func:`decode_times`). A stream that looked constant-rate (containers
    without a full index, such as Matroska, cannot tell) but shows frames off
    its grid while decoding (a wanted frame missing, or two frames decoded in a
    row that are not consecutive) is probed again as variable-rate and sampled by time.

    Returns:
        :class:`SampledVideo` with ``frames`` ``[T, H, W, 3]`` where ``T`` is
        :func:`reelrl.video.sample.num_sampled_frames` and ``(H, W)`` is
        :func:`reelrl.video.sample.frame_size`.
    """
    container, stream = open_video(path)
    try:
        info = probe_open(path, container, stream)
        if not info.variable_rate:
            idx = sample_indices(info, cfg)  # [T]
            size = frame_size(info, cfg, len(idx))
            try:
                got = _decode_sorted(path, container, stream, info, sorted(set(idx.tolist())), size, strict=True)
                frames = np.stack([got[i] for i in idx.tolist()])  # [T, H, W, 3]
                return SampledVideo(
                    frames=frames,
                    indices=idx,
                    timestamps=idx.astype(np.float64) / info.fps,  # [T]
                    fps=sampled_fps(idx, info),
                    info=info,
                )
            except OffGridError:
                info = probe_open(path, container, stream, variable_rate=True)
        times = sample_times(info, cfg)  # [T]
        size = frame_size(info, cfg, len(times))
        frames, stamps = _decode_times_open(path, container, stream, info, times, size)  # [T, H, W, 3], [T]
    except av.FFmpegError as e:
        raise _ffmpeg_error(path, e) from None
    finally:
        container.close()
    return SampledVideo(
        frames=frames,
        indices=np.minimum(np.round(stamps * info.fps), info.num_frames - 1).astype(np.int64),  # [T] nominal
        timestamps=stamps,
        fps=timestamps_fps(stamps, info),
        info=info,
    )
