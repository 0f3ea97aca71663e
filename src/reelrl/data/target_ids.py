"""Object-ID grounding answers: ``"Target ID: 3, Time range: 1.5 to 4"`` -> ``(3, (1.5, 4.0))``.

The answer format is STVG-R1's (github.com/XiaowZhang00/stvg-r1, ``src/open_r1/trainer/grpo_trainer_video.py``
``QUESTION_TEMPLATE``: *provide ... the format "Target ID: [ID], Time range: [start time to end time]" ...
For example: "Target ID: 1, Time range: 12.54 to 17.83"*). A leaf module (standard library only): the row
schema checks gold answers with it, the rewards and the evaluation read predictions with it.

Parsing (:func:`parse_target`) follows STVG-R1's ``parse_timestamp_output`` -- the labels ``Target ID:``
and ``Time range:`` anywhere in the answer, case-insensitive, the range written ``s to e`` or ``s and e``,
both parts required (one missing: nothing is read) -- and deliberately differs where the reference would
misread a malformed answer instead of refusing it:

* each label must occur exactly once (the reference takes the first of several); ``Target IDs``-style
  lists are not read;
* the ID is ASCII digits, optionally in brackets (``[3]``, as the prompt's placeholder shows), and must end
  there: ``"3a"``, ``"3.5"``, ``"-3"`` are refused (the reference reads ``"3a"`` as 3);
* each time is plain seconds (optionally followed by ``s`` / ``sec`` / ``seconds``) or an ``m:ss`` /
  ``h:mm:ss`` clock (fields 00-59) -- ASCII digits only, so look-alike digits are not read; the range may
  also be written with ``-`` (also en/em dash, ``~``) and inside brackets; it must end there: ``"1.5.3 to
  4"``, ``"1 to 2 to 3"``, a negative start or a clock field over 59 are refused (the reference reads
  ``"1.5.3 to 4"`` as nothing but ``"2 to 3.7.1"`` as ``(2, 3.7)``).

A reversed range (``"5 to 2"``) is returned as written; the rewards score it 0 (temporal IoU), the row
schema refuses it in a gold answer.
"""

from __future__ import annotations

import re

from reelrl.data.spans import parse_time

__all__ = ["format_target", "parse_target"]

_FLAGS = re.IGNORECASE | re.ASCII
_ID_LABEL = re.compile(r"target\s*id\s*:", _FLAGS)
_TIME_LABEL = re.compile(r"time\s*range\s*:", _FLAGS)
_ID_VALUE = re.compile(r"\s*(?:\[\s*([0-9]+)\s*\]|([0-9]+))(?![0-9A-Za-z_\-]|\.[0-9])", _FLAGS)
_CLOCK = r"([0-9]+:[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?|[0-9]+:[0-5][0-9](?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)"
_UNIT = r"(?:\s*(?:s|secs?|seconds?)(?![A-Za-z]))?"
_RANGE = rf"{_CLOCK}{_UNIT}\s*(?:to|and|-|–|—|~)\s*{_CLOCK}{_UNIT}"
_TIME_VALUE = re.compile(rf"\s*(?:\[\s*{_RANGE}\s*\]|{_RANGE})(?![0-9A-Za-z:\-_]|\.[0-9]|\s*(?:to|and)\b)", _FLAGS)


def parse_target(text: str) -> tuple[int, tuple[float, float]] | None:
    """``(id, (start, end))`` of an answer ``"Target ID: k, Time range: s to e"``, or ``None`` (module docstring)."""
    ids, times = list(_ID_LABEL.finditer(text)), list(_TIME_LABEL.finditer(text))
    if len(ids) != 1 or len(times) != 1:
        return None
    m_id = _ID_VALUE.match(text, ids[0].end())
    m_time = _TIME_VALUE.match(text, times[0].end())
    if m_id is None or m_time is None:
        return None
    target = int(m_id.group(1) or m_id.group(2))
    a, b = (m_time.group(1), m_time.group(2)) if m_time.group(1) is not None else (m_time.group(3), m_time.group(4))
    return target, (parse_time(a), parse_time(b))


def format_target(target: int, start: float, end: float) -> str:
    """The answer text of ID ``target`` visible ``start``-``end`` seconds: ``"Target ID: 3, Time range: 1.5 to 4"``."""
    return f"Target ID: {target}, Time range: {start:g} to {end:g}"
