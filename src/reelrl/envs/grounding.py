"""Two-stage grounding (Scene-R1): first *when*, then *where* in the frame the first answer picks.

``two_stage_grounding``: the first turn is the row's temporal-grounding prompt
(video + "When is the green disc visible?"); the model answers a span. The
environment takes the sampled frame nearest the span's midpoint and shows it
in a second turn ("This is the frame at 2.5 s. Give the bounding box of the
green disc in this frame as [x1, y1, x2, y2] in pixels."); the model answers a
box in Scene-R1's output form ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``
(read by :func:`reelrl.data.boxes.parse_box`). Each turn's reward comes from the recipe's registered rewards over the
columns the environment gives that turn: the row's own for the first
(``temporal_grounding``, scored by tIoU under ``accuracy``), and for the second
``problem_type: box`` with the object's box in the frame shown (scored by
``box_iou``), following Scene-R1's two stages (temporal IoU, then 2-D box
IoU). Where Scene-R1 is silent, reelrl chooses:

- a first answer without a readable span ends the episode (no second turn);
- a frame in which the object is not visible still gets its second turn, with
  a gold box without area (every box answer scores 0), so a wrong span costs
  the box reward;
- the box is in pixels of the frame as the model saw it (the sampled, resized
  frame; Qwen2.5-VL's absolute coordinates).

Where the object is, per row: ``meta["track"]``, a list of ``{"time": s,
"box": [x1, y1, x2, y2]}`` in pixels of the video file (the entry nearest the
frame's time, when that time lies in the row's ``time_span``), or for gym
``temporal_grounding`` rows ``meta["target"]["box"]`` (``[y, x, size]``,
constant while the object is visible).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reelrl.data.boxes import Box2D, box_text
from reelrl.data.answers import extract_tag
from reelrl.data.schema import DataError, VideoRow
from reelrl.data.spans import parse_span
from reelrl.envs.base import ENVS, Demonstration, Observation, Turn
from reelrl.video.decode import SampledVideo

__all__ = ["TwoStageGrounding", "object_name", "track_box"]

SECOND_TURN = ('This is the frame at {time:g} s. Where is the {object} in it? Answer '
               '{{"bbox_2d": [x1, y1, x2, y2], "label": "{object}"}} in pixels.')
NO_BOX = "[0, 0, 0, 0]"
"""The gold of a frame without the object: a box without area, which every answer's IoU with is 0."""


def object_name(row: VideoRow) -> str:
    """The object the question is about: ``meta["object"]``, or the gym target's ``"<colour> <shape>"``."""
    if isinstance(row.meta.get("object"), str):
        return row.meta["object"]
    target = row.meta.get("target")
    if isinstance(target, dict) and "color" in target and "shape" in target:
        return f"{target['color']} {target['shape']}"
    raise DataError(f"row {row.id}: two_stage_grounding needs meta.object (what to box) or a gym meta.target")


