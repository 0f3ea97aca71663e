"""Open and probe video files: path checks, frame rate, size, orientation, variable frame rate.

:func:`probe` reads the container header, decodes the first frame (its display
matrix says how the picture is turned for display) and, for a variable-frame-rate
stream, decodes the last group of pictures to learn when the last frame is
shown. Nothing else is decoded, so probing costs the same for a short and a long
video.

Every error about a file is a :class:`VideoError` whose message names the file.
"""

from __future__ import annotations

import bisect
import errno
import math
import os
import stat
import struct
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from reelrl.video.sample import VideoInfo

__all__ = [
    "DECODE_STATS",
    "DecodeStats",
    "Keyframes",
    "Orientation",
    "VideoError",
    "check_video_path",
    "frame_orientation",
    "open_video",
    "probe",
]


class VideoError(ValueError):
    """A video file is missing, not a video, truncated or undecodable; the message names it."""


class DecodeStats:
    """Thread-safe counters of decoding work (module singleton :data:`DECODE_STATS`).

    Attributes:
        frames_decoded: frames the decoder produced (wanted, skipped over, or read while probing).
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


# ---------------------------------------------------------------- paths


def check_video_path(path: str | Path) -> Path:
    """``path`` as a :class:`Path` if it names a readable regular file (symlinks followed).

    Raises:
        VideoError: with one message per case: not found, broken symlink, symlink
            loop, a directory, a FIFO, a device, a socket, unreadable.
            Nothing is opened, so a FIFO cannot block.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise VideoError(f"{p}: broken symlink (its target {os.readlink(p)} does not exist)") from None
        raise VideoError(f"{p}: video file not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VideoError(f"{p}: symlink loop (the link resolves to itself)") from None
        if e.errno == errno.ENOTDIR:
            raise VideoError(f"{p}: video file not found (a parent in the path is not a directory)") from None
        if e.errno == errno.EACCES:
            raise VideoError(f"{p}: permission denied") from None
        raise VideoError(f"{p}: cannot access the file ({e.strerror})") from None
    mode = st.st_mode
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    for test, kind in kinds:
        if test(mode):
            raise VideoError(f"{p}: is {kind}, not a video file")
    if not stat.S_ISREG(mode):
        raise VideoError(f"{p}: not a regular file")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{p}: permission denied")
    return p


def open_video(path: str | Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    """Open ``path`` (after :func:`check_video_path`) and return the container and its first video stream."""
    p = check_video_path(path)
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes)")
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"{p}: not a readable video container ({e.__class__.__name__}: {e.strerror})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = f"only {' and '.join(kinds)}" if kinds else "no streams at all: a truncated header?"
        raise VideoError(f"{p}: no video stream ({what})")
    return container, container.streams.video[0]


def stream_rate(path: str | Path, stream: av.VideoStream) -> Fraction:
    """Average frame rate of ``stream`` as a fraction (raises when unknown)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    raise VideoError(f"{path}: video stream has no frame rate")


def start_pts(stream: av.VideoStream) -> int:
    """Presentation timestamp of the stream start (stream ticks)."""
    return stream.start_time if stream.start_time is not None else 0


# ---------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Orientation:
    """How decoded pixels are turned for display: transpose, then mirror left-right, then upside-down.

    The eight combinations are the eight orientations of a picture (rotations by
    quarter turns, with or without a mirror).

    Attributes:
        transpose: swap rows and columns (width and height trade places).
        hflip: mirror left-right.
        vflip: mirror top-bottom.
        rotation: counter-clockwise degrees of the rotation part (0, 90, 180, 270), for reports.
    """

    transpose: bool = False
    hflip: bool = False
    vflip: bool = False
    rotation: int = 0

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.hflip or self.vflip)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``[H, W, C]`` stored pixels -> ``[H', W', C]`` upright pixels (contiguous)."""
        if self.transpose:
            rgb = rgb.transpose(1, 0, 2)  # [W, H, C]
        if self.hflip:
            rgb = rgb[:, ::-1]
        if self.vflip:
            rgb = rgb[::-1]
        return np.ascontiguousarray(rgb)  # [H', W', C]


UPRIGHT = Orientation()

# Clockwise display rotation -> the transform, as FFmpeg's autorotation inserts it
# (transpose=clock / hflip,vflip / transpose=cclock; no flip in the matrix).
_CLOCKWISE = {
    0: UPRIGHT,
    90: Orientation(transpose=True, hflip=True, rotation=270),  # turn clockwise
    180: Orientation(hflip=True, vflip=True, rotation=180),
    270: Orientation(transpose=True, vflip=True, rotation=90),  # turn counter-clockwise
}


def _matrix_orientation(m: tuple[int, ...]) -> Orientation:
    """FFmpeg's autorotation for a 3x3 display matrix (16.16 fixed point, row-major).

    The angle is ``av_display_rotation_get`` rounded to a quarter turn (FFmpeg
    rotates by other angles with a filter; no camera writes them); the flips
    follow the signs of the matrix entries exactly as ``ffmpeg`` does.
    """
    a, b, c, d = (v / 65536.0 for v in (m[0], m[1], m[3], m[4]))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0.0 or s1 == 0.0:
        return UPRIGHT
    ccw = -math.degrees(math.atan2(b / s1, a / s0))  # av_display_rotation_get
    cw = int(90 * round(-ccw / 90)) % 360
    if cw == 90:  # transpose=cclock_flip when the matrix also mirrors, else transpose=clock
        return Orientation(transpose=True, rotation=270) if m[3] > 0 else _CLOCKWISE[90]
    if cw == 270:  # transpose=clock_flip when mirrored, else transpose=cclock
        return Orientation(transpose=True, hflip=True, vflip=True, rotation=90) if m[3] < 0 else _CLOCKWISE[270]
    if cw == 180:
        return Orientation(hflip=m[0] < 0, vflip=m[4] < 0, rotation=180)
    return Orientation(vflip=m[4] < 0)


def _tag_orientation(stream: av.VideoStream) -> Orientation:
    """The legacy ``rotate`` stream tag (clockwise degrees, any letter case), else upright."""
    for key, value in (stream.metadata or {}).items():
        if key.lower() == "rotate":
            try:
                return _CLOCKWISE[int(90 * round(float(value) / 90)) % 360]
            except ValueError:
                return UPRIGHT
    return UPRIGHT


def frame_orientation(frame: av.VideoFrame, stream: av.VideoStream) -> Orientation:
    """Orientation from the frame's display matrix, else from the stream's ``rotate`` tag."""
    side = frame.side_data
    for item in side:  # PyAV <= 18.1.0 iterates the SideData items, 18.1.1 their types (the mapping's keys)
        sd = side[item] if isinstance(item, av.sidedata.sidedata.Type) else item
        if sd.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            raw = bytes(sd)
            if len(raw) >= 36:
                return _matrix_orientation(struct.unpack("=9i", raw[:36]))
    return _tag_orientation(stream)


# ---------------------------------------------------------------- keyframes


class Keyframes:
    """Where the keyframes are: from the demuxer's index, else learned while decoding.

    Positions are frame indices (``scale = time_base * rate``) or stream ticks from the
    first keyframe (``scale = 1``). Only steers the seek-or-decode-forward choice;
    correctness never depends on it.
    Matroska loads its index on the first seek, so the index is re-read when it grows.
    """

    def __init__(self, stream: av.VideoStream, scale: Fraction) -> None:
        self._stream = stream
        self._scale = scale  # stream ticks -> positions (frame indices, or ticks)
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


# ---------------------------------------------------------------- probing


def _index_variable_rate(stream: av.VideoStream, rate: Fraction) -> bool:
    """Whether the demuxer's full index (MP4, MOV, AVI) shows frames off the ``rate`` grid.

    A constant-rate stream has its k-th packet within half a frame of ``k / rate``
    after the first; a container without a full index (Matroska, MPEG-TS) says
    nothing here (the decoder notices such a stream later).
    """
    try:
        entries = stream.index_entries
        n = len(entries)
        if n < 2 or n != stream.frames or stream.time_base is None:
            return False
        stamps = [e.timestamp for e in entries]
    except (AttributeError, av.FFmpegError):
        return False
    scale = Fraction(stream.time_base) * rate  # ticks -> frames, as p / q
    p, q, t0 = scale.numerator, scale.denominator, stamps[0]
    return any(abs(2 * ((ts - t0) * p - k * q)) >= q for k, ts in enumerate(stamps))  # |pos - k| >= 1/2


def _first_frame(path: str | Path, container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame:
    """Decode the next frame: the first one on a freshly opened container (raises when there is none).

    Its display matrix is the stream's, so any frame serves for the orientation.
    """
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: undecodable first frame ({e.__class__.__name__}: {e.strerror})") from None
    if frame is None:
        raise VideoError(f"{path}: video stream has no decodable frames")
    DECODE_STATS.add(frames=1)
    return frame


def _last_frame(
    path: str | Path, container: av.container.InputContainer, stream: av.VideoStream, end: int
) -> tuple[int, int]:
    """``(pts, duration)`` of the last frame shown: seek to the last keyframe before ``end`` and decode to the end."""
    container.seek(end, backward=True, stream=stream)
    DECODE_STATS.add(seeks=1)
    last_pts, last_dur = None, 0
    try:
        for frame in container.decode(stream):
            DECODE_STATS.add(frames=1)
            if frame.pts is not None and (last_pts is None or frame.pts > last_pts):
                last_pts, last_dur = frame.pts, int(frame.duration or 0)
    except av.FFmpegError as e:
        raise VideoError(
            f"{path}: undecodable video data near the end (truncated or corrupt file? "
            f"{e.__class__.__name__}: {e.strerror})"
        ) from None
    if last_pts is None:
        raise VideoError(f"{path}: no decodable frame with a timestamp near the end of the stream")
    return last_pts, last_dur


def probe_open(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    *,
    decode: bool = True,
    variable_rate: bool = False,
) -> VideoInfo:
    """:func:`probe` on an already opened container.

    With ``decode=False`` only the header is read (what the decoders need):
    the orientation is left upright and the frame rate is not checked for
    variability. ``variable_rate=True`` treats the stream as variable-rate
    even when its index looks constant-rate.
    """
    rate = stream_rate(path, stream)
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
    width, height = int(cc.width), int(cc.height)
    variable_rate = variable_rate or (decode and _index_variable_rate(stream, rate))
    info = VideoInfo(
        path=str(path), num_frames=num_frames, fps=float(rate), duration=duration, width=width, height=height,
        variable_rate=variable_rate,
    )
    if not decode:
        return info
    orient = frame_orientation(_first_frame(path, container, stream), stream)
    if orient.transpose:
        width, height = height, width
    last_time = None
    if variable_rate:
        if tb is None:
            raise VideoError(f"{path}: video stream has no time base")
        start = start_pts(stream)
        last_pts, last_dur = _last_frame(path, container, stream, start + math.ceil(duration / tb))
        last_time = float((last_pts - start) * tb)
        # the stream ends when the last frame stops showing: its own duration, else one mean frame
        tail = float(last_dur * tb) if last_dur > 0 else last_time / max(1, num_frames - 1)
        duration = last_time + tail
        rate = Fraction(num_frames) / Fraction(duration) if duration > 0 else rate
    return VideoInfo(
        path=str(path), num_frames=num_frames, fps=float(rate), duration=duration, width=width, height=height,
        rotation=orient.rotation, variable_rate=variable_rate, last_time=last_time,
    )


def probe(path: str | Path, *, variable_rate: bool = False) -> VideoInfo:
    """Frame count, fps, duration, upright size and frame-rate kind of the first video stream of ``path``.

    When the container has no frame count, it is ``round(duration * fps)``;
    with neither, packets are counted (demuxing only). The first frame is
    decoded for its display matrix (or the stream's ``rotate`` tag): ``width``
    and ``height`` are those of the upright picture. A stream whose packets
    sit off the grid of its average rate (a full container index shows this
    without decoding; ``variable_rate=True`` asserts it) is variable-rate: its
    last group of pictures is decoded to learn ``last_time``, and ``duration``
    and ``fps`` (frames per second of real duration) come from the timestamps.

    Raises:
        VideoError: bad path, not a video container, no video stream, no decodable frame.
    """
    container, stream = open_video(path)
    try:
        return probe_open(path, container, stream, variable_rate=variable_rate)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: undecodable video data ({e.__class__.__name__}: {e.strerror})") from None
    finally:
        container.close()
