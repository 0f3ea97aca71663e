"""Physics counterexamples of the video gym (VideoHallu): a scene obeys simple physics, or breaks it once.

VideoHallu (Li et al. 2025, arXiv 2505.01481) asks video-language models
what happens in synthetic videos that break common sense and physics, and
trains with GRPO on real physics followed by counterexamples. The gym's
counterpart, in two families over the same scenes:

physics       multiple choice. Half of the pairs ask "What happens to the red
              ball?" (options: the scene's physical outcome and its
              violations, ``min(n_options, outcomes)`` of them, in random
              order); the other half ask "Is what happens to the red ball
              physically possible?" (options yes / no, in random order).
physics_open  free form: "What happens to the red ball? Describe it in one
              sentence." The gold answer is the outcome's description
              (:data:`DESCRIPTIONS`), scored by ``accuracy`` (ROUGE for
              ``free_form`` rows) or by the ``judge`` reward.

Scenes (:data:`SCENES`; a grey floor band near the bottom, a grey wall in
``slide``; grey is neither the background nor a palette colour, so every
gym environment keeps it):

drop   a ball falls from rest under constant gravity (it reaches the floor at
       30-50% of the video), bounces with restitution 0.5-0.7 and settles.
slide  a ball slides along the floor at constant speed (it reaches the wall
       at 35-55% of the video) and stops against the wall.

Violations (:data:`VIOLATIONS`), each from one event frame on:

teleport      drop: the ball jumps sideways to the far edge and falls on;
              slide: it jumps back to its start (at 60-100% of the way to the
              wall) and slides again.
pass_through  the ball does not bounce / stop: it goes on through the floor
              or the wall (drawn over it) and leaves the frame.
size_change   the ball grows by 1 + (0.7 - 0.4 d) or shrinks by its inverse;
              its bottom keeps following the physical path.
falls_upward  drop only: the ball accelerates upward with the same gravity
              and leaves through the top.

Pairs: the family is registered with ``group_size=2``, so consecutive
samples of the family share one random stream
(:func:`reelrl.gym.generate.make_sample`). Every draw (scene, violation,
which member breaks physics, question, option order) is made from it before
anything depends on the member, so the two members show the same scene,
ask the same question with the same options, and differ exactly by the
violation: their frames are equal before the event frame, and in a
non-default environment the background noise is equal too. Exactly one
member of each pair is physical. ``meta`` records the scene, ``violation``
(None for the physical member), ``pair_violation``, ``event_frame`` and the
ball's box in every frame (``boxes``, None when out of frame).

Difficulty shrinks the ball and makes the size change subtler. The ball is
at most 30% of the short side (regardless of ``object_scale``) so that it
has room to move.

Chance: ``physics``: 1/2 of the questions are yes / no (chance 1/2), 1/2
multiple choice over ``min(n_options, 5)`` (drop) or ``min(n_options, 4)``
(slide) options, scenes equally likely. ``physics_open``: the expected
ROUGE score (Video-R1's free-form reward) of a uniformly random description
among the scene's outcomes, exact over the gold distribution
(:func:`open_chance`). Where this departs from VideoHallu: its videos come
from generative models and its questions from experts across many
categories; here four rendered violations of two scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from reelrl.data.schema import LETTERS
from reelrl.gym.render import BACKGROUND, COLOR_NAMES, Box, draw_disc
from reelrl.gym.tasks import CHANCE, GymSpec, Sample, fmt_s, object_size, register_family, sample_difficulty

SCENES: tuple[str, ...] = ("drop", "slide")
PHYSICAL: dict[str, str] = {"drop": "bounce", "slide": "stop_at_wall"}
"""The outcome of each scene when physics holds."""
VIOLATIONS: dict[str, tuple[str, ...]] = {
    "drop": ("teleport", "pass_through", "size_change", "falls_upward"),
    "slide": ("teleport", "pass_through", "size_change"),
}
OPTION_TEXT: dict[tuple[str, str], str] = {
    ("drop", "bounce"): "it falls and bounces on the floor",
    ("slide", "stop_at_wall"): "it slides and stops at the wall",
    ("drop", "teleport"): "it teleports to another place",
    ("slide", "teleport"): "it teleports to another place",
    ("drop", "pass_through"): "it passes through the floor",
    ("slide", "pass_through"): "it passes through the wall",
    ("drop", "size_change"): "it changes size",
    ("slide", "size_change"): "it changes size",
    ("drop", "falls_upward"): "it falls upward",
}
"""Multiple-choice option of each (scene, outcome)."""
DESCRIPTIONS: dict[tuple[str, str], str] = {k: v[0].upper() + v[1:] + "." for k, v in OPTION_TEXT.items()}
"""Gold free-form answer of each (scene, outcome): the option as a sentence ("It falls upward.")."""
GREY: tuple[int, int, int] = (150, 150, 150)
"""Floor and wall colour: not the background, not a palette colour (environments keep it)."""
THICK = 3  # floor / wall thickness in pixels


def outcomes(scene: str) -> list[str]:
    """The scene's physical outcome followed by its violations."""
    return [PHYSICAL[scene], *VIOLATIONS[scene]]


