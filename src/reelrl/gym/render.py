"""Small numpy drawing helpers for the synthetic video gym.

Frames are ``uint8`` arrays of shape ``[T, H, W, 3]`` (RGB). Objects are
axis-aligned filled squares and discs on a flat dark background, drawn with
colours from :data:`PALETTE`: eight saturated colours far apart in RGB *and*
in chroma, so that they stay recognisable after H.264 compression with 4:2:0
chroma subsampling at sizes of ~12 pixels and up.

A *box* is ``(y, x, size)``: the top-left corner and side length in pixels of
the object's bounding square (a disc is inscribed in its box).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Callable, Mapping

import numpy as np

BACKGROUND: tuple[int, int, int] = (12, 12, 12)
"""Background colour (near black, so every palette colour contrasts with it)."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 225, 30),
    "white": (240, 240, 240),
    "magenta": (220, 40, 220),
    "cyan": (30, 215, 225),
    "orange": (250, 135, 15),
}
"""Named colours used by every task; names double as answer options."""

COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)

Box = tuple[int, int, int]

SHAPE_OVERRIDE: ContextVar[Mapping[str, Callable[[np.ndarray, Box, str], None]] | None] = ContextVar(
    "reelrl_shape_override", default=None
)
"""Drawers that replace ``"square"`` / ``"disc"`` while set (a gym environment's shape set,
:mod:`reelrl.gym.environments`); unset, the shapes are drawn as documented here."""


def blank(n_frames: int, height: int, width: int) -> np.ndarray:
    """Return ``n_frames`` frames filled with :data:`BACKGROUND` -> ``[T, H, W, 3]`` uint8."""
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)  # [T, H, W, 3]
    frames[...] = np.asarray(BACKGROUND, dtype=np.uint8)  # [3] broadcast
    return frames


def draw_square(frame: np.ndarray, box: Box, color: str) -> None:
    """Fill the square ``box`` of one frame ``[H, W, 3]`` in place with a palette colour."""
    if (alt := (SHAPE_OVERRIDE.get() or {}).get("square")) is not None:
        return alt(frame, box, color)
    y, x, s = box
    frame[y : y + s, x : x + s] = PALETTE[color]  # [s, s, 3]


def draw_rect(frame: np.ndarray, y: int, x: int, h: int, w: int, color: str) -> None:
    """Fill an ``h`` x ``w`` rectangle of one frame ``[H, W, 3]`` in place (no-op when ``w`` is 0)."""
    frame[y : y + h, x : x + w] = PALETTE[color]  # [h, w, 3]


def disc_mask(size: int) -> np.ndarray:
    """Boolean mask ``[size, size]`` of the disc inscribed in a ``size`` x ``size`` square."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]  # [size, size] each
    return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2.0) ** 2  # [size, size]


def draw_disc(frame: np.ndarray, box: Box, color: str) -> None:
    """Draw the disc inscribed in ``box`` onto one frame ``[H, W, 3]`` in place."""
    if (alt := (SHAPE_OVERRIDE.get() or {}).get("disc")) is not None:
        return alt(frame, box, color)
    y, x, s = box
    region = frame[y : y + s, x : x + s]  # [s, s, 3] view
    region[disc_mask(s)] = PALETTE[color]  # [n_in, 3]


def draw_shape(frame: np.ndarray, shape: str, box: Box, color: str) -> None:
    """Draw a ``"square"`` or ``"disc"`` (alias ``"ball"``) onto one frame in place."""
    if shape == "square":
        draw_square(frame, box, color)
    elif shape in ("disc", "ball"):
        draw_disc(frame, box, color)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: square, disc, ball")


def boxes_overlap(a: Box, b: Box, margin: int = 0) -> bool:
    """True if two boxes overlap or come closer than ``margin`` pixels."""
    ay, ax, asz = a
    by, bx, bsz = b
    return not (
        ay + asz + margin <= by or by + bsz + margin <= ay or ax + asz + margin <= bx or bx + bsz + margin <= ax
    )


def place_boxes(
    rng: np.random.Generator,
    n: int,
    size: int,
    height: int,
    width: int,
    *,
    margin: int = 3,
    avoid: list[Box] | None = None,
    max_tries: int = 2000,
    restarts: int = 50,
) -> list[Box]:
    """Place ``n`` non-overlapping ``size`` boxes inside the frame (rejection sampling).

    Boxes keep ``margin`` pixels from the frame border, from each other and from
    every box in ``avoid``. When ``max_tries`` draws leave a box unplaced (earlier boxes took the room), the
    placement starts over, up to ``restarts`` times (a placement that succeeds first time draws exactly as
    before). Raises ``ValueError`` if they do not fit.
    """
    hi_y, hi_x = height - size - margin, width - size - margin
    if hi_y < margin or hi_x < margin:
        raise ValueError(f"a box of size {size} does not fit a {height}x{width} frame")
    for _ in range(restarts + 1):  # a first box in the middle can leave no room: start over
        placed: list[Box] = []
        blocked = list(avoid or [])
        for _ in range(max_tries):
            if len(placed) == n:
                break
            box = (int(rng.integers(margin, hi_y + 1)), int(rng.integers(margin, hi_x + 1)), size)
            if not any(boxes_overlap(box, b, margin) for b in blocked):
                placed.append(box)
                blocked.append(box)
        if len(placed) == n:
            return placed
    raise ValueError(f"could not place {n} boxes of size {size} in a {height}x{width} frame")
