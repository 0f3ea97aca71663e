"""What every benchmark adapter shares: the adapter interface, reading published annotation files, checks.

A :class:`Benchmark` turns a benchmark's files *as distributed* into
:class:`~reelrl.data.schema.VideoRow` rows (``load``), writes the user text the
benchmark's own evaluation sends (``prompt``), reads an answer out of a
completion the way its scorer does (``judge``) and aggregates per-sample
scores into the benchmark's breakdown (``summarize``). Generation is
reelrl's (:func:`reelrl.eval.runner.decode_rows`); resumable, sharded running
is :mod:`reelrl.eval.bench.run`.

Two readings of every completion (``judge(text, row, mode)``):

``strict``
    reelrl's training rule: the last ``<answer>...</answer>`` tag is required
    and read with reelrl's parsers (:func:`reelrl.data.answers.extract_choice`
    in strict mode for letters, :func:`~reelrl.data.answers.parse_number` for
    numbers). A completion without tags scores 0.
``benchmark``
    The benchmark's official answer extraction, applied to the content of
    the last ``<answer>`` tag when there is one and to the whole completion
    otherwise (a model prompted with the benchmark's own text usually answers
    without tags; one prompted with a recipe's template answers inside them).

Each judgement is a dict with at least ``pred`` (what was read, JSON-able; None
when nothing was) and ``score`` (a float in [0, 1]: correctness, or MRA for
numerical answers).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

from reelrl.data.answers import extract_tag
from reelrl.data.records import read_records
from reelrl.data.schema import DataError, VideoRow, video_path_problem

__all__ = [
    "MODES",
    "Benchmark",
    "accuracy_by",
    "answer_text",
    "find_annotations",
    "mean",
    "read_records",
    "require",
    "resolve_video",
]

MODES: tuple[str, ...] = ("strict", "benchmark")


class Benchmark:
    """One public benchmark: its published layout, official prompt, answer extraction and scoring.

    Subclasses set ``name``, ``title``, ``layout`` (the files it reads, for
    error messages and the README) and ``source`` (what it follows), and
    implement the four methods.
    """

    name: str = ""
    title: str = ""
    layout: str = ""
    source: str = ""
    #: the system turn of the official prompt (None: the chat template's default)
    system: str | None = None

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        """Rows of the benchmark under ``root`` (``annotations``: the annotation file, default the published one).

        Raises :class:`~reelrl.data.schema.DataError` naming the file and record for a missing
        annotation file, a malformed record or (with ``check_videos``) a missing video.
        """
        raise NotImplementedError

    def prompt(self, row: VideoRow) -> str:
        """The user text the benchmark's own evaluation sends with the video."""
        raise NotImplementedError

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        """``{"pred": ..., "score": float, ...}`` of one completion in ``mode`` (module docstring)."""
        raise NotImplementedError

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        """The benchmark's scores over per-sample records (``record[mode]`` the judgement, ``record["fields"]``
        the row's breakdown fields)."""
        raise NotImplementedError


# ------------------------------------------------------------------ reading the published files


def find_annotations(root: Path, candidates: Iterable[str], given: Path | None, what: str) -> Path:
    """``given`` if set (it must exist), else the first of ``candidates`` (relative to ``root``) that exists."""
    if given is not None:
        path = given if given.is_absolute() or given.exists() else root / given
        if not path.is_file():
            raise DataError(f"{path}: {what} annotation file not found")
        return path
    tried = [root / c for c in candidates]
    for path in tried:
        if path.is_file():
            return path
    raise DataError(f"{root}: no {what} annotation file; looked for " + ", ".join(str(p) for p in tried))


def require(rec: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``rec[key]`` checked to be of ``kind`` (a non-empty string for ``str``); DataError naming the record."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: a record must be an object, got {type(rec).__name__}")
    if key not in rec:
        raise DataError(f"{where}: field {key!r} is missing")
    value = rec[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} must be {names}, got {value!r}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def resolve_video(candidates: list[Path], where: str, check: bool) -> Path:
    """The first existing candidate (absolute); with ``check``, DataError naming the record when none is a video
    file; without, the first candidate."""
    if not check:
        return candidates[0].absolute()
    for path in candidates:
        if video_path_problem(path) is None:
            return path.absolute()
    problem = video_path_problem(candidates[0])
    also = f" (also tried {', '.join(str(p) for p in candidates[1:])})" if len(candidates) > 1 else ""
    raise DataError(f"{where}: {problem}: {candidates[0]}{also}")


def make_row(where: str, **fields: Any) -> VideoRow:
    """A :class:`VideoRow`, a validation error becoming a DataError naming the record."""
    from pydantic import ValidationError

    from reelrl.data.schema import describe_errors

    try:
        return VideoRow(**fields)
    except ValidationError as e:
        raise DataError(f"{where}: invalid record: {describe_errors(e)}") from None


def unique_ids(rows: list[VideoRow], path: Path) -> list[VideoRow]:
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            raise DataError(f"{path}: record id {r.id!r} occurs twice (sample ids must be unique)")
        seen.add(r.id)
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


# ------------------------------------------------------------------ reading answers and aggregating


def answer_text(text: str) -> str:
    """What the benchmark extraction reads: the last ``<answer>`` tag's content, or the whole completion."""
    tag = extract_tag(text)
    return text if tag is None else tag


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def accuracy_by(records: list[dict], mode: str, key: Callable[[dict], str] | str,
                metric: str = "accuracy") -> dict[str, dict[str, float]]:
    """``{group: {"n", metric}}`` of ``record[mode]["score"]`` grouped by a field (or a function of the record)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        g = rec["fields"][key] if isinstance(key, str) else key(rec)
        groups[str(g)].append(float(rec[mode]["score"]))
    return {g: {"n": len(v), metric: sum(v) / len(v)} for g, v in sorted(groups.items())}