@dataclass
class _Scene:
    """Everything drawn from the pair's stream; members differ only in ``violated``."""

    kind: str
    color: str
    size: int
    violation: str
    violated_member: int
    question: str  # "event" | "possible" | "describe"
    order: list[str]  # outcomes in option order (event questions)
    yes_first: bool
    start: tuple[float, float]  # (y, x) of the ball at frame 0
    n_hit: int  # frame at which the ball reaches the floor / wall
    restitution: float
    grow: bool
    factor: float
    event: int  # drawn event frame (teleport, size_change)
    leftward: bool  # slide direction
    wall: int  # wall's first column (rightward coordinates)


def _ball_size(d: float, spec: GymSpec) -> int:
    return min(object_size(d, spec), round(0.3 * min(spec.height, spec.width)))


def _floor_top(h: int) -> int:
    return h - max(6, round(0.1 * h))


def _draw_scene(rng: np.random.Generator, spec: GymSpec, question: str) -> tuple[_Scene, float]:
    """Every random draw of a pair, in a fixed order that does not depend on the member."""
    d = sample_difficulty(rng, spec)
    T, H, W = spec.frames, spec.height, spec.width
    kind = SCENES[int(rng.integers(len(SCENES)))]
    color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    s = _ball_size(d, spec)
    violation = VIOLATIONS[kind][int(rng.integers(len(VIOLATIONS[kind])))]
    violated_member = int(rng.integers(2))
    if question == "":
        question = ("event", "possible")[int(rng.integers(2))]
    n = min(spec.n_options, len(outcomes(kind)))
    others = [o for o in outcomes(kind) if o not in (PHYSICAL[kind], violation)]
    chosen = [PHYSICAL[kind], violation] + [others[i] for i in rng.permutation(len(others))][: n - 2]
    order = [chosen[i] for i in rng.permutation(n)]
    if spec.option_order == "canonical":
        order = [o for o in outcomes(kind) if o in chosen]
    yes_first = bool(rng.integers(2)) if spec.option_order == "shuffled" else True
    floor = _floor_top(H)
    if kind == "drop":
        start = (float(rng.integers(3, max(4, round(0.25 * H)) + 1)), float(rng.integers(3, W - s - 3 + 1)))
        n_hit = int(rng.integers(round(0.3 * T), round(0.5 * T) + 1))
        wall = W
    else:
        wall = int(rng.integers(round(0.75 * W), W - 2 * THICK + 1))
        start = (float(floor - s), float(rng.integers(3, round(0.2 * W) + 1)))
        n_hit = int(rng.integers(round(0.35 * T), round(0.55 * T) + 1))
    restitution = float(rng.uniform(0.5, 0.7))
    grow = bool(rng.integers(2))
    factor = 1.0 + (0.7 - 0.4 * d)
    event = int(rng.integers(2, T - 2))
    if kind == "slide" and violation == "teleport":  # 60-100% of the way to the wall
        event = int(rng.integers(max(2, math.ceil(0.6 * n_hit)), n_hit + 1))
    leftward = bool(rng.integers(2))
    return _Scene(kind, color, s, violation, violated_member, question, order, yes_first, start, n_hit,
                  restitution, grow, factor, event, leftward, wall), d


def _drop_y(t: float, sc: _Scene, rest_y: float) -> float:
    """Top of the ball at time ``t`` (frames) under gravity with bounces of restitution ``e`` (exact parabolas)."""
    y0 = sc.start[0]
    g = 2.0 * (rest_y - y0) / sc.n_hit**2
    if t <= sc.n_hit:
        return y0 + 0.5 * g * t * t
    tau, u = t - sc.n_hit, sc.restitution * g * sc.n_hit
    while u > 1e-3 * g:
        dur = 2.0 * u / g
        if tau <= dur:
            return rest_y - (u * tau - 0.5 * g * tau * tau)
        tau, u = tau - dur, u * sc.restitution
    return rest_y


