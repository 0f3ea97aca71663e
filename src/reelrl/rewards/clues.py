"""Rewards of clue traces (Video-Thinker): the grounded times (``clue``) and the trace's structure (``clue_format``).

Video-Thinker (arXiv 2510.23473, Sec. 3.2, Eq. 3) rewards GRPO with ``r = r_correct + r_format`` only, where
``r_format`` "measures adherence to the structured reasoning format with <time>, <caption> and <think>
tags"; its grounding is evaluated, not rewarded (Sec. 4.3: the ``<time>`` segments of the answer are
extracted and scored by mIoU and Recall@K against the annotated key segments). ``clue`` turns that
evaluation into a reward, a reelrl addition; ``clue_format`` is ``r_format`` as the paper describes it in
words (its code is not part of the reference).

Clues (:func:`parse_clues`)
---------------------------
Every ``<time>...</time>`` pair of the completion outside its ``<answer>...</answer>`` blocks, in order
(Video-Thinker's blocks put them outside ``<think>``; an ``inline`` trace inside one ``<think>``: both are
read). Its content must be exactly one span and nothing else: ``s-e`` (also en/em dash, ``~``) or ``s to
e``, each time plain seconds (``3.5``, optionally followed by ``s`` / ``sec`` / ``seconds``) or a clock
``m:ss`` / ``h:mm:ss`` with optional fraction (``00:03.5``, Video-Thinker-10K's ``00:00-00:10``); ASCII
digits only, surrounding whitespace allowed. Anything else -- empty, one time, words, a third number,
a negative start, a clock field over 59, a non-finite value, ``end <= start`` -- is a MALFORMED clue: it
is kept (as ``None``) and scores 0, it is never read as some other span.

``clue`` (values in [0, 1])
---------------------------
Gold: the row's true event spans (:func:`reelrl.gym.clues.events_of`: ``meta["events"]``, else the gym
family's extractor), else the row's ``time_span`` as the one event; a row with neither is a
:class:`reelrl.gym.clues.ClueError` naming it, as is a gold span without length. With ``P`` the clues
(malformed ones scoring 0) and ``G`` the gold spans, tIoU as in :func:`reelrl.rewards.functions.tiou`::

    precision = mean_{p in P} max_{g in G} tIoU(p, g)
    recall    = mean_{g in G} max_{p in P} tIoU(p, g)
    clue      = (precision + recall) / 2

so every clue has to be on some event (a wrong or malformed clue lowers precision) and every event has to
be found (recall): naming one easy event, or spraying many clues, does not reach 1. No clue at all: 0. A
clue outside the video is scored as written (not clipped): it overlaps no event, so it scores 0, and one
running past the end loses by its larger union -- clipping would let ``0-9999`` cover everything.
"""

from __future__ import annotations

import math
import re
from typing import Any

from reelrl.data.spans import parse_time
from reelrl.gym.clues import ClueError, events_of
from reelrl.rewards.functions import REWARDS, _text, tiou

__all__ = ["parse_clues", "gold_spans", "clue_score", "has_clue_format"]

