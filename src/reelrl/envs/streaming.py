"""Streaming thinking (VST): the video arrives clip by clip; the model thinks after each, then answers.

``streaming``: a row whose ``meta["stream"]`` lists its clips (``[{"video":
path, "start": s, "end": e}]``, paths relative to the row's video directory or
absolute), ``question_after`` (how many clips are shown before the question;
default all) and, for SFT, ``thoughts`` (one gold thought per clip). The
episode:

1. the first prompt is the first clip and ``"Time=s-e s. ..."`` (the trait
   ``prompt_row`` rewrites every dataset row so: its ``video`` becomes the first
   clip's file and its ``question`` the first clip's header);
2. after each thought, the next clip arrives as a video input in the next user
   turn (encoded once, appended to the cached context), with its own header;
3. after the thought on clip ``question_after`` the question comes (the row's
   question and lettered options, :meth:`VideoRow.prompt_text`, and the answer
   instruction); the model's answer (a short reasoning over its memory, then
   the letter) ends the episode.

Rewards follow VST: only the answer turn is scored (the thought turns' columns
are ``None``; :func:`reelrl.rewards.turns.score_turns`), with the recipe's
rewards over the row's own columns; the trajectory's advantage then covers
every model token of every turn (VST copies the final-turn advantage to every
turn). The answer turn's info carries ``after_question: True``: evaluation
counts its tokens as the response latency (tokens generated after the
question; :mod:`reelrl.eval.episodes`).

Where reelrl differs from VST: VST's memory is text (every earlier timestamp
and thought), and earlier clips leave the context; here every earlier clip and
thought stays in the cached context (a superset of VST's memory, and one
sequence whose log-probs equal one forward over the whole conversation). A
later clip is decoded with the first clip's frame count and frame size (the
clips of a stream are equally long), so every clip reaches the model alike;
it is decoded once for the G trajectories of a group, and the vision tower
encodes it once for them (:func:`reelrl.models.dedupe.encode_unique`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from reelrl.data.schema import DataError, VideoRow
from reelrl.envs.base import ENVS, Clip, Demonstration, Observation, Turn
from reelrl.video.decode import SampledVideo, load_video
from reelrl.video.sample import VideoSampling

__all__ = ["Streaming", "stream_of", "streaming_prompt_row"]

THINK = "Think about what you saw inside <think></think>."
ASK = "{question}\nThink briefly inside <think></think>, then answer inside <answer></answer>."


def stream_of(row: VideoRow) -> tuple[list[dict[str, Any]], int]:
    """The row's clips and how many precede the question; DataError naming the row and field when malformed."""
    stream = row.meta.get("stream")
    if not isinstance(stream, dict) or not isinstance(stream.get("clips"), list) or not stream["clips"]:
        raise DataError(f"row {row.id}: the streaming environment needs meta.stream.clips "
                        "([{video, start, end}, ...])")
    clips = stream["clips"]
    for i, c in enumerate(clips):
        if not (isinstance(c, dict) and isinstance(c.get("video"), str)
                and all(isinstance(c.get(k), (int, float)) for k in ("start", "end")) and c["end"] > c["start"]):
            raise DataError(f"row {row.id}: meta.stream.clips[{i}] needs a video path and start < end seconds, got {c!r}")
    q = stream.get("question_after", len(clips))
    if not (isinstance(q, int) and 1 <= q <= len(clips)):
        raise DataError(f"row {row.id}: meta.stream.question_after must be 1..{len(clips)}, got {q!r}")
    return clips, q


def header(clip: dict[str, Any]) -> str:
    """VST's per-clip text: ``Time=s-e s.`` and the instruction to think."""
    return f"Time={clip['start']:g}-{clip['end']:g} s. {THINK}"


def clip_path(row: VideoRow, clip: dict[str, Any], base: Path | None = None) -> Path:
    p = Path(clip["video"])
    return p if p.is_absolute() else (base if base is not None else Path(row.video).parent) / p


