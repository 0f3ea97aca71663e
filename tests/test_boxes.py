"""Box answers: parsing in the forms Qwen2.5-VL writes them, IoU on hand-computed cases, the box reward and rows."""

from __future__ import annotations

import pytest

from reelrl.data.boxes import box_iou, box_text, parse_box
from reelrl.data.schema import VideoRow
from reelrl.rewards import REWARDS, score_answer


@pytest.mark.parametrize("text, box", [
    ("[12, 30, 40, 58]", (12, 30, 40, 58)),
    ('{"bbox_2d": [12, 30, 40, 58], "label": "cup"}', (12, 30, 40, 58)),
    ("(1.5,2,3.25,4)", (1.5, 2, 3.25, 4)),
    ("12, 30, 40, 58", (12, 30, 40, 58)),
    ("first [0, 0, 1, 1] then [2, 2, 9, 9]", (2, 2, 9, 9)),  # the last box
])
def test_parse_box_reads_the_written_forms(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize("text", ["[1, 2, 3]", "[1, 2, 3, 4, 5]", "[-1, 2, 3, 4]", "12 30 40 58", "box", "",
                                  "[1e400, 2, 3, 4]", "x12, 30, 40, 58", "[1.2.3, 4, 5, 6]"])
def test_parse_box_does_not_misread(text):
    assert parse_box(text) is None


def test_box_iou_hand_computed():
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 6)) == pytest.approx(8 / 100)  # inside
    assert box_iou((5, 5, 1, 1), (0, 0, 10, 10)) == 0.0  # reversed: no area
    assert box_iou((0, 0, 10, 10), (0, 0, 0, 0)) == 0.0  # gold without area (an invisible object)
    assert box_text((1.0, 2.5, 3.0, 4.0)) == "[1, 2.5, 3, 4]"


def test_box_iou_reward_and_accuracy_dispatch():
    gold = ["[0, 0, 10, 10]"] * 4
    outs = ["<answer>[5, 5, 15, 15]</answer>", "<answer>[0,0,10,10]</answer>", "[0, 0, 10, 10]", "<answer>no</answer>"]
    assert REWARDS.get("box_iou")(outs, answer=gold) == pytest.approx([25 / 175, 1.0, 0.0, 0.0])
    assert score_answer("box", "[5, 5, 15, 15]", "[0, 0, 10, 10]") == pytest.approx(25 / 175)
    with pytest.raises(ValueError, match="row 3.*holds no box"):
        score_answer("box", "[1, 1, 2, 2]", "somewhere", row=3)


def test_box_rows_are_validated():
    VideoRow(id="a", video="v.mp4", question="q", answer="[1, 2, 30, 40]", problem_type="box")
    with pytest.raises(ValueError, match=r"x2 > x1"):
        VideoRow(id="b", video="v.mp4", question="q", answer="[30, 2, 1, 40]", problem_type="box")
    with pytest.raises(ValueError, match=r"\[x1, y1, x2, y2\]"):
        VideoRow(id="c", video="v.mp4", question="q", answer="top left", problem_type="box")
