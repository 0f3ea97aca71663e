"""Rendered 2-D reaching episodes for a served progress critic (SOLE-R1): a red disc reaches a green goal.

Scene (``H x W`` frames, sides multiples of 28 so ``reelrl serve`` takes them
unresized): the near-black gym background, the goal (a green square outline,
2 px thick, side :data:`GOAL_SIDE`, centred in the frame) and the agent (a red
disc of side :data:`AGENT_SIDE` centred on its position ``(y, x)``, clipped to
stay inside the frame). An episode starts with the agent
:data:`START_FRACTION` ``* min(H, W)`` pixels from the goal's centre, at a
uniform angle.

True progress of a state: ``1 - |agent - goal| / |agent_0 - goal|``, clipped to
[0, 1] (:func:`reach_progress`): the fraction of the initial distance covered;
moving away counts as 0, never below. An episode succeeds when its last state
reaches :data:`SUCCESS_PROGRESS` (the agent's centre within 20 % of the start
distance of the goal's centre, i.e. inside the outline).
``benchmarks/online_rl.py`` renders its environment with the same functions,
so the critic it serves sees frames of the kind it was trained on.

reach_progress   an episode of ``spec.frames`` frames under one behaviour of
                 :data:`BEHAVIOURS` (advancing at a random speed, starting late, stalling,
                 regressing, moving away, oscillating, jittering near the start,
                 a random walk, standing still), cut at a uniform ``t`` in
                 ``1 .. T``: the row's images are frames ``0 .. t-1`` of its
                 video (the episode so far), to be shown as the served progress
                 conversation (prompt template ``served_progress``: goal, the
                 frames as images, the question, :mod:`reelrl.data.progress_prompt`);
                 the answer is the true progress at frame ``t - 1`` with two
                 decimals (``problem_type: progress``), the goal text
                 :data:`REACH_GOAL` the row's question. ``meta["progress"]`` holds
                 the progress of every frame of the video.

Chance (``gym.json``): the expected PRIMO score of a uniform guess and the MAE of
a constant 0.5 guess and of a uniform guess are not closed-form here (the
gold values depend on the behaviours), so the family registers the score of
a uniform guess against a gold of 0.5 as its chance accuracy (0.75) only as a
reference point.
"""

from __future__ import annotations

import math

import numpy as np

from reelrl.gym.render import blank, draw_disc, draw_rect
from reelrl.gym.tasks import CHANCE, GymSpec, Sample, register_family, sample_difficulty

REACH_GOAL = "move the red dot into the green square"
"""The goal text of every reaching episode (the served episode's goal, the row's question)."""
AGENT_SIDE = 10
GOAL_SIDE = 14
START_FRACTION = 0.4
"""The agent starts this fraction of ``min(H, W)`` away from the goal's centre (22.4 px in 56x56 frames)."""
SUCCESS_PROGRESS = 0.8
MAX_STEP = 6.0
"""Largest move of the agent per frame, in pixels of a 56x56 frame (scaled with ``min(H, W) / 56``)."""
BEHAVIOURS: dict[str, float] = {"advance": 0.25, "late": 0.2, "stall": 0.1, "regress": 0.1, "away": 0.05,
                                "oscillate": 0.1, "jitter": 0.075, "random": 0.075, "still": 0.05}
"""Behaviours of the gym's episodes and their probabilities. A quarter of them stay at progress 0, so that
zero is not the answer of most rows; random speeds, late starts, stalls and regressions spread the progress
at every timestep, so that the number of frames shown does not tell the answer (a critic that counts frames
instead of looking at the last one scores poorly)."""


def goal_center(height: int, width: int) -> np.ndarray:
    """The goal's centre ``[2]`` ``(y, x)`` in pixels: the frame's centre."""
    return np.array([height / 2.0, width / 2.0])


def start_distance(height: int, width: int) -> float:
    """Distance of the agent's start from the goal's centre, in pixels."""
    return START_FRACTION * min(height, width)


