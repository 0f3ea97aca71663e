"""Import Charades-STA temporal-grounding annotations (Gao et al., TALL, 2017) as reelrl rows.

The published files ``charades_sta_train.txt`` / ``charades_sta_test.txt``
hold one query per line::

    AO8RW 0.0 6.9##a person is putting a book on a shelf.

(video id, start and end in seconds, ``##``, the query sentence). The
durations are in Charades' own ``Charades_v1_train.csv`` /
``Charades_v1_test.csv`` (columns ``id`` and ``length``, seconds), which
``info`` may name.

Conversion to :class:`~reelrl.data.schema.VideoRow`:

* ``id``           = ``"<video id>-<k>"``, k counting that video's queries from 0 in file order;
* ``video``        = ``video_root / "<video id>.mp4"``, absolute (checked only when asked);
* ``question``     = :data:`QUESTION` with the sentence (its final period removed);
* ``answer``       = ``"<start> to <end>"`` with the numbers as the file writes them;
* ``time_span``    = ``[start, end]``; ``problem_type`` = ``temporal_grounding``; ``task`` = ``charades_sta``;
* ``meta``         = ``{"video_id", "sentence", "duration"}`` (duration None without ``info``).

With durations, an end past the video's length is clipped to it, as the
common Charades-STA loaders do (2D-TAN, MMN: ``end = min(end, duration)``),
and counted; a start at or past the length is an error. Malformed lines (no
``##``, not three fields before it, a number that does not parse or is not
finite, start > end, an empty sentence) raise a
:class:`~reelrl.data.schema.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from pydantic import ValidationError

from reelrl.data.schema import DataError, VideoRow, video_path_problem, write_jsonl

__all__ = ["QUESTION", "read_charades_sta", "read_durations", "convert_charades_sta"]

QUESTION = 'When does "{sentence}" happen in the video? Give the start and end time in seconds.'
"""The question of every imported row (reelrl's wording; the recipe's prompt template wraps it)."""


def read_durations(path: str | Path) -> dict[str, float]:
    """``{video id: length in seconds}`` from a ``Charades_v1_*.csv`` (columns ``id`` and ``length``)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"id", "length"} <= set(reader.fieldnames):
                raise DataError(f"{path}: needs the columns 'id' and 'length' (Charades_v1_*.csv), "
                                f"has {reader.fieldnames}")
            out = {}
            for i, rec in enumerate(reader, start=2):
                try:
                    out[rec["id"]] = float(rec["length"])
                except (TypeError, ValueError):
                    raise DataError(f"{path}:{i}: length {rec['length']!r} is not a number") from None
            return out
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _number(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {name} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: {name} {text!r} must be a finite number >= 0")
    return value


def read_charades_sta(
    path: str | Path, video_root: str | Path, durations: dict[str, float] | None = None,
    check_videos: bool = False,
) -> tuple[list[VideoRow], dict[str, int]]:
    """Rows of one Charades-STA file (module docstring) and counts ``{"rows", "clipped"}``."""
    path, root = Path(path), Path(video_root).absolute()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    rows: list[VideoRow] = []
    seen: dict[str, int] = defaultdict(int)
    clipped = 0
    for n, line in enumerate(lines, start=1):
        where = f"{path}:{n}"
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        fields = head.split()
        if not sep or len(fields) != 3:
            raise DataError(f"{where}: expected 'VIDEO START END##sentence', got {line[:80]!r}")
        vid, start_text, end_text = fields
        start, end = _number(start_text, where, "start"), _number(end_text, where, "end")
        if start > end:
            raise DataError(f"{where}: start {start_text} is after end {end_text}")
        sentence = sentence.strip().removesuffix(".").strip()
        if not sentence:
            raise DataError(f"{where}: the query sentence is empty")
        duration = None if durations is None else durations.get(vid)
        if durations is not None and duration is None:
            raise DataError(f"{where}: video {vid} has no length in the durations file")
        if duration is not None:
            if start >= duration:
                raise DataError(f"{where}: start {start_text} is not inside the video ({duration:g} s long)")
            if end > duration:
                end, end_text, clipped = duration, f"{duration:g}", clipped + 1
        video = root / f"{vid}.mp4"
        if check_videos and (problem := video_path_problem(video)):
            raise DataError(f"{where}: {problem}: {video}")
        try:
            rows.append(VideoRow(
                id=f"{vid}-{seen[vid]}", video=str(video), question=QUESTION.format(sentence=sentence),
                answer=f"{start_text} to {end_text}", problem_type="temporal_grounding", task="charades_sta",
                time_span=(start, end), meta={"video_id": vid, "sentence": sentence, "duration": duration}))
        except ValidationError as e:
            raise DataError(f"{where}: invalid row: {e.errors()[0]['msg']}") from None
        seen[vid] += 1
    return rows, {"rows": len(rows), "clipped": clipped}


def convert_charades_sta(
    src: str | Path, video_root: str | Path, out: str | Path, info: str | Path | None = None,
    check_videos: bool = False,
) -> dict[str, int]:
    """Read ``src`` (and the durations in ``info``), write the rows to ``out`` as JSONL; returns the counts."""
    durations = read_durations(info) if info is not None else None
    rows, counts = read_charades_sta(src, video_root, durations, check_videos)
    write_jsonl(rows, out)
    return counts
