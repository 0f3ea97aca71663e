"""Object-ID spatio-temporal grounding (STVG-R1) in the video gym: which object does X, and when?

id_grounding   2-4 objects (2 at d < 1/3, 3 below 2/3, else 4), each a coloured square or disc carrying a
               rendered ID number (:mod:`reelrl.video.glyphs`: black 6 x 10 px digits in a white square
               that fills the 14 px vision patch holding the object's centre, :func:`label_cell`), moving
               with it on every frame it is visible -- STVG-R1's visual prompt,
               temporally consistent). IDs are distinct draws from 1-9. Each object is visible during a
               window of its own (lengths as :func:`reelrl.gym.grounding.window_lengths`, starts uniform;
               windows may overlap) and has a behaviour, distinct across the objects of a video: it moves
               left, right, up or down over its window, or stays still. The question names one behaviour
               ("Which object moves up?"), never the ID; the answer is STVG-R1's
               ``"Target ID: k, Time range: s to e"`` (:mod:`reelrl.data.target_ids`,
               ``problem_type: spatio_temporal_grounding``; the gold span is also the row's ``time_span``).

Layout: the frame is cut into a 2 x 2 grid and every object keeps to a cell of its own (a random cell per
object), so objects and labels never overlap; an object's side is the family's usual
:func:`reelrl.gym.tasks.object_size`, but at least the label's height plus 4 pixels (a coloured ring shows
around the label), and at most its cell minus 4; a mover crosses its cell's free extent (50-100% of it at
d = 0, 30-60% at d = 1) at constant speed over its window. Colours are distinct palette colours other than
``white`` (so the white label stands out). ``meta["objects"]`` lists every object (``id``, ``behaviour``,
``color``, ``shape``, ``start``, ``length`` in steps, ``start_box`` / ``end_box`` ``[y, x, size]``), and
:func:`object_box` gives an object's box at any step; ``meta["target"]`` is the index of the asked object,
``meta["event"]`` the event sentence ("the object moves up", for the ``stvg_r1`` prompt template).

Chance (:func:`id_grounding_chance`): the ``accuracy`` of this problem type is the tIoU when the ID is right
and 0 otherwise (:mod:`reelrl.rewards.stvg`). A guesser who reads the IDs off the video but not what the
objects do picks one of the ``n`` shown IDs uniformly and a frame-aligned span uniformly, independently, so
its expected accuracy is ``E_d[(1 / n(d)) * c(d)]``, ``c(d)`` the exact expected tIoU of a uniform random span
against the target's window (:func:`reelrl.gym.grounding._chance_at`, the temporal_grounding family's chance:
the target window has the same distribution there), integrated exactly over the difficulty jitter up to
the 1e-3 grid on which ``n`` and the window lengths are located. Its ID accuracy alone is ``E_d[1 / n(d)]``
(:func:`id_chance`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reelrl.data.target_ids import format_target
from reelrl.gym.grounding import _chance_at, window_lengths
from reelrl.gym.render import COLOR_NAMES, Box, blank, draw_shape
from reelrl.gym.tasks import CHANCE, GymSpec, Sample, object_size, register_family, sample_difficulty, secs
from reelrl.video.glyphs import LABEL_BG, draw_label, label_size

BEHAVIOURS: dict[str, str] = {
    "left": "moves to the left",
    "right": "moves to the right",
    "up": "moves up",
    "down": "moves down",
    "still": "stays still",
}
"""Behaviour name -> the phrase of the question ("Which object moves up?")."""

LABEL_SCALE = 2
"""Digit scale of the ID labels: 6 x 10 px digits, a label of 8 x 12 px that fits one vision patch."""
LABEL_PAD = 1
PATCH = 14
"""Side of a vision patch of Qwen-VL's encoder; labels are snapped to its grid (:func:`label_cell`)."""
COLORS: tuple[str, ...] = tuple(c for c in COLOR_NAMES if c != "white")
SHAPES: tuple[str, ...] = ("square", "disc")


def n_objects(d: float) -> int:
    """Objects in a video at difficulty ``d``: 2, 3 or 4 on the thirds of [0, 1]."""
    return 2 + min(2, int(d * 3))


