"""The progress prompt of the served video reward model (``reelrl serve``), in one place.

A critic is served with exactly the conversation it was trained on, so a
recipe that trains a progress critic for serving (PRIMO R1-style, SOLE-R1's
reward) writes its rows with these functions. One user turn holds the goal,
then the episode's frames as images in time order, then the question; the
assistant answers ``<answer>p</answer>`` with ``p`` in [0, 1]::

    [system: the chat template's default]
    user:      "Task: {goal}\\nThe frames of the episode so far follow, in order; the last one is the current state.\\n"
               <image frame 1> <image frame 2> ... <image frame t>
               "\\nHow much of the task is done in the last frame? Answer with a number from 0 (not started)
               to 1 (done) inside <answer> </answer>."
    assistant: "<answer>0.42</answer>"

Frames are images (``{"type": "image"}`` content parts), not a video: a
streamed frame is one image of grid ``(1, H/14, W/14)`` (Qwen's temporal patch
of 2 would otherwise pair frames, and a video cannot grow by one frame). The
goal text ends on a line break and the images follow it directly, so every
cut between the goal, the frames and the question falls on a vision token and
tokenises the same piece by piece as whole (the server checks this when it
starts). The server forces the answer's opening tag :data:`ANSWER_OPEN` after
the generation prompt and decodes the number after it (``reelrl.serve.critic``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "PROGRESS_DECIMALS",
    "PROGRESS_GOAL",
    "PROGRESS_QUESTION",
    "progress_messages",
    "progress_target",
]

#: The user turn's opening text; ``{goal}`` is the episode's goal (one line or more).
PROGRESS_GOAL = "Task: {goal}\nThe frames of the episode so far follow, in order; the last one is the current state.\n"
#: The question after the frames.
PROGRESS_QUESTION = ("\nHow much of the task is done in the last frame? Answer with a number from 0 (not started) "
                     "to 1 (done) inside <answer> </answer>.")
#: The answer's tags: the assistant's whole reply is ``ANSWER_OPEN + p + ANSWER_CLOSE``.
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
#: Digits after the decimal point of a written progress (``0.42``); the server decodes at most this many.
PROGRESS_DECIMALS = 2


def progress_messages(goal: str, n_frames: int) -> list[dict[str, Any]]:
    """The chat messages asking the progress after ``n_frames`` frames of an episode towards ``goal``."""
    if n_frames < 1:
        raise ValueError(f"a progress prompt shows at least one frame, got n_frames={n_frames}")
    content: list[dict[str, Any]] = [{"type": "text", "text": PROGRESS_GOAL.format(goal=goal)}]
    content += [{"type": "image"} for _ in range(n_frames)]
    content.append({"type": "text", "text": PROGRESS_QUESTION})
    return [{"role": "user", "content": content}]


def progress_target(progress: float, decimals: int = PROGRESS_DECIMALS) -> str:
    """The assistant's reply for a true ``progress`` in [0, 1]: ``<answer>0.42</answer>``."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return f"{ANSWER_OPEN}{progress:.{decimals}f}{ANSWER_CLOSE}"
