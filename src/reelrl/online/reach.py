"""A vectorised 2-D reaching environment rendered as :mod:`reelrl.gym.reaching` renders its episodes.

State: the agent's position ``(y, x)`` per episode; an episode starts at
:func:`~reelrl.gym.reaching.start_position` (a uniform angle,
:func:`~reelrl.gym.reaching.start_distance` from the goal at the frame's centre).
Actions: :data:`ACTIONS`, eight compass moves of :data:`STEP` pixels, the agent
kept inside the frame. An episode lasts :data:`HORIZON` actions, so it has
``HORIZON + 1`` frames, as many as the critic's training episodes (recipe ``sole_r1``:
8 frames). It succeeds when its last state's true progress reaches
:data:`~reelrl.gym.reaching.SUCCESS_PROGRESS` (the agent inside the goal's outline).

Probes (:data:`PROBES`) are scripted position sequences that a policy trying
to exploit a critic might produce; the benchmark asks how the served progress
follows the true progress on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reelrl.gym.reaching import (
    SUCCESS_PROGRESS,
    clip_position,
    goal_center,
    reach_progress,
    render_reach,
    start_distance,
    start_position,
)

__all__ = ["ACTIONS", "HORIZON", "PROBES", "STEP", "ReachEnv", "probe_path"]

STEP = 4.0
"""Pixels per move in a 56x56 frame, scaled with ``min(H, W) / 56`` (the gym's episodes move 2 to 6 such
pixels per frame)."""
HORIZON = 7
"""Actions per episode (8 frames with the start)."""
ACTIONS = np.array([[math.sin(a), math.cos(a)] for a in np.arange(8) * math.pi / 4])  # [8, 2] unit (dy, dx)


@dataclass
class ReachEnv:
    """``n`` reaching episodes stepped together in ``height x width`` frames."""

    n: int
    height: int = 56
    width: int = 56

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Start ``n`` episodes; their first frames ``[n, H, W, 3]`` uint8."""
        self.goal = goal_center(self.height, self.width)  # [2]
        self.start = np.stack([start_position(rng, self.height, self.width) for _ in range(self.n)])  # [n, 2]
        self.pos = self.start.copy()  # [n, 2]
        self.t = 0
        return self.frames()

    def frames(self) -> np.ndarray:
        """The current frame of every episode ``[n, H, W, 3]``."""
        return np.stack([render_reach(p[None], self.height, self.width)[0] for p in self.pos])

    def step(self, actions: np.ndarray) -> np.ndarray:
        """Move every agent by its action ``actions [n]`` (indices of :data:`ACTIONS`); the new frames."""
        if self.t >= HORIZON:
            raise RuntimeError(f"ReachEnv.step: the episodes are over ({HORIZON} actions); reset first")
        step = STEP * min(self.height, self.width) / 56.0
        self.pos = clip_position(self.pos + step * ACTIONS[np.asarray(actions)], self.height, self.width)  # [n, 2]
        self.t += 1
        return self.frames()

    def true_progress(self) -> np.ndarray:
        """True progress of every episode's current state ``[n]`` (:func:`reach_progress`)."""
        return np.array([float(reach_progress(p, s, self.goal)) for p, s in zip(self.pos, self.start)])

    def success(self) -> np.ndarray:
        """Whether each episode's current state counts as reached ``[n]`` bool."""
        return self.true_progress() >= SUCCESS_PROGRESS - 1e-9


PROBES = ("toward", "orbit", "away", "overshoot", "corner", "jitter")
"""Scripted behaviours: straight to the goal (the honest reference), circling it at the start distance
(true progress stays 0), straight away from it, through it and beyond, to the nearest frame corner, and
shaking near the start."""


def probe_path(name: str, rng: np.random.Generator, height: int = 56, width: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """One probe episode: ``(positions [HORIZON + 1, 2], start [2])`` under behaviour ``name`` (:data:`PROBES`)."""
    goal, start = goal_center(height, width), start_position(rng, height, width)
    toward = (goal - start) / np.linalg.norm(goal - start)  # [2]
    step = STEP * min(height, width) / 56.0
    t = np.arange(HORIZON + 1, dtype=np.float64)[:, None]  # [T, 1]
    if name == "toward":
        pos = start + np.minimum(t * step, start_distance(height, width)) * toward
    elif name == "overshoot":
        pos = start + t * 1.5 * step * toward
    elif name == "away":
        pos = start - t * step * toward
    elif name == "orbit":
        a0 = math.atan2(start[0] - goal[0], start[1] - goal[1])
        a = a0 + t[:, 0] * step / start_distance(height, width)
        pos = goal + start_distance(height, width) * np.stack([np.sin(a), np.cos(a)], -1)
    elif name == "corner":
        corner = np.array([0.0 if start[0] < goal[0] else height, 0.0 if start[1] < goal[1] else width])
        way = (corner - start) / np.linalg.norm(corner - start)
        pos = start + t * step * way
    elif name == "jitter":
        pos = start + (step / 2.0) * rng.normal(0.0, 1.0, (HORIZON + 1, 2)) * (t > 0)
    else:
        raise ValueError(f"probe_path: unknown probe {name!r}; known: {', '.join(PROBES)}")
    return clip_position(pos, height, width), start  # [T, 2], [2]
