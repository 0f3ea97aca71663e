"""Tests of the video input layer: sampling rules, decoding by seeking, writing, orientation,
variable frame rate, bad paths.

The test videos encode their frame index in the pixels (:func:`tests.videos_for_tests.encode_index`:
a 4x2 grid of 16x16 blocks, macroblock aligned, holds the 8 bits of the index and the
grid below the inverted bits), so every decoded frame says which frame it is.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from reelrl.video.decode import (
    DECODE_STATS,
    VideoError,
    decode_frames,
    decode_times,
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
    sample_times,
    sampled_fps,
    smart_resize,
    timestamps_fps,
)
from tests.videos_for_tests import blocks, codes, encode_index, write_raw

N_FRAMES = 120
FPS = 24
GOP = 8
SIDE = 64


# ---------------------------------------------------------------- helpers


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
    cfg = VideoSampling(nframes=600).resolve(28, 2)
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


def test_defaults_follow_the_checkpoint_factor_as_qwen_vl_utils_0_0_14() -> None:
    """fetch_video(image_patch_size=16) (Qwen3-VL: factor 32), by hand.

    min 128 * 32 * 32 = 131072, max 768 * 32 * 32 = 786432, total int(128000 * 32 * 32 * 0.9) = 117964800.
    """
    cfg = VideoSampling(nframes=600).resolve(32, 2)
    assert (cfg.size_factor, cfg.frame_factor) == (32, 2)
    assert (cfg.min_pixels, cfg.max_pixels, cfg.total_pixels) == (131072, 786432, 117964800)
    info = info_of(36000, fps=30.0, height=1080, width=1920)
    # 117964800 / 600 * 2 = 393216 (= 384 * 32 * 32); 1080x1920: beta = sqrt(2073600 / 393216) = 2.2964,
    # 1080 / beta = 470.3 -> floor to 32: 448; 1920 / beta = 836.1 -> 832
    assert frame_max_pixels(cfg, 600) == 393216
    assert frame_size(info, cfg, 600) == (448, 832)
    # explicit settings win over the checkpoint's defaults; a resolved config resolves to itself
    mine = VideoSampling(nframes=8, min_pixels=64 * 64, max_pixels=64 * 64, total_pixels=None).resolve(32, 2)
    assert (mine.min_pixels, mine.max_pixels, mine.total_pixels) == (4096, 4096, None)
    assert mine.resolve(32, 2) == mine


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(size_factor=28), r"video.size_factor=28 does not fit .*multiples of 32"),
        (dict(size_factor=16), r"video.size_factor=16 does not fit"),
        (dict(frame_factor=3), r"video.frame_factor=3 does not fit .*temporal patch is 2"),
    ],
)
def test_factor_that_the_checkpoint_cannot_use_is_an_error(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        VideoSampling(**kwargs).resolve(32, 2)
    assert VideoSampling(size_factor=64).resolve(32, 2).size_factor == 64  # a multiple is fine


def test_default_budget_leaves_short_videos_unchanged() -> None:
    info = info_of(120, height=1080, width=1920)
    for n in (16, 64, 300):  # 90316800 / 300 * 2 = 602112: the cap is max_pixels itself up to 300 frames
        assert frame_max_pixels(VideoSampling(), n) == 602112
        assert frame_size(info, VideoSampling(), n) == (560, 1008)
        assert frame_size(info, VideoSampling(total_pixels=None), n) == (560, 1008)


def test_quickstart_frame_size_is_untouched_by_the_budget() -> None:
    from reelrl.pipeline import load_recipe

    cfg = load_recipe("quickstart", []).video.resolve(28, 2)
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
    ("num_frames", "video_fps", "cfg", "expected"),
    [
        # smart_nframes, nframes mode: round_by_factor(n, 2) = round(n / 2) * 2, Python round (halves to even)
        (120, 24.0, dict(nframes=2), 2),
        (120, 24.0, dict(nframes=3), 4),  # round(1.5) = 2 -> 4
        (120, 24.0, dict(nframes=9), 8),  # round(4.5) = 4 -> 8
        (120, 24.0, dict(nframes=11), 12),  # round(5.5) = 6 -> 12
        (120, 24.0, dict(nframes=1), 2),  # round(0.5) = 0: qwen-vl-utils raises, reelrl raises it to 2
        # fps mode: floor_by_factor(min(max(total / fps * cfg.fps, ceil(min_frames)), floor(min(max_frames, total)), total))
        (120, 24.0, dict(fps=24.0, max_frames=15), 14),  # max_frames 15 floors to 14
        (120, 24.0, dict(fps=0.1, min_frames=3), 4),  # 0.5 frames -> min_frames 3 ceils to 4
        (7, 24.0, dict(fps=48.0), 6),  # 14 frames asked > 7 in the file: floor(min(768, 7)) = 6
        (301, 30.0, dict(fps=2.0), 20),  # 301 / 30 * 2 = 20.07 -> 20
        (339, 30.0, dict(fps=2.0), 22),  # 22.6 -> 22 (floor, not round)
        (3, 24.0, dict(fps=2.0), 2),  # min_frames 4 > floor(3) = 2: the upper clamp wins, as in qwen-vl-utils
        (36000, 30.0, dict(fps=2.0), 768),  # 2400 -> FPS_MAX_FRAMES 768
    ],
)
def test_frame_counts_at_bounds_hand_computed(num_frames: int, video_fps: float, cfg: dict, expected: int) -> None:
    info = info_of(num_frames, fps=video_fps)
    assert num_sampled_frames(info, VideoSampling(**cfg)) == expected


def test_sample_indices_round_halves_to_even() -> None:
    # 4 frames of 0..9: linspace = 0, 3, 6, 9 (exact); 6 frames of 0..9: 0, 1.8, 3.6, 5.4, 7.2, 9
    assert sample_indices(info_of(10), VideoSampling(nframes=6)).tolist() == [0, 2, 4, 5, 7, 9]
    # 4 frames of 0..4: 0, 1.3333, 2.6667, 4
    assert sample_indices(info_of(5), VideoSampling(nframes=4)).tolist() == [0, 1, 3, 4]
    # 4 frames of 0..2 (3-frame file, nframes > total, reelrl only): 0, 0.6667, 1.3333, 2 -> 0, 1, 1, 2
    assert sample_indices(info_of(3), VideoSampling(nframes=4)).tolist() == [0, 1, 1, 2]
    # frame_factor 1 (a reelrl option; qwen-vl-utils' rounding of the linspace itself):
    # linspace(0, 7, 3) = 0, 3.5, 7 -> 3.5 rounds to 4 (even)
    assert sample_indices(info_of(8), VideoSampling(nframes=3, frame_factor=1)).tolist() == [0, 4, 7]
    # linspace(0, 5, 3) = 0, 2.5, 5 -> 2.5 rounds to 2 (even), not 3
    assert sample_indices(info_of(6), VideoSampling(nframes=3, frame_factor=1)).tolist() == [0, 2, 5]


def test_sampled_fps_is_count_over_frames_times_fps() -> None:
    # qwen-vl-utils: sample_fps = nframes / total_frames * video_fps; second_per_grid_ts = 2 / sample_fps
    info = info_of(36000, fps=30.0)
    idx = sample_indices(info, VideoSampling(nframes=324))
    assert sampled_fps(idx, info) == pytest.approx(324 / 36000 * 30)  # 0.27
    assert 2 / sampled_fps(idx, info) == pytest.approx(2 / 0.27)  # 7.4074 s per temporal patch


def test_frame_budget_is_a_float_as_qwen_vl_utils() -> None:
    # fetch_video: max_pixels = max(min(602112, 90316800 / 324 * 2), 105369) = 557511.11 (a float, passed on
    # to smart_resize). 557511.11 = 2073600 * (14 / 27) ** 2, so for 1080x1920 beta = 27 / 14 and
    # 1080 / beta = 560 exactly -> 560; 1920 / beta = 995.6 -> 980. Truncating to 557511 gave 532 x 980.
    info = info_of(36000, fps=30.0, height=1080, width=1920)
    cfg = VideoSampling(nframes=324)
    assert frame_max_pixels(cfg, 324) == 90316800 / 324 * 2
    assert frame_max_pixels(cfg, 324) != int(frame_max_pixels(cfg, 324))
    assert frame_size(info, cfg, 324) == (560, 980)
    # 432 frames of 1080x1440: 90316800 / 432 * 2 = 418133.33 = 1555200 * (14 / 27) ** 2 -> 560, 746.7 -> 728
    assert frame_size(info_of(36000, fps=30.0, height=1080, width=1440), cfg, 432) == (560, 728)
    # past ~1714 frames the floor int(100352 * 1.05) = 105369 (an int) binds: 90316800 / 1716 * 2 = 105264.3
    assert frame_max_pixels(cfg, 1716) == 105369
    # 1080x1920 at that floor: beta = sqrt(2073600 / 105369) = 4.4362; 243.5 -> 224, 432.8 -> 420
    assert frame_size(info, cfg, 1716) == (224, 420)


def test_smart_resize_edges_hand_computed() -> None:
    big = 10**9
    # round_by_factor is Python round: 70 / 28 = 2.5 -> 2 -> 56, 98 / 28 = 3.5 -> 4 -> 112 (halves to even)
    assert smart_resize(70, 98, 28, 1, big) == (56, 112)
    # 42 / 28 = 1.5 -> 2 -> 56; 14 / 28 = 0.5 -> 0 -> raised to one factor, 28
    assert smart_resize(42, 14, 28, 1, big) == (56, 28)
    # aspect ratio exactly 200 is accepted (qwen-vl-utils raises only above): 1 / 28 -> 0 -> 28; 200 / 28 = 7.1 -> 196
    assert smart_resize(1, 200, 28, 1, big) == (28, 196)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 201, 28, 1, big)
    # downscaling keeps one factor per side (qwen-vl-utils 0.0.11): 28x5600 > 7840, beta = sqrt(20) = 4.4721;
    # 28 / beta = 6.3 -> floor 0 -> 28; 5600 / beta = 1252.2 -> 1232
    assert smart_resize(28, 5600, 28, 1, 10 * 28 * 28) == (28, 1232)
    # exactly at max_pixels: not above it, so unchanged (the test is h * w > max_pixels)
    assert smart_resize(560, 1008, 28, 1, 560 * 1008) == (560, 1008)
    # exactly at min_pixels: not below it, unchanged (h * w < min_pixels)
    assert smart_resize(56, 56, 28, 56 * 56, big) == (56, 56)


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


# ---------------------------------------------------------------- orientation


def _turn(rotation: int, hflip: bool):
    """The display transform of a counter-clockwise ``rotation`` then a left-right mirror, on ``[T, H, W, 3]``."""

    def f(a: np.ndarray) -> np.ndarray:
        b = np.rot90(a, rotation // 90, axes=(1, 2))  # [T, H', W', 3]
        return b[:, :, ::-1] if hflip else b

    return f


@pytest.mark.parametrize(("rotation", "hflip"), [(90, False), (180, False), (270, False), (90, True), (0, True)])
def test_display_matrix_turns_frames_upright(tmp_path: Path, rotation: int, hflip: bool) -> None:
    written = blocks(3, 48, 80, seed=rotation + hflip)  # [3, 48, 80, 3], landscape
    lossless = dict(pix_fmt="yuv444p", options={"crf": "0"})
    plain = write_raw(tmp_path / "plain.mp4", written, **lossless)
    turned = write_raw(tmp_path / "turned.mp4", written, rotation=rotation, hflip=hflip, **lossless)
    want = _turn(rotation, hflip)(written)  # [3, H', W', 3]
    info = probe(turned)
    assert (info.height, info.width) == want.shape[1:3]  # 90/270: width and height swapped
    got = decode_frames(turned, [0, 1, 2])  # [3, H', W', 3]
    # Both files hold the same coded pictures: the upright decode is exactly the turned plain decode ...
    np.testing.assert_array_equal(got, _turn(rotation, hflip)(decode_frames(plain, [0, 1, 2])))
    # ... and the written frames turned, up to YUV rounding (a wrong turn would differ by ~100).
    assert np.abs(got.astype(int) - want).max() <= 3
    cfg = VideoSampling(nframes=2, min_pixels=28 * 28, max_pixels=56 * 84)
    sv = load_video(turned, cfg)
    assert sv.frames.shape[1:3] == smart_resize(*want.shape[1:3], 28, 28 * 28, 56 * 84)


def test_display_matrix_rotation_is_np_rot90(tmp_path: Path) -> None:
    written = blocks(2, 32, 64, seed=1)  # [2, 32, 64, 3]
    path = write_raw(tmp_path / "r90.mp4", written, rotation=90, pix_fmt="yuv444p", options={"crf": "0"})
    got = decode_frames(path, [0, 1])  # [2, 64, 32, 3]
    assert got.shape == (2, 64, 32, 3)
    assert np.abs(got.astype(int) - np.rot90(written, 1, axes=(1, 2))).max() <= 3
    assert probe(path).rotation == 90


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotate_tag_turns_frames_clockwise(tmp_path: Path, degrees: int) -> None:
    written = blocks(2, 32, 64, seed=degrees)  # [2, 32, 64, 3]
    lossless = dict(pix_fmt="yuv444p", options={"crf": "0"})
    plain = write_raw(tmp_path / "plain.mkv", written, **lossless)
    tagged = write_raw(tmp_path / "tagged.mkv", written, tags={"rotate": str(degrees)}, **lossless)
    got = decode_frames(tagged, [0, 1])
    clockwise = np.rot90(decode_frames(plain, [0, 1]), -degrees // 90, axes=(1, 2))  # [2, H', W', 3]
    np.testing.assert_array_equal(got, clockwise)
    info = probe(tagged)
    assert (info.height, info.width) == got.shape[1:3]


# ---------------------------------------------------------------- variable frame rate

VFR_FRAMES = 240


@pytest.fixture(scope="module", params=["mp4", "mkv"])
def vfr_video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """240 index frames at irregular times (10 ms to 250 ms apart, time base 1/1000), keyframe every 10 frames.

    MP4 carries a full index (the irregular timestamps show at probe time); Matroska
    does not (the decoder finds the frames off the grid of its nominal 25 fps).
    """
    rng = np.random.default_rng(5)
    pts = np.concatenate([[0], np.cumsum(rng.choice([10, 33, 40, 100, 250], size=VFR_FRAMES - 1))])  # [240] ms
    frames = np.stack([encode_index(i) for i in range(VFR_FRAMES)])  # [240, 64, 64, 3]
    path = tmp_path_factory.mktemp("vfr") / f"vfr.{request.param}"
    write_raw(path, frames, pts=pts.tolist(), time_base=Fraction(1, 1000), gop=10)
    return path, pts / 1000.0


def shown_at(pts: np.ndarray, times: np.ndarray) -> list[int]:
    """Index of the frame shown at each time: the last frame whose timestamp is <= the time."""
    return (np.searchsorted(pts, times + 1e-9, side="right") - 1).tolist()


@pytest.mark.parametrize("cfg", [dict(nframes=8), dict(fps=0.5), dict(nframes=2)])
def test_variable_frame_rate_is_sampled_by_time(vfr_video: tuple[Path, np.ndarray], cfg: dict) -> None:
    path, pts = vfr_video  # pts [240] seconds
    sampling = VideoSampling(**cfg, min_pixels=28 * 28, max_pixels=56 * 56)
    sv = load_video(path, sampling)
    assert sv.info.variable_rate
    assert sv.info.last_time == pytest.approx(pts[-1])
    n = num_sampled_frames(sv.info, sampling)
    times = np.linspace(0, pts[-1], n)  # [n] uniform over the stream's real timeline
    expected = shown_at(pts, times)
    assert expected[0] == 0 and expected[-1] == VFR_FRAMES - 1
    if n > 2:  # time sampling picks other frames than index sampling would
        assert expected != np.linspace(0, VFR_FRAMES - 1, n).round().astype(int).tolist()
    assert codes(sv.frames) == expected
    np.testing.assert_allclose(sv.timestamps, pts[expected], atol=1e-6)
    assert sv.indices.dtype == np.int64 and 0 <= sv.indices.min() <= sv.indices.max() < sv.info.num_frames
    # the fps fed to the model is one over the mean spacing of the real sampled times
    assert sv.fps == pytest.approx((n - 1) / (pts[expected[-1]] - pts[expected[0]]))
    assert sv.fps == pytest.approx(timestamps_fps(sv.timestamps, sv.info))


def test_variable_frame_rate_fps_mode_follows_real_duration(vfr_video: tuple[Path, np.ndarray]) -> None:
    path, pts = vfr_video
    sampling = VideoSampling(fps=2.0, max_frames=10_000, min_pixels=28 * 28, max_pixels=56 * 56)
    sv = load_video(path, sampling)
    info = sv.info
    assert info.variable_rate and info.duration >= pts[-1] > info.duration - 0.5
    assert info.num_frames / info.fps == pytest.approx(info.duration)  # fps is frames per real second
    # 2 frames per second of real duration (rounded down to the frame factor), as for a constant-rate video
    assert len(sv.frames) == 2 * int(info.duration * 2.0 / 2) > 2
    assert codes(sv.frames) == shown_at(pts, np.linspace(0, pts[-1], len(sv.frames)))


def test_variable_frame_rate_probe_and_decode_cost_follow_the_sample(vfr_video: tuple[Path, np.ndarray]) -> None:
    path, _ = vfr_video
    DECODE_STATS.reset()
    probe(path)
    assert DECODE_STATS.frames_decoded <= 12  # the first frame and the last GOP (10 frames)
    DECODE_STATS.reset()
    sv = load_video(path, VideoSampling(nframes=4, min_pixels=28 * 28, max_pixels=56 * 56))
    assert len(sv.frames) == 4
    assert DECODE_STATS.frames_decoded < VFR_FRAMES // 3  # seeks, not a full decode


def test_decode_frames_reports_a_variable_rate_stream(vfr_video: tuple[Path, np.ndarray]) -> None:
    path, _ = vfr_video
    with pytest.raises(VideoError, match=r"vfr\.\w+: frame \d+ is missing .*not on a constant-rate grid"):
        decode_frames(path, np.arange(probe(path).num_frames))


def test_decode_times_picks_the_frame_shown(video: Path, vfr_video: tuple[Path, np.ndarray]) -> None:
    frames, stamps = decode_times(video, [4.99, 0.0, 0.5, 1.01, 0.5])  # 24 fps: frames 119, 0, 12, 24, 12
    assert codes(frames) == [119, 0, 12, 24, 12]
    np.testing.assert_allclose(stamps, np.array([119, 0, 12, 24, 12]) / FPS)
    path, pts = vfr_video
    times = np.array([pts[7], pts[7] - 1e-3, pts[100] + 1e-3, 1e6, -1.0])
    frames, stamps = decode_times(path, times)
    assert codes(frames) == [7, 6, 100, VFR_FRAMES - 1, 0]


def test_constant_rate_stays_index_sampled(video: Path) -> None:
    info = probe(video)
    assert not info.variable_rate and info.last_time is None and info.rotation == 0
    np.testing.assert_allclose(sample_times(info, VideoSampling(nframes=4)), [0, 119 / 72, 238 / 72, 119 / 24])


# ---------------------------------------------------------------- bad paths


def test_bad_paths_each_have_their_own_message(tmp_path: Path) -> None:
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    dangling = tmp_path / "dangling.mp4"
    dangling.symlink_to(tmp_path / "gone.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases = [
        (folder, "is a directory, not a video file"),
        (loop, "symlink loop"),
        (fifo, r"is a FIFO \(named pipe\), not a video file"),  # and nothing blocks opening it
        (Path("/dev/null"), "is a character device, not a video file"),
        (dangling, "broken symlink"),
        (empty, r"empty file \(0 bytes\)"),
        (tmp_path / "nope.mp4", "video file not found"),
    ]
    for path, message in cases:
        for fn in (probe, lambda p: decode_frames(p, [0]), lambda p: load_video(p, VideoSampling())):
            with pytest.raises(VideoError, match=re.escape(str(path)) + ": " + message):
                fn(path)
