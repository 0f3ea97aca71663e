"""The multi-turn environment interface: what a rollout shows the model after each of its turns.

An episode starts from a dataset row: its prompt (the row's video and question,
encoded by :class:`reelrl.data.prompts.PromptEncoder`) is the first
observation. After every model turn the rollout calls ``env.step(text)`` with
the turn's decoded text and gets a :class:`Turn` back:

- ``columns``: the reward columns of the turn just answered (``answer``,
  ``problem_type``, ``time_span``, ...), laid over the row's own columns, so
  the recipe's registered rewards (``rl.rewards``) score every turn with the
  turn's gold data (a first turn scored by temporal IoU, a second by box IoU);
  ``None`` leaves the turn unscored (a streaming thought: the reward is the
  final answer's only);
- ``observation``: the next user turn (text, images and video clips, each
  visual input encoded once and appended to the cached context), or ``None``
  to end the episode.

In the usual terms of an RL environment: *reset* is the factory (with
``prompt_row``) and the row's prompt is the first observation; *step(text)*
returns the next observation, ``observation is None`` is *done*, and the
reward is the recipe's: its registered rewards over the turn's columns, of
which ``env_reward`` reads a reward the environment computed itself
(``columns["env_reward"]``); ``columns=None`` gives the turn no reward (per-turn
or final-only rewards).

An environment is built per trajectory by a factory registered in
:data:`ENVS`: ``factory(row, video, **kwargs)`` with the row and the frames
the model saw (:class:`reelrl.video.decode.SampledVideo`); recipes name it in
``rl.env`` (``{name, kwargs}``, checked when the recipe loads). A factory
registered with the trait ``prompt_row`` (``row -> row``) rewrites every
dataset row before its first prompt is encoded (a streaming episode opens on
its first clip rather than the whole video). Environments
are pure Python over text and arrays: they import nothing from the model or
the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from reelrl.registry import Registry

__all__ = ["ENVS", "Clip", "prompt_row", "Demonstration", "Environment", "EnvFactory", "Observation", "Turn"]


@dataclass
class Clip:
    """A video clip shown in a later turn: ``frames [T, H, W, 3]`` uint8 sampled at ``fps`` frames per second of
    video time, the first at ``start`` seconds (its frames are encoded as one video input, like the prompt's)."""

    frames: np.ndarray
    fps: float
    start: float = 0.0


@dataclass
class Observation:
    """One user turn after the first: text, preceded by images (``[H, W, 3]`` uint8 each), then video clips."""

    text: str
    images: list[np.ndarray] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)


@dataclass
class Turn:
    """What the environment returns for one model turn."""

    columns: dict[str, Any] | None  # reward columns of the turn just answered (over the row's); None: not scored
    observation: Observation | None = None  # the next user turn; None ends the episode
    info: dict[str, Any] = field(default_factory=dict)  # logged with the episode (what was shown, why it ended)


@dataclass
class Demonstration:
    """A gold episode, for SFT on whole episodes (``sft.demonstrations``)."""

    answers: list[tuple[str | None, str | None]]  # per model turn: (reasoning or None, answer or None: a thought),
    # wrapped by the template
    observations: list[Observation]  # the user turn after each model turn but the last


class Environment(Protocol):
    """One trajectory's environment (module docstring).

    An environment that can also show a gold episode has ``demonstration() -> Demonstration``
    (optional; ``sft.demonstrations`` needs it).
    """

    max_turns: int  # model turns at most (the rollout stops after this many even if observations continue)

    def step(self, text: str) -> Turn: ...


EnvFactory = Callable[..., Environment]
ENVS: Registry[EnvFactory] = Registry("environment")
"""Multi-turn environments by name: ``ENVS.get(name)(row, video, **kwargs) -> Environment``."""


def prompt_row(name: str) -> Callable[[Any], Any] | None:
    """The ``prompt_row`` trait of environment ``name`` (``row -> row``), or None (``module:factory`` names have none)."""
    if ":" in name:
        return None
    fn = ENVS.trait(name, "prompt_row")
    return fn if callable(fn) else None
