"""A bitmap digit font for object-ID visual prompts, and the template matcher that reads it back.

STVG-R1 (Zhang et al. 2026, arXiv 2602.11730; its ``preprocess/mask2marker.py``) writes each tracked
object's numeric ID at the object's mask centre on every frame (``cv2.putText``, red, font height ~20 px
at 336 px). reelrl draws the same prompt -- the ID, centred on the object, on every frame the object is
visible -- with two deliberate differences, both for legibility at the gym's 56 x 56 and 84 x 84 frames
after H.264 (4:2:0 chroma) encoding:

* the digits are a 3 x 5 bitmap font (:data:`DIGITS`) scaled by an integer ``scale`` (no anti-aliasing),
  black (:data:`LABEL_FG`) on a white label box (:data:`LABEL_BG`) with ``pad`` pixels around the text:
  the contrast is in luma, which H.264 keeps at full resolution (red text on a dark scene is mostly
  chroma, which 4:2:0 halves);
* both colours are outside the gym palette and its backgrounds, so gym environments
  (:mod:`reelrl.gym.environments`, which recolour exact palette pixels) leave the labels untouched.

A label of ``k`` digits is ``5 * scale + 2 * pad`` pixels high and ``k * 3 * scale + (k - 1) * scale + 2 *
pad`` wide (digits one ``scale`` apart). :func:`default_scale` follows STVG-R1's size rule (20 px digits
at 336 px, proportional to the short side) with a floor of 2, which the gym's frames use.

:func:`read_label` is the inverse: it averages each ``scale`` x ``scale`` cell of a decoded label's luma
down to the 3 x 5 grid and takes the digit template nearest in mean absolute difference, refusing a slot
whose best match is worse than ``max_error``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DIGITS", "LABEL_BG", "LABEL_FG", "default_scale", "draw_label", "glyph_mask", "label_box", "label_size",
           "read_label"]

DIGITS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}
"""3 x 5 bitmaps of the digits, rows top to bottom, ``1`` = ink."""

LABEL_FG: tuple[int, int, int] = (0, 0, 0)
"""Ink colour of the digits (black: not a gym palette or background colour)."""
LABEL_BG: tuple[int, int, int] = (255, 255, 255)
"""Label box colour (pure white; the gym's ``white`` is (240, 240, 240))."""

_TEMPLATES = {d: np.array([[c == "1" for c in row] for row in rows], dtype=np.float64)  # [5, 3]
              for d, rows in DIGITS.items()}


def default_scale(height: int, width: int) -> int:
    """STVG-R1's label size: digits ~20 px high at a 336 px short side, in proportion; at least 2 (5 px rows)."""
    return max(2, round(min(height, width) * 20 / 336 / 5))


def label_size(text: str, scale: int = 2, pad: int = 1) -> tuple[int, int]:
    """``(height, width)`` in pixels of the label of ``text`` (module docstring)."""
    k = len(text)
    return 5 * scale + 2 * pad, k * 3 * scale + (k - 1) * scale + 2 * pad


def glyph_mask(text: str, scale: int = 2) -> np.ndarray:
    """Ink mask ``[5 * scale, width]`` bool of the digits of ``text`` (no padding), digits ``scale`` apart."""
    if not text or any(c not in DIGITS for c in text):
        raise ValueError(f"glyph text must be ASCII digits, got {text!r}")
    if scale < 1:
        raise ValueError(f"glyph scale must be >= 1, got {scale}")
    parts = []
    for i, c in enumerate(text):
        if i:
            parts.append(np.zeros((5, 1), dtype=bool))  # [5, 1] gap column
        parts.append(_TEMPLATES[c].astype(bool))  # [5, 3]
    grid = np.concatenate(parts, axis=1)  # [5, 4k - 1]
    return np.kron(grid, np.ones((scale, scale), dtype=bool)).astype(bool)  # [5s, (4k - 1)s]


def label_box(text: str, cy: float, cx: float, height: int, width: int, scale: int = 2, pad: int = 1
              ) -> tuple[int, int, int, int]:
    """Box ``(y, x, h, w)`` of the label of ``text`` centred at ``(cy, cx)``, shifted inside a ``height`` x ``width``
    frame (not clipped); a frame smaller than the label is an error."""
    h, w = label_size(text, scale, pad)
    if h > height or w > width:
        raise ValueError(f"a {h}x{w} label for {text!r} does not fit a {height}x{width} frame")
    y = int(min(max(round(cy - h / 2), 0), height - h))
    x = int(min(max(round(cx - w / 2), 0), width - w))
    return y, x, h, w


def draw_label(frame: np.ndarray, text: str, cy: float, cx: float, scale: int = 2, pad: int = 1
               ) -> tuple[int, int, int, int]:
    """Draw the label of ``text`` centred at ``(cy, cx)`` onto ``frame`` ``[H, W, 3]`` in place.

    Placed by :func:`label_box`; returns that box ``(y, x, height, width)``.
    """
    y, x, h, w = label_box(text, cy, cx, frame.shape[0], frame.shape[1], scale, pad)
    region = frame[y : y + h, x : x + w]  # [h, w, 3] view
    region[...] = LABEL_BG
    region[pad : h - pad, pad : w - pad][glyph_mask(text, scale)] = LABEL_FG  # [n_ink, 3]
    return y, x, h, w


def read_label(frame: np.ndarray, box: tuple[int, int, int, int], n_digits: int, scale: int = 2, pad: int = 1,
               max_error: float = 0.25) -> str | None:
    """The digits of the label at ``box`` ``(y, x, h, w)`` of a (decoded) frame ``[H, W, 3]``, or ``None``.

    Luma (BT.601) is turned into ink darkness in [0, 1] (0 = the label's white, 1 = black), each ``scale``
    x ``scale`` cell is averaged, and every digit slot takes the template with the smallest mean absolute
    difference; a slot whose best difference exceeds ``max_error`` makes the label unreadable (``None``),
    and so does a box whose ``pad`` border is not the label's white (mean darkness over ``max_error``): a
    dark patch of the scene would otherwise match the ink-heavy ``8``.
    """
    y, x, h, w = box
    if (h, w) != label_size("0" * n_digits, scale, pad):
        raise ValueError(f"box {box} is not the size of a {n_digits}-digit label at scale {scale}, pad {pad}")
    luma = frame[y : y + h, x : x + w].astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # [h, w]
    dark = np.clip((255.0 - luma) / 255.0, 0.0, 1.0)  # [h, w]
    if pad:
        inner = np.zeros((h, w), dtype=bool)  # [h, w]
        inner[pad : h - pad, pad : w - pad] = True
        if dark[~inner].mean() > max_error:
            return None
    ink = dark[pad : h - pad, pad : w - pad]  # [5s, (4k-1)s]
    cells = ink.reshape(5, scale, -1, scale).mean(axis=(1, 3))  # [5, 4k - 1]
    out = []
    for i in range(n_digits):
        slot = cells[:, 4 * i : 4 * i + 3]  # [5, 3]
        errors = {d: float(np.abs(slot - t).mean()) for d, t in _TEMPLATES.items()}
        best = min(errors, key=errors.__getitem__)
        if errors[best] > max_error:
            return None
        out.append(best)
    return "".join(out)
