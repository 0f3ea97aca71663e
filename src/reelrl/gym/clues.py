"""Clue traces (Video-Thinker): reasoning that grounds every piece of evidence in time and describes it.

Video-Thinker (Wang et al. 2025, "Video-Thinker: Sparking 'Thinking with Videos' via Reinforcement
Learning", arXiv 2510.23473) trains on traces in which each key segment of the video is one block::

    <time>start_time-end_time</time> <caption>the key visual clues</caption> <think>what they mean</think>

followed by free reasoning and ``<answer>X</answer>``; its SFT target is ``process + "\\n" + solution``
(its SFT script's ``prepare_dataset``; paper Sec. 3.1, Fig. 2 and 4, Appendix D.1).

This module, for the synthetic gym:

- derives a row's true events from its ``meta`` (what the family recorded when it drew the video):
  :data:`EVENTS` maps a family name to an extractor ``fn(meta, timeline) -> ClueSet`` (the events, each a
  time span in seconds with a caption and a short thought, plus a concluding sentence). Every built-in
  family has one; a family registered later gets one with ``@EVENTS.register("family")``. Asking for the
  clues of a gym family without one raises :class:`ClueError` naming the family. Rows from elsewhere may
  carry their events in ``meta["events"]`` (``[{"start": s, "end": e, "caption": c, "thought": t}]``,
  optional ``meta["conclusion"]``), which take precedence.
- writes the clue trace (:func:`clue_trace`) in one of two layouts: ``blocks`` is Video-Thinker's (one
  ``<think>`` per segment, no outer ``<think>``: the ``video_thinker`` prompt template's target);
  ``inline`` puts the same ``<time>``/``<caption>`` clues, the thoughts as plain text, into ONE reasoning
  text, for templates that wrap the trace in a single ``<think>`` (reelrl's, Video-R1's), so their format
  reward still sees one ``<think>`` and one ``<answer>``.
- :data:`TRACES`: the SFT trace styles a recipe names in ``sft.trace``: ``plain`` (the row's own
  ``reasoning``) and ``clues`` (the clue trace of the row's events).

Differences from Video-Thinker, deliberate:

- times are written in seconds, ``1.25-2.5`` (the gym's videos last a few seconds); Video-Thinker-10K's
  traces write clocks (``00:00-00:10``). :func:`reelrl.rewards.clues.parse_clues` reads both.
- captions and thoughts are templated sentences read off the generator's record, not model-written
  descriptions; a caption names only what is drawn during its span.
- the events are the ones the question is about (the target's flashes, the shapes whose order is asked,
  ...); distractor objects are not events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from reelrl.data.schema import DataError, VideoRow, span_problem
from reelrl.gym.environments import DEFAULT_ENVIRONMENT, ENVIRONMENTS, SHAPE_SETS
from reelrl.gym.tasks import TASKS
from reelrl.registry import Registry

Layout = Literal["blocks", "inline"]


class ClueError(DataError):
    """A row's clue events cannot be had (no extractor for its family, malformed ``meta``); names the row."""


def seconds_text(x: float) -> str:
    """Seconds in the shortest fixed-point form (no exponent, at most 6 decimals): 4.0 -> "4", 1.25 -> "1.25"."""
    return f"{x:.6f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Event:
    """One key segment: ``[start, end)`` seconds, what is seen (caption) and what it means (thought)."""

    start: float
    end: float
    caption: str
    thought: str = ""

    def time_text(self) -> str:
        """The span as written inside ``<time>``: ``"1.25-2.5"`` (seconds, fixed notation, at most 6 decimals)."""
        return f"{seconds_text(self.start)}-{seconds_text(self.end)}"


@dataclass(frozen=True)
class ClueSet:
    """A row's events in time order and the sentence that concludes from them."""

    events: list[Event]
    conclusion: str = ""


@dataclass(frozen=True)
class Timeline:
    """Converts a family's generator indices (frames, or steps of ``frames_per_step`` frames) to seconds."""

    fps: float
    frames_per_step: int
    frames: int

    @property
    def steps(self) -> int:
        """Number of generator indices (rendered steps) in the video."""
        return self.frames // self.frames_per_step

    def sec(self, step: int) -> float:
        """Seconds at which generator index ``step`` starts, rounded to 2 decimals like the gym's ``secs``."""
        return round(step * self.frames_per_step / self.fps, 2)

    def event(self, start: int, end: int, caption: str, thought: str = "") -> Event:
        """The event shown during generator indices ``[start, end)``."""
        return Event(self.sec(start), self.sec(end), caption, thought)


ExtractFn = Callable[[Mapping[str, Any], Timeline], ClueSet]
EVENTS: Registry[ExtractFn] = Registry("gym event extractor")
"""Per gym family: ``fn(meta, timeline) -> ClueSet`` read off the row's ``meta`` (never re-rendering)."""