def _path(sc: _Scene, violated: bool, spec: GymSpec) -> list[tuple[float, float, int]]:
    """Box ``(y, x, size)`` of the ball in every frame (rightward coordinates for ``slide``)."""
    T, H, W = spec.frames, spec.height, spec.width
    s, floor = sc.size, _floor_top(H)
    rest_y = float(floor - s)
    v = sc.violation if violated else None
    y0, x0 = sc.start
    out: list[tuple[float, float, int]] = []
    if sc.kind == "drop":
        g = 2.0 * (rest_y - y0) / sc.n_hit**2
        far = 3.0 if x0 - 3 > W - s - 3 - x0 else float(W - s - 3)
        for t in range(T):
            y = _drop_y(t, sc, rest_y)
            if v == "pass_through":
                y = y0 + 0.5 * g * t * t
            elif v == "falls_upward":
                y = y0 - 0.5 * g * t * t
            x = far if v == "teleport" and t >= sc.event else x0
            out.append((y, x, s))
    else:
        stop = float(sc.wall - s)
        speed = (stop - x0) / sc.n_hit
        for t in range(T):
            x = min(x0 + speed * t, stop)
            if v == "pass_through":
                x = x0 + speed * t
            elif v == "teleport" and t >= sc.event:
                x = min(x0 + speed * (t - sc.event), stop)
            out.append((y0, x, s))
    if v == "size_change":
        s2 = max(4, round(s * sc.factor) if sc.grow else round(s / sc.factor))
        s2 = min(s2, floor - 1, W - 2)
        right = float(W - s2) if sc.kind == "drop" else float(sc.wall - s2)  # a grown ball still stops at the wall
        out = [(y + s - s2, min(max(0.0, x + (s - s2) / 2), right), s2) if t >= sc.event else (y, x, bs)
               for t, (y, x, bs) in enumerate(out)]
    return out


def _screen_boxes(sc: _Scene, path: list[tuple[float, float, int]], spec: GymSpec) -> list[Box | None]:
    """The path in screen coordinates, rounded (``slide`` leftward is mirrored); None when out of frame."""
    H, W = spec.height, spec.width
    out: list[Box | None] = []
    for y, x, s in path:
        yi = round(y)
        xi = W - s - round(x) if sc.kind == "slide" and sc.leftward else round(x)
        out.append((yi, xi, s) if -s < yi < H and -s < xi < W else None)
    return out


def _wall_x(sc: _Scene, spec: GymSpec) -> int | None:
    """First column of the wall on screen (None for ``drop``)."""
    if sc.kind == "drop":
        return None
    return sc.wall if not sc.leftward else spec.width - sc.wall - THICK


def _render(sc: _Scene, boxes: list[Box | None], spec: GymSpec) -> np.ndarray:
    """Frames ``[T, H, W, 3]``: floor, wall, then the ball (drawn over them) at its screen ``boxes``."""
    T, H, W = spec.frames, spec.height, spec.width
    pad = max(H, W)  # a box partly outside the frame is drawn on a padded canvas, then cropped
    floor, wall = _floor_top(H), _wall_x(sc, spec)
    frames = np.empty((T, H, W, 3), dtype=np.uint8)  # [T, H, W, 3]
    for t, box in enumerate(boxes):
        canvas = np.empty((H + 2 * pad, W + 2 * pad, 3), dtype=np.uint8)  # [H+2p, W+2p, 3]
        canvas[...] = np.asarray(BACKGROUND, dtype=np.uint8)
        canvas[pad + floor : pad + floor + THICK, pad : pad + W] = GREY  # [THICK, W, 3] floor
        if wall is not None:
            canvas[pad : pad + floor, pad + wall : pad + wall + THICK] = GREY  # [floor, THICK, 3] wall
        if box is not None:
            draw_disc(canvas, (box[0] + pad, box[1] + pad, box[2]), sc.color)
        frames[t] = canvas[pad : pad + H, pad : pad + W]  # [H, W, 3]
    return frames


def _trace(sc: _Scene, outcome: str, boxes: list[Box | None], event: int, fps: float) -> str:
    """What the video shows, in time order (the reasoning trace's evidence); ``boxes`` in screen coordinates."""

    def at(t: int) -> Box:
        box = boxes[t]
        assert box is not None, "a teleport or size change happens in view"
        return box

    hit = fmt_s(sc.n_hit, fps)
    observed: dict[str, Callable[[], str]] = {
        "bounce": lambda: f"falls, hits the floor at {hit}, bounces",
        "stop_at_wall": lambda: f"slides, hits the wall at {hit}, stops",
        "teleport": lambda: f"at {fmt_s(event, fps)} jumps from x={at(event - 1)[1]} to x={at(event)[1]}",
        "pass_through": lambda: f"reaches the {'floor' if sc.kind == 'drop' else 'wall'} at {hit}, goes on through",
        "size_change": lambda: f"at {fmt_s(event, fps)} size {at(event - 1)[2]} to {at(event)[2]}",
        "falls_upward": lambda: "moves up faster and faster",
    }
    return f"{sc.color} ball {observed[outcome]()}."


