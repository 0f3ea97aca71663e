"""VideoTG-R1's two data agents over any temporal-grounding JSONL: difficulty estimation, boundary reflection.

Both run the model greedily on every row (:func:`reelrl.eval.runner.decode_rows`)
and return the rows with what they found; ``reelrl grounding-agents`` runs them
from the command line and writes the rows back as JSONL.

* **Difficulty estimation** (VideoTG-R1's Difficulty Estimation Agent): the
  model's zero-shot temporal IoU on the row (the ``tiou`` reward of its
  ``<answer>``) becomes ``difficulty = 1 - IoU`` and ``meta.zero_shot_iou``;
  the ``difficulty_curriculum`` row source orders rows by it (easiness
  ``1 - difficulty``), as the paper orders them by zero-shot IoU.
* **Boundary reflection** (its Boundary Reflection Agent): the frames of the
  annotated span are blanked (:func:`reelrl.video.transforms.mask_span`) and
  the question asks for another moment where the query happens, or "none"
  (:data:`REFLECT_QUESTION`). A row is flagged as partially annotated when the
  answer holds a span of which at least ``min_outside`` (default half) lies
  outside the annotated one: the model found the query elsewhere.
  ``meta.boundary_reflection`` records the answer, the span and the flag;
  ``drop_flagged`` removes flagged rows.

The paper's agent prompts and thresholds were not published with the
abstract; the blanking, the question and ``min_outside`` are reelrl's
choices. Rows without a span (neither in the answer nor ``time_span``) or
whose video cannot be probed are left unflagged and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelrl.data.answers import extract_tag, parse_span
from reelrl.data.schema import VideoRow
from reelrl.eval.runner import decode_rows
from reelrl.rewards import REWARDS
from reelrl.video.decode import VideoError, probe
from reelrl.video.transforms import FrameTransform, mask_span

__all__ = ["REFLECT_QUESTION", "AgentCounts", "estimate_difficulty", "gold_span", "outside_fraction",
           "reflect_boundaries"]

REFLECT_QUESTION = (
    "{question} The part of the video from {start:g} to {end:g} seconds is blanked out. If the event also "
    "happens at another time in the video, give that time span in seconds; if it does not, answer none."
)
"""The boundary-reflection question: the row's question, the blanked span, and the way to say "nowhere else"."""


@dataclass
class AgentCounts:
    rows: int = 0
    decoded: int = 0
    no_span: int = 0
    flagged: int = 0
    dropped: int = 0


def gold_span(row: VideoRow) -> tuple[float, float] | None:
    """The row's annotated span: the one in its answer, else ``time_span``."""
    span = parse_span(row.answer)
    return span if span is not None else (tuple(row.time_span) if row.time_span is not None else None)


def outside_fraction(pred: tuple[float, float], gold: tuple[float, float]) -> float:
    """Fraction of the predicted span's length outside the gold span (0 for an empty or reversed prediction)."""
    (s, e), (gs, ge) = pred, gold
    if e <= s:
        return 0.0
    inside = max(0.0, min(e, ge) - max(s, gs))
    return (e - s - inside) / (e - s)


def estimate_difficulty(vlm, tokenizer, encoder, rows: list[VideoRow], sampling, **decode) -> tuple[list[VideoRow], AgentCounts]:
    """Rows with ``difficulty = 1 - zero-shot IoU`` and ``meta.zero_shot_iou`` / ``meta.zero_shot_answer``."""
    counts = AgentCounts(rows=len(rows))
    samples = decode_rows(vlm, tokenizer, encoder, rows, sampling, title="difficulty", **decode)
    tiou = REWARDS.get("tiou")
    found = {}
    for row, text, _ in samples:
        iou = float(tiou([text], answer=[row.answer], time_span=[row.time_span])[0])
        found[row.id] = (iou, extract_tag(text))
    out = []
    for row in rows:
        if row.id not in found:  # unreadable video: keep the row as it was
            out.append(row)
            continue
        iou, answer = found[row.id]
        counts.decoded += 1
        out.append(row.model_copy(update={"difficulty": 1.0 - iou,
                                          "meta": {**row.meta, "zero_shot_iou": iou, "zero_shot_answer": answer}}))
    return out, counts


def _blank_span(start_frac: float, end_frac: float) -> FrameTransform:
    def blank(frames):
        return mask_span(frames, start_frac, end_frac)  # [T, H, W, 3]

    return blank


def reflect_boundaries(
    vlm, tokenizer, encoder, rows: list[VideoRow], sampling, *, min_outside: float = 0.5, drop_flagged: bool = False,
    **decode,
) -> tuple[list[VideoRow], AgentCounts]:
    """Rows with ``meta.boundary_reflection`` (module docstring); flagged ones removed when ``drop_flagged``."""
    counts = AgentCounts(rows=len(rows))
    asked, views, golds = [], [], {}
    for row in rows:
        span = gold_span(row)
        try:
            duration = probe(row.video).duration if span is not None else None
        except VideoError:
            duration = None
        if span is None or not duration:
            counts.no_span += 1
            continue
        s, e = (min(max(t / duration, 0.0), 1.0) for t in span)
        golds[row.id] = span
        asked.append(row.model_copy(update={"question": REFLECT_QUESTION.format(
            question=row.question, start=span[0], end=span[1])}))
        views.append((_blank_span(s, e), f"reflect({s:.4f}-{e:.4f})"))
    samples = decode_rows(vlm, tokenizer, encoder, asked, sampling, views=views, title="boundary reflection",
                          **decode)
    verdicts = {}
    for row, text, _ in samples:
        answer = extract_tag(text)
        pred = parse_span(answer) if answer is not None else None
        flagged = pred is not None and outside_fraction(pred, golds[row.id]) >= min_outside
        verdicts[row.id] = {"answer": answer, "span": list(pred) if pred else None, "flagged": flagged}
    out = []
    for row in rows:
        if row.id not in verdicts:
            out.append(row)
            continue
        v = verdicts[row.id]
        counts.decoded += 1
        counts.flagged += v["flagged"]
        if v["flagged"] and drop_flagged:
            counts.dropped += 1
            continue
        out.append(row.model_copy(update={"meta": {**row.meta, "boundary_reflection": v}}))
    return out, counts