# --------------------------------------------------------------------------- extractors


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a red", "an orange"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _ordinal(i: int) -> str:
    return ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")[i] if i < 8 else f"#{i + 1}"


@EVENTS.register("count")
def _count(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """Each flash of the target square (the distractor disc's flashes are not counted, so not events)."""
    k, color = int(meta["k"]), meta["color"]
    events = [tl.event(s, s + n, f"the {color} square is shown", f"flash {i + 1}.")
              for i, (s, n) in enumerate(zip(meta["starts"], meta["lengths"]))]
    return ClueSet(events, f"the square flashes {k} time{'s' if k != 1 else ''}.")


@EVENTS.register("order")
def _order(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """Each shape from its onset for its duration, in onset order."""
    colors = list(meta["colors"])
    events = [tl.event(o, o + n, f"{_a(c)} {sh} appears", f"{c} is {_ordinal(i)}.")
              for i, (c, sh, o, n) in enumerate(zip(colors, meta["shapes"], meta["onsets"], meta["durations"]))]
    which = meta["which"]
    answer = colors[0] if which == "first" else colors[-1]
    return ClueSet(events, f"{answer} appears {which}.")


@EVENTS.register("direction")
def _direction(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """The whole move (the family's time span), with the ball's centre at the start and at the end."""
    (y0, x0, size), (y1, x1, _) = meta["start"], meta["end"]
    color, direction = meta["color"], meta["direction"]
    caption = (f"the {color} ball moves from x={x0 + size // 2},y={y0 + size // 2} "
               f"to x={x1 + size // 2},y={y1 + size // 2}")
    return ClueSet([tl.event(0, tl.steps, caption, f"it moves {direction}.")], f"the {color} ball moves {direction}.")


@EVENTS.register("color_change")
def _color_change(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """The square's two colour phases: before and from the change."""
    a, b, change = meta["from"], meta["to"], int(meta["change_frame"])
    events = [tl.event(0, change, f"the square is {a}", "before the change."),
              tl.event(change, tl.steps, f"the square is {b}", "after the change.")]
    return ClueSet(events, f"the square was {a}." if meta["before"] else f"the square turns {b}.")


@EVENTS.register("multi_select")
def _multi_select(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """Each shown colour's window, in order of appearance."""
    shown = list(meta["shown"])
    events = [tl.event(s, s + n, f"{_a(c)} {sh} appears", f"{c} is seen.")
              for c, sh, s, n in zip(shown, meta["shapes"], meta["starts"], meta["lengths"])]
    return ClueSet(events, f"seen: {', '.join(shown)}.")


@EVENTS.register("progress")
def _progress(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """The target dot's flash, with the bar's filled fraction then (the distractor dot is no event)."""
    flash, n = int(meta["flash"]), int(meta["flash_len"])
    width = int(meta["bar"][3])
    fraction = round(meta["fill_px"][flash] / width, 2)
    caption = f"the {meta['dot_color']} dot flashes; the bar is {fraction:g} full"
    return ClueSet([tl.event(flash, flash + n, caption, "this is the moment asked about.")],
                   f"the bar is {fraction:g} full.")


@EVENTS.register("temporal_grounding")
def _temporal_grounding(meta: Mapping[str, Any], tl: Timeline) -> ClueSet:
    """The target shape's window (the answer span); distractor windows are not events."""
    t = meta["target"]
    ev = tl.event(int(t["start"]), int(t["start"]) + int(t["length"]), f"the {t['color']} {t['shape']} is visible",
                  "this is the shape asked about.")
    return ClueSet([ev], f"the {t['color']} {t['shape']} is visible from {seconds_text(ev.start)} to {seconds_text(ev.end)} seconds.")


# --------------------------------------------------------------------------- rows -> events


def _explicit(row_id: str, meta: Mapping[str, Any]) -> ClueSet:
    """``meta["events"]`` (rows from outside the gym) checked field by field."""
    raw = meta["events"]
    if not isinstance(raw, list) or not raw:
        raise ClueError(f"row {row_id}: meta.events must be a non-empty list of {{start, end, caption}} objects")
    events = []
    for i, e in enumerate(raw):
        where = f"row {row_id}: meta.events[{i}]"
        if not isinstance(e, Mapping) or not {"start", "end", "caption"} <= set(e):
            raise ClueError(f"{where}: needs start, end (seconds) and caption, got {e!r}")
        try:
            start, end = float(e["start"]), float(e["end"])
        except (TypeError, ValueError):
            raise ClueError(f"{where}: start and end must be numbers, got {e['start']!r}, {e['end']!r}") from None
        problem = span_problem((start, end)) or (None if end > start else f"end {end} is not after start {start}")
        if problem:
            raise ClueError(f"{where}: {problem}")
        events.append(Event(start, end, str(e["caption"]), str(e.get("thought", ""))))
    return ClueSet(events, str(meta.get("conclusion", "")))


def _timeline(row_id: str, meta: Mapping[str, Any]) -> Timeline:
    try:
        fps, frames = float(meta["fps"]), int(meta["frames"])
    except (KeyError, TypeError, ValueError):
        raise ClueError(f"row {row_id}: meta needs fps and frames (the gym writes both) to place its events in "
                        "time") from None
    if not (math.isfinite(fps) and fps > 0):
        raise ClueError(f"row {row_id}: meta.fps must be a positive number, got {meta['fps']!r}")
    return Timeline(fps, int(meta.get("frames_per_step", 1)), frames)


def _renamed(clues: ClueSet, environment: str) -> ClueSet:
    """Shape words renamed as the environment renamed them in the row's texts (diamonds for squares, ...)."""
    if environment == DEFAULT_ENVIRONMENT:
        return clues
    rename = SHAPE_SETS.get(ENVIRONMENTS.get(environment).shapes)().rename
    events = [Event(e.start, e.end, rename(e.caption), rename(e.thought)) for e in clues.events]
    return ClueSet(events, rename(clues.conclusion))


def events_of(row_id: str, task: str, meta: Mapping[str, Any] | None) -> ClueSet | None:
    """The row's events: ``meta["events"]`` if present, else its family's extractor, else ``None``.

    ``None`` only for rows that are not from a gym family (no extractor and ``task`` not in TASKS);
    a gym family without an extractor, or a gym row whose ``meta`` lacks what the extractor reads,
    raises :class:`ClueError` naming the row.
    """
    meta = meta or {}
    if "events" in meta:
        return _explicit(row_id, meta)
    if task in EVENTS:
        try:
            clues = EVENTS.get(task)(meta, _timeline(row_id, meta))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ClueError(f"row {row_id}: meta does not hold the {task!r} family's record ({type(e).__name__}: "
                            f"{e}); was it written by this gym?") from None
        return _renamed(clues, str(meta.get("environment", DEFAULT_ENVIRONMENT)))
    if task in TASKS:
        raise ClueError(f"row {row_id}: gym family {task!r} has no event extractor; register one with "
                        f"@reelrl.gym.clues.EVENTS.register({task!r}) (families with one: {', '.join(EVENTS.names())})")
    return None


def row_clues(row: VideoRow) -> ClueSet:
    """The events of ``row`` (:func:`events_of`); a row with none raises :class:`ClueError`."""
    clues = events_of(row.id, row.task, row.meta)
    if clues is None:
        raise ClueError(f"row {row.id}: no clue events: task {row.task!r} is no gym family with an event extractor "
                        f"({', '.join(EVENTS.names())}) and meta has no 'events' list")
    return clues


# --------------------------------------------------------------------------- traces


def clue_trace(clues: ClueSet, layout: Layout = "blocks") -> str:
    """The reasoning text of ``clues`` (module docstring): ``blocks`` (Video-Thinker's) or ``inline``.

    blocks: one line per event ``<time>s-e</time> <caption>c</caption> <think>t</think>``, then the conclusion.
    inline: the same clues with each thought as plain text, on one line, then the conclusion.
    """
    if not clues.events:
        raise ValueError("a clue trace needs at least one event")
    if layout == "blocks":
        lines = [f"<time>{e.time_text()}</time> <caption>{e.caption}</caption> <think>{e.thought}</think>"
                 for e in clues.events]
        return "\n".join(lines + ([clues.conclusion] if clues.conclusion else []))
    if layout == "inline":
        parts = [f"<time>{e.time_text()}</time> <caption>{e.caption}</caption>" + (f" {e.thought}" if e.thought else "")
                 for e in clues.events]
        return " ".join(parts + ([clues.conclusion] if clues.conclusion else []))
    raise ValueError(f"unknown clue trace layout {layout!r}; valid: blocks, inline")


TraceFn = Callable[[VideoRow, bool], "str | None"]
TRACES: Registry[TraceFn] = Registry("SFT trace style")
"""``sft.trace``: ``fn(row, wrapped) -> reasoning text`` (``wrapped``: the template puts it in one ``<think>``)."""


@TRACES.register("plain")
def plain_trace(row: VideoRow, wrapped: bool) -> str | None:
    """The row's own ``reasoning``, as written."""
    return row.reasoning


@TRACES.register("clues")
def clues_trace(row: VideoRow, wrapped: bool) -> str:
    """The clue trace of the row's events: ``inline`` inside a template's ``<think>``, else ``blocks``."""
    return clue_trace(row_clues(row), "inline" if wrapped else "blocks")
