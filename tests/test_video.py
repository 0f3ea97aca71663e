"""Tests of the video input layer: sampling rules, decoding by seeking, writing, prefetching.

The test video encodes its frame index in the pixels: a 4x2 grid of 16x16
blocks (macroblock aligned) holds the 8 bits of the index in black/white, and
the grid below holds the inverted bits, so every bit is read as a large
brightness difference that survives H.264 compression.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from reelrl.video.decode import (
    DECODE_STATS,
    VideoError,
    decode_frames,
    load_video,
    probe,
    write_video,
)
from reelrl.video.sample import (
    VideoInfo,
    VideoSampling,
    frame_max_pixels,
    frame_size,
    num_sampled_frames,
    sample_indices,
    sampled_fps,
    smart_resize,
)

N_FRAMES = 120
FPS = 24
GOP = 8
SIDE = 64


# ---------------------------------------------------------------- helpers


def encode_index(i: int, side: int = SIDE) -> np.ndarray:
    """Frame ``[side, side, 3]`` uint8 whose blocks spell the 8 bits of ``i`` (and their inverse)."""
    a = np.zeros((side, side, 3), dtype=np.uint8)  # [H, W, 3]
    c = side // 4
    for b in range(8):
        r, col = divmod(b, 4)
        bit = (i >> b) & 1
        a[r * c : (r + 1) * c, col * c : (col + 1) * c] = 255 * bit
        a[2 * c + r * c : 2 * c + (r + 1) * c, col * c : (col + 1) * c] = 255 * (1 - bit)
    return a


def read_index(frame: np.ndarray) -> int:
    """Inverse of :func:`encode_index` for a frame of any size (reads the block centres)."""
    h, w = frame.shape[:2]
    gray = frame.astype(np.float64).mean(axis=2)  # [H, W]
    value = 0
    for b in range(8):
        r, col = divmod(b, 4)

        def centre(row: int) -> float:
            y, x = int((row + 0.5) * h / 4), int((col + 0.5) * w / 4)
            dy, dx = max(1, h // 16), max(1, w // 16)
            return float(gray[y - dy : y + dy, x - dx : x + dx].mean())

        on, off = centre(r), centre(2 + r)
        assert abs(on - off) > 150, f"bit {b} unreadable ({on:.0f} vs {off:.0f})"
        value |= int(on > off) << b
    return value


def codes(frames: np.ndarray) -> list[int]:
    """Frame indices read back from ``[T, H, W, 3]`` frames."""
    return [read_index(f) for f in frames]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120-frame 64x64 H.264 MP4 at 24 fps with a keyframe every 8 frames."""
    frames = np.stack([encode_index(i) for i in range(N_FRAMES)])  # [120, 64, 64, 3]
    return write_video(tmp_path_factory.mktemp("vid") / "index.mp4", frames, FPS, gop=GOP)


def info_of(num_frames: int, fps: float = FPS, height: int = SIDE, width: int = SIDE) -> VideoInfo:
    return VideoInfo(path="v.mp4", num_frames=num_frames, fps=fps, duration=num_frames / fps, width=width, height=height)


# ---------------------------------------------------------------- sampling (pure)


