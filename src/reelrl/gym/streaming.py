"""A streaming gym family (VST): the video arrives in clips, and the question needs several of them.

``stream_order``: the video is ``K = CLIPS`` clips of ``frames / K`` frames
each (the last takes any remainder); each clip shows one shape of its own colour (drawn for
the whole clip, drifting a few pixels so the clip is video, not a still). The
question, "Which colour was shown in the clip right after the red one?", names
the colour of clip ``x`` and asks for the colour of clip ``x + 1``: no single
clip answers it, the model must remember what it saw. At difficulty ``d`` the
question comes mid-stream with probability ``d`` (after clip ``q``,
``2 <= q < K``, about the clips seen so far), else after the last clip.

What is written: the whole video (the row's ``video``, what an offline model
watches) and, per clip, a file of its own. ``meta["stream"]`` holds

- ``clips``: ``[{"video": file name beside the row's video, "start": s, "end": e}]``
  (the family gives the times; :func:`reelrl.gym.generate.write_clips` cuts
  the frames ``[start * fps, end * fps)`` into the files);
- ``question_after``: ``q``, the clips shown before the question;
- ``thoughts``: one gold thought per clip, ``"Time=s-e s: a red square."``
  (VST-SFT's per-clip traces);
- ``answer_reasoning``: the answer turn's short reasoning over the memory,
  ``"After red came blue."`` (the evidence is already in the thoughts).

The offline trace (``reasoning``) reads every clip in order and then the
answer. Chance: ``1 / n_options`` (the answer's letter is uniform).
"""

from __future__ import annotations

import numpy as np

from reelrl.gym.render import COLOR_NAMES, blank, draw_shape, place_boxes
from reelrl.gym.tasks import (
    CHANCE,
    GymSpec,
    Sample,
    distractor_colors,
    object_size,
    place_answer,
    register_family,
    sample_difficulty,
)

__all__ = ["CLIPS", "clip_thought", "stream_order_task"]

CLIPS = 4
"""Clips per streaming video (of 8 frames, 2 s at 4 fps, in a 32-frame gym)."""


def clip_thought(start: float, end: float, color: str, shape: str) -> str:
    """The gold thought about one clip (VST's "Time=s-e s" header, then what it showed)."""
    article = "an" if color[0] in "aeiou" else "a"
    return f"Time={start:g}-{end:g} s: {article} {color} {shape}."


@register_family("stream_order")
def stream_order_task(rng: np.random.Generator, spec: GymSpec) -> Sample:
    """K clips, one coloured shape each; which colour came right after a named one (module docstring)."""
    d = sample_difficulty(rng, spec)
    T, H, W, fps = spec.frames, spec.height, spec.width, spec.fps
    k = CLIPS
    bounds = [c * T // k for c in range(k)] + [T]  # clip c: frames bounds[c] .. bounds[c+1]-1
    colors = [COLOR_NAMES[i] for i in rng.permutation(len(COLOR_NAMES))[:k]]
    shapes = [("square", "disc")[int(rng.integers(2))] for _ in range(k)]
    q = int(rng.integers(2, k)) if rng.random() < d else k  # clips shown before the question
    x = int(rng.integers(0, q - 1))  # the named clip; the answer is clip x + 1
    size = object_size(d, spec)
    frames = blank(T, H, W)  # [T, H, W, 3]
    clips, thoughts = [], []
    for c in range(k):
        (y0, x0, s), = place_boxes(rng, 1, size, H, W)
        dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
        f0, f1 = bounds[c], bounds[c + 1]
        for t in range(f1 - f0):
            yy = int(np.clip(y0 + dy * t // 2, 0, H - s))
            xx = int(np.clip(x0 + dx * t // 2, 0, W - s))
            draw_shape(frames[f0 + t], shapes[c], (yy, xx, s), colors[c])
        start, end = f0 / fps, f1 / fps
        clips.append({"start": start, "end": end})
        thoughts.append(clip_thought(start, end, colors[c], shapes[c]))
    answer = colors[x + 1]
    seen = colors[:q]
    traps = [c for c in seen if c != answer]
    others = [traps[i] for i in rng.permutation(len(traps))] + distractor_colors(rng, colors)
    options, letter = place_answer(rng, answer, others, spec.n_options, spec.option_order == "canonical")
    when = "so far" if q < k else "in the video"
    question = f"Which colour was shown in the clip right after the {colors[x]} one {when}?"
    recall = f"After {colors[x]} came {answer}."
    reasoning = " ".join(t.removeprefix("Time=") for t in thoughts[:q]) + " " + recall
    span = (clips[x + 1]["start"], clips[x + 1]["end"])
    meta = {"colors": colors, "shapes": shapes, "named": x,
            "stream": {"clips": clips, "question_after": q, "thoughts": thoughts, "answer_reasoning": recall}}
    return Sample(frames, fps, question, options, letter, "multiple_choice", reasoning, span, d, meta)


CHANCE.register("stream_order")(lambda spec: 1.0 / spec.n_options)
