"""Frame transforms: ``frames [T, H, W, 3] uint8 -> frames [T, H, W, 3] uint8``.

Pure functions: the input array is never modified, and every random choice
comes from the ``np.random.Generator`` passed in, so a transform is
reproducible given the generator's state.

* :func:`shuffle_frames` -- T-GRPO (Video-R1) temporal contrast: a random
  permutation of the frames, never the identity when ``T > 1``.
* :func:`gaussian_noise` -- per-pixel Gaussian noise, ``sigma`` in pixel units
  (0..255), rounded and clipped to ``[0, 255]`` (DeepVideo-R1 easy samples).
* :func:`mask_frames` -- blank ``round(frac * T)`` whole frames chosen at random
  (DeepVideo-R1 frame masking).
* :func:`mask_span` -- blank a contiguous temporal span (VideoTG-R1 curriculum).

A transform bound to its parameters and seed is a :data:`FrameTransform`
(``frames -> frames``): what the prompt encoder applies to a row's frames.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

FrameTransform = Callable[[np.ndarray], np.ndarray]
"""A bound frame transform: frames ``[T, H, W, 3]`` uint8 -> the same shape."""


def _check_frames(frames: np.ndarray, fn: str) -> None:
    """Raise ``ValueError`` naming ``fn`` unless ``frames`` is a ``[T, H, W, 3]`` uint8 array."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"{fn}: frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{fn}: frames must have shape [T, H, W, 3], got {list(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{fn}: frames must be uint8, got {frames.dtype}")


def _check_frac(value: float, name: str, fn: str) -> None:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{fn}: {name} must lie in [0, 1], got {value}")


def _check_fill(fill: int, fn: str) -> None:
    if not (0 <= int(fill) <= 255):
        raise ValueError(f"{fn}: fill must lie in [0, 255], got {fill}")


def shuffle_permutation(t: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(t)`` that is not the identity when ``t > 1``.

    Identity draws are redrawn (for ``t = 2`` half of the draws are; the
    expected number of draws is below 2 for every ``t``).
    """
    if t < 0:
        raise ValueError(f"shuffle_permutation: t must be >= 0, got {t}")
    perm = rng.permutation(t)  # [T]
    if t > 1:
        ident = np.arange(t)  # [T]
        while np.array_equal(perm, ident):
            perm = rng.permutation(t)  # [T]
    return perm


def shuffle_frames(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """T-GRPO: the frames in a random order that differs from the original order when ``T > 1``.

    The index permutation is never the identity; frames with identical content
    can of course still make the output equal the input.
    """
    _check_frames(frames, "shuffle_frames")
    perm = shuffle_permutation(frames.shape[0], rng)  # [T]
    return frames[perm]  # [T, H, W, 3]


def gaussian_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. N(0, sigma^2) noise to every pixel (``sigma`` in 0..255 pixel units).

    The result is rounded to the nearest integer and clipped to ``[0, 255]``.
    ``sigma = 0`` returns an unchanged copy and draws nothing from ``rng``.
    """
    _check_frames(frames, "gaussian_noise")
    if not (0.0 <= sigma <= 255.0) or math.isnan(sigma):
        raise ValueError(f"gaussian_noise: sigma must lie in [0, 255] pixel units, got {sigma}")
    if sigma == 0.0:
        return frames.copy()  # [T, H, W, 3]
    noise = rng.normal(0.0, sigma, size=frames.shape)  # [T, H, W, 3] float64
    out = np.rint(frames.astype(np.float64) + noise)  # [T, H, W, 3]
    return np.clip(out, 0, 255).astype(np.uint8)  # [T, H, W, 3]


def n_masked(t: int, frac: float) -> int:
    """How many of ``t`` frames :func:`mask_frames` blanks: ``floor(frac * t + 0.5)``, capped at ``t``."""
    return min(t, int(math.floor(frac * t + 0.5)))


def mask_frames(frames: np.ndarray, frac: float, rng: np.random.Generator, fill: int = 0) -> np.ndarray:
    """Set ``n_masked(T, frac)`` whole frames, chosen uniformly without replacement, to ``fill``."""
    _check_frames(frames, "mask_frames")
    _check_frac(frac, "frac", "mask_frames")
    _check_fill(fill, "mask_frames")
    t = frames.shape[0]
    out = frames.copy()  # [T, H, W, 3]
    k = n_masked(t, frac)
    if k > 0:
        idx = rng.choice(t, size=k, replace=False)  # [k]
        out[idx] = fill  # [k, H, W, 3]
    return out


def span_frame_mask(t: int, start_frac: float, end_frac: float) -> np.ndarray:
    """Boolean ``[T]``: frame ``i`` is inside the span when its centre ``(i + 0.5) / T`` lies in ``[start, end)``."""
    centres = (np.arange(t) + 0.5) / max(t, 1)  # [T]
    return (centres >= start_frac) & (centres < end_frac)  # [T]


def mask_span(frames: np.ndarray, start_frac: float, end_frac: float, fill: int = 0) -> np.ndarray:
    """VideoTG-R1: blank the frames whose centre lies in ``[start_frac, end_frac)`` of the clip.

    Fractions are of the sampled clip (frame ``i`` of ``T`` spans
    ``[i / T, (i + 1) / T)``); ``start_frac == end_frac`` blanks nothing.
    """
    _check_frames(frames, "mask_span")
    _check_frac(start_frac, "start_frac", "mask_span")
    _check_frac(end_frac, "end_frac", "mask_span")
    _check_fill(fill, "mask_span")
    if end_frac < start_frac:
        raise ValueError(f"mask_span: end_frac ({end_frac}) must be >= start_frac ({start_frac})")
    out = frames.copy()  # [T, H, W, 3]
    out[span_frame_mask(frames.shape[0], start_frac, end_frac)] = fill  # [k, H, W, 3]
    return out