@pytest.mark.parametrize(
    ("num_frames", "cfg", "expected"),
    [
        # fps mode: 120 frames / 24 fps * 2 fps = 10 frames
        (120, dict(fps=2.0), [0, 13, 26, 40, 53, 66, 79, 93, 106, 119]),
        # 120 / 24 * 1 = 5 -> floor to the frame factor 2 -> 4
        (120, dict(fps=1.0), [0, 40, 79, 119]),
        # 120 / 24 * 24 = 120 -> capped by max_frames 16
        (120, dict(fps=24.0, max_frames=16), [0, 8, 16, 24, 32, 40, 48, 56, 63, 71, 79, 87, 95, 103, 111, 119]),
        # 120 / 24 * 0.5 = 2.5 -> raised to min_frames 5 -> ceil to factor -> 6
        (120, dict(fps=0.5, min_frames=5), [0, 24, 48, 71, 95, 119]),
        # short video: 6 / 24 * 2 = 0.5 -> min_frames 4
        (6, dict(fps=2.0), [0, 2, 3, 5]),
        # nframes mode: 7 -> round(3.5) = 4 -> 8 frames, step 17
        (120, dict(nframes=7), [0, 17, 34, 51, 68, 85, 102, 119]),
        # nframes 5 -> round(2.5) = 2 (halves to even, as Qwen) -> 4 frames; nframes wins over fps
        (120, dict(nframes=5, fps=24.0), [0, 40, 79, 119]),
        # more frames asked than the file holds: uniform sample repeats frames
        (6, dict(nframes=8), [0, 1, 1, 2, 3, 4, 4, 5]),
        # a single-frame video still yields one temporal patch
        (1, dict(fps=2.0), [0, 0]),
    ],
)
def test_sample_indices_hand_computed(num_frames: int, cfg: dict, expected: list[int]) -> None:
    idx = sample_indices(info_of(num_frames), VideoSampling(**cfg))
    assert idx.dtype == np.int64
    assert idx.tolist() == expected
    assert num_sampled_frames(info_of(num_frames), VideoSampling(**cfg)) == len(expected)


def test_sample_count_is_multiple_of_frame_factor() -> None:
    for total in range(1, 200, 7):
        for factor in (1, 2, 3, 4):
            n = num_sampled_frames(info_of(total, fps=30), VideoSampling(fps=3.3, frame_factor=factor))
            assert n % factor == 0 and n >= factor


def test_sampled_fps_and_second_per_grid() -> None:
    info = info_of(120)
    assert sampled_fps(np.arange(10), info) == pytest.approx(2.0)  # 10 / 120 * 24
    assert sampled_fps(np.arange(4), info) == pytest.approx(0.8)
    assert 2 / sampled_fps(np.arange(4), info) == pytest.approx(2.5)  # second_per_grid_ts


def test_smart_resize_hand_computed() -> None:
    lo, hi = 128 * 28 * 28, 768 * 28 * 28
    # 64x64 rounds to 56x56 = 3136 < min: beta = sqrt(100352 / 4096) = 4.9497, 64 * beta = 316.8 -> ceil 12 * 28
    assert smart_resize(64, 64, 28, lo, hi) == (336, 336)
    # 1080x1920 -> 1092x1932 > max: beta = sqrt(2073600 / 602112) = 1.8558, 581.97 -> 560, 1034.6 -> 1008
    assert smart_resize(1080, 1920, 28, lo, hi) == (560, 1008)
    # 90x160 -> 84x168 < min: beta = sqrt(100352 / 14400) = 2.6399, 237.6 -> 252, 422.4 -> 448
    assert smart_resize(90, 160, 28, lo, hi) == (252, 448)
    # already a multiple of 28 and inside the bounds: unchanged
    assert smart_resize(224, 448, 28, lo, hi) == (224, 448)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2010, 28, lo, hi)


def test_total_pixels_budget_hand_computed() -> None:
    info = info_of(120, height=1080, width=1920)
    cfg = VideoSampling(total_pixels=20480 * 28 * 28)
    # 16056320 / 64 * 2 = 501760 < max_pixels 602112
    assert frame_max_pixels(cfg, 64) == 501760
    # beta = sqrt(2073600 / 501760) = 2.0329: 531.3 -> 504, 944.5 -> 924
    assert frame_size(info, cfg, 64) == (504, 924)
    # 16056320 / 768 * 2 = 41813 < int(100352 * 1.05) = 105369 -> floor at 105369
    assert frame_max_pixels(cfg, 768) == 105369
    assert frame_size(info, cfg, 768) == (224, 420)
    # no budget: plain max_pixels
    assert frame_max_pixels(VideoSampling(total_pixels=None), 768) == 768 * 28 * 28
    # explicit size is only rounded to the size factor: 100 -> 112, 150 -> 140
    assert frame_size(info, VideoSampling(resized_height=100, resized_width=150), 8) == (112, 140)