def _physics_sample(rng: np.random.Generator, spec: GymSpec, member: int, question: str) -> Sample:
    if member not in (0, 1):
        raise ValueError(f"physics families are pairs: member must be 0 or 1, got {member}")
    sc, d = _draw_scene(rng, spec, question)
    violated = member == sc.violated_member
    outcome = sc.violation if violated else PHYSICAL[sc.kind]
    boxes = _screen_boxes(sc, _path(sc, violated, spec), spec)
    frames = _render(sc, boxes, spec)
    # the event frame: the first frame at which the ball's box leaves its physical path
    physical = _screen_boxes(sc, _path(sc, False, spec), spec) if violated else boxes
    event = next((t for t, (a, b) in enumerate(zip(boxes, physical)) if a != b), spec.frames)
    evidence = _trace(sc, outcome, boxes, event, spec.fps)
    options: list[str] | None
    if sc.question == "event":
        options = [OPTION_TEXT[(sc.kind, o)] for o in sc.order]
        answer = LETTERS[sc.order.index(outcome)]
        text, ptype = f"What happens to the {sc.color} ball?", "multiple_choice"
        reasoning = f"{evidence} {OPTION_TEXT[(sc.kind, outcome)]}."
    elif sc.question == "possible":
        options = ["yes", "no"] if sc.yes_first else ["no", "yes"]
        verdict = "no" if violated else "yes"
        answer = LETTERS[options.index(verdict)]
        text, ptype = f"Is what happens to the {sc.color} ball physically possible?", "multiple_choice"
        reasoning = f"{evidence} {'breaks physics' if violated else 'obeys physics'}. {verdict}."
    else:
        options, answer = None, DESCRIPTIONS[(sc.kind, outcome)]
        text, ptype = f"What happens to the {sc.color} ball? Describe it in one sentence.", "free_form"
        reasoning = f"{evidence} {answer}"
    meta: dict[str, Any] = {
        "scene": sc.kind, "color": sc.color, "violation": sc.violation if violated else None,
        "pair_violation": sc.violation, "outcome": outcome, "event_frame": event if violated else None,
        "contact_frame": sc.n_hit, "question_kind": sc.question, "floor_top": _floor_top(spec.height),
        "wall": _wall_x(sc, spec),
        "direction": None if sc.kind == "drop" else ("left" if sc.leftward else "right"),
        "boxes": [list(b) if b is not None else None for b in boxes],
    }
    span = (round(event / spec.fps, 2), round(min(spec.frames, event + 1) / spec.fps, 2)) if violated else None
    return Sample(frames, spec.fps, text, options, answer, ptype, reasoning, span, d, meta)


@register_family("physics", group_size=2)
def physics_task(rng: np.random.Generator, spec: GymSpec, member: int = 0) -> Sample:
    """A ball obeys physics or breaks it once; which event happens / is it possible? (module docstring)."""
    return _physics_sample(rng, spec, member, "")


@register_family("physics_open", group_size=2)
def physics_open_task(rng: np.random.Generator, spec: GymSpec, member: int = 0) -> Sample:
    """The scenes of ``physics`` with a free-form question; the gold answer is the outcome's description."""
    return _physics_sample(rng, spec, member, "describe")


# --------------------------------------------------------------------------- chance


def physics_chance(spec: GymSpec) -> float:
    """``1/2 * 1/2`` (yes / no) + ``1/2 * mean_scene 1 / min(n_options, |outcomes(scene)|)`` (module docstring)."""
    event = float(np.mean([1.0 / min(spec.n_options, len(outcomes(k))) for k in SCENES]))
    return 0.5 * 0.5 + 0.5 * event


@lru_cache(maxsize=1)
def open_chance() -> float:
    """Expected ROUGE of a uniformly random description of the scene's outcomes against the gold one.

    ROUGE as Video-R1's free-form reward computes it (``rouge-score``, rouge1/2/L F-measures with the
    Porter stemmer, their mean; the same as ``reelrl.rewards.functions.rouge_mean_f1``). Gold: scenes
    equally likely, the physical outcome with probability 1/2, each violation with ``1 / (2 |violations|)``.
    It does not depend on the spec.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    total = 0.0
    for kind in SCENES:
        probs = {PHYSICAL[kind]: 0.5, **{v: 0.5 / len(VIOLATIONS[kind]) for v in VIOLATIONS[kind]}}
        guesses = [DESCRIPTIONS[(kind, o)] for o in outcomes(kind)]
        for gold, p in probs.items():
            ref = DESCRIPTIONS[(kind, gold)]
            mean = np.mean([np.mean([x.fmeasure for x in scorer.score(ref, g).values()]) for g in guesses])
            total += p * float(mean) / len(SCENES)
    return total


CHANCE.register("physics")(physics_chance)
CHANCE.register("physics_open")(lambda spec: open_chance())
