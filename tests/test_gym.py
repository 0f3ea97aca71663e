"""Tests of the synthetic video gym: rows, videos, verifiability after H.264, determinism, balance."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from reelrl.data.schema import LETTERS, VideoRow, load_jsonl
from reelrl.gym import TASKS, GymSpec, chance_accuracy, ensure_gym, generate_gym
from reelrl.gym.generate import make_sample, sample_rng
from reelrl.gym.render import PALETTE
from tests.gym_pixels import color_masks, nearest_color
from reelrl.gym.tasks import count_range
from reelrl.video.decode import decode_frames, probe, write_video

ALL = ["count", "order", "direction", "color_change", "multi_select", "progress"]
MIN_PIXELS = 20  # a palette colour "is present" in a frame with at least this many pixels


def decode_all(path: str | Path, n: int) -> np.ndarray:
    return decode_frames(path, list(range(n)))  # [T, H, W, 3]


def present(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per colour, a bool [T] saying whether it is visible in each frame."""
    return {c: m.sum(axis=(1, 2)) >= MIN_PIXELS for c, m in color_masks(frames).items()}  # [T] each


def interior_color(frame: np.ndarray, box: list[int]) -> tuple[np.ndarray, str]:
    """Mean RGB of a box's interior (2 px in from its edges) and its nearest palette colour."""
    y, x, s = box
    mean = frame[y + 2 : y + s - 2, x + 2 : x + s - 2].reshape(-1, 3).mean(axis=0)  # [3]
    return mean, nearest_color(mean)


# ---------------------------------------------------------------- hand-written detectors
# Each reads the answer off the decoded pixels (plus generator geometry from meta where a
# human would "know where to look") and returns the answer string in the row's format.


def detect_count(frames: np.ndarray, row) -> str:
    box = row.meta["box"]
    y, x, s = box
    bright = frames[:, y + 2 : y + s - 2, x + 2 : x + s - 2].max(axis=-1).mean(axis=(1, 2))  # [T]
    on = bright > 60  # [T]
    k = int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))  # rising edges
    if row.problem_type == "numerical":
        return str(k)
    return LETTERS[row.options.index(str(k))]


def detect_order(frames: np.ndarray, row) -> str:
    first_seen = {c: int(np.argmax(v)) for c, v in present(frames).items() if v.any()}
    pick = min if "first" in row.question else max
    color = pick(first_seen, key=first_seen.get)
    return LETTERS[row.options.index(color)]


def detect_direction(frames: np.ndarray, row) -> str:
    color = row.question.split("the ")[1].split(" ball")[0]
    masks = color_masks(frames[[0, -1]])[color]  # [2, H, W]
    cents = [np.argwhere(m).mean(axis=0) for m in masks]  # 2 x [2] (y, x)
    dy, dx = cents[1] - cents[0]
    direction = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    return LETTERS[row.options.index(direction)]


def detect_color_change(frames: np.ndarray, row) -> str:
    _, first = interior_color(frames[0], row.meta["box"])
    _, last = interior_color(frames[-1], row.meta["box"])
    assert first != last
    color = first if "before" in row.question else last
    return LETTERS[row.options.index(color)]


def detect_multi_select(frames: np.ndarray, row) -> str:
    seen = {c for c, v in present(frames).items() if v.any()}
    return ",".join(LETTERS[i] for i, c in enumerate(row.options) if c in seen)


