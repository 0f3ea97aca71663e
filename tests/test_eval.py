"""Evaluation diagnostics: the reasoning's claim versus the answer, on hand-written completions."""

from __future__ import annotations

from reelrl.data.schema import VideoRow
from reelrl.eval.runner import _check_rates, reasoning_checks


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
