"""The JSONL row schema of reelrl datasets, validated on load.

One JSON object per line. Paths in ``video`` are resolved relative to the
JSONL file's directory unless absolute. Errors name the file and line.

Fields
------
id            unique string id of the row.
video         path to an encoded video file (mp4, webm, ...).
question      the question text shown to the model (without the options).
options       list of option texts for choice questions, shown as "A. text";
              ``None`` for open questions.
answer        gold answer: a letter ("B") for ``multiple_choice``, a comma
              separated set of letters ("A,C") for ``multi_choice``, a number
              as text for ``numerical`` / ``regression``, "s-e" seconds for
              ``temporal_grounding`` (a grounding row needs a span here or in
              ``time_span``), ``"[x1, y1, x2, y2]"`` pixels for ``box``,
              ``"Target ID: k, Time range: s to e"`` for
              ``spatio_temporal_grounding`` (STVG-R1's object-ID answer,
              :mod:`reelrl.data.target_ids`), a number in the row's progress range
              (``meta["progress_range"]``, default [0, 1]) for ``progress``
              (PRIMO R1's progress estimate), free text otherwise.
problem_type  one of :data:`PROBLEM_TYPES`; selects the accuracy reward.
task          task family name, used for per-family metrics ("count", ...).
reasoning     optional reasoning trace (text that goes inside <think>) for SFT.
time_span     optional [start, end] seconds of the relevant moment (finite,
              0 <= start <= end).
difficulty    optional difficulty in [0, 1] (curricula, augmentation).
images        optional extra images shown in the same user turn as the video, in
              order: a list of ``{"role": ..., "path": ... | "frame": ...,
              "position": "before" | "after"}`` (:class:`ImageRef`): an image
              file, or a frame index of the row's own video (negative counts
              from the end, -1 = its last frame); ``before`` images precede the
              video, ``after`` images follow it (PRIMO R1's initial-state image,
              video, current-state image).
meta          free-form dict carried along (seed, generator parameters, ...).
"""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from reelrl.data.boxes import parse_box
from reelrl.data.spans import parse_span
from reelrl.data.target_ids import parse_target

ProblemType = Literal[
    "multiple_choice",
    "multi_choice",
    "numerical",
    "regression",
    "ocr",
    "free_form",
    "temporal_grounding",
    "box",
    "spatio_temporal_grounding",
    "progress",
]
PROBLEM_TYPES: tuple[str, ...] = get_args(ProblemType)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class DataError(ValueError):
    """Bad dataset input; the message names the file and line (or row id)."""


class ImageRef(BaseModel):
    """One extra image of a row's prompt (the ``images`` field): a file or a frame of the row's video."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(min_length=1)  # what it shows ("initial_state", "current_state", ...); named in the text
    path: str | None = None  # an image file (PNG, JPEG, ...), relative to the JSONL file's directory
    frame: int | None = None  # a frame index of the row's video (negative: from the end)
    position: Literal["before", "after"] = "after"  # before or after the video in the user turn

    @model_validator(mode="after")
    def _one_source(self) -> "ImageRef":
        if (self.path is None) == (self.frame is None):
            raise ValueError(f"image {self.role!r} needs exactly one of path and frame")
        return self


def progress_range(meta: dict[str, Any]) -> tuple[float, float]:
    """The ``(low, high)`` range of a ``progress`` row's answer: ``meta["progress_range"]``, default ``(0, 1)``."""
    rng = meta.get("progress_range", (0.0, 1.0))
    if (not isinstance(rng, (list, tuple)) or len(rng) != 2
            or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in rng) or not rng[0] < rng[1]):
        raise ValueError(f"field meta.progress_range: must be [low, high] with low < high, got {rng!r}")
    return float(rng[0]), float(rng[1])


