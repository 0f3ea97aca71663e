"""PRIMO R1's progress reward: one minus the normalised absolute error of a progress estimate.

PRIMO R1 (Process Reasoning Induced Monitoring; reelrl's reference notes,
algorithms.md "PRIMO R1 / SOLE-R1: progress estimation") asks for the task
progress as a percentage in [0, 100] and rewards

    r = max(0, 1 - |y_hat - y| / 100)        (plus a separate format reward)

reelrl writes this for any progress range ``[low, high]`` (a row's
``meta["progress_range"]``, default ``[0, 1]``, the gym's scale):

    r = max(0, 1 - |y_hat - y| / (high - low))

so on PRIMO's scale (range ``[0, 100]``) it is the paper's reward exactly. The
format term is not part of it: recipes add the ``format`` reward beside it, as
PRIMO R1 does.

Parsing, stricter than the paper's (which is not published in code): the
``<answer>`` content must be exactly one number (``0.7``, ``.7``, ``-0.1``,
``7e-1``, ``70%``), whitespace around it allowed; a percentage means that share of the
range (``70%`` on ``[0, 1]`` is 0.7, on ``[0, 100]`` is 70). Anything else
("about 0.7", "0.3 or 0.5", "seventy", ``nan``, an empty answer) is
unparseable and scores 0: an answer is never misread as some number in it.
A prediction outside the range is scored as the formula gives (it may reach 0).
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_progress", "progress_error", "progress_score"]

_PROGRESS_RE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(%?)\s*")


def parse_progress(answer: str | None, low: float = 0.0, high: float = 1.0) -> float | None:
    """The progress an ``<answer>`` content states (module docstring), or None when it is not one number."""
    if answer is None:
        return None
    m = _PROGRESS_RE.fullmatch(answer)
    if m is None:
        return None
    x = float(m.group(1))
    if m.group(2):
        x = low + x / 100.0 * (high - low)
    return x if math.isfinite(x) else None


def progress_score(pred: float | None, gold: float, low: float = 0.0, high: float = 1.0) -> float:
    """PRIMO R1's ``max(0, 1 - |pred - gold| / (high - low))``; an unparseable ``pred`` (None) scores 0."""
    if not high > low:
        raise ValueError(f"progress range [{low}, {high}] is empty")
    if pred is None:
        return 0.0
    return max(0.0, 1.0 - abs(pred - gold) / (high - low))


def progress_error(pred: float | None, gold: float, low: float = 0.0, high: float = 1.0) -> float:
    """Absolute error for MAE, capped at the range ``high - low``; unparseable (None) counts as the whole range.

    With this convention ``error / (high - low) == 1 - progress_score`` for every prediction, so the MAE a
    table reports and the mean reward tell the same story.
    """
    if pred is None:
        return high - low
    return min(high - low, abs(pred - gold))
