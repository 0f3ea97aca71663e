"""Time spans written in text: ``"3.5 to 7 seconds"``, ``"1:05 - 1:20"``, ``"[2, 4]"`` -> ``(start, end)`` seconds.

A leaf module (standard library only): the row schema checks grounding rows
with it and :mod:`reelrl.data.answers` re-exports it for the rewards.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_span", "parse_time"]

# One time: h:mm:ss(.f), m:ss(.f) or plain seconds. Minutes and seconds fields are 00-59, so "1:75" is no time.
_CLOCK = r"(\d+:[0-5]\d:[0-5]\d(?:\.\d+)?|\d+:[0-5]\d(?:\.\d+)?|\d+(?:\.\d+)?)"
_T_START = rf"(?<![\w.:\-]){_CLOCK}"  # not a piece of a longer number, clock, version or negative number
_T_END = rf"{_CLOCK}(?![\d:]|\.\d)"
_UNIT = r"(?:\s*(?:s|secs?|seconds?)\b)?"
_SPAN_RES = (
    re.compile(rf"{_T_START}{_UNIT}\s*(?:to|and|until|till|-|–|—|~)\s*{_T_END}{_UNIT}", re.IGNORECASE),
    re.compile(rf"[\[\(]\s*{_CLOCK}{_UNIT}\s*,\s*{_T_END}{_UNIT}\s*[\]\)]", re.IGNORECASE),
)


def parse_time(text: str) -> float:
    """Seconds of one time written ``"7"``, ``"3.5"``, ``"1:05"`` (m:ss), ``"00:03.5"`` or ``"0:01:05"`` (h:mm:ss)."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_span(text: str) -> tuple[float, float] | None:
    """The LAST ``(start, end)`` span in ``text``, in seconds, or ``None``.

    Accepted syntaxes: ``"s to e"``, ``"s and e"``, ``"s until e"``, ``"s-e"``
    (also en/em dash and ``~``), ``"[s, e]"`` / ``"(s, e)"``, so also ``"from
    3.5s to 7s"`` and ``"between 2 and 4 seconds"``; each time in seconds
    (optionally followed by "s" / "sec" / "seconds") or as a clock, ``m:ss`` or
    ``h:mm:ss`` with optional fractions (``"1:05 - 1:20"``, ``"00:03.5 -
    00:07"``, ``"0:01:05-0:01:20"``). What is not one of these is not read as
    a span: a clock with a field over 59 (``"1:75"``), a negative start
    (``"-1 to 3"``), a number inside a longer one (``"3.5.2 to 4"``), a
    non-finite value. The span is returned as written, even when ``start >
    end`` (the tIoU reward scores such a span 0).
    """
    best: tuple[int, float, float] | None = None
    for rx in _SPAN_RES:
        for m in rx.finditer(text):
            start, end = parse_time(m.group(1)), parse_time(m.group(2))
            if not (math.isfinite(start) and math.isfinite(end)):
                continue
            if best is None or m.start() > best[0]:
                best = (m.start(), start, end)
    return None if best is None else (best[1], best[2])