class VideoRow(BaseModel):
    """One training / evaluation example (see module docstring for the fields)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    video: str
    question: str
    options: list[str] | None = None
    answer: str
    problem_type: ProblemType
    task: str = "default"
    reasoning: str | None = None
    time_span: tuple[float, float] | None = None
    difficulty: float | None = Field(default=None, ge=0.0, le=1.0)
    meta: dict[str, Any] = Field(default_factory=dict)
    images: list[ImageRef] | None = None

    @model_serializer(mode="wrap")
    def _omit_no_images(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("images", 0) is None:  # rows without images serialise as before the field existed
            del data["images"]
        return data

    @field_validator("images")
    @classmethod
    def _images_ordered(cls, v: list[ImageRef] | None) -> list[ImageRef] | None:
        if v is not None:
            if not v:
                raise ValueError("images is empty (leave the field out for a video-only prompt)")
            after = [i for i, im in enumerate(v) if im.position == "after"]
            for i, im in enumerate(v):
                if im.position == "before" and after and i > after[0]:
                    raise ValueError(f"images[{i}].position: a 'before' image is listed after the 'after' image "
                                     f"images[{after[0]}]; list the images in prompt order")
        return v

    @field_validator("options")
    @classmethod
    def _options_nonempty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not (2 <= len(v) <= len(LETTERS)):
            raise ValueError(f"options must hold 2..{len(LETTERS)} entries, got {len(v)}")
        return v

    @field_validator("time_span")
    @classmethod
    def _time_span_valid(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None:
            problem = span_problem(v)
            if problem:
                raise ValueError(f"time span {list(v)}: {problem}")
        return v

    @model_validator(mode="after")
    def _answer_fits_type(self) -> "VideoRow":
        if self.problem_type in ("multiple_choice", "multi_choice"):
            if not self.options:
                raise ValueError(f"problem_type {self.problem_type!r} needs options")
            valid = set(LETTERS[: len(self.options)])
            letters = [a.strip() for a in self.answer.split(",")]
            if self.problem_type == "multiple_choice" and len(letters) != 1:
                raise ValueError(f"multiple_choice answer must be one letter, got {self.answer!r}")
            bad = [a for a in letters if a not in valid]
            if bad:
                raise ValueError(f"answer {self.answer!r} is not among options {sorted(valid)}")
        elif self.problem_type in ("numerical", "regression"):
            try:
                float(self.answer)
            except ValueError:
                raise ValueError(f"{self.problem_type} answer must be a number, got {self.answer!r}") from None
        elif self.problem_type == "progress":
            lo, hi = progress_range(self.meta)
            try:
                x = float(self.answer)
            except ValueError:
                raise ValueError(f"field answer: a progress answer must be a number, got {self.answer!r}") from None
            if not (math.isfinite(x) and lo <= x <= hi):
                raise ValueError(f"field answer: progress {self.answer!r} lies outside the progress range "
                                 f"[{lo:g}, {hi:g}]")
        elif self.problem_type == "box":
            box = parse_box(self.answer)
            if box is None or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"field answer: a box row needs '[x1, y1, x2, y2]' with x2 > x1 and y2 > y1, "
                                 f"got {self.answer!r}")
        elif self.problem_type == "spatio_temporal_grounding":
            target = parse_target(self.answer)
            problem = span_problem(target[1]) if target is not None else None
            if target is None or problem or target[1][1] <= target[1][0]:
                raise ValueError(
                    f"field answer: a spatio_temporal_grounding row needs 'Target ID: k, Time range: s to e' "
                    f"with 0 <= s < e, got {self.answer!r}" + (f" ({problem})" if problem else "")
                )
        elif self.problem_type == "temporal_grounding":
            span = parse_span(self.answer)
            problem = span_problem(span) if span is not None else None
            if problem:
                raise ValueError(f"field answer: {self.answer!r} holds the time span {list(span)}: {problem}")
            if span is None and self.time_span is None:
                raise ValueError(
                    f"field answer: a temporal_grounding row needs a time span, but {self.answer!r} holds no "
                    '"s-e" span and time_span is not set'
                )
        return self

    def prompt_text(self) -> str:
        """Question plus lettered options, as shown to the model."""
        if not self.options:
            return self.question
        opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options))
        return f"{self.question}\n{opts}"

    def resolved_video(self, base: Path | str | None) -> Path:
        p = Path(self.video)
        return p if p.is_absolute() or base is None else Path(base) / p

    def resolved_images(self, base: Path | str | None) -> list[ImageRef] | None:
        """``images`` with file paths made absolute against ``base`` (as :meth:`resolved_video`)."""
        if self.images is None:
            return None
        out = []
        for im in self.images:
            p = Path(im.path) if im.path is not None else None
            if p is not None and not p.is_absolute() and base is not None:
                im = im.model_copy(update={"path": str(Path(base) / p)})
            out.append(im)
        return out


def describe_errors(e: ValidationError) -> str:
    """``field NAME: message`` for each error (a row-level error names its field itself)."""
    parts = []
    for err in e.errors():
        msg = err["msg"]
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            msg = str(err["ctx"]["error"])  # without pydantic's "Value error, " prefix
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"field {loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def span_problem(span: tuple[float, float]) -> str | None:
    """Why ``(start, end)`` seconds is not a valid time span (not finite, negative, reversed), or ``None``."""
    start, end = span
    if not (math.isfinite(start) and math.isfinite(end)):
        return "start and end must be finite numbers"
    if start < 0:
        return f"start {start} is negative"
    if start > end:
        return f"start {start} is after end {end}"
    return None


def video_path_problem(video: Path) -> str | None:
    """Why ``video`` cannot be a video file (missing, a directory, a FIFO, a symlink loop, ...), or ``None``."""
    from reelrl.video.probe import VideoError, check_video_path

    try:
        check_video_path(video)
    except VideoError as e:
        return str(e).removeprefix(f"{video}: ")
    return None


def read_text(path: Path) -> str:
    """The file as UTF-8 text; a byte that is not UTF-8 is a DataError naming ``file:line``."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}; "
            "save the file as UTF-8)"
        ) from None


