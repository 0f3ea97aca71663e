"""STVG-R1's reward for object-ID spatio-temporal grounding, and its evaluation metrics.

STVG-R1 (Zhang et al. 2026, arXiv 2602.11730; github.com/XiaowZhang00/stvg-r1,
``src/open_r1/grpo_video.py``) trains GRPO with two reward functions whose values TRL sums with weight 1:

* ``iou_timestamp_reward`` = ``time_reward + spatial_reward``: the temporal IoU of the answer's time range
  with the gold one (``max(0, min(e, e*) - max(s, s*)) / (max(e, e*) - min(s, s*))``, 0 when the union is
  0) plus 1 when the answer's target ID equals the gold ID (the *spatial consistency*: the ID names the
  track, so the boxes follow);
* ``format_reward``: 1 when the completion is ``<think>...</think>`` then ``<answer>...</answer>``.

So ``stvg = w_time * tIoU + w_id * 1[ID correct] + w_format * format`` with all weights 1 (range [0, 3]),
the reference's weighting exactly. The weights are keyword arguments (a recipe's ``kwargs``), so each part
is reachable alone (``w_time: 0, w_format: 0`` is the ID reward only).

Answers are read from the LAST ``<answer>`` block, as the reference does, by
:func:`reelrl.data.target_ids.parse_target` (its docstring lists where it is stricter than the reference's
regexes); as in the reference, an answer that lacks either part scores 0 on both. ``format`` is reelrl's
:func:`reelrl.data.answers.has_format` (each tag exactly once, whitespace allowed around and between),
where the reference ``re.fullmatch``-es ``<think>.*?</think>\\s*<answer>.*?</answer>`` on the stripped text
(which also accepts repeated tags inside the match). Gold: the row's ``answer`` in the same format
(``spatio_temporal_grounding`` rows, validated by the schema); a gold answer that does not parse is an error
naming the row.

Evaluation (:func:`id_grounding_metrics`): the temporal IoUs per task (the evaluation turns them into
``mIoU`` and ``R@0.3/0.5/0.7`` with the same function as for temporal grounding), ``id_accuracy``, and
HC-STVG's ``m_vIoU`` / ``vIoU@0.3`` / ``vIoU@0.5`` (github.com/tzhhhh123/HC-STVG ``eval_hcvg.py``: the sum of
per-frame box IoUs over the union of the two spans' frames, thresholds strict ``>``). With an ID instead of
boxes, the vIoU of an answer is its tIoU when the ID is right (its track's boxes are the target's) and 0
when it is wrong -- exact for tracks that never overlap (the gym's objects never do); on real videos a wrong
track that overlaps the target would earn some vIoU there and earns 0 here. This vIoU is also the row's
``accuracy`` (:func:`reelrl.rewards.functions.score_answer`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from reelrl.data.answers import extract_tag, has_format
from reelrl.data.target_ids import parse_target
from reelrl.rewards.functions import REWARDS, _column, _gold, _text, tiou

__all__ = ["VIOU_THRESHOLDS", "id_grounding_metrics", "stvg_parts", "stvg_reward"]

VIOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5)
"""HC-STVG's vIoU@m thresholds (``eval_hcvg.py``: ``vious > m``)."""


def stvg_parts(answer: str | None, gold: str, row: int = 0) -> tuple[float, float]:
    """``(tIoU, 1[ID correct])`` of an extracted answer (``None``: no answer tag) against a gold answer text."""
    g = parse_target(gold)
    if g is None:
        raise ValueError(f"reward 'stvg', row {row}: gold answer {gold!r} is not 'Target ID: k, Time range: s to e'")
    p = parse_target(answer) if answer is not None else None
    if p is None:
        return 0.0, 0.0
    return tiou(p[1], g[1]), float(p[0] == g[0])


@REWARDS.register("stvg")
def stvg_reward(completions: list[Any], w_time: float = 1.0, w_id: float = 1.0, w_format: float = 1.0,
                **columns: Any) -> list[float | None]:
    """STVG-R1: ``w_time * tIoU + w_id * 1[ID correct] + w_format * format``, weights 1 (module docstring)."""
    answers = _column(columns, "answer", len(completions), "stvg")
    out: list[float | None] = []
    for i, c in enumerate(completions):
        text = _text(c)
        t, ok = stvg_parts(extract_tag(text), _gold(answers[i]), i)
        out.append(w_time * t + w_id * ok + w_format * float(has_format(text)))
    return out


def id_grounding_metrics(rows: Sequence[Any], texts: Sequence[str]) -> dict[str, tuple[list[float], dict[str, float]]]:
    """Per task of ``spatio_temporal_grounding`` rows: ``(tIoUs, {id_accuracy, m_vIoU, vIoU@0.3, vIoU@0.5})``.

    ``rows`` are :class:`reelrl.data.schema.VideoRow` (other problem types are skipped), ``texts`` their
    completions. The tIoUs are for the caller's mIoU / R@m (module docstring).
    """
    parts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, (row, text) in enumerate(zip(rows, texts)):
        if row.problem_type == "spatio_temporal_grounding":
            parts[row.task].append(stvg_parts(extract_tag(text), _gold(row.answer), i))
    out = {}
    for task, v in parts.items():
        vious = [t * ok for t, ok in v]
        n = len(v)
        out[task] = ([t for t, _ in v], {"id_accuracy": sum(ok for _, ok in v) / n, "m_vIoU": sum(vious) / n,
                                         **{f"vIoU@{m:g}": sum(x > m for x in vious) / n for m in VIOU_THRESHOLDS}})
    return out