def test_default_budget_is_qwen_vl_utils_on_a_long_video() -> None:
    """qwen-vl-utils ``fetch_video`` with no ``total_pixels`` given, by hand.

    total_pixels = int(128000 * 28 * 28 * 0.9) = 90316800;
    per-frame max_pixels = max(min(768 * 28 * 28, total_pixels / nframes * 2), int(128 * 28 * 28 * 1.05)).
    """
    cfg = VideoSampling(nframes=600)
    assert (cfg.min_pixels, cfg.max_pixels, cfg.total_pixels) == (100352, 602112, 90316800)
    info = info_of(36000, fps=30.0, height=1080, width=1920)  # 20 minutes of 1080p
    assert num_sampled_frames(info, cfg) == 600
    # 90316800 / 600 * 2 = 301056 (= 384 * 28 * 28) < 602112, and > int(100352 * 1.05) = 105369
    assert frame_max_pixels(cfg, 600) == 301056
    # 1080x1920 -> 1092x1932 > 301056: beta = sqrt(2073600 / 301056) = 2.6245;
    # 1080 / beta = 411.5 -> floor to 28: 392; 1920 / beta = 731.6 -> 728
    h, w = frame_size(info, cfg, 600)
    assert (h, w) == (392, 728)
    # visual tokens: 600 / 2 temporal patches x (392 / 28) x (728 / 28) merged patches = 300 x 14 x 26
    assert 600 // 2 * (h // 28) * (w // 28) == 109200
    # without the budget: 560 x 1008 per frame -> 300 x 20 x 36 = 216000 tokens, past a 128k context
    assert frame_size(info, cfg.model_copy(update={"total_pixels": None}), 600) == (560, 1008)
    # 768 frames (fps mode's max_frames): 90316800 / 768 * 2 = 235200; beta = sqrt(2073600 / 235200) = 2.9692,
    # 1080 / beta = 363.7 -> 336, 1920 / beta = 646.6 -> 644
    fps_cfg = VideoSampling()
    assert num_sampled_frames(info, fps_cfg) == 768  # 1200 s x 2 fps = 2400 -> max_frames
    assert frame_max_pixels(fps_cfg, 768) == 235200
    assert frame_size(info, fps_cfg, 768) == (336, 644)
    # a 448x448 source is under the 600-frame cap (200704 < 301056): unchanged
    assert frame_size(info_of(36000, fps=30.0, height=448, width=448), cfg, 600) == (448, 448)


def test_default_budget_leaves_short_videos_unchanged() -> None:
    info = info_of(120, height=1080, width=1920)
    for n in (16, 64, 300):  # 90316800 / 300 * 2 = 602112: the cap is max_pixels itself up to 300 frames
        assert frame_max_pixels(VideoSampling(), n) == 602112
        assert frame_size(info, VideoSampling(), n) == (560, 1008)
        assert frame_size(info, VideoSampling(total_pixels=None), n) == (560, 1008)


def test_quickstart_frame_size_is_untouched_by_the_budget() -> None:
    from reelrl.pipeline import load_recipe

    cfg = load_recipe("quickstart", []).video
    assert (cfg.nframes, cfg.min_pixels, cfg.max_pixels, cfg.total_pixels) == (16, 3136, 3136, 90316800)
    info = info_of(16, fps=4.0, height=56, width=56)  # the quickstart gym: 16 frames of 56 x 56
    n = num_sampled_frames(info, cfg)
    assert n == 16
    # budget 90316800 / 16 * 2 = 11289600 -> min(602112, .) = 602112 -> min with max_pixels 3136 = 3136
    assert frame_max_pixels(cfg, n) == 3136
    assert frame_size(info, cfg, n) == (56, 56)
    assert frame_size(info, cfg.model_copy(update={"total_pixels": None}), n) == (56, 56)


