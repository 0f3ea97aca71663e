"""Temporal grounding: span parsing in every written form, R@IoU / mIoU, the temporal_grounding gym family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reelrl.data.answers import parse_span, parse_time
from reelrl.data.schema import VideoRow, load_jsonl
from reelrl.eval.runner import grounding_metrics, score_samples
from reelrl.gym import TASKS, GymSpec, chance_accuracy, generate_gym
from reelrl.gym.grounding import _random_guess_iou, grounding_chance, window_lengths
from reelrl.rewards import REWARDS, RewardSpec
from reelrl.video.decode import decode_frames, probe
from tests.gym_pixels import color_masks

WRITTEN = [  # (text, span): every form the issue lists, and neighbours
    ("3.5-7", (3.5, 7.0)),
    ("3.5 to 7.0 seconds", (3.5, 7.0)),
    ("from 3.5s to 7s", (3.5, 7.0)),
    ("00:03.5 - 00:07", (3.5, 7.0)),
    ("1:05 - 1:20", (65.0, 80.0)),
    ("0:01:05-0:01:20", (65.0, 80.0)),
    ("between 2 and 4 seconds", (2.0, 4.0)),
    ("[1.5, 3]", (1.5, 3.0)),
    ("(0:05, 0:09)", (5.0, 9.0)),
    ("4s~6s", (4.0, 6.0)),
    ("5 until 9 sec", (5.0, 9.0)),
    ("The event happens from 12.25 to 13.5 seconds.", (12.25, 13.5)),
    ("first 1 - 2, then 5 - 6", (5.0, 6.0)),  # the last span written
    ("7 to 3", (7.0, 3.0)),  # as written; tIoU scores it 0
]
MALFORMED = [
    "1:75 - 2:00",  # 75 is no seconds field: "05 - 1" or "75 - 2" must not be read
    "-1 to 3",  # a negative start
    "3.5.2 to 4",  # a version number, not a time
    "at 12:30",  # one time, no span
    "1" * 400 + " to 2",  # not finite
    "about three to four seconds",
    "",
]


@pytest.mark.parametrize(("text", "span"), WRITTEN, ids=[t for t, _ in WRITTEN])
def test_every_written_form_of_a_span_parses(text, span):
    assert parse_span(text) == span


@pytest.mark.parametrize("text", MALFORMED, ids=[t[:20] for t in MALFORMED])
def test_malformed_spans_are_not_misread_and_score_zero(text):
    assert parse_span(text) is None
    score = REWARDS.get("tiou")([f"<answer>{text}</answer>"], answer=["2 to 3"], time_span=[None])
    assert score == [0.0]


def test_parse_time_reads_clocks():
    assert parse_time("7") == 7.0 and parse_time("00:03.5") == 3.5
    assert parse_time("1:05") == 65.0 and parse_time("0:01:05") == 65.0 and parse_time("2:00:00.5") == 7200.5


def test_clock_and_seconds_answers_score_alike_against_a_gold_in_seconds():
    tiou = REWARDS.get("tiou")
    got = tiou(["<answer>1:05 - 1:20</answer>", "<answer>65 to 80 seconds</answer>", "<answer>65-72.5</answer>"],
               answer=["65 to 80"] * 3, time_span=[None] * 3)
    assert got == [1.0, 1.0, pytest.approx(0.5)]


def test_r_at_iou_and_miou_hand_computed():
    ious = [0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 1.0, 0.55]
    m = grounding_metrics(ious)
    assert m["n"] == 8
    assert m["mIoU"] == pytest.approx(sum(ious) / 8)
    assert m["R@0.3"] == pytest.approx(6 / 8)  # >= 0.3: 0.3, 0.5, 0.69, 0.7, 1.0, 0.55
    assert m["R@0.5"] == pytest.approx(5 / 8)
    assert m["R@0.7"] == pytest.approx(2 / 8)


def _grounding_row(i: int, answer: str) -> VideoRow:
    return VideoRow(id=f"g{i}", video="v.mp4", question="When is the red disc visible?", answer=answer,
                    problem_type="temporal_grounding", task="temporal_grounding")


def test_eval_summary_reports_miou_and_recalls_for_grounding_rows():
    samples = [  # gold [2, 4): IoU 1, 0.5, 0 (no tag), 0 (disjoint); pred [1, 4): 2/3
        (_grounding_row(0, "2 to 4"), "<think>t</think><answer>2 to 4</answer>", 5),
        (_grounding_row(1, "2 to 4"), "<answer>2 - 3</answer>", 3),
        (_grounding_row(2, "2 to 4"), "2 to 4", 2),
        (_grounding_row(3, "2 to 4"), "<answer>5 to 6</answer>", 3),
        (_grounding_row(4, "2 to 4"), "<answer>0:01 - 0:04</answer>", 3),
    ]
    result, records = score_samples(samples, [RewardSpec("accuracy", 1.0)])
    g = result["per_task"]["temporal_grounding"]["grounding"]
    assert g["mIoU"] == pytest.approx((1 + 0.5 + 0 + 0 + 2 / 3) / 5)
    assert result["per_task"]["temporal_grounding"]["accuracy"] == pytest.approx(g["mIoU"])
    assert (g["R@0.3"], g["R@0.5"], g["R@0.7"]) == (pytest.approx(3 / 5), pytest.approx(3 / 5), pytest.approx(1 / 5))
    assert result["grounding"] == g


# ---------------------------------------------------------------- the gym family


def test_random_guess_iou_hand_computed():
    # T = 2: spans [0,1), [0,2), [1,2) against [0, 1): IoU 1, 1/2, 0
    assert _random_guess_iou(2, 1, 0) == pytest.approx(0.5)
    # T = 3 against [1, 2): [0,1) 0, [0,2) 1/2, [0,3) 1/3, [1,2) 1, [1,3) 1/2, [2,3) 0
    assert _random_guess_iou(3, 1, 1) == pytest.approx((0.5 + 1 / 3 + 1 + 0.5) / 6)


def test_chance_is_the_miou_of_random_spans_and_is_in_the_metadata(tmp_path):
    spec = GymSpec(families=["temporal_grounding"], difficulty=0.5, difficulty_jitter=0.5, seed=4)
    rng = np.random.default_rng(0)
    tiou = REWARDS.get("tiou")
    ious = []
    for i in range(400):  # simulate: random frame-aligned guesses against generated golds
        s = TASKS.get("temporal_grounding")(np.random.default_rng(1000 + i), spec.model_copy(
            update={"difficulty": float(np.clip(0.5 + rng.uniform(-0.5, 0.5), 0, 1)), "difficulty_jitter": 0.0}))
        a, b = sorted(rng.choice(spec.frames + 1, size=2, replace=False))
        ious += tiou([f"<answer>{a / spec.fps:g} to {b / spec.fps:g}</answer>"], answer=[s.answer],
                     time_span=[None])
    assert np.mean(ious) == pytest.approx(grounding_chance(spec), abs=0.03)
    generate_gym(tmp_path, spec, 2, 1, 1, progress=False)
    chance = json.loads((tmp_path / "gym.json").read_text())["chance_accuracy"]
    assert chance["temporal_grounding"] == pytest.approx(chance_accuracy("temporal_grounding", spec))
    assert 0.15 < chance["temporal_grounding"] < 0.4


def _visible_span(frames: np.ndarray, color: str, box: list[int]) -> list[int]:
    """Frames in which ``color`` fills at least half of the interior of ``box`` (a disc fills ~78%, a square all)."""
    y, x, s = box
    inner = color_masks(frames[:, y + 2 : y + s - 2, x + 2 : x + s - 2])[color]  # [T, s-4, s-4]
    return [t for t in range(len(frames)) if inner[t].mean() > 0.5]


@pytest.mark.parametrize("difficulty", [0.0, 1.0])
def test_rendered_video_shows_the_target_exactly_during_the_gold_span(tmp_path, difficulty):
    spec = GymSpec(families=["temporal_grounding"], difficulty=difficulty, seed=7)
    generate_gym(tmp_path, spec, 6, 1, 1, progress=False)
    for row in load_jsonl(tmp_path / "train.jsonl"):
        assert row.problem_type == "temporal_grounding" and row.options is None
        info = probe(row.video)
        frames = decode_frames(row.video, list(range(info.num_frames)))  # [T, H, W, 3], after H.264
        target = row.meta["target"]
        shown = _visible_span(frames, target["color"], target["box"])
        assert shown == list(range(target["start"], target["start"] + target["length"])), row.id
        gold = parse_span(row.answer)
        assert gold == (shown[0] / info.fps, (shown[-1] + 1) / info.fps) == tuple(row.time_span)
        assert REWARDS.get("tiou")([f"<answer>{row.answer}</answer>"], answer=[row.answer],
                                   time_span=[row.time_span]) == [1.0]
        lo, hi = window_lengths(row.difficulty, spec.frames)
        assert lo <= target["length"] <= hi
        if difficulty >= 0.5:  # a distractor with the target's colour in the other shape
            twin = row.meta["distractors"][0]
            assert twin["color"] == target["color"] and twin["shape"] != target["shape"]
        assert row.question.startswith(f"When is the {target['color']} {target['shape']} visible?")