@lru_cache(maxsize=32)
def _decoded(path: str, mtime_ns: int, size: int, sampling: tuple[int, int, int]) -> SampledVideo:
    """One clip decoded once for every trajectory of a group (the G environments of a row ask for the same
    clip in the same turn); keyed by the file's path, modification time and size, so a rewritten file is read
    again. The frames are shared: nothing downstream writes into them."""
    t, h, w = sampling
    return load_video(path, VideoSampling(nframes=t, resized_height=h, resized_width=w))


def streaming_prompt_row(row: VideoRow) -> VideoRow:
    """The row as the episode opens: its first clip as the video, the first clip's header as the question.

    The original video's directory stays the base of the later clips' relative paths (``meta.stream.base``),
    and the question with its options is kept for the question turn (``meta.stream.question``).
    """
    clips, _ = stream_of(row)
    base = Path(row.video).parent
    stream = {"question": row.prompt_text(), **row.meta["stream"], "base": str(base)}
    return row.model_copy(update={"video": str(clip_path(row, clips[0], base)), "question": header(clips[0]),
                                  "meta": {**row.meta, "stream": stream}})


class Streaming:
    """One streaming episode (module docstring)."""

    def __init__(self, row: VideoRow, video: SampledVideo) -> None:
        self.row, self.video = row, video
        self.clips, self.q = stream_of(row)
        base = row.meta["stream"].get("base")
        self.base = Path(base) if base is not None else None
        self.max_turns = self.q + 1
        self.turn = 0
        self.size = tuple(int(n) for n in video.frames.shape[:3])  # (T, H, W) of the first clip

    def clip(self, k: int) -> Clip:
        """Clip ``k`` (0-based), decoded like the first (the frames the prompt showed)."""
        c = self.clips[k]
        path = clip_path(self.row, c, self.base)
        try:
            st = path.stat()
            v = _decoded(str(path), st.st_mtime_ns, st.st_size, self.size)
        except OSError as e:
            raise DataError(f"row {self.row.id}: clip {k + 1} ({path}): {e}") from None
        except ValueError as e:  # VideoError is a ValueError
            raise DataError(f"row {self.row.id}: clip {k + 1} ({path}): {e}") from None
        return Clip(v.frames, v.fps, float(c["start"]))

    def observation(self, turn: int) -> Observation:
        """The user turn after model turn ``turn`` (1-based): the next clip, or the question after clip ``q``."""
        if turn < self.q:
            return Observation(header(self.clips[turn]), clips=[self.clip(turn)])
        return Observation(ASK.format(question=self.question()))

    def question(self) -> str:
        """The question with its lettered options (kept by :func:`streaming_prompt_row`)."""
        q = self.row.meta["stream"].get("question")
        return q if isinstance(q, str) else self.row.prompt_text()

    def step(self, text: str) -> Turn:
        self.turn += 1
        if self.turn <= self.q:  # a thought: not scored; the next clip, or the question
            return Turn(None, self.observation(self.turn), {"clip": self.turn})
        return Turn({}, None, {"after_question": True})

    def demonstration(self) -> Demonstration:
        """The gold episode: the gym's thought after each clip, then the answer, with the short reasoning over the
        memory of ``meta.stream.answer_reasoning`` when the row has one (the evidence is in the thoughts)."""
        thoughts = self.row.meta["stream"].get("thoughts")
        if not (isinstance(thoughts, list) and len(thoughts) >= self.q and all(isinstance(t, str) for t in thoughts)):
            raise DataError(f"row {self.row.id}: a streaming demonstration needs meta.stream.thoughts "
                            f"(one per clip, {self.q} at least)")
        answers: list[tuple[str | None, str | None]] = [(t, None) for t in thoughts[: self.q]]
        recall = self.row.meta["stream"].get("answer_reasoning")
        answers.append((recall if isinstance(recall, str) and recall.strip() else None, self.row.answer))
        return Demonstration(answers, [self.observation(k) for k in range(1, self.q + 1)])


@ENVS.register("streaming", prompt_row=streaming_prompt_row)
def streaming(row: VideoRow, video: SampledVideo) -> Streaming:
    """VST's streaming episode over ``row.meta.stream`` (module docstring)."""
    return Streaming(row, video)
