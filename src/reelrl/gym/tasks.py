"""The synthetic video gym's core: :class:`GymSpec`, :class:`Sample`, the :data:`TASKS` registry, shared helpers.

Every family is a pure function ``(rng, spec) -> Sample`` registered in
:data:`TASKS` with :func:`register_family`, which also applies
``GymSpec.frames_per_step`` (each rendered step held for several frames) and
the spec's visual environment. It renders ``spec.frames`` frames of flat
shapes (see :mod:`reelrl.gym.render`) and states the question, the options,
the gold answer, and a short reasoning trace that reads the evidence off the
video in time order. No family can be answered from one frame: the answer
lives in the time axis (how often, in which order, which way, before / after,
when). Each family registers its exact chance accuracy in :data:`CHANCE`
(:func:`chance_accuracy`).

The families live in their own modules: the question families (count,
order, direction, color_change, multi_select, progress) in
:mod:`reelrl.gym.questions`, the others as listed in :mod:`reelrl.gym`.

Answer balance: every choice question draws the position of the correct
option uniformly (:func:`place_answer`; the other options are shuffled), so
each letter is correct with probability exactly 1 / n_options.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from reelrl.data.schema import LETTERS
from reelrl.gym.environments import DEFAULT_ENVIRONMENT, ENVIRONMENTS, apply_environment, drawing
from reelrl.gym.render import COLOR_NAMES
from reelrl.registry import Registry

DEFAULT_FAMILIES: tuple[str, ...] = ("count", "order", "direction", "color_change", "multi_select")
"""Families a :class:`GymSpec` uses when none are named (``progress`` is opt-in)."""

DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")


# --------------------------------------------------------------------------- spec


class GymSpec(BaseModel):
    """What to generate. Every field is part of the gym's identity (see ``ensure_gym``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    families: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FAMILIES),
        description="Task families (names in TASKS), interleaved round-robin in every split.",
    )
    frames: int = Field(16, ge=8, le=512, description="Frames per video.")
    fps: float = Field(4.0, gt=0.0, le=120.0, description="Frame rate written into the video.")
    frames_per_step: int = Field(
        1,
        ge=1,
        le=8,
        description=(
            "Each rendered time step is held for this many identical frames (frames must be a multiple). "
            "2 aligns every event with Qwen-VL's temporal patches of 2 frames and survives 2x frame "
            "subsampling; generator frame indices in meta are then in steps."
        ),
    )
    height: int = Field(84, description="Frame height in pixels; a multiple of 28 (>= 56).")
    width: int = Field(84, description="Frame width in pixels; a multiple of 28 (>= 56).")
    difficulty: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="0 = big objects, long flashes, no distractors, small count range; 1 = the opposite.",
    )
    difficulty_jitter: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Each sample draws its difficulty uniformly from difficulty +- jitter, clipped to [0, 1].",
    )
    object_scale: float = Field(
        1.0,
        ge=0.5,
        le=4.0,
        description=(
            "Multiplies every object's side (see object_size); capped so an object fits the frame. "
            "Large objects cover several vision tokens, which a small model reads far more easily."
        ),
    )
    count_mode: Literal["numerical", "multiple_choice"] = Field(
        "numerical", description="Answer type of the 'count' family."
    )
    n_options: int = Field(4, ge=2, le=len(COLOR_NAMES), description="Options per choice question.")
    option_order: Literal["shuffled", "canonical"] = Field(
        "shuffled",
        description="'shuffled': the answer's letter is uniform; 'canonical': options listed in a fixed order "
        "(palette order for colours, left/right/up/down, ascending counts), so a letter keeps its meaning "
        "across questions (an easier reading task; guessing chance is unchanged).",
    )
    seed: int = Field(0, ge=0, description="Root seed; splits and samples derive disjoint streams from it.")
    environment: str = Field(
        DEFAULT_ENVIRONMENT,
        description="Visual style (a name in reelrl.gym.environments.ENVIRONMENTS: background, palette shades, "
        "texture, shape set). The same seed shows the same scenes in every environment. Left out of the "
        "serialised spec when default, so the identity of gyms made before the field existed is unchanged.",
    )

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, v: str) -> str:
        if v not in ENVIRONMENTS:
            raise ValueError(f"unknown gym environment {v!r}; valid names: {', '.join(ENVIRONMENTS.names())}")
        return v

    @model_serializer(mode="wrap")
    def _omit_default_environment(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("environment") == DEFAULT_ENVIRONMENT:
            del data["environment"]
        return data

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_28(cls, v: int) -> int:
        if v < 56 or v % 28:
            raise ValueError(f"must be a multiple of 28 and >= 56 (Qwen-VL patch 14 x merge 2), got {v}")
        return v

    @field_validator("families")
    @classmethod
    def _known_families(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("families must name at least one task family")
        if len(set(v)) != len(v):
            raise ValueError(f"families has duplicates: {v}")
        for name in v:
            if name not in TASKS:
                raise ValueError(f"unknown gym task {name!r}; valid names: {', '.join(TASKS.names())}")
        return v

    @model_validator(mode="after")
    def _fits_in_frames(self) -> "GymSpec":
        m = self.frames_per_step
        if self.frames % m or self.frames // m < 8:
            raise ValueError(f"frames ({self.frames}) must be a multiple of frames_per_step ({m}) with >= 8 steps")
        steps = self.frames // m
        unit = "frames" if m == 1 else f"steps of {m} frames"
        if "count" in self.families:
            hi = count_range(1.0, self)[1]
            if steps < 2 * hi - 1:
                raise ValueError(f"count needs >= {2 * hi - 1} {unit} for up to {hi} flashes, got {steps}")
        if "multi_select" in self.families and steps < 2 * self.n_options - 3:
            raise ValueError(
                f"multi_select with {self.n_options} options needs >= {2 * self.n_options - 3} {unit}, got {steps}"
            )
        return self


@dataclass
class Sample:
    """One generated example, before it is written to disk."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    fps: float
    question: str
    options: list[str] | None
    answer: str
    problem_type: str
    reasoning: str
    time_span: tuple[float, float] | None
    difficulty: float
    meta: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] | None = None  # extra prompt images (VideoRow.images), e.g. frames 0 and -1


TaskFn = Callable[[np.random.Generator, GymSpec], Sample]
TASKS: Registry[TaskFn] = Registry("gym task")
"""Task families by name: ``TASKS.get("count")(rng, spec) -> Sample``."""


def register_family(name: str, **traits: object) -> Callable[[TaskFn], TaskFn]:
    """Register a task family under ``name`` in :data:`TASKS`, adding ``frames_per_step`` and ``environment``.

    ``traits`` are stored with it (``TASKS.trait``); ``group_size=k`` makes a family of groups of ``k``
    samples drawn from one shared stream and called with ``member=`` (see :func:`reelrl.gym.generate.make_sample`).

    The family renders ``frames // frames_per_step`` steps at ``fps / frames_per_step``
    (so times in its trace stay in true seconds); each step is then repeated
    ``frames_per_step`` times. It renders under ``spec.environment``'s shape set
    and is then restyled (:func:`reelrl.gym.environments.apply_environment`).
    """

    def deco(fn: TaskFn) -> TaskFn:
        @functools.wraps(fn)
        def stepped(rng: np.random.Generator, spec: GymSpec, **kwargs: Any) -> Sample:
            m = spec.frames_per_step
            with drawing(spec.environment):
                if m == 1:
                    return apply_environment(fn(rng, spec, **kwargs), spec.environment, rng)
                inner = spec.model_copy(update={"frames": spec.frames // m, "fps": spec.fps / m,
                                                "frames_per_step": 1})
                s = fn(rng, inner, **kwargs)
            s.frames = np.repeat(s.frames, m, axis=0)  # [T, H, W, 3] from [T/m, H, W, 3]
            s.fps = spec.fps
            s.meta["frames_per_step"] = m
            return apply_environment(s, spec.environment, rng)

        TASKS.register(name, **traits)(stepped)
        return stepped

    return deco

CHANCE: Registry[Callable[[GymSpec], float]] = Registry("gym chance")
"""Exact chance accuracy per family; use :func:`chance_accuracy`."""


# --------------------------------------------------------------------------- helpers


def sample_difficulty(rng: np.random.Generator, spec: GymSpec) -> float:
    """Per-sample difficulty: ``spec.difficulty`` +- ``difficulty_jitter``, clipped to [0, 1]."""
    if spec.difficulty_jitter == 0.0:
        return spec.difficulty
    d = spec.difficulty + rng.uniform(-spec.difficulty_jitter, spec.difficulty_jitter)
    return float(min(1.0, max(0.0, d)))


def object_size(d: float, spec: GymSpec) -> int:
    """Side of an object's box in pixels: 30% of the short side at d=0, 16% at d=1, times ``object_scale``.

    Capped at the short side minus a 3-pixel margin on both sides.
    """
    short = min(spec.height, spec.width)
    return min(short - 6, max(8, round(short * (0.30 - 0.14 * d) * spec.object_scale)))



def count_range(d: float, spec: GymSpec) -> tuple[int, int]:
    """Inclusive range of flash counts of the ``count`` family at difficulty ``d``.

    Upper end 3, 4, 5, 6 on the quarters of [0, 1]. In ``multiple_choice`` mode
    the range holds at least ``n_options`` values, so that every option value
    is the answer equally often.
    """
    hi = 3 + min(3, int(d * 4))
    if spec.count_mode == "multiple_choice":
        hi = max(hi, spec.n_options)
    return 1, hi


def secs(frame: int, fps: float) -> float:
    """Time in seconds at which ``frame`` is shown, rounded to 2 decimals."""
    return round(frame / fps, 2)


def fmt_s(frame: int, fps: float) -> str:
    """``frame`` as a compact time string: 0 -> "0s", 6 at 4 fps -> "1.5s"."""
    return f"{secs(frame, fps):g}s"


def _canonical_key(option: str) -> tuple[int, float]:
    """Sort key of the canonical option order: counts ascending, directions, then palette colours."""
    try:
        return (0, float(option))
    except ValueError:
        pass
    if option in DIRECTIONS:
        return (1, DIRECTIONS.index(option))
    if option in COLOR_NAMES:
        return (2, COLOR_NAMES.index(option))
    return (3, 0.0)


def place_answer(
    rng: np.random.Generator, answer: str, others: list[str], n: int, canonical: bool = False
) -> tuple[list[str], str]:
    """Options of length ``n``: ``answer`` at a uniform position, the first ``n-1`` of ``others`` shuffled.

    Returns ``(options, letter)``. ``others`` is taken in its given priority
    order (traps first), then shuffled, so traps are kept but their letters are random.
    """
    if len(others) < n - 1:
        raise ValueError(f"need {n - 1} distractor options, got {len(others)}")
    rest = [others[i] for i in rng.permutation(n - 1)]
    pos = int(rng.integers(n))
    options = rest[:pos] + [answer] + rest[pos:]
    if canonical:
        options = sorted(options, key=_canonical_key)
        pos = options.index(answer)
    return options, LETTERS[pos]


def distractor_colors(rng: np.random.Generator, exclude: list[str]) -> list[str]:
    """Palette colours not in ``exclude``, in random order."""
    pool = [c for c in COLOR_NAMES if c not in exclude]
    return [pool[i] for i in rng.permutation(len(pool))]



def chance_accuracy(family: str, spec: GymSpec) -> float:
    """Exact expected accuracy of uniform random guessing on ``family`` under ``spec``.

    - choice families (order, color_change, count in MC mode): ``1 / n_options``;
      direction: ``1 / min(n_options, 4)`` -- answers are uniform over positions.
    - count, numerical: a uniform guess over the count range, i.e.
      ``E_d[1 / |count_range(d)|]`` (exact, integrating over the difficulty jitter).
    - multi_select: exact-set match of a uniform random *non-empty* subset of the
      ``n`` options: ``1 / (2**n - 1)`` (whatever the gold set is).
    - progress: probability that a uniform guess in [0, 1] is within
      :data:`reelrl.gym.questions.PROGRESS_TOLERANCE` of the answer; answers lie in [0.1, 0.9], so
      exactly ``2 * PROGRESS_TOLERANCE``.
    """
    return float(CHANCE.get(family)(spec))
