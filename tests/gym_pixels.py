"""Reading colours back from rendered gym frames (checks that a video shows what its answer says)."""

from __future__ import annotations

import numpy as np

from reelrl.gym.render import PALETTE


def nearest_color(rgb: np.ndarray) -> str:
    """Name of the palette colour nearest (Euclidean, RGB) to one ``[3]`` colour."""
    names = list(PALETTE)
    pal = np.asarray([PALETTE[n] for n in names], dtype=np.float64)  # [C, 3]
    d = ((pal - np.asarray(rgb, dtype=np.float64)[None, :]) ** 2).sum(axis=1)  # [C]
    return names[int(d.argmin())]


def color_masks(frames: np.ndarray, max_dist: float = 70.0) -> dict[str, np.ndarray]:
    """Per palette colour, the pixels within ``max_dist`` (RGB) of it: ``frames [..., 3] -> {name: bool[...]}``."""
    f = frames.astype(np.int32)  # [..., 3]
    out: dict[str, np.ndarray] = {}
    for name, c in PALETTE.items():
        d2 = ((f - np.asarray(c, dtype=np.int32)) ** 2).sum(axis=-1)  # [...]
        out[name] = d2 <= int(max_dist**2)  # [...]
    return out