def detect_progress(frames: np.ndarray, row) -> str:
    dot = row.question.split("the ")[2].split(" dot")[0]
    by, bx, bh, bw = row.meta["bar"]
    above = color_masks(frames[:, :by])[dot].sum(axis=(1, 2))  # [T] dot pixels above the bar
    flash = int(np.argmax(above >= MIN_PIXELS))
    mid = frames[flash, by + bh // 2, bx : bx + bw].astype(int)  # [bw, 3] middle row of the bar
    gray = np.abs(mid - 70).max(axis=-1) < 40  # [bw] empty part of the bar
    return f"{1.0 - gray.mean():.3f}"


DETECTORS = {
    "count": detect_count,
    "order": detect_order,
    "direction": detect_direction,
    "color_change": detect_color_change,
    "multi_select": detect_multi_select,
    "progress": detect_progress,
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gym_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gym")
    spec = GymSpec(families=ALL, difficulty=0.5, difficulty_jitter=0.5, count_mode="multiple_choice", seed=3)
    generate_gym(out, spec, 2 * len(ALL), len(ALL), len(ALL), progress=False)
    return out


# ---------------------------------------------------------------- layout and rows


def test_rows_validate_and_videos_decode(gym_dir: Path) -> None:
    manifest = json.loads((gym_dir / "gym.json").read_text())
    assert manifest["counts"] == {"train": 12, "val": 6, "test": 6}
    for split, n in manifest["counts"].items():
        rows = load_jsonl(gym_dir / f"{split}.jsonl")
        assert len(rows) == n
        assert Counter(r.task for r in rows) == {f: n // len(ALL) for f in ALL}  # round-robin, equal shares
        for r in rows:
            assert r.id.startswith(f"{split}-{r.task}-")
            assert r.reasoning and len(r.reasoning.split()) < 25
            info = probe(r.video)
            assert (info.num_frames, info.height, info.width) == (16, 84, 84)
            assert info.fps == pytest.approx(4.0)
            assert decode_all(r.video, 16).shape == (16, 84, 84, 3)
    raw = (gym_dir / "train.jsonl").read_text().splitlines()[0]
    assert json.loads(raw)["video"] == "videos/train/count_000000.mp4"  # relative to the JSONL's folder


def test_answers_recovered_from_decoded_pixels(gym_dir: Path) -> None:
    for split in ("train", "val", "test"):
        for r in load_jsonl(gym_dir / f"{split}.jsonl"):
            got = DETECTORS[r.task](decode_all(r.video, 16), r)
            if r.problem_type == "regression":
                assert abs(float(got) - float(r.answer)) <= 0.03, (r.id, got, r.answer)
            else:
                assert got == r.answer, (r.id, got, r.answer, r.reasoning)


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("difficulty", [0.0, 1.0])
def test_detectors_per_family_extremes(tmp_path: Path, family: str, difficulty: float) -> None:
    """Smallest objects / all distractors (d=1) and biggest (d=0) both survive H.264."""
    spec = GymSpec(families=[family], difficulty=difficulty, count_mode="numerical", seed=11)
    for i in range(4):
        _, s = make_sample(spec, "train", i)
        path = write_video(tmp_path / f"{i}.mp4", s.frames, s.fps)
        row = VideoRow(id=str(i), video=str(path), question=s.question, options=s.options, answer=s.answer,
                       problem_type=s.problem_type, task=family, meta=s.meta)  # type: ignore[arg-type]
        got = DETECTORS[family](decode_all(path, spec.frames), row)
        if s.problem_type == "regression":
            assert abs(float(got) - float(s.answer)) <= 0.03
        else:
            assert got == s.answer, (family, difficulty, i, got, s.answer, s.reasoning)


# ---------------------------------------------------------------- determinism and seeds


def test_deterministic_and_worker_independent(tmp_path: Path) -> None:
    spec = GymSpec(families=ALL, difficulty=0.7, seed=5)
    a, b = tmp_path / "a", tmp_path / "b"
    generate_gym(a, spec, 6, 6, 0, progress=False)
    generate_gym(b, spec, 6, 6, 0, workers=2, progress=False)
    for split in ("train", "val"):
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
    assert (a / "gym.json").read_bytes() == (b / "gym.json").read_bytes()
    assert not (a / "test.jsonl").exists()
    for ra, rb in zip(load_jsonl(a / "train.jsonl"), load_jsonl(b / "train.jsonl")):
        np.testing.assert_array_equal(decode_all(ra.video, 16), decode_all(rb.video, 16))
    # a sample does not depend on which other samples were made, nor on the order
    fam, s2 = make_sample(spec, "val", 2)
    _, s0 = make_sample(spec, "val", 0)
    fam_again, s2_again = make_sample(spec, "val", 2)
    assert fam == fam_again == "direction"
    np.testing.assert_array_equal(s2.frames, s2_again.frames)
    assert s2.answer == s2_again.answer


def test_splits_disjoint(gym_dir: Path) -> None:
    ids, keys = [], []
    for split in ("train", "val", "test"):
        for r in load_jsonl(gym_dir / f"{split}.jsonl"):
            ids.append(r.id)
            keys.append(tuple(r.meta["spawn_key"]))
    assert len(set(ids)) == len(ids)
    assert len(set(keys)) == len(keys)
    spec = GymSpec(seed=3)
    draws = {s: sample_rng(spec, s, 0).integers(0, 2**62, size=4).tolist() for s in ("train", "val", "test")}
    assert len({tuple(v) for v in draws.values()}) == 3
    # the same index in different splits gives a different video
    frames = [make_sample(spec, s, 0)[1].frames for s in ("train", "val", "test")]
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])


def test_ensure_gym_regenerates_only_on_change(tmp_path: Path) -> None:
    spec = GymSpec(families=["count", "order"], seed=1)
    ensure_gym(tmp_path, spec, 2, 2, 2, progress=False)
    video = tmp_path / "videos/train/count_000000.mp4"
    stamp = video.stat().st_mtime_ns
    ensure_gym(tmp_path, spec, 2, 2, 2, progress=False)
    assert video.stat().st_mtime_ns == stamp  # untouched
    ensure_gym(tmp_path, spec.model_copy(update={"seed": 2}), 2, 2, 2, progress=False)
    assert json.loads((tmp_path / "gym.json").read_text())["spec"]["seed"] == 2
    assert video.stat().st_mtime_ns != stamp
    ensure_gym(tmp_path, spec.model_copy(update={"seed": 2}), 4, 2, 2, progress=False)  # counts changed
    assert len(load_jsonl(tmp_path / "train.jsonl")) == 4


def test_ensure_gym_regenerates_when_the_encoder_options_change(tmp_path: Path, monkeypatch) -> None:
    import reelrl.gym.generate as generate

    spec = GymSpec(families=["count"], seed=1)
    ensure_gym(tmp_path, spec, 1, 0, 0, progress=False)
    video = tmp_path / "videos/train/count_000000.mp4"
    stamp = video.stat().st_mtime_ns
    monkeypatch.setattr(generate, "X264_PARAMS", generate.X264_PARAMS + ":trellis=0")
    ensure_gym(tmp_path, spec, 1, 0, 0, progress=False)  # same spec and counts, other encoder options
    assert video.stat().st_mtime_ns != stamp
    assert json.loads((tmp_path / "gym.json").read_text())["encoder"]["x264_params"].endswith(":trellis=0")


# ---------------------------------------------------------------- balance and chance


@pytest.mark.parametrize("family", ["count", "order", "direction", "color_change"])
def test_answer_letters_balanced(family: str) -> None:
    spec = GymSpec(families=[family], difficulty=0.5, difficulty_jitter=0.5, count_mode="multiple_choice")
    fn = TASKS.get(family)
    letters = Counter(fn(np.random.default_rng(i), spec).answer for i in range(200))
    assert set(letters) == set("ABCD")
    assert max(letters.values()) <= 0.40 * 200, letters
    assert min(letters.values()) >= 0.12 * 200, letters


def test_multi_select_balanced_and_sound() -> None:
    spec = GymSpec(families=["multi_select"], n_options=4)
    fn = TASKS.get("multi_select")
    per_letter: Counter[str] = Counter()
    sizes: Counter[int] = Counter()
    for i in range(300):
        s = fn(np.random.default_rng(i), spec)
        chosen = s.answer.split(",")
        assert chosen == sorted(set(chosen))
        assert {s.options[LETTERS.index(c)] for c in chosen} == set(s.meta["shown"])
        per_letter.update(chosen)
        sizes[len(chosen)] += 1
    assert set(sizes) == {1, 2, 3}  # never empty, never all options
    # each letter is in the gold set with probability E[k]/n = 2/4
    assert all(0.40 * 300 <= per_letter[c] <= 0.60 * 300 for c in "ABCD"), per_letter


def test_count_answers_uniform_over_range() -> None:
    spec = GymSpec(families=["count"], difficulty=1.0, count_mode="numerical")
    assert count_range(1.0, spec) == (1, 6)
    fn = TASKS.get("count")
    ks = Counter(int(fn(np.random.default_rng(i), spec).answer) for i in range(600))
    assert set(ks) == {1, 2, 3, 4, 5, 6}
    assert all(60 <= v <= 140 for v in ks.values()), ks
    s = fn(np.random.default_rng(0), spec)
    assert len(s.meta["starts"]) == int(s.answer) == s.reasoning.count("s,") + 1


def test_chance_accuracy_values() -> None:
    mc = GymSpec(families=ALL, count_mode="multiple_choice", n_options=4)
    assert {f: chance_accuracy(f, mc) for f in ALL} == pytest.approx(
        {"count": 0.25, "order": 0.25, "direction": 0.25, "color_change": 0.25, "multi_select": 1 / 15,
         "progress": 0.1}
    )
    assert chance_accuracy("count", GymSpec(difficulty=0.0)) == pytest.approx(1 / 3)  # k in 1..3
    assert chance_accuracy("count", GymSpec(difficulty=1.0)) == pytest.approx(1 / 6)  # k in 1..6
    # jitter 0.5 around 0.5: d ~ U[0, 1], four equal quarters with ranges of 3, 4, 5, 6 counts
    assert chance_accuracy("count", GymSpec(difficulty=0.5, difficulty_jitter=0.5)) == pytest.approx(
        (1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 4
    )
    # jitter past the edge: d ~ clip(U[0.6, 1.4]) -> P(range 5) = 0.15/0.8, P(range 6) = 0.65/0.8
    assert chance_accuracy("count", GymSpec(difficulty=1.0, difficulty_jitter=0.4)) == pytest.approx(
        (0.15 / 5 + 0.65 / 6) / 0.8
    )
    assert chance_accuracy("direction", GymSpec(n_options=3)) == pytest.approx(1 / 3)
    assert chance_accuracy("direction", GymSpec(n_options=6)) == pytest.approx(1 / 4)
    assert chance_accuracy("multi_select", GymSpec(n_options=3)) == pytest.approx(1 / 7)


def test_progress_chance_matches_simulation() -> None:
    spec = GymSpec(families=["progress"])
    fn = TASKS.get("progress")
    rng = np.random.default_rng(0)
    answers = np.array([float(fn(np.random.default_rng(i), spec).answer) for i in range(200)])  # [200]
    assert answers.min() >= 0.1 and answers.max() <= 0.9
    guesses = rng.uniform(0, 1, size=(200, 200))  # [answers, guesses]
    hit = np.abs(guesses - answers[:, None]) <= 0.05
    assert hit.mean() == pytest.approx(chance_accuracy("progress", spec), abs=0.01)


# ---------------------------------------------------------------- spec validation and rendering


def test_spec_validation_errors() -> None:
    with pytest.raises(ValidationError, match="multiple of 28"):
        GymSpec(height=80)
    with pytest.raises(ValidationError, match="valid names: .*count"):
        GymSpec(families=["cnt"])
    with pytest.raises(ValidationError, match="extra"):
        GymSpec(frame=16)
    with pytest.raises(ValidationError, match="count needs >= 11 frames for up to 6 flashes, got 10"):
        GymSpec(families=["count"], frames=10)
    with pytest.raises(ValidationError, match="duplicates"):
        GymSpec(families=["count", "count"])
    with pytest.raises(KeyError, match="valid names"):
        chance_accuracy("nope", GymSpec())


def test_every_family_has_a_chance_and_needs_time() -> None:
    spec = GymSpec(families=ALL, difficulty=0.5)
    for f in TASKS.names():
        assert 0 < chance_accuracy(f, spec) < 1
        s = TASKS.get(f)(np.random.default_rng(0), spec)
        assert s.frames.shape == (16, 84, 84, 3) and s.frames.dtype == np.uint8
        # the video changes over time: no single frame equals every other
        assert len({s.frames[t].tobytes() for t in range(16)}) > 1


def test_palette_colours_stay_nearest_after_h264(tmp_path: Path) -> None:
    """A 12 px square of every colour is still classified as itself after encoding."""
    frames = np.full((2, 84, 84, 3), 12, dtype=np.uint8)  # [T, H, W, 3]
    boxes = {}
    for i, (name, rgb) in enumerate(PALETTE.items()):
        y, x = 8 + 36 * (i // 4), 6 + 20 * (i % 4)
        frames[:, y : y + 12, x : x + 12] = rgb
        boxes[name] = [y, x, 12]
    dec = decode_all(write_video(tmp_path / "p.mp4", frames, 4.0), 2)
    for name, box in boxes.items():
        assert interior_color(dec[1], box)[1] == name


def test_frames_per_step_holds_each_step(tmp_path: Path) -> None:
    spec = GymSpec(families=["count", "order"], frames=24, frames_per_step=2, difficulty=1.0, seed=4)
    fam, s = make_sample(spec, "train", 0)
    assert fam == "count" and s.frames.shape[0] == 24 and s.fps == 4.0
    np.testing.assert_array_equal(s.frames[0::2], s.frames[1::2])  # every step held for 2 frames
    # trace times are true seconds: step i starts at frame 2i, i.e. at 2i / 4 s
    assert s.reasoning.startswith("flashes at " + ", ".join(f"{2 * i / 4:g}s" for i in s.meta["starts"]))
    path = write_video(tmp_path / "c.mp4", s.frames, s.fps)
    row = VideoRow(id="c", video=str(path), question=s.question, answer=s.answer, problem_type="numerical",
                   meta=s.meta)
    assert detect_count(decode_all(path, 24), row) == s.answer
    with pytest.raises(ValidationError, match="multiple of frames_per_step"):
        GymSpec(frames=15, frames_per_step=2, families=["order"])
    with pytest.raises(ValidationError, match="count needs >= 11 steps of 2 frames"):
        GymSpec(frames=16, frames_per_step=2, families=["count"])