def json_lines(path: Path) -> list[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON Lines file.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` only (JSON Lines' own rule), so a
    string holding a raw U+2028, U+2029 or NEL stays in its record. Bytes that are
    not UTF-8 and malformed JSON are a :class:`DataError` naming ``file:line``.
    """
    out = []
    with StringIO(read_text(path), newline=None) as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    out.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    return out


def load_jsonl(path: str | Path, *, check_videos: bool = True) -> list[VideoRow]:
    """Load and validate a JSONL dataset; relative video paths become absolute.

    Raises :class:`DataError` naming ``file:line`` for bytes that are not
    UTF-8, malformed JSON, missing or invalid fields (time spans that are not
    finite, negative or reversed; a ``temporal_grounding`` row without a span),
    duplicate ids, and (with ``check_videos``) video paths that are not files
    (missing, a directory, a FIFO, a device, a symlink loop, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    rows: list[VideoRow] = []
    seen: dict[str, int] = {}
    for lineno, obj in json_lines(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        try:
            row = VideoRow.model_validate(obj)
        except ValidationError as e:
            raise DataError(f"{where}: invalid row: {describe_errors(e)}") from None
        if row.id in seen:
            raise DataError(f"{where}: duplicate id {row.id!r} (first at line {seen[row.id]})")
        seen[row.id] = lineno
        video = row.resolved_video(path.parent)
        if check_videos:
            problem = video_path_problem(video)
            if problem:
                raise DataError(f"{where}: {problem}: {video}")
        images = row.resolved_images(path.parent)
        for i, im in enumerate(images or []):
            if check_videos and im.path is not None and not Path(im.path).is_file():
                raise DataError(f"{where}: field images[{i}].path: image file not found: {im.path}")
        rows.append(row.model_copy(update={"video": str(video), "images": images}))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def write_jsonl(rows: list[VideoRow], path: str | Path) -> None:
    """Write rows as JSONL (video paths are written as given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
