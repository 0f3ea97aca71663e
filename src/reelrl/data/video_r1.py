"""Import datasets in the Video-R1 row format (Video-R1-260k, Video-R1-COT-165k, its eval files).

A source file is a JSON list of objects, or JSONL (one object per line)::

    {"problem_id": 12, "problem": "What ...?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. red", "B. blue"],
     "process": "<think>...</think>", "solution": "<answer>B</answer>",
     "path": "./Evaluation/xyz.mp4"}

Conversion to :class:`~reelrl.data.schema.VideoRow`:

* ``id``           = ``str(problem_id)`` (duplicates are an error).
* ``video``        = ``video_root / path``, made absolute (not checked unless asked).
* ``question``     = ``problem``.
* ``options``      = ``options`` without their "A. " prefixes (a prefix letter out
                     of order is an error); ``[]`` / missing -> ``None``.
* ``problem_type`` = "multiple choice" -> multiple_choice, "numerical" -> numerical,
                     "OCR" -> ocr, "free-form" -> free_form, "regression" -> regression
                     (case-insensitive; reelrl names are accepted as they are).
* ``answer``       = text inside the ``<answer>`` tag of ``solution``; for choice
                     rows the letter ("B. blue" -> "B"), for numeric rows a plain
                     number ("1,000" -> "1000").
* ``reasoning``    = ``process`` without ``<think>`` tags (``None`` if empty).
* ``task``         = the row's ``task`` field if present, else the reelrl problem type.
* ``meta``         = ``{"data_type", "video_r1_problem_type"}`` plus ``data_source`` if present.

Image rows (``data_type == "image"``) are skipped and counted by default; with
``skip_images=False`` they are kept with the image path in ``video`` (the
frame decoder must then accept images). Any malformed row raises
:class:`~reelrl.data.schema.DataError` naming the file and the row index
(0-based; JSONL also gives the line number).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reelrl.data.answers import extract_tag, parse_choice, parse_choices, parse_number
from reelrl.data.schema import LETTERS, DataError, VideoRow, video_path_problem, write_jsonl

__all__ = ["VIDEO_R1_PROBLEM_TYPES", "import_video_r1", "convert_video_r1"]

VIDEO_R1_PROBLEM_TYPES: dict[str, str] = {
    "multiple choice": "multiple_choice",
    "numerical": "numerical",
    "ocr": "ocr",
    "free-form": "free_form",
    "regression": "regression",
}
_REELRL_TYPES = ("multiple_choice", "multi_choice", "numerical", "regression", "ocr", "free_form", "temporal_grounding")
_REQUIRED = ("problem_id", "problem", "data_type", "problem_type", "solution", "path")
_OPTION_PREFIX = re.compile(r"\s*\(?([A-Z])[.):]\s*")


def _read_source(path: Path) -> list[tuple[str, Any]]:
    """(where, object) for every row of a JSON list or JSONL file."""
    if not path.is_file():
        raise DataError(f"{path}: Video-R1 file not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return [(f"{path}: row {i}", obj) for i, obj in enumerate(data)]
    rows: list[tuple[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: row {len(rows)} (line {lineno})"
        try:
            rows.append((where, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    return rows


def _problem_type(raw: Any, where: str) -> str:
    key = str(raw).strip().lower()
    if key in VIDEO_R1_PROBLEM_TYPES:
        return VIDEO_R1_PROBLEM_TYPES[key]
    if key in _REELRL_TYPES:
        return key
    raise DataError(
        f"{where}: field problem_type: unknown {raw!r}; valid: {', '.join(VIDEO_R1_PROBLEM_TYPES)} "
        f"(or reelrl's {', '.join(_REELRL_TYPES)})"
    )


def _options(raw: Any, where: str) -> list[str] | None:
    """Option texts without "A. " prefixes; ``None`` for no options."""
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
        raise DataError(f"{where}: field options: expected a list of strings, got {raw!r}")
    out = []
    for i, opt in enumerate(raw):
        m = _OPTION_PREFIX.match(opt)
        if m:
            if i >= len(LETTERS) or m.group(1) != LETTERS[i]:
                raise DataError(f"{where}: field options[{i}]: prefix {m.group(1)!r} out of order in {opt!r}")
            opt = opt[m.end() :]
        out.append(opt.strip())
    return out


def _answer(solution: Any, ptype: str, options: list[str] | None, where: str) -> str:
    """Gold answer text from the ``solution`` field, normalised for its problem type."""
    raw = extract_tag(str(solution))
    if raw is None:
        raise DataError(f"{where}: field solution: no <answer>...</answer> in {solution!r}")
    n = len(options) if options else len(LETTERS)
    if ptype == "multiple_choice":
        letter = parse_choice(raw, n)
        if letter is None:
            raise DataError(f"{where}: field solution: {raw!r} is not an option letter")
        return letter
    if ptype == "multi_choice":
        letters = parse_choices(raw, n)
        if not letters:
            raise DataError(f"{where}: field solution: {raw!r} is not a set of option letters")
        return ",".join(sorted(letters))
    if ptype in ("numerical", "regression"):
        x = parse_number(raw)
        if x is None:
            raise DataError(f"{where}: field solution: {raw!r} is not a number")
        return str(int(x)) if x.is_integer() else repr(x)
    return raw


def _reasoning(process: Any) -> str | None:
    if not process:
        return None
    text = str(process)
    inner = extract_tag(text, "think")
    text = inner if inner is not None else text.replace("<think>", "").replace("</think>", "")
    return text.strip() or None


def _convert(obj: Any, where: str, video_root: Path) -> VideoRow:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj or obj[k] is None]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}")
    ptype = _problem_type(obj["problem_type"], where)
    options = _options(obj.get("options"), where)
    meta: dict[str, Any] = {"data_type": obj["data_type"], "video_r1_problem_type": obj["problem_type"]}
    if obj.get("data_source") is not None:
        meta["data_source"] = obj["data_source"]
    fields: dict[str, Any] = {
        "id": str(obj["problem_id"]),
        "video": os.path.abspath(video_root / str(obj["path"])),
        "question": str(obj["problem"]),
        "options": options,
        "answer": _answer(obj["solution"], ptype, options, where),
        "problem_type": ptype,
        "task": str(obj.get("task") or ptype),
        "reasoning": _reasoning(obj.get("process")),
        "meta": meta,
    }
    try:
        return VideoRow.model_validate(fields)
    except ValidationError as e:
        errs = "; ".join(f"field {'.'.join(str(x) for x in err['loc']) or '<row>'}: {err['msg']}" for err in e.errors())
        raise DataError(f"{where}: invalid row: {errs}") from None


def import_video_r1(
    path: str | Path, video_root: str | Path, *, skip_images: bool = True, check_videos: bool = False
) -> tuple[list[VideoRow], dict[str, int]]:
    """Read a Video-R1 JSON / JSONL file into reelrl rows.

    Returns ``(rows, counts)``; counts holds ``total``, ``imported``,
    ``skipped_image`` and ``problem_type/<type>`` for each imported type.
    With ``check_videos`` a missing video file is a :class:`DataError`.
    """
    path, root = Path(path), Path(video_root)
    counts: dict[str, int] = {"total": 0, "imported": 0, "skipped_image": 0}
    rows: list[VideoRow] = []
    seen: dict[str, str] = {}
    for where, obj in _read_source(path):
        counts["total"] += 1
        data_type = obj.get("data_type") if isinstance(obj, dict) else None
        if data_type not in ("video", "image") and isinstance(obj, dict) and "data_type" in obj:
            raise DataError(f"{where}: field data_type: expected 'video' or 'image', got {data_type!r}")
        if data_type == "image" and skip_images:
            counts["skipped_image"] += 1
            continue
        row = _convert(obj, where, root)
        if row.id in seen:
            raise DataError(f"{where}: duplicate problem_id {row.id!r} (first at {seen[row.id]})")
        seen[row.id] = where
        if check_videos:
            problem = video_path_problem(Path(row.video))
            if problem:
                raise DataError(f"{where}: {problem}: {row.video}")
        rows.append(row)
        counts["imported"] += 1
        key = f"problem_type/{row.problem_type}"
        counts[key] = counts.get(key, 0) + 1
    if not rows:
        raise DataError(f"{path}: no rows imported (counts: {counts})")
    return rows, counts


def convert_video_r1(
    src: str | Path, video_root: str | Path, out_jsonl: str | Path, *, skip_images: bool = True
) -> dict[str, int]:
    """Import ``src`` and write it as a reelrl JSONL file (absolute video paths); returns the counts."""
    rows, counts = import_video_r1(src, video_root, skip_images=skip_images)
    write_jsonl(rows, out_jsonl)
    return counts
