"""Manipulation-like gym families for progress critics (PRIMO R1): an end effector pushes an object to a goal.

Scene: a goal region (a square outline, 2 px thick, in one palette colour), an
object (a filled square in another colour) and the end effector (a small white
disc that sits right behind the object, on the side away from the goal, while
it pushes). The object moves on a straight line from its start towards the
goal's centre, one of 8 directions, over ``D`` pixels per moved axis, ``D`` a
multiple of 20 (the room the frame leaves, at least 20), so a progress of
``k / 20`` puts the object on whole pixels.

Progress of a state: ``1 - |object - goal| / |object_0 - goal|`` along that
line, i.e. the fraction of the way the object has covered (the effector's own
position does not count). Every frame's value is ``meta["progress"]``.

push_progress   the video is the episode so far; its first frame is the
                initial-state image (before the video) and its last frame the
                current-state image (after it). "What is the task progress at
                the current state?" (``problem_type: progress``, answer a
                number in [0, 1], 2 decimals). The current progress is
                uniform over {0, 0.05, ..., 1}; the episode so far is
                ``advance`` (pushed steadily), ``stall`` (pushed, then
                stopped) or ``regress`` (pushed further, then pulled back).
push_failure    the video is the whole episode (initial-state image: its
                first frame; current-state image: its last). "Did the robot
                succeed ...?" options yes / no (``multiple_choice``,
                ``meta["failure_detection"]``). Success (the object ends in
                the goal) with probability 1/2; failures are ``stall`` (the
                object stops short), ``regress`` (it is pulled back) and
                ``slip`` (the effector goes on to the goal without it).

Chance (``gym.json``): push_failure 0.5 (any guess, yes and no equally likely);
push_progress's chance *accuracy* is the expected PRIMO score of a uniform
guess in [0, 1], and ``chance_progress_mae`` holds the MAE of a constant 0.5
guess and of a uniform guess, exact over the 21 equally likely gold values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reelrl.gym.render import COLOR_NAMES, blank, draw_disc, draw_rect, draw_square
from reelrl.gym.tasks import CHANCE, GymSpec, Sample, object_size, register_family, sample_difficulty

GRID = 20
"""Progress values are multiples of ``1 / GRID``; paths are multiples of ``GRID`` pixels long."""
MARGIN = 3
GOAL_PAD = 3  # the goal outline lies GOAL_PAD px around the object's final box
DIRECTIONS_8: tuple[tuple[int, int], ...] = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
EFFECTOR = "white"
PROGRESS_OUTCOMES: tuple[str, ...] = ("advance", "stall", "regress")
FAILURE_OUTCOMES: tuple[str, ...] = ("stall", "regress", "slip")
ROLES = ("The first image shows the initial state, the video shows the episode{part}, and the last image shows "
         "the current state.")


def _golds() -> np.ndarray:
    return np.arange(GRID + 1) / GRID  # [21] the equally likely gold progress values


def chance_mae(spec: GymSpec) -> dict[str, float]:
    """Exact MAE of a constant 0.5 guess and of a uniform guess in [0, 1] (``E|U - g| = (g^2 + (1-g)^2) / 2``)."""
    g = _golds()
    return {"constant_0.5": float(np.mean(np.abs(0.5 - g))), "uniform": float(np.mean((g**2 + (1 - g) ** 2) / 2))}


def effector_size(s: int) -> int:
    """Side of the effector's disc box for an object of side ``s``."""
    return max(4, s // 3)


def path_length(spec: GymSpec, s: int) -> int:
    """``D``: the longest multiple of :data:`GRID` the frame leaves for the object's path (per moved axis)."""
    e = effector_size(s)
    room = min(spec.height, spec.width) - s - 2 * MARGIN - 2 * GOAL_PAD - (e + 2)
    d = GRID * (room // GRID)
    if d < GRID:
        raise ValueError(f"push families: a {spec.height}x{spec.width} frame leaves no {GRID}-pixel path for an "
                         f"object of {s} px (use larger frames or a smaller object_scale)")
    return d


def _layout(rng: np.random.Generator, spec: GymSpec, s: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    """Start top-left ``(y, x)`` of the object, direction ``(dy, dx)``, path length ``D``: all boxes inside."""
    d_len = path_length(spec, s)
    e = effector_size(s)
    dy, dx = DIRECTIONS_8[int(rng.integers(len(DIRECTIONS_8)))]
    lo_hi = []
    for size, step in ((spec.height, dy), (spec.width, dx)):
        lo = MARGIN + GOAL_PAD + (e + 2 if step > 0 else 0) + (d_len if step < 0 else 0)
        hi = size - MARGIN - GOAL_PAD - s - (e + 2 if step < 0 else 0) - (d_len if step > 0 else 0)
        lo_hi.append((lo, hi))
    y0 = int(rng.integers(lo_hi[0][0], lo_hi[0][1] + 1))
    x0 = int(rng.integers(lo_hi[1][0], lo_hi[1][1] + 1))
    return (y0, x0), (dy, dx), d_len


def _profile(outcome: str, gold: float, peak: float, n: int, rng: np.random.Generator) -> list[float]:
    """Object progress per frame, on the 1/GRID grid, ending on ``gold`` (``peak``: the stall/regress turn value)."""
    k_end, k_peak = round(gold * GRID), round(peak * GRID)
    if outcome == "advance":
        ks = [round(k_end * t / (n - 1)) for t in range(n)]
    else:
        turn = int(rng.integers(max(1, n // 3), max(2, (2 * n) // 3) + 1))  # the frame where it stops / turns back
        up = [round(k_peak * t / turn) for t in range(turn + 1)]
        if outcome in ("stall", "slip", "success"):
            ks = up + [k_peak] * (n - turn - 1)
        else:  # regress: back from the peak to the end value
            rest = n - turn - 1
            ks = up + [round(k_peak + (k_end - k_peak) * (t + 1) / rest) for t in range(rest)]
    return [k / GRID for k in ks]


def _render(spec: GymSpec, s: int, start: tuple[int, int], step: tuple[int, int], d_len: int,
            progress: list[float], effector_progress: list[float], colors: tuple[str, str]) -> tuple[np.ndarray, dict]:
    """Frames ``[T, H, W, 3]`` and the per-frame boxes of the object / effector, goal box."""
    (y0, x0), (dy, dx) = start, step
    e = effector_size(s)
    obj_color, goal_color = colors
    gy, gx = y0 + dy * d_len - GOAL_PAD, x0 + dx * d_len - GOAL_PAD
    gs = s + 2 * GOAL_PAD
    frames = blank(len(progress), spec.height, spec.width)  # [T, H, W, 3]
    obj_boxes, eff_boxes = [], []
    for t, (p, q) in enumerate(zip(progress, effector_progress)):
        f = frames[t]
        for y, x, h, w in ((gy, gx, 2, gs), (gy + gs - 2, gx, 2, gs), (gy, gx, gs, 2), (gy, gx + gs - 2, gs, 2)):
            draw_rect(f, y, x, h, w, goal_color)  # the goal outline
        oy, ox = y0 + round(p * d_len) * dy, x0 + round(p * d_len) * dx
        # the effector sits behind where the object is (or would be, once it slipped), on the side away from the goal
        cy, cx = y0 + round(q * d_len) * dy + s // 2, x0 + round(q * d_len) * dx + s // 2
        ey, ex = cy - dy * (s // 2 + 1 + e // 2) - e // 2, cx - dx * (s // 2 + 1 + e // 2) - e // 2
        draw_square(f, (oy, ox, s), obj_color)
        draw_disc(f, (ey, ex, e), EFFECTOR)
        obj_boxes.append([oy, ox, s])
        eff_boxes.append([ey, ex, e])
    meta = {"goal_box": [gy, gx, gs], "object_boxes": obj_boxes, "effector_boxes": eff_boxes,
            "start": [y0, x0], "direction": [dy, dx], "path_px": d_len}
    return frames, meta


def _scene(rng: np.random.Generator, spec: GymSpec) -> tuple[float, int, tuple[int, int], tuple[int, int], int,
                                                            tuple[str, str]]:
    d = sample_difficulty(rng, spec)
    s = object_size(d, spec)
    start, step, d_len = _layout(rng, spec, s)
    names = [c for c in COLOR_NAMES if c != EFFECTOR]
    obj_color, goal_color = (names[i] for i in rng.permutation(len(names))[:2])
    return d, s, start, step, d_len, (obj_color, goal_color)


def _task_text(colors: tuple[str, str]) -> str:
    return (f"A robot's end effector (the small white dot) pushes the {colors[0]} square into the {colors[1]} "
            "goal outline.")


IMAGES = [{"role": "initial_state", "frame": 0, "position": "before"},
          {"role": "current_state", "frame": -1, "position": "after"}]


@register_family("push_progress", chance_mae=chance_mae)
def push_progress_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """The progress at the current state (the video's last frame), in [0, 1] (module docstring)."""
    d, s, start, step, d_len, colors = _scene(rng, spec)
    gold = int(rng.integers(GRID + 1)) / GRID
    allowed = [o for o in PROGRESS_OUTCOMES if not (o == "regress" and gold >= 1.0)]
    outcome = allowed[int(rng.integers(len(allowed)))]
    peak = gold if outcome != "regress" else int(rng.integers(round(gold * GRID) + 1, GRID + 1)) / GRID
    progress = _profile(outcome, gold, peak, spec.frames, rng)
    frames, meta = _render(spec, s, start, step, d_len, progress, progress, colors)
    question = (f"{_task_text(colors)} {ROLES.format(part=' so far')} What is the task progress at the current "
                "state? Answer with a number between 0 (not started) and 1 (the square is in the goal).")
    how = {"advance": "pushed steadily toward the goal",
           "stall": f"pushed {peak:g} of the way, then stops",
           "regress": f"pushed {peak:g} of the way, then pulled back"}[outcome]
    reasoning = f"{colors[0]} square {how}. now {gold:g} of the way. {gold:g}."
    meta.update(outcome=outcome, progress=progress, peak=peak, current_frame=spec.frames - 1,
                colors={"object": colors[0], "goal": colors[1]}, progress_range=[0.0, 1.0])
    return Sample(frames, spec.fps, question, None, f"{gold:g}", "progress", reasoning, None, d, meta,
                  images=[dict(i) for i in IMAGES])


@register_family("push_failure")
def push_failure_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """Did the episode succeed (the object ends inside the goal)? yes / no (module docstring)."""
    d, s, start, step, d_len, colors = _scene(rng, spec)
    success = bool(rng.integers(2))
    outcome = "success" if success else FAILURE_OUTCOMES[int(rng.integers(len(FAILURE_OUTCOMES)))]
    if outcome == "success":
        peak = end = 1.0
    elif outcome == "regress":
        peak = int(rng.integers(GRID // 2, GRID)) / GRID  # 0.5 .. 0.95
        end = int(rng.integers(0, round(peak * GRID) - GRID // 4 + 1)) / GRID  # back by >= 0.25
    else:  # stall, slip: the object stops at 0.2 .. 0.8
        peak = end = int(rng.integers(GRID // 5, (4 * GRID) // 5 + 1)) / GRID
    progress = _profile(outcome, end, peak, spec.frames, rng)
    effector: list[Any] = progress
    if outcome == "slip":  # the effector carries on to the goal alone
        stop = progress.index(peak)
        effector = progress[:stop] + [min(1.0, peak + (1.0 - peak) * (t + 1) / max(1, spec.frames - stop))
                                      for t in range(spec.frames - stop)]
    frames, meta = _render(spec, s, start, step, d_len, progress, effector, colors)
    question = (f"{_task_text(colors)} {ROLES.format(part='')} Did the robot succeed: does the {colors[0]} square "
                "end inside the goal?")
    why = {"success": "reaches the goal and stays inside it",
           "stall": f"stops {end:g} of the way, outside the goal",
           "regress": f"gets {peak:g} of the way, then is pulled back to {end:g}",
           "slip": f"slips from the effector {end:g} of the way, outside the goal"}[outcome]
    reasoning = f"{colors[0]} square {why}. {'yes' if success else 'no'}."
    meta.update(outcome=outcome, progress=progress, effector_progress=effector, failure_detection=True,
                colors={"object": colors[0], "goal": colors[1]}, success=success)
    return Sample(frames, spec.fps, question, ["yes", "no"], "A" if success else "B", "multiple_choice", reasoning,
                  None, d, meta, images=[dict(i) for i in IMAGES])


CHANCE.register("push_progress")(lambda spec: 1.0 - chance_mae(spec)["uniform"])
CHANCE.register("push_failure")(lambda spec: 0.5)