def test_sample_indices_use_qwen_float32_linspace() -> None:
    # qwen-vl-utils: torch.linspace(0, 33596, 256) is float32; at index 253 it is exactly 33332.5
    # (float64: 33596 * 253 / 255 = 33332.50196), which rounds half-to-even to 33332 (float64 gives 33333).
    idx = sample_indices(info_of(33597, fps=30.0), VideoSampling(nframes=256))
    assert idx.dtype == np.int64 and idx.shape == (256,)
    assert idx[253] == 33332
    assert np.linspace(0, 33596, 256).round()[253] == 33333  # the float64 rule this replaces
    assert (idx[0], idx[-1]) == (0, 33596)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(fps=None, nframes=None), "set `fps` or `nframes`"),
        (dict(min_frames=10, max_frames=4), "min_frames"),
        (dict(min_pixels=1000, max_pixels=10), "min_pixels"),
        (dict(resized_height=64), "resized_width"),
        (dict(fps=0.0), "fps"),
        (dict(frame_rate=2), "frame_rate"),
    ],
)
def test_video_sampling_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VideoSampling(**kwargs)


# ---------------------------------------------------------------- writing / probing


def test_write_and_probe(video: Path) -> None:
    info = probe(video)
    assert (info.num_frames, info.fps, info.width, info.height) == (N_FRAMES, FPS, SIDE, SIDE)
    assert info.duration == pytest.approx(N_FRAMES / FPS)
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        keys = [i for i, f in enumerate(c.decode(s)) if f.key_frame]
    assert keys == list(range(0, N_FRAMES, GOP))  # gop sets the keyframe interval exactly


def test_write_video_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 63, 64, 3), np.uint8), 10)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 64, 64, 3), np.float32), 10)
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "s.mp4", np.zeros((64, 64, 3), np.uint8), 10)


# ---------------------------------------------------------------- decoding


def test_decode_all_frames_in_order(video: Path) -> None:
    DECODE_STATS.reset()
    frames = decode_frames(video, np.arange(N_FRAMES))
    assert frames.shape == (N_FRAMES, SIDE, SIDE, 3) and frames.dtype == np.uint8
    assert codes(frames) == list(range(N_FRAMES))
    assert DECODE_STATS.frames_decoded == N_FRAMES


def test_decode_exact_frames_any_order_with_duplicates(video: Path) -> None:
    wanted = [50, 3, 3, 119, 0, 64, 63]
    frames = decode_frames(video, wanted)  # [7, 64, 64, 3]
    assert codes(frames) == wanted
    full = decode_frames(video, np.arange(N_FRAMES))  # [120, 64, 64, 3]
    np.testing.assert_array_equal(frames, full[wanted])  # seeking gives bit-identical frames


def test_seeking_cost_follows_sampled_frames(video: Path) -> None:
    # GOP 8: frame 0 -> 1 decoded, 40 (a keyframe) -> 1, 79 (from keyframe 72) -> 8, 119 (from 112) -> 8.
    DECODE_STATS.reset()
    assert codes(decode_frames(video, [0, 40, 79, 119])) == [0, 40, 79, 119]
    assert DECODE_STATS.frames_decoded == 18 < N_FRAMES
    # Within a GOP the decoder goes forward instead of seeking back to the keyframe:
    # seek to 0, decode 0..17 forward (18 frames), seek to keyframe 96, decode 96..101 (6 frames).
    DECODE_STATS.reset()
    wanted = [7, 8, 9, 15, 16, 17, 100, 101]
    assert codes(decode_frames(video, wanted)) == wanted
    assert (DECODE_STATS.frames_decoded, DECODE_STATS.seeks) == (24, 2)


def test_decode_resizes(video: Path) -> None:
    frames = decode_frames(video, [5, 77], size=(32, 48))
    assert frames.shape == (2, 32, 48, 3)
    assert codes(frames) == [5, 77]