def label_cell(box: Box, height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the label square of an object at ``box``: the :data:`PATCH` grid cell holding its centre.

    STVG-R1 writes the ID at the object's centre; the gym snaps it to the encoder's patch grid (a deliberate
    difference): a label then always fills one patch the same way, wherever the object is, which a small
    model learns to read far more easily than a label at any offset inside a patch.
    """
    y, x, s = box
    gy = min(int(y + s / 2) // PATCH * PATCH, height - PATCH)
    gx = min(int(x + s / 2) // PATCH * PATCH, width - PATCH)
    return gy, gx


def object_side(d: float, spec: GymSpec) -> int:
    """Side of an object: :func:`object_size`, at least the label's height + 4, at most its grid cell - 4."""
    cell = min(spec.height, spec.width) // 2
    label_h = max(PATCH, label_size("0", LABEL_SCALE, LABEL_PAD)[0])
    return min(cell - 4, max(object_size(d, spec), label_h + 4))


def object_box(obj: dict[str, Any], t: int) -> Box | None:
    """Box ``(y, x, size)`` of an object of ``meta["objects"]`` at step ``t``, or ``None`` when it is not visible."""
    start, length = obj["start"], obj["length"]
    if not start <= t < start + length:
        return None
    (y0, x0, s), (y1, x1, _) = obj["start_box"], obj["end_box"]
    f = (t - start) / (length - 1) if length > 1 else 0.0
    return round(y0 + (y1 - y0) * f), round(x0 + (x1 - x0) * f), s


def _path(rng: np.random.Generator, behaviour: str, cell: tuple[int, int, int, int], size: int, d: float
          ) -> tuple[Box, Box]:
    """Start and end boxes of one object inside ``cell`` ``(y, x, h, w)`` (module docstring)."""
    cy, cx, ch, cw = cell
    margin = 2
    free_y, free_x = ch - size - 2 * margin, cw - size - 2 * margin
    if behaviour == "still":
        box = (cy + margin + int(rng.integers(0, free_y + 1)), cx + margin + int(rng.integers(0, free_x + 1)), size)
        return box, box
    horizontal = behaviour in ("left", "right")
    extent = free_x if horizontal else free_y
    lo, hi = 0.5 - 0.2 * d, 1.0 - 0.4 * d
    length = max(2, min(extent, round(extent * float(rng.uniform(lo, hi)))))
    a = int(rng.integers(0, extent - length + 1))
    b = a + length
    if behaviour in ("left", "up"):
        a, b = b, a
    if horizontal:
        y = cy + margin + int(rng.integers(0, free_y + 1))
        return (y, cx + margin + a, size), (y, cx + margin + b, size)
    x = cx + margin + int(rng.integers(0, free_x + 1))
    return (cy + margin + a, x, size), (cy + margin + b, x, size)


@register_family("id_grounding", chance_id_accuracy=lambda spec: id_chance(spec))
def id_grounding_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """Which object shows a behaviour? Answer: its ID and visible window (module docstring)."""
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    n = n_objects(d)
    ids = [int(i) + 1 for i in rng.choice(9, size=n, replace=False)]
    behaviours = [list(BEHAVIOURS)[int(i)] for i in rng.choice(len(BEHAVIOURS), size=n, replace=False)]
    colors = [COLORS[int(i)] for i in rng.choice(len(COLORS), size=n, replace=False)]
    shapes = [SHAPES[int(rng.integers(len(SHAPES)))] for _ in range(n)]
    ch, cw = H // 2, W // 2
    cells = [((int(k) // 2) * ch, (int(k) % 2) * cw, ch, cw) for k in rng.permutation(4)[:n]]
    size = object_side(d, spec)
    lo, hi = window_lengths(d, T)
    objects = []
    for k in range(n):
        length = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, T - length + 1))
        b0, b1 = _path(rng, behaviours[k], cells[k], size, d)
        objects.append({"id": ids[k], "behaviour": behaviours[k], "color": colors[k], "shape": shapes[k],
                        "start": start, "length": length, "start_box": list(b0), "end_box": list(b1)})
    frames = blank(T, H, W)  # [T, H, W, 3]
    for t in range(T):
        for obj in objects:
            box = object_box(obj, t)
            if box is not None:
                draw_shape(frames[t], obj["shape"], box, obj["color"])
                gy, gx = label_cell(box, H, W)
                frames[t, gy : gy + PATCH, gx : gx + PATCH] = LABEL_BG  # [14, 14, 3] the label's square
                draw_label(frames[t], str(obj["id"]), gy + PATCH / 2, gx + PATCH / 2, LABEL_SCALE, LABEL_PAD)
    target = int(rng.integers(n))
    obj = objects[target]
    s_t, e_t = secs(obj["start"], fps), secs(obj["start"] + obj["length"], fps)
    answer = format_target(obj["id"], s_t, e_t)
    question = (f"Which object {BEHAVIOURS[obj['behaviour']]}? Each object carries its ID number. "
                "Give its ID and the time range in seconds when it is visible.")
    seen = sorted(objects, key=lambda o: (o["start"], o["id"]))
    reasoning = " ".join(f"ID {o['id']} {o['behaviour']}." for o in seen) + f" ID {obj['id']} seen {s_t:g}s to {e_t:g}s."
    meta = {"objects": objects, "target": target, "label_scale": LABEL_SCALE, "label_pad": LABEL_PAD,
            "event": f"the object {BEHAVIOURS[obj['behaviour']]}"}
    return Sample(frames, fps, question, None, answer, "spatio_temporal_grounding", reasoning, (s_t, e_t), d, meta)


def _piecewise_mean(spec: GymSpec, value: Any) -> float:
    """Mean of ``value(d)`` over the difficulty jitter; ``value`` depends on ``d`` only through
    ``(n_objects(d), window_lengths(d))``, located on a 1e-3 grid (as :func:`reelrl.gym.grounding.grounding_chance`)."""
    steps = spec.frames // spec.frames_per_step
    if spec.difficulty_jitter == 0.0:
        return float(value(spec.difficulty, steps))
    lo, hi = spec.difficulty - spec.difficulty_jitter, spec.difficulty + spec.difficulty_jitter
    grid = np.linspace(lo, hi, 2001)  # [K]
    clip = [float(min(1.0, max(0.0, g))) for g in grid]
    keys = [(n_objects(c), window_lengths(c, steps)) for c in clip]
    total, a = 0.0, lo
    for i in range(1, len(grid) + 1):
        if i == len(grid) or keys[i] != keys[i - 1]:
            b = hi if i == len(grid) else float(grid[i])
            total += (b - a) * float(value(clip[i - 1], steps))
            a = b
    return total / (hi - lo)


def id_grounding_chance(spec: GymSpec) -> float:
    """Expected accuracy (vIoU) of a uniform random shown ID and uniform random span (module docstring)."""
    return _piecewise_mean(spec, lambda d, steps: _chance_at(d, steps) / n_objects(d))


def id_chance(spec: GymSpec) -> float:
    """Expected ID accuracy of a uniform guess among the shown IDs: ``E_d[1 / n(d)]``."""
    return _piecewise_mean(spec, lambda d, steps: 1.0 / n_objects(d))


CHANCE.register("id_grounding")(id_grounding_chance)