_CLOCK = r"([0-9]+:[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?|[0-9]+:[0-5][0-9](?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)"
_UNIT = r"(?:\s*(?:s|secs?|seconds?))?"
_CLUE_SPAN = re.compile(rf"\s*{_CLOCK}{_UNIT}\s*(?:-|–|—|~|to)\s*{_CLOCK}{_UNIT}\s*", re.IGNORECASE | re.ASCII)
_TIME_TAG = re.compile(r"<time>(.*?)</time>", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>.*?</answer>", re.DOTALL)


def parse_clue(content: str) -> tuple[float, float] | None:
    """The span of one ``<time>`` tag's content, or ``None`` when it is malformed (module docstring)."""
    m = _CLUE_SPAN.fullmatch(content)
    if m is None:
        return None
    start, end = parse_time(m.group(1)), parse_time(m.group(2))
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        return None
    return start, end


def parse_clues(text: str) -> list[tuple[float, float] | None]:
    """Every ``<time>`` clue of ``text`` outside ``<answer>`` blocks, in order; ``None`` for a malformed one."""
    return [parse_clue(c) for c in _TIME_TAG.findall(_ANSWER_BLOCK.sub(" ", text))]


def gold_spans(row_id: str, task: str, meta: dict[str, Any] | None, time_span: Any) -> list[tuple[float, float]]:
    """The row's true event spans in seconds (module docstring); raises :class:`ClueError` naming the row."""
    clues = events_of(row_id, task, meta)
    if clues is not None:
        spans = [(e.start, e.end) for e in clues.events]
    elif time_span is not None:
        spans = [(float(time_span[0]), float(time_span[1]))]
    else:
        raise ClueError(f"row {row_id}: the clue reward needs the true span of an event: meta.events, a gym family "
                        "with an event extractor, or time_span")
    for s, e in spans:
        if not e > s:
            raise ClueError(f"row {row_id}: event span [{s}, {e}] has no length; the clue reward cannot match it")
    return spans


def clue_score(clues: list[tuple[float, float] | None], gold: list[tuple[float, float]]) -> float:
    """``(precision + recall) / 2`` of best-match tIoU (module docstring); 0 without clues."""
    if not clues:
        return 0.0
    ious = [[tiou(p, g) if p is not None else 0.0 for g in gold] for p in clues]  # [P][G]
    precision = sum(max(row) for row in ious) / len(clues)
    recall = sum(max(ious[i][j] for i in range(len(clues))) for j in range(len(gold))) / len(gold)
    return (precision + recall) / 2


@REWARDS.register("clue")
def clue_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """Grounded ``<time>`` clues against the row's true event spans (module docstring); columns ``task``,
    ``meta``, ``time_span`` (each optional), ``id`` to name a row in errors."""
    n = len(completions)

    def col(name: str, default: Any) -> list[Any]:
        values = columns.get(name)
        values = [default] * n if values is None else list(values)
        if len(values) != n:
            raise ValueError(f"reward 'clue': column {name!r} has {len(values)} entries for {n} completions")
        return values

    ids, tasks, metas, spans = col("id", None), col("task", "default"), col("meta", None), col("time_span", None)
    gold: dict[tuple, list[tuple[float, float]]] = {}  # a row's G completions share its column values
    out: list[float | None] = []
    for i, c in enumerate(completions):
        key = (ids[i], tasks[i], id(metas[i]) if metas[i] is not None else -1 - i, repr(spans[i]))
        if key not in gold:
            gold[key] = gold_spans(str(ids[i] if ids[i] is not None else f"#{i}"), str(tasks[i]), metas[i], spans[i])
        out.append(float(clue_score(parse_clues(_text(c)), gold[key])))
    return out


_TAGS = ("time", "caption", "think")
_FREE = r"(?:(?!</?(?:time|caption|think|answer)>).)*?"
_BLOCK = re.compile(rf"<time>{_FREE}</time>\s*<caption>{_FREE}</caption>\s*<think>{_FREE}</think>", re.DOTALL)
_ENDS_WITH_ANSWER = re.compile(rf"<answer>{_FREE}</answer>\s*\Z", re.DOTALL)


def has_clue_format(text: str) -> bool:
    """Video-Thinker's structure: >= 1 ``<time>`` ``<caption>`` ``<think>`` block, every such tag in a block, and
    one ``<answer>...</answer>`` that ends the text.

    Free text may come before, between and after the blocks (Video-Thinker-7B opens with "Let me break this
    down..."); tags inside a tag's content, a caption or thought without its time, a second answer, or text
    after the answer fail.
    """
    blocks = len(_BLOCK.findall(text))
    if blocks == 0 or any(text.count(f"<{t}>") != blocks or text.count(f"</{t}>") != blocks for t in _TAGS):
        return False
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return False
    return _ENDS_WITH_ANSWER.search(text) is not None and text.rfind("</think>") < text.find("<answer>")


@REWARDS.register("clue_format")
def clue_format_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 when the completion has Video-Thinker's clue structure (:func:`has_clue_format`), else 0.0."""
    return [1.0 if has_clue_format(_text(c)) else 0.0 for c in completions]