def track_box(row: VideoRow, time: float, size: tuple[int, int], source: tuple[int, int]) -> Box2D | None:
    """The object's box at ``time`` seconds, scaled from the file's ``source = (H, W)`` pixels to the frame the
    model saw (``size = (H, W)``); None where the object is not visible."""
    span = row.time_span
    if span is None or not (span[0] <= time < span[1]):
        return None
    track = row.meta.get("track")
    target = row.meta.get("target")
    if isinstance(track, list) and track:
        try:
            entry = min(track, key=lambda e: abs(float(e["time"]) - time))
            box = tuple(float(v) for v in entry["box"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"row {row.id}: meta.track entries need 'time' and 'box' [x1, y1, x2, y2] ({e})") from None
    elif isinstance(target, dict) and isinstance(target.get("box"), list):
        y, x, s = (float(v) for v in target["box"])
        box = (x, y, x + s, y + s)
    else:
        raise DataError(f"row {row.id}: two_stage_grounding needs meta.track or a gym meta.target.box")
    if len(box) != 4:
        raise DataError(f"row {row.id}: a box needs 4 numbers, got {list(box)}")
    sy, sx = size[0] / float(source[0]), size[1] / float(source[1])
    x1, y1, x2, y2 = box
    return (round(x1 * sx, 1), round(y1 * sy, 1), round(x2 * sx, 1), round(y2 * sy, 1))


class TwoStageGrounding:
    """One trajectory of the two-stage task (module docstring)."""

    max_turns = 2

    def __init__(self, row: VideoRow, video: SampledVideo, prompt: str = SECOND_TURN) -> None:
        if row.problem_type != "temporal_grounding":
            raise DataError(f"row {row.id}: two_stage_grounding needs a temporal_grounding row, "
                            f"got {row.problem_type!r}")
        self.row, self.video, self.prompt = row, video, prompt
        self.object = object_name(row)
        self.turn = 0
        self.shown: float | None = None

    def frame_at(self, span: tuple[float, float]) -> tuple[int, float]:
        """Index and time of the sampled frame nearest the span's midpoint."""
        times = np.asarray(self.video.timestamps, dtype=np.float64)  # [T]
        i = int(np.abs(times - (span[0] + span[1]) / 2.0).argmin())
        return i, float(times[i])

    def second_turn(self, span: tuple[float, float]) -> Observation:
        """The frame nearest the span's midpoint and the question about it."""
        i, t = self.frame_at(span)
        self.shown = t
        frame = np.ascontiguousarray(self.video.frames[i])  # [H, W, 3]
        return Observation(self.prompt.format(time=round(t, 2), object=self.object), [frame])

    def demonstration(self) -> Demonstration:
        """The gold episode: the row's trace and span, the frame at the gold span's midpoint, its gold box."""
        span = self.row.time_span
        if span is None:
            raise DataError(f"row {self.row.id}: a demonstration needs the row's time_span")
        obs = self.second_turn(span)
        h, w = self.video.frames.shape[1:3]
        info = self.video.info
        box = track_box(self.row, float(self.shown), (h, w), (info.height, info.width))
        if box is None:
            raise DataError(f"row {self.row.id}: the object is not visible at {self.shown:g} s, the middle of its span")
        answer = '{"bbox_2d": ' + box_text(box) + f', "label": "{self.object}"}}'
        reasoning = f"The {self.object} spans x {box[0]:g} to {box[2]:g}, y {box[1]:g} to {box[3]:g}."
        return Demonstration([(self.row.reasoning, self.row.answer), (reasoning, answer)], [obs])

    def step(self, text: str) -> Turn:
        self.turn += 1
        if self.turn == 1:
            answer = extract_tag(text)
            span = parse_span(answer) if answer is not None else None
            if span is None or not span[1] > span[0]:
                return Turn({}, None, {"ended": "no span in the first answer"})
            obs = self.second_turn(span)
            return Turn({}, obs, {"time": self.shown})
        h, w = self.video.frames.shape[1:3]
        info = self.video.info
        box = track_box(self.row, float(self.shown), (h, w), (info.height, info.width))
        columns: dict[str, Any] = {"problem_type": "box", "answer": box_text(box) if box else NO_BOX,
                                   "options": None, "time_span": None}
        return Turn(columns, None, {"visible": box is not None})


def check_prompt(prompt: str = SECOND_TURN) -> None:
    """The second turn's text must name the frame's time and the object (``{time}``, ``{object}``)."""
    try:
        prompt.format(time=1.5, object="green disc")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"prompt {prompt!r} formats only {{time}} and {{object}} ({e!r})") from None
    if "{object}" not in prompt or "{time" not in prompt:
        raise ValueError(f"prompt must hold {{time}} and {{object}}, got {prompt!r}")


@ENVS.register("two_stage_grounding", check=check_prompt)
def two_stage_grounding(row: VideoRow, video: SampledVideo, prompt: str = SECOND_TURN) -> TwoStageGrounding:
    """Scene-R1's two stages on a temporal-grounding row (module docstring); ``prompt`` formats ``{time}`` and ``{object}``."""
    check_prompt(prompt)
    return TwoStageGrounding(row, video, prompt)
