"""Evaluation scoring on hand-written completions: strict and benchmark accuracy, claims vs answers."""

from __future__ import annotations

import pytest

from reelrl.data.schema import VideoRow
from reelrl.eval.runner import _check_rates, benchmark_accuracy, reasoning_checks, score_samples
from reelrl.rewards import RewardSpec


def _row(**kw) -> VideoRow:
    base = dict(id="r", video="/v.mp4", question="Which colour appears first?",
                options=["blue", "white", "magenta", "cyan"], answer="A", problem_type="multiple_choice",
                task="order")
    return VideoRow.model_validate({**base, **kw})


def test_claim_and_answer_checks():
    row = _row()
    seen_wrong_letter = reasoning_checks("<think>magenta 0.5s, blue 1.25s. blue first.</think><answer>C</answer>", row)
    assert seen_wrong_letter == {"claim": "A", "consistent": False, "claim_correct": True}
    right = reasoning_checks("<think>blue 0.25s, white 1s. blue first.</think><answer>(A)</answer>", row)
    assert right == {"claim": "A", "consistent": True, "claim_correct": True}
    wrong_claim = reasoning_checks("<think>white 0.25s. white first.</think><answer>B</answer>", row)
    assert wrong_claim == {"claim": "B", "consistent": True, "claim_correct": False}
    nothing = reasoning_checks("<think>no idea.</think><answer>B</answer>", row)
    assert nothing == {"claim": None, "consistent": None, "claim_correct": None}
    count = _row(question="How many times does the square flash?", options=["1", "2", "3", "4"], answer="D",
                 task="count")
    # "1.5s" and "3.5s" are times, not the options "1" / "3": the last claim is "3 flashes" -> C
    assert reasoning_checks("<think>flashes at 0.5s, 1.5s, 3.5s. 3 flashes.</think><answer>C</answer>", count) == {
        "claim": "C", "consistent": True, "claim_correct": False}
    rates = _check_rates([seen_wrong_letter, right, wrong_claim, nothing])
    assert rates == {"consistent": 2 / 3, "claim_correct": 2 / 3}
    assert _check_rates([nothing]) == {"consistent": None, "claim_correct": None}


def test_strict_and_benchmark_accuracy_per_task():
    """``accuracy`` needs an answer tag; ``accuracy_benchmark`` reads choice rows as Video-MME's scorer does."""
    order_a, order_c = _row(id="a"), _row(id="c", answer="C")
    count = _row(id="n", question="How many flashes?", options=None, answer="3", problem_type="numerical",
                 task="count")
    samples = [
        # (row, completion, length): strict, benchmark
        (order_a, "<think>blue first</think><answer>A</answer>", 10),  # 1, 1
        (order_a, "The best answer is A", 6),  # 0 (no tag), 1 (whole output: prefix removed, "A")
        (order_a, "<think>blue</think><answer>A ball</answer>", 8),  # 0 ("A ball" is English), 1 (first A-D)
        (order_c, "Answer: C", 4),  # 0 (no tag), 0 (the "A" of "Answer" comes first)
        (count, "<think>three</think><answer>3</answer>", 9),  # 1, 1
        (count, "3", 1),  # 0, 0: numerical rows keep the strict score
    ]
    result, records = score_samples(samples, [RewardSpec("accuracy", 1.0), RewardSpec("format", 0.5)], skipped=2)
    assert (result["n"], result["skipped"]) == (6, 2)
    assert result["accuracy"] == pytest.approx(2 / 6)
    assert result["accuracy_benchmark"] == pytest.approx(4 / 6)
    assert result["format"] == pytest.approx(3 / 6)
    assert result["mean_reward"] == pytest.approx((1.5 + 0 + 0.5 + 0 + 1.5 + 0) / 6)
    assert result["per_task"]["order"]["n"] == 4
    assert result["per_task"]["order"]["accuracy"] == pytest.approx(1 / 4)
    assert result["per_task"]["order"]["accuracy_benchmark"] == pytest.approx(3 / 4)
    assert result["per_task"]["count"]["accuracy"] == pytest.approx(1 / 2)
    assert result["per_task"]["count"]["accuracy_benchmark"] == pytest.approx(1 / 2)
    assert [r["accuracy"] for r in records] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [r["accuracy_benchmark"] for r in records] == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_benchmark_accuracy_keeps_strict_for_other_types():
    row = _row()  # gold A, four options
    assert benchmark_accuracy("The correct answer is (A).", row, 0.0) == 1.0
    assert benchmark_accuracy("<answer>B</answer> The answer is A", row, 0.0) == 0.0  # the tag wins
    assert benchmark_accuracy("no letter here", row, 0.0) == 0.0
    reg = _row(options=None, answer="2.5", problem_type="regression", task="distance")
    assert benchmark_accuracy("2.5", reg, 0.4) == 0.4
