"""A corpus of broken and unusual video files, generated at test time.

Each entry is built in a temporary folder and given to :func:`probe` and
:func:`load_video` (what training calls). The outcome is one of two, fixed per
entry: *handled* (the frames come out right: pixels, shape, count) or *error*
(a :class:`VideoError` whose message names the file and the problem). Any
other exception type fails the test, and so does a run longer than
:data:`LIMIT_S` (a hang). The training loop turns a VideoError into a counted
skip of the row (``PromptEncoder.try_encode``).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from reelrl.video.decode import (
    VideoError,
    decode_frames,
    load_video,
    probe,
    write_video,
)
from reelrl.video.sample import VideoSampling, smart_resize
from tests.videos_for_tests import blocks, codes, encode_index, write_raw

LIMIT_S = 20
SMALL = VideoSampling(nframes=4, min_pixels=28 * 28, max_pixels=56 * 56)
LOSSLESS = dict(pix_fmt="yuv444p", options={"crf": "0"})


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Fail a test that runs longer than LIMIT_S seconds (SIGALRM interrupts a stuck decode)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"video corpus entry took longer than {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Entry:
    """How to build one corpus file and what reelrl must do with it."""

    build: Callable[[Path], Path]
    error: str | None = None  # regex after "<path>: " for an error entry
    probe_error: bool = True  # whether probe() already fails (else only decoding does)
    check: Callable[[Path], None] | None = None  # pixel / shape checks of a handled entry


# ---------------------------------------------------------------- builders


def index_video(path: Path, n: int = 48, **kw) -> Path:
    return write_video(path, np.stack([encode_index(i) for i in range(n)]), 12, gop=8, **kw)  # [n, 64, 64, 3]


def cut_inside_packet(d: Path, name: str, packet: int) -> Path:
    """The faststart index video cut in the middle of its ``packet``-th packet (decode order)."""
    full = index_video(d / "full.mp4")  # faststart: the index is at the front, the data is cut
    with av.open(str(full)) as c:
        entry = c.streams.video[0].index_entries[packet]
        cut = entry.pos + entry.size // 2  # read while open: an index entry dies with its container
    out = d / name
    out.write_bytes(full.read_bytes()[:cut])
    return out


def truncated_index_end(d: Path) -> Path:
    full = write_raw(d / "full.mp4", np.stack([encode_index(i) for i in range(48)]), gop=8)  # index at the end
    out = d / "truncated_end.mp4"
    out.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 4])
    return out


def random_bytes(d: Path) -> Path:
    out = d / "random.mp4"
    out.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return out


def zero_bytes(d: Path) -> Path:
    out = d / "empty.mp4"
    out.write_bytes(b"")
    return out


def header_only(d: Path) -> Path:
    full = index_video(d / "full.mp4")
    out = d / "header.mp4"
    out.write_bytes(full.read_bytes()[:64])
    return out


def corrupt_payload(d: Path) -> Path:
    full = write_video(d / "noise.mp4", blocks(48, 64, 64, seed=8, block=4), 12, gop=8)  # [48, 64, 64, 3]
    with av.open(str(full)) as c:
        entries = c.streams.video[0].index_entries
        start, stop = entries[12].pos, entries[30].pos  # frame data only, past the first keyframes
    data = bytearray(full.read_bytes())
    data[start:stop] = np.random.default_rng(1).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    out = d / "corrupt.mp4"
    out.write_bytes(bytes(data))
    return out


def audio_only(d: Path) -> Path:
    out = d / "tone.m4a"
    with av.open(str(out), "w") as c:
        s = c.add_stream("aac", rate=8000)
        s.layout = "mono"
        t = np.arange(8000) / 8000
        f = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp",
                                       layout="mono")
        f.sample_rate, f.pts = 8000, 0
        for p in list(s.encode(f)) + list(s.encode()):
            c.mux(p)
    return out


ROTATED = blocks(3, 48, 80, seed=3)  # [3, 48, 80, 3]


def rotated(d: Path) -> Path:
    return write_raw(d / "rotated.mp4", ROTATED, rotation=90, **LOSSLESS)


def check_rotated(p: Path) -> None:
    want = np.rot90(ROTATED, 1, axes=(1, 2))  # [3, 80, 48, 3] upright
    info = probe(p)
    assert (info.height, info.width, info.rotation) == (80, 48, 90)
    assert np.abs(decode_frames(p, [0, 1, 2]).astype(int) - want).max() <= 3
    assert load_video(p, SMALL).frames.shape == (4, *smart_resize(80, 48, 28, 28 * 28, 56 * 56), 3)


VFR_PTS = [0, 40, 50, 60, 400, 410, 1500, 1533, 1566, 1600, 3000, 3010]  # ms


def variable_rate(d: Path) -> Path:
    frames = np.stack([encode_index(i) for i in range(len(VFR_PTS))])  # [12, 64, 64, 3]
    return write_raw(d / "vfr.mp4", frames, pts=VFR_PTS, time_base=Fraction(1, 1000), gop=4)


def check_variable_rate(p: Path) -> None:
    sv = load_video(p, SMALL)  # 4 times over 0 .. 3.01 s: 0, 1.003, 2.007, 3.01
    assert sv.info.variable_rate
    assert codes(sv.frames) == [0, 5, 9, 11]
    np.testing.assert_allclose(sv.timestamps, [0, 0.41, 1.6, 3.01], atol=1e-6)
    assert sv.fps == pytest.approx(3 / 3.01)


TEN_BIT = blocks(3, 64, 64, seed=4, block=16)  # [3, 64, 64, 3]


def ten_bit(d: Path) -> Path:
    if "yuv420p10le" not in [f.name for f in av.Codec("libx264", "w").video_formats or []]:
        pytest.skip("this FFmpeg build's libx264 cannot encode yuv420p10le (8-bit only)")
    return write_raw(d / "ten_bit.mp4", TEN_BIT, pix_fmt="yuv420p10le", options={"crf": "0"})


def check_ten_bit(p: Path) -> None:
    with av.open(str(p)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    got = decode_frames(p, [0, 1, 2])  # [3, 64, 64, 3]
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - TEN_BIT).mean() < 8  # chroma subsampling blurs block edges only
    assert load_video(p, SMALL).frames.shape == (4, 56, 56, 3)


ODD = blocks(3, 43, 57, seed=5)  # [3, 43, 57, 3]


def odd_size(d: Path) -> Path:
    return write_raw(d / "odd.mp4", ODD, **LOSSLESS)  # 4:4:4: odd sides are allowed


def check_odd_size(p: Path) -> None:
    info = probe(p)
    assert (info.width, info.height) == (57, 43)
    assert np.abs(decode_frames(p, [0, 1, 2]).astype(int) - ODD).max() <= 3
    assert load_video(p, SMALL).frames.shape == (4, *smart_resize(43, 57, 28, 28 * 28, 56 * 56), 3)


ONE = blocks(1, 64, 64, seed=6)  # [1, 64, 64, 3]


def one_frame(d: Path) -> Path:
    return write_raw(d / "one.mp4", ONE, **LOSSLESS)


def check_one_frame(p: Path) -> None:
    assert probe(p).num_frames == 1
    sv = load_video(p, VideoSampling(min_pixels=64 * 64, max_pixels=64 * 64, size_factor=16))
    assert sv.indices.tolist() == [0, 0]  # one temporal patch of the same frame
    assert np.abs(sv.frames.astype(int) - ONE[[0, 0]]).max() <= 3


HUGE = (3000, 4000)


def huge_frame(d: Path) -> Path:
    frame = blocks(1, *HUGE, seed=7, block=500)  # [1, 3000, 4000, 3], 6x8 flat squares
    return write_raw(d / "huge.mp4", frame, options={"preset": "ultrafast"})


def check_huge_frame(p: Path) -> None:
    info = probe(p)
    assert (info.height, info.width) == HUGE
    size = smart_resize(*HUGE)  # default max_pixels: (672, 896)
    sv = load_video(p, VideoSampling())
    assert sv.frames.shape == (2, *size, 3)
    # the flat squares survive the resize: the centre of square (r, c) has its colour
    want = blocks(1, *HUGE, seed=7, block=500)[0]
    for r, c in ((0, 0), (3, 5), (5, 7)):
        y, x = int((r + 0.5) * size[0] / 6), int((c + 0.5) * size[1] / 8)
        assert np.abs(sv.frames[0, y, x].astype(int) - want[r * 500 + 250, c * 500 + 250]).max() <= 6
    # memory follows the output: 64 samples of the 4000x3000 frame hold 64 small frames (115 MB),
    # never 64 full frames (2.3 GB); peak RSS is measured from a reset high-water mark
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError as e:
        pytest.skip(f"cannot reset the peak-RSS mark on this system ({e})")
    base = _vm_kib("VmHWM")
    out = load_video(p, VideoSampling(nframes=64))  # [64, 672, 896, 3]
    grown_mib = (_vm_kib("VmHWM") - base) / 1024
    assert out.frames.shape == (64, *size, 3)
    assert grown_mib < out.frames.nbytes / 2**20 + 250, f"peak RSS grew by {grown_mib:.0f} MiB"


def _vm_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def directory(d: Path) -> Path:
    out = d / "folder.mp4"
    out.mkdir()
    return out


def symlink_loop(d: Path) -> Path:
    out = d / "loop.mp4"
    out.symlink_to(out)
    return out


def fifo(d: Path) -> Path:
    out = d / "pipe.mp4"
    os.mkfifo(out)  # opening it for reading would block until a writer comes
    return out


def broken_symlink(d: Path) -> Path:
    out = d / "dangling.mp4"
    out.symlink_to(d / "deleted.mp4")
    return out


CORPUS: dict[str, Entry] = {
    "zero_byte": Entry(zero_bytes, error=r"empty file \(0 bytes\)"),
    "header_only": Entry(header_only, error=r"no video stream \(no streams at all: a truncated header\?\)"),
    "truncated_in_first_frame": Entry(
        lambda d: cut_inside_packet(d, "cut0.mp4", 0), error=r"undecodable first frame \(InvalidDataError"
    ),
    "truncated_mid_stream": Entry(
        lambda d: cut_inside_packet(d, "cut24.mp4", 24), probe_error=False,
        error=r"undecodable video data after frame \d+ of 48 \(truncated or corrupt file\?",
    ),
    "truncated_index_at_end": Entry(truncated_index_end, error=r"not a readable video container"),
    "corrupt_payload": Entry(
        corrupt_payload, probe_error=False,
        error=r"undecodable video data after frame \d+ of 48 \(truncated or corrupt file\?",
    ),
    "random_bytes": Entry(random_bytes, error=r"not a readable video container \(InvalidDataError"),
    "audio_only": Entry(audio_only, error=r"no video stream \(only audio\)"),
    "directory": Entry(directory, error=r"is a directory, not a video file"),
    "symlink_loop": Entry(symlink_loop, error=r"symlink loop \(the link resolves to itself\)"),
    "broken_symlink": Entry(broken_symlink, error=r"broken symlink \(its target .*deleted.mp4 does not exist\)"),
    "fifo": Entry(fifo, error=r"is a FIFO \(named pipe\), not a video file"),
    "device_file": Entry(lambda d: Path("/dev/null"), error=r"is a character device, not a video file"),
    "rotated": Entry(rotated, check=check_rotated),
    "variable_frame_rate": Entry(variable_rate, check=check_variable_rate),
    "ten_bit": Entry(ten_bit, check=check_ten_bit),
    "odd_size_57x43": Entry(odd_size, check=check_odd_size),
    "one_frame": Entry(one_frame, check=check_one_frame),
    "huge_frame_4000x3000": Entry(huge_frame, check=check_huge_frame),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_entry_is_handled_or_a_precise_error(name: str, tmp_path: Path) -> None:
    entry = CORPUS[name]
    path = entry.build(tmp_path)
    if entry.error is None:
        assert entry.check is not None
        entry.check(path)
        return
    message = re.escape(str(path)) + ": " + entry.error
    if entry.probe_error:
        with pytest.raises(VideoError, match=message):
            probe(path)
    else:
        probe(path)  # the header is fine; the frames are not
    with pytest.raises(VideoError, match=message):
        load_video(path, SMALL)