def test_decode_rejects_out_of_range(video: Path) -> None:
    with pytest.raises(ValueError, match=r"\[0, 120\)"):
        decode_frames(video, [0, 120])
    with pytest.raises(ValueError, match=r"\[0, 120\)"):
        decode_frames(video, [-1])


def test_load_video(video: Path) -> None:
    cfg = VideoSampling(fps=2.0, min_pixels=28 * 28, max_pixels=56 * 56)
    sv = load_video(video, cfg)
    expected = [0, 13, 26, 40, 53, 66, 79, 93, 106, 119]
    assert sv.indices.tolist() == expected
    assert sv.frames.shape == (10, 56, 56, 3)  # 64 rounds to 56, 56 * 56 = max_pixels
    assert codes(sv.frames) == expected
    np.testing.assert_allclose(sv.timestamps, np.array(expected) / 24.0)
    assert sv.fps == pytest.approx(2.0)
    assert sv.info.num_frames == N_FRAMES


# ---------------------------------------------------------------- bad files


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    for fn in (lambda: probe(path), lambda: decode_frames(path, [0]), lambda: load_video(path, VideoSampling())):
        with pytest.raises(VideoError, match="nope.mp4.*not found"):
            fn()


def test_garbage_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="garbage.mp4"):
        probe(path)
    with pytest.raises(VideoError, match="garbage.mp4"):
        decode_frames(path, [0])


def test_truncated_file_names_path(video: Path, tmp_path: Path) -> None:
    data = video.read_bytes()
    # The index sits at the front (faststart): the file opens, claims 120 frames, but the data stops.
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    assert probe(half).num_frames == N_FRAMES
    # Decoding runs into the packet cut in the middle.
    for wanted in (np.arange(N_FRAMES), [119]):
        with pytest.raises(VideoError, match=r"half.mp4: undecodable video data after frame \d+ of 120"):
            decode_frames(half, wanted)
    # Cut exactly between two packets: the stream just ends early.
    with av.open(str(video)) as c:
        cut = c.streams.video[0].index_entries[60].pos  # byte offset of the 61st packet (decode order)
    short = tmp_path / "short.mp4"
    short.write_bytes(data[:cut])
    assert decode_frames(short, [0, 40]).shape[0] == 2  # the intact part still decodes
    with pytest.raises(VideoError, match="short.mp4: fewer decodable frames than the container claims"):
        decode_frames(short, [0, 119])
    # Cut inside the header: not even a container.
    head = tmp_path / "head.mp4"
    head.write_bytes(data[:200])
    with pytest.raises(VideoError, match="head.mp4"):
        probe(head)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        for p in list(s.encode(f)) + list(s.encode()):
            c.mux(p)
    with pytest.raises(VideoError, match="tone.wav.*no video stream"):
        probe(path)


def test_write_video_bytes_depend_on_the_frames_only(tmp_path: Path) -> None:
    """The same frames give the same file, whatever the heap looks like (gym videos must be reproducible).

    These three quickstart gym samples were encoded to differing files from
    run to run while x264's lookahead analysis was on.
    """
    from reelrl.gym import GymSpec
    from reelrl.gym.generate import make_sample
    from reelrl.pipeline import load_recipe

    spec = GymSpec(**load_recipe("quickstart", []).data.gym.spec)
    rng = np.random.default_rng(0)
    junk: list[bytes] = []
    for index in (559, 718, 919):
        frames = make_sample(spec, "train", index)[1].frames  # [16, 56, 56, 3]
        digests = set()
        for k in range(40):
            junk.append(rng.bytes(int(rng.integers(1_000, 200_000))))  # vary what the allocator hands out
            if len(junk) > 20:
                junk.pop(int(rng.integers(len(junk))))
            out = write_video(tmp_path / f"{index}-{k}.mp4", frames, 4.0)
            digests.add(out.read_bytes())
        assert len(digests) == 1, index
