"""2-D boxes written in text: ``"[12, 30, 40, 58]"``, ``'{"bbox_2d": [12, 30, 40, 58]}'`` -> ``(x1, y1, x2, y2)``.

A leaf module (standard library only). The format is Qwen2.5-VL's grounding
output: absolute pixel coordinates ``x1, y1, x2, y2`` (left, top, right,
bottom) of the image as the model saw it, in square brackets, optionally as a
JSON ``"bbox_2d"`` value. Scene-R1's second stage answers a box on the frame
chosen by its first; reelrl reads it the same way.
"""

from __future__ import annotations

import math
import re

__all__ = ["Box2D", "box_iou", "box_text", "parse_box"]

Box2D = tuple[float, float, float, float]

_NUM = r"(\d+(?:\.\d+)?)"
_SEP = r"\s*,\s*"
_BOX_RE = re.compile(rf"(?<![\d.])[\[\(]\s*{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}\s*[\]\)]")
_BARE_RE = re.compile(rf"\s*{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}\s*")


def parse_box(text: str) -> Box2D | None:
    """The LAST box in ``text`` as ``(x1, y1, x2, y2)``, or ``None``.

    Read: four non-negative numbers in ``[...]`` or ``(...)`` separated by
    commas (so also inside ``{"bbox_2d": [...]}``), or a text that is exactly
    four such numbers. Not read: negative numbers, a group of other than four
    numbers (``"[1, 2, 3]"``, ``"[1, 2, 3, 4, 5]"``), non-finite values. The
    box is returned as written, even when ``x2 <= x1`` (:func:`box_iou` scores
    it 0).
    """
    found = list(_BOX_RE.finditer(text))
    m = found[-1] if found else _BARE_RE.fullmatch(text)
    if m is None:
        return None
    box = tuple(float(g) for g in m.groups())
    return box if all(math.isfinite(v) for v in box) else None  # type: ignore[return-value]


def box_iou(pred: Box2D, gold: Box2D) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0 when either has no area."""
    px1, py1, px2, py2 = pred
    gx1, gy1, gx2, gy2 = gold
    if px2 <= px1 or py2 <= py1 or gx2 <= gx1 or gy2 <= gy1:
        return 0.0
    iw = max(0.0, min(px2, gx2) - max(px1, gx1))
    ih = max(0.0, min(py2, gy2) - max(py1, gy1))
    inter = iw * ih
    union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
    return inter / union


def box_text(box: Box2D) -> str:
    """A box as the answer text ``"[x1, y1, x2, y2]"`` (integers where they are whole)."""
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"