def start_position(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A start ``[2]`` at :func:`start_distance` from the goal, at a uniform angle."""
    a = rng.uniform(0.0, 2.0 * math.pi)
    return goal_center(height, width) + start_distance(height, width) * np.array([math.sin(a), math.cos(a)])


def clip_position(pos: np.ndarray, height: int, width: int) -> np.ndarray:
    """``pos [..., 2]`` clipped so that the agent's disc stays inside the frame."""
    half = AGENT_SIDE / 2.0
    return np.stack([np.clip(pos[..., 0], half, height - half), np.clip(pos[..., 1], half, width - half)], -1)


def reach_progress(pos: np.ndarray, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """True progress ``[...]`` of agent positions ``pos [..., 2]``: ``clip(1 - |pos - goal| / |start - goal|, 0, 1)``."""
    d0 = float(np.linalg.norm(start - goal))
    if d0 <= 0.0:
        raise ValueError("reach_progress: the start lies on the goal (zero start distance)")
    return np.clip(1.0 - np.linalg.norm(pos - goal, axis=-1) / d0, 0.0, 1.0)  # [...]


def render_reach(pos: np.ndarray, height: int, width: int) -> np.ndarray:
    """The frames ``[T, H, W, 3]`` uint8 of agent positions ``pos [T, 2]`` (module docstring)."""
    if height % 28 or width % 28:
        raise ValueError(f"render_reach: frame sides must be multiples of 28, got {height}x{width}")
    frames = blank(len(pos), height, width)  # [T, H, W, 3]
    gy, gx = (int(round(c - GOAL_SIDE / 2.0)) for c in goal_center(height, width))
    half = AGENT_SIDE / 2.0
    for f, p in zip(frames, clip_position(np.asarray(pos, dtype=np.float64), height, width)):
        for y, x, h, w in ((gy, gx, 2, GOAL_SIDE), (gy + GOAL_SIDE - 2, gx, 2, GOAL_SIDE), (gy, gx, GOAL_SIDE, 2),
                           (gy, gx + GOAL_SIDE - 2, GOAL_SIDE, 2)):
            draw_rect(f, y, x, h, w, "green")
        draw_disc(f, (int(round(p[0] - half)), int(round(p[1] - half)), AGENT_SIDE), "red")
    return frames


def behaviour_path(rng: np.random.Generator, behaviour: str, start: np.ndarray, goal: np.ndarray, n: int,
                   height: int, width: int) -> np.ndarray:
    """Agent positions ``[n, 2]`` of one episode under ``behaviour`` (:data:`BEHAVIOURS`), frame 0 at ``start``."""
    toward = (goal - start) / np.linalg.norm(goal - start)  # [2] unit vector to the goal
    k = min(height, width) / 56.0  # moves scale with the frame, as the start distance does
    speed = k * rng.uniform(2.0, MAX_STEP)
    turn = int(rng.integers(1, max(2, n - 1)))  # the frame where a stall / regress starts
    pos = [start.astype(np.float64)]
    for t in range(1, n):
        p = pos[-1]
        if behaviour == "advance" or (behaviour in ("stall", "regress") and t <= turn) or (
                behaviour == "late" and t > turn):
            step = np.clip(goal - p, -speed, speed) if np.linalg.norm(goal - p) < speed else speed * toward
            step = step + k * rng.normal(0.0, 0.7, 2)
        elif behaviour == "regress":
            step = -speed * toward + k * rng.normal(0.0, 0.7, 2)
        elif behaviour == "away":
            step = -speed * toward + k * rng.normal(0.0, 0.7, 2)
        elif behaviour == "oscillate":
            step = (speed if t % 2 else -speed) * toward
        elif behaviour == "jitter":
            step = start + k * rng.normal(0.0, 1.5, 2) - p
        elif behaviour == "random":
            step = k * rng.normal(0.0, 3.0, 2)
        else:  # stall after the turn, late before it, still
            step = np.zeros(2)
        step = step * min(1.0, k * MAX_STEP / max(float(np.linalg.norm(step)), 1e-9))
        pos.append(clip_position(p + step, height, width))
    return np.stack(pos)  # [n, 2]


@register_family("reach_progress")
def reach_progress_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """One reaching episode cut at a uniform timestep, its progress there the answer (module docstring)."""
    h, w, n = spec.height, spec.width, spec.frames
    d = sample_difficulty(rng, spec)
    names = list(BEHAVIOURS)
    behaviour = names[int(rng.choice(len(names), p=np.array(list(BEHAVIOURS.values()))))]
    goal, start = goal_center(h, w), start_position(rng, h, w)
    pos = behaviour_path(rng, behaviour, start, goal, n, h, w)  # [n, 2]
    progress = reach_progress(pos, start, goal)  # [n]
    t = int(rng.integers(1, n + 1))  # frames shown
    gold = f"{float(progress[t - 1]):.2f}"
    meta = {"behaviour": behaviour, "progress": [round(float(p), 4) for p in progress], "positions":
            [[round(float(a), 3) for a in p] for p in pos], "start": [round(float(a), 3) for a in start],
            "goal": [float(a) for a in goal], "cut": t, "progress_range": [0.0, 1.0]}
    images = [{"role": f"frame_{k}", "frame": k, "position": "after"} for k in range(t)]
    return Sample(render_reach(pos, h, w), spec.fps, REACH_GOAL, None, gold, "progress", None,  # type: ignore[arg-type]
                  None, d, meta, images=images)


CHANCE.register("reach_progress")(lambda spec: 0.75)
