"""Grounding families of the video gym: the answer is *when* something happens.

temporal_grounding  one target shape (a colour and a shape: "the green disc")
                    is visible during one window of the video; 1-3 distractor
                    shapes are visible during windows of their own (they may
                    overlap the target's in time). "When is the green disc
                    visible?" The answer is the window in seconds, written
                    ``"s to e"`` (``problem_type: temporal_grounding``, scored
                    by temporal IoU; the gold span is also the row's
                    ``time_span``).

Difficulty shortens the target's window (30-60% of the video at d=0, 12-30%
at d=1), shrinks the objects, adds distractors, and from d >= 0.5 gives one
distractor the target's colour in the other shape, so the colour alone does
not find the target.

Chance: the expected temporal IoU of a uniformly random frame-aligned guess
(every span ``[a, b)`` with ``0 <= a < b <= T`` equally likely) against the
gold span, exact over the family's span distribution (and over the
difficulty jitter up to the 1e-3 grid that locates where the window range
changes; :func:`grounding_chance`). It is the mIoU a guesser reaches; every
table that reports the family reports it as its chance level.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from reelrl.gym.render import COLOR_NAMES, blank, draw_shape, place_boxes
from reelrl.gym.tasks import CHANCE, GymSpec, Sample, object_size, register_family, sample_difficulty, secs

SHAPES: tuple[str, ...] = ("square", "disc")


def window_lengths(d: float, n_frames: int) -> tuple[int, int]:
    """Inclusive range of the target window's length in frames at difficulty ``d`` (at least 2 frames)."""
    lo = max(2, round(n_frames * (0.30 - 0.18 * d)))
    hi = max(lo, round(n_frames * (0.60 - 0.30 * d)))
    return lo, min(hi, n_frames - 1)


def span_text(start: int, end: int, fps: float) -> str:
    """Frames ``[start, end)`` as the answer string: ``"1.5 to 3"`` (seconds, as :func:`parse_span` reads it)."""
    return f"{secs(start, fps):g} to {secs(end, fps):g}"


@register_family("temporal_grounding")
def temporal_grounding_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """When is the target shape visible? Answer: its window ``"s to e"`` in seconds (module docstring)."""
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    lo, hi = window_lengths(d, T)
    length = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, T - length + 1))
    n_distractors = 1 + min(2, int(d * 3))
    colors = [COLOR_NAMES[i] for i in rng.permutation(len(COLOR_NAMES))[: n_distractors + 1]]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    other = SHAPES[1 - SHAPES.index(shape)]
    target = (colors[0], shape)
    distractors = [(c, SHAPES[int(rng.integers(len(SHAPES)))]) for c in colors[1:]]
    if d >= 0.5:  # the target's colour in the other shape: the colour alone does not find it
        distractors[0] = (colors[0], other)
    windows = []
    for _ in distractors:  # any window that is not the target's own
        while True:
            n = int(rng.integers(lo, hi + 1))
            s = int(rng.integers(0, T - n + 1))
            if (s, n) != (start, length):
                break
        windows.append((s, n))
    boxes = place_boxes(rng, 1 + len(distractors), object_size(d, spec), H, W)
    frames = blank(T, H, W)  # [T, H, W, 3]
    for (c, sh), (s, n), box in zip([target, *distractors], [(start, length), *windows], boxes):
        for t in range(s, s + n):
            draw_shape(frames[t], sh, box, c)
    answer = span_text(start, start + length, fps)
    question = f"When is the {target[0]} {target[1]} visible? Give the start and end time in seconds."
    reasoning = (f"{target[0]} {target[1]} appears at {secs(start, fps):g}s, gone at "
                 f"{secs(start + length, fps):g}s. {answer}.")
    meta = {"target": {"color": target[0], "shape": target[1], "start": start, "length": length,
                       "box": list(boxes[0])},
            "distractors": [{"color": c, "shape": sh, "start": s, "length": n, "box": list(b)}
                            for (c, sh), (s, n), b in zip(distractors, windows, boxes[1:])]}
    return Sample(frames, fps, question, None, answer, "temporal_grounding", reasoning,
                  (secs(start, fps), secs(start + length, fps)), d, meta)


@lru_cache(maxsize=256)
def _random_guess_iou(n_frames: int, length: int, start: int) -> float:
    """Mean frame-grid IoU of every span ``[a, b)``, ``0 <= a < b <= T``, against ``[start, start + length)``."""
    a, b = np.triu_indices(n_frames + 1, k=1)  # [S] each: every span a < b
    inter = np.clip(np.minimum(b, start + length) - np.maximum(a, start), 0, None)  # [S]
    union = np.maximum(b, start + length) - np.minimum(a, start)  # [S]
    return float((inter / union).mean())


def _chance_at(d: float, n_frames: int) -> float:
    lo, hi = window_lengths(d, n_frames)
    per_length = [np.mean([_random_guess_iou(n_frames, n, s) for s in range(n_frames - n + 1)])
                  for n in range(lo, hi + 1)]
    return float(np.mean(per_length))


def grounding_chance(spec: GymSpec) -> float:
    """Expected tIoU of a uniform random span (module docstring), averaged over the difficulty jitter.

    ``window_lengths`` is piecewise constant in ``d``; the jitter interval is cut where it changes (found on
    a fine grid) and each piece weighted by its length; clipping to [0, 1] puts the outside mass at the ends.
    """
    n = spec.frames // spec.frames_per_step
    if spec.difficulty_jitter == 0.0:
        return _chance_at(spec.difficulty, n)
    lo, hi = spec.difficulty - spec.difficulty_jitter, spec.difficulty + spec.difficulty_jitter
    grid = np.linspace(lo, hi, 2001)  # [K]
    keys = [window_lengths(float(min(1.0, max(0.0, g))), n) for g in grid]
    total, a = 0.0, lo
    for i in range(1, len(grid) + 1):
        if i == len(grid) or keys[i] != keys[i - 1]:
            b = hi if i == len(grid) else float(grid[i])
            total += (b - a) * _chance_at(float(min(1.0, max(0.0, grid[i - 1]))), n)
            a = b
    return total / (hi - lo)


CHANCE.register("temporal_grounding")(grounding_chance)
