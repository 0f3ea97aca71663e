"""The question families of the synthetic video gym: one question about the time axis, a verifiable answer.

Families
--------
count         a square flashes k times; "How many times does the square flash?"
              (``numerical``, or ``multiple_choice`` over counts with
              ``count_mode="multiple_choice"``).
order         2-3 coloured shapes appear one after another; "Which colour
              appears first?" (or "last" at difficulty >= 0.5).
direction     a ball moves across the frame; "Which way does the red ball move?"
color_change  a square changes colour once; "What colour does the square turn
              into?" (or "... before it changes?" at difficulty >= 0.5).
multi_select  several colours flash one at a time; "Which colours appear?"
              (``multi_choice``, answer like "A,C").
progress      a bar fills while a dot flashes once; "What fraction of the bar
              is filled when the dot flashes?" (``regression``).

Answer balance: every choice question draws the position of the correct
option uniformly (the other options are shuffled), so each letter is correct
with probability exactly 1 / n_options; multi_select picks a uniform random
subset of positions. Difficulty (``[0, 1]``) shrinks objects, shortens
flashes, adds distractor objects and widens the count range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reelrl.data.schema import LETTERS
from reelrl.gym.render import COLOR_NAMES, Box, blank, draw_disc, draw_rect, draw_shape, draw_square, place_boxes
from reelrl.gym.tasks import (
    CHANCE,
    DIRECTIONS,
    GymSpec,
    Sample,
    count_range,
    distractor_colors,
    fmt_s,
    object_size,
    place_answer,
    register_family,
    sample_difficulty,
    secs,
)

PROGRESS_TOLERANCE = 0.05
"""Absolute error under which a ``progress`` answer counts as correct for chance accuracy."""


# --------------------------------------------------------------------------- helpers


def flash_schedule(rng: np.random.Generator, n_frames: int, lengths: list[int], gap: int = 1) -> list[int]:
    """Start frames of ``len(lengths)`` on-intervals, in order, separated by >= ``gap`` off frames.

    The free frames are split at random over the k+1 slots (before, between,
    after) by k sorted uniform cut points. Raises ``ValueError`` if they do not fit.
    """
    k = len(lengths)
    free = n_frames - sum(lengths) - gap * (k - 1)
    if free < 0:
        raise ValueError(f"{k} intervals of {lengths} frames with gap {gap} do not fit {n_frames} frames")
    cuts = np.sort(rng.integers(0, free + 1, size=k))  # [k]
    parts = np.diff(np.concatenate([[0], cuts, [free]]))  # [k+1]
    starts, t = [], 0
    for i in range(k):
        t += int(parts[i])
        starts.append(t)
        t += lengths[i] + gap
    return starts


def fit_lengths(rng: np.random.Generator, k: int, lo: int, hi: int, n_frames: int, gap: int = 1) -> list[int]:
    """``k`` random interval lengths in [lo, hi], shrunk to 1 frame each if they do not fit."""
    lengths = [int(x) for x in rng.integers(lo, hi + 1, size=k)]
    if sum(lengths) + gap * (k - 1) > n_frames:
        lengths = [1] * k
    return lengths


def _choice(rng: np.random.Generator, items: list[str] | tuple[str, ...]) -> str:
    """One item of ``items``, uniformly."""
    return items[int(rng.integers(len(items)))]


# --------------------------------------------------------------------------- families


@register_family("count")
def count_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """A square flashes k times (k uniform in :func:`count_range`); count the flashes.

    Flashes last 1-2 frames (1 frame at d >= 0.5) and are separated by at least
    one frame without the square. At d >= 0.5 a disc of another colour flashes
    elsewhere as a distractor.
    """
    d = sample_difficulty(rng, spec)
    T, H, W = spec.frames, spec.height, spec.width
    lo, hi = count_range(d, spec)
    k = int(rng.integers(lo, hi + 1))
    lengths = fit_lengths(rng, k, 1, 1 if d >= 0.5 else 2, T)
    starts = flash_schedule(rng, T, lengths)
    size = object_size(d, spec)
    color = _choice(rng, COLOR_NAMES)
    with_distractor = d >= 0.5
    boxes = place_boxes(rng, 2 if with_distractor else 1, size, H, W)
    frames = blank(T, H, W)  # [T, H, W, 3]
    for s, n in zip(starts, lengths):
        for t in range(s, s + n):
            draw_square(frames[t], boxes[0], color)
    meta: dict[str, Any] = {"k": k, "starts": starts, "lengths": lengths, "color": color, "box": list(boxes[0])}
    if with_distractor:
        dcolor = distractor_colors(rng, [color])[0]
        dk = int(rng.integers(1, 4))
        dstarts = flash_schedule(rng, T, [1] * dk)
        for t in dstarts:
            draw_disc(frames[t], boxes[1], dcolor)
        meta["distractor"] = {"color": dcolor, "starts": dstarts, "box": list(boxes[1])}
    question = "How many times does the square flash?"
    reasoning = f"flashes at {', '.join(fmt_s(s, spec.fps) for s in starts)}. {k} flash{'es' if k != 1 else ''}."
    span = (secs(starts[0], spec.fps), secs(starts[-1] + lengths[-1], spec.fps))
    if spec.count_mode == "numerical":
        return Sample(frames, spec.fps, question, None, str(k), "numerical", reasoning, span, d, meta)
    others = [str(v) for v in rng.permutation(np.arange(lo, hi + 1)) if v != k]
    options, letter = place_answer(rng, str(k), others, spec.n_options, spec.option_order == "canonical")
    return Sample(frames, spec.fps, question, options, letter, "multiple_choice", reasoning, span, d, meta)


@register_family("order")
def order_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """Two or three coloured shapes appear one after another, each for a few frames.

    P(three shapes) = d. Each shape is visible for 2-5 frames from its onset
    (frame >= 1, so frame 0 is empty), onsets >= 2 frames apart (1 at d >= 0.5);
    windows may overlap, and no single frame tells which shape came first.
    At d >= 0.5 half of the questions ask for the last colour instead. Options:
    the answer, the other shown colours (traps), then unseen colours.
    """
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    n_show = min(spec.n_options, 3 if rng.random() < d else 2)
    gap = 1 if d >= 0.5 else 2
    onsets_l = [1 + s for s in flash_schedule(rng, T - 3, [1] * n_show, gap - 1)]  # onsets in [1, T-3]
    colors = [COLOR_NAMES[i] for i in rng.permutation(len(COLOR_NAMES))[:n_show]]
    shapes = [_choice(rng, ("square", "disc")) for _ in range(n_show)]
    durs = [int(min(rng.integers(2, 6), T - o)) for o in onsets_l]
    size = object_size(d, spec)
    try:
        boxes = place_boxes(rng, n_show, size, H, W)
    except ValueError:  # large objects: place each freely; a later onset is drawn on top, so no onset is hidden
        boxes = [place_boxes(rng, 1, size, H, W)[0] for _ in range(n_show)]
    frames = blank(T, H, W)  # [T, H, W, 3]
    for o, n, shape, box, c in zip(onsets_l, durs, shapes, boxes, colors):
        for t in range(o, o + n):
            draw_shape(frames[t], shape, box, c)
    which = "last" if d >= 0.5 and rng.random() < 0.5 else "first"
    idx = 0 if which == "first" else n_show - 1
    answer = colors[idx]
    others = [c for c in colors if c != answer]
    others = [others[i] for i in rng.permutation(len(others))] + distractor_colors(rng, colors)
    options, letter = place_answer(rng, answer, others, spec.n_options, spec.option_order == "canonical")
    reasoning = ", ".join(f"{c} {fmt_s(o, fps)}" for c, o in zip(colors, onsets_l)) + f". {answer} {which}."
    span = (secs(onsets_l[idx], fps), secs(onsets_l[idx] + durs[idx], fps))
    meta = {"colors": colors, "onsets": onsets_l, "durations": durs, "shapes": shapes,
            "boxes": [list(b) for b in boxes], "which": which}
    return Sample(frames, fps, f"Which colour appears {which}?", options, letter, "multiple_choice",
                  reasoning, span, d, meta)


def _path(rng: np.random.Generator, direction: str, size: int, d: float, spec: GymSpec) -> tuple[Box, Box]:
    """Start and end boxes of a straight move in ``direction``; length 60% (d=0) to 30% (d=1) of the free span."""
    margin = 2
    H, W = spec.height, spec.width
    horizontal = direction in ("left", "right")
    extent = (W if horizontal else H) - size - 2 * margin
    length = max(6, round(extent * (0.6 - 0.3 * d)))
    a = int(rng.integers(margin, margin + extent - length + 1))
    b = a + length
    if direction in ("left", "up"):
        a, b = b, a
    perp = int(rng.integers(margin, (H if horizontal else W) - size - margin + 1))
    if horizontal:
        return (perp, a, size), (perp, b, size)
    return (a, perp, size), (b, perp, size)


def _lerp_box(p0: Box, p1: Box, t: int, n: int) -> Box:
    """Box at frame ``t`` of ``n`` on the straight path p0 -> p1."""
    f = t / (n - 1)
    return (round(p0[0] + (p1[0] - p0[0]) * f), round(p0[1] + (p1[1] - p0[1]) * f), p0[2])


@register_family("direction")
def direction_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """A ball moves in a straight line over the whole video; which way?

    Path length shrinks with d (slower ball). Distractors: from d >= 0.35 one
    static square (two from d >= 0.7) placed off the ball's path, and from
    d >= 0.7 a square moving in another direction. Options: the four
    directions (``min(n_options, 4)`` of them).
    """
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    size = object_size(d, spec)
    direction = _choice(rng, DIRECTIONS)
    color = _choice(rng, COLOR_NAMES)
    p0, p1 = _path(rng, direction, size, d, spec)
    dcolors = distractor_colors(rng, [color])
    n_static = (1 if d >= 0.35 else 0) + (1 if d >= 0.7 else 0)
    frames = blank(T, H, W)  # [T, H, W, 3]
    statics: list[Box] = []
    if n_static:
        statics = place_boxes(rng, n_static, size, H, W, avoid=_swept_boxes(p0, p1))
    mover = None
    if d >= 0.7:
        mdir = _choice(rng, [x for x in DIRECTIONS if x != direction])
        m0, m1 = _path(rng, mdir, size, d, spec)
        mover = {"direction": mdir, "color": dcolors[n_static], "start": list(m0), "end": list(m1)}
    for t in range(T):
        for box, c in zip(statics, dcolors):
            draw_square(frames[t], box, c)
        if mover is not None:
            draw_square(frames[t], _lerp_box(tuple(mover["start"]), tuple(mover["end"]), t, T), mover["color"])
        draw_disc(frames[t], _lerp_box(p0, p1, t, T), color)
    n = min(spec.n_options, len(DIRECTIONS))
    others = [x for x in DIRECTIONS if x != direction]
    options, letter = place_answer(rng, direction, [others[i] for i in rng.permutation(3)], n, spec.option_order == "canonical")
    c0 = (p0[1] + size // 2, p0[0] + size // 2)
    c1 = (p1[1] + size // 2, p1[0] + size // 2)
    reasoning = (f"{color} ball at x={c0[0]},y={c0[1]} at 0s, x={c1[0]},y={c1[1]} at {fmt_s(T - 1, fps)}. "
                 f"moves {direction}.")
    meta = {"direction": direction, "color": color, "start": list(p0), "end": list(p1),
            "statics": [list(b) for b in statics], "static_colors": dcolors[:n_static], "mover": mover}
    return Sample(frames, fps, f"Which way does the {color} ball move?", options, letter, "multiple_choice",
                  reasoning, (0.0, secs(T, fps)), d, meta)


def _swept_boxes(p0: Box, p1: Box) -> list[Box]:
    """Boxes covering every position of a straight move p0 -> p1 (one box per ``size`` step)."""
    size = p0[2]
    steps = max(1, int(np.ceil(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1])) / max(1, size // 2))))
    return [_lerp_box(p0, p1, i, steps + 1) for i in range(steps + 1)]


@register_family("color_change")
def color_change_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """A square shows colour A, then switches once to colour B between 30% and 70% of the video.

    Asks for B ("turn into"); at d >= 0.5 half of the questions ask for A
    ("before it changes"). The other colour is always among the options as a
    trap; at d >= 0.5 a static disc of a third colour is shown and is a trap too.
    """
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    a, b, c = (COLOR_NAMES[i] for i in rng.permutation(len(COLOR_NAMES))[:3])
    change = int(rng.integers(round(0.3 * T), round(0.7 * T) + 1))
    with_distractor = d >= 0.5
    boxes = place_boxes(rng, 2 if with_distractor else 1, object_size(d, spec), H, W)
    frames = blank(T, H, W)  # [T, H, W, 3]
    for t in range(T):
        draw_square(frames[t], boxes[0], a if t < change else b)
        if with_distractor:
            draw_disc(frames[t], boxes[1], c)
    before = d >= 0.5 and rng.random() < 0.5
    answer, trap = (a, b) if before else (b, a)
    traps = [trap] + ([c] if with_distractor else [])
    others = traps + distractor_colors(rng, [a, b] + traps)
    options, letter = place_answer(rng, answer, others, spec.n_options, spec.option_order == "canonical")
    question = "What colour is the square before it changes?" if before else "What colour does the square turn into?"
    reasoning = (f"square {a} until {fmt_s(change - 1, fps)}. {b} from {fmt_s(change, fps)}. "
                 + (f"was {a}." if before else f"turns {b}."))
    meta = {"from": a, "to": b, "change_frame": change, "box": list(boxes[0]), "before": before,
            "distractor": {"color": c, "box": list(boxes[1])} if with_distractor else None}
    return Sample(frames, fps, question, options, letter, "multiple_choice", reasoning,
                  (secs(change - 1, fps), secs(change, fps)), d, meta)


@register_family("multi_select")
def multi_select_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """k colours (k uniform in 1..n_options-1) flash one at a time; which colours appear?

    Options are n distinct colours; the correct ones sit at a uniform random
    subset of positions. Each colour is visible in one window of 2-4 frames
    (1-2 at d >= 0.5) at its own random place; windows never overlap in time,
    so no frame shows two colours.
    """
    d = sample_difficulty(rng, spec)
    T, H, W, fps, n = spec.frames, spec.height, spec.width, spec.fps, spec.n_options
    k = int(rng.integers(1, n))
    options = [COLOR_NAMES[i] for i in rng.permutation(len(COLOR_NAMES))[:n]]
    pos = sorted(int(p) for p in rng.choice(n, size=k, replace=False))
    shown = [options[p] for p in pos]
    shown = [shown[i] for i in rng.permutation(k)]  # order of appearance
    lengths = fit_lengths(rng, k, 1 if d >= 0.5 else 2, 2 if d >= 0.5 else 4, T)
    starts = flash_schedule(rng, T, lengths)
    size = object_size(d, spec)
    boxes = [place_boxes(rng, 1, size, H, W)[0] for _ in range(k)]  # one colour at a time: overlap is fine
    shapes = [_choice(rng, ("square", "disc")) for _ in range(k)]
    frames = blank(T, H, W)  # [T, H, W, 3]
    for s, n_on, shape, box, c in zip(starts, lengths, shapes, boxes, shown):
        for t in range(s, s + n_on):
            draw_shape(frames[t], shape, box, c)
    answer = ",".join(LETTERS[p] for p in pos)
    reasoning = ", ".join(f"{c} {fmt_s(s, fps)}" for c, s in zip(shown, starts)) + f". seen: {', '.join(shown)}."
    meta = {"shown": shown, "starts": starts, "lengths": lengths, "shapes": shapes,
            "boxes": [list(b) for b in boxes]}
    span = (secs(starts[0], fps), secs(starts[-1] + lengths[-1], fps))
    return Sample(frames, fps, "Which colours appear? Select all that apply.", options, answer, "multi_choice",
                  reasoning, span, d, meta)


@register_family("progress")
def progress_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """A bar fills at constant speed from empty; read its filled fraction when a dot flashes.

    The answer (filled pixels / bar pixels at the flash, 2 decimals) lies in
    [0.1, 0.9]. The dot flashes for 2 frames (1 at d >= 0.5); at d >= 0.5 a
    dot of another colour flashes at another time as a distractor. ``regression``.
    """
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    margin = 4
    bar_h = max(6, round(H * (0.16 - 0.06 * d)))
    bar = (H - margin - bar_h, margin, W - 2 * margin)  # (y, x, width)
    target = float(rng.uniform(0.12, 0.88))
    flash = int(rng.integers(2, T - 2))
    flash_len = 1 if d >= 0.5 else 2
    bar_color, dot_color, other_color = (COLOR_NAMES[i] for i in rng.permutation(len(COLOR_NAMES))[:3])
    size = object_size(d, spec)
    free_h = H - bar_h - 2 * margin
    dots = place_boxes(rng, 2 if d >= 0.5 else 1, min(size, free_h - 2 * margin), free_h, W)
    fill = [round(bar[2] * min(1.0, target * t / flash)) for t in range(T)]  # filled pixels per frame
    frames = blank(T, H, W)  # [T, H, W, 3]
    y, x, bw = bar
    frames[:, y : y + bar_h, x : x + bw] = (70, 70, 70)  # [T, bar_h, bw, 3] empty bar
    for t in range(T):
        draw_rect(frames[t], y, x, bar_h, fill[t], bar_color)
    for t in range(flash, min(T, flash + flash_len)):
        draw_disc(frames[t], dots[0], dot_color)
    meta: dict[str, Any] = {"bar": [y, x, bar_h, bw], "fill_px": fill, "flash": flash, "flash_len": flash_len,
                            "dot": list(dots[0]), "dot_color": dot_color, "bar_color": bar_color}
    if d >= 0.5:
        other = int(rng.choice([t for t in range(T) if abs(t - flash) > 1]))
        draw_disc(frames[other], dots[1], other_color)
        meta["distractor"] = {"frame": other, "color": other_color, "box": list(dots[1])}
    answer = round(fill[flash] / bw, 2)
    question = (f"The bar fills over time. What fraction of the bar is filled when the {dot_color} dot flashes? "
                "Answer with a number between 0 and 1.")
    reasoning = f"{dot_color} dot flashes at {fmt_s(flash, fps)}. bar {answer:g} full then. {answer:g}."
    return Sample(frames, fps, question, None, f"{answer:g}", "regression", reasoning,
                  (secs(flash, fps), secs(flash + flash_len, fps)), d, meta)


# --------------------------------------------------------------------------- chance


def _count_chance(spec: GymSpec) -> float:
    """1/n_options in MC mode; else E_d[1 / |count_range(d)|] over the per-sample difficulty."""
    if spec.count_mode == "multiple_choice":
        return 1.0 / spec.n_options

    def inv(d: float) -> float:
        lo, hi = count_range(d, spec)
        return 1.0 / (hi - lo + 1)

    if spec.difficulty_jitter == 0.0:
        return inv(spec.difficulty)
    lo = spec.difficulty - spec.difficulty_jitter
    hi = spec.difficulty + spec.difficulty_jitter
    # count_range is piecewise constant with breaks at 0.25, 0.5, 0.75; clipping adds 0 and 1
    cuts = sorted({lo, hi, *(b for b in (0.0, 0.25, 0.5, 0.75, 1.0) if lo < b < hi)})
    total = 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):
        mid = min(1.0, max(0.0, (a + b) / 2))
        total += (b - a) * inv(mid)
    return total / (hi - lo)


CHANCE.register("count")(_count_chance)
CHANCE.register("order")(lambda spec: 1.0 / spec.n_options)
CHANCE.register("color_change")(lambda spec: 1.0 / spec.n_options)
CHANCE.register("direction")(lambda spec: 1.0 / min(spec.n_options, len(DIRECTIONS)))
CHANCE.register("multi_select")(lambda spec: 1.0 / (2**spec.n_options - 1))
CHANCE.register("progress")(lambda spec: 2 * PROGRESS_TOLERANCE)
