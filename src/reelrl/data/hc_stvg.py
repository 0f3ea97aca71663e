"""Import HC-STVG spatio-temporal grounding annotations (Tang et al. 2021) as object-ID grounding rows.

The published annotation files (github.com/tzhhhh123/HC-STVG README and its ``test.json``; the v1 / v2
preprocessing scripts of TubeDETR, ``preproc/preproc_hcstvg.py`` / ``preproc_hcstvg_v2.py``) are one JSON
object keyed by video file name::

    {"55_vfjywN5CN0Y.mp4": {"bbox": [[x, y, w, h], ...], "st_time": 8.91, "ed_time": 17.54,
                            "img_num": 600, "caption": "The woman in red clothes turns in a circle.",
                            "width": 640, "height": 360, "st_frame": 268}, ...}

``bbox`` holds the target person's box (pixels, top-left corner, width, height) on every frame from
``st_frame`` on (frames counted from 1 as ffmpeg extracts them, ``img_num`` of them); ``st_time`` /
``ed_time`` are the ground-truth span in seconds. HC-STVG v1 files (and the README) write the sentence as
``caption`` and the frame size as ``width`` / ``height``; v2's ``train_v2.json`` / ``val_v2.json`` write
``English`` and ``img_size`` ``[height, width]``. Both are read; an ``ed_frame``, when present, must be the
frame of the last box (``st_frame + len(bbox) - 1``).

Conversion (STVG-R1's data path, github.com/XiaowZhang00/stvg-r1 ``preprocess/``): every video is re-encoded
with ID prompts (:func:`reelrl.video.id_prompts.draw_ids`) for the target's track and, from an optional
``tracks`` file, other people's tracks, so that the target is not the only ID shown. STVG-R1 gets those
tracks from a detector + tracker and finds the target's ID by box IoU; here the target's track is the
annotation itself, so its ID is exact. IDs ``1..N`` (N = 1 + extra tracks) are assigned in a random order
drawn from ``numpy.random.default_rng([seed, crc32(video name)])``, so the target's ID is uniform, not
always 1. Tracks file: JSON ``{video name: [{"st_frame": f, "bbox": [[x, y, w, h], ...]}, ...]}`` in the
annotation's own conventions (1-based first frame, ``[x, y, w, h]`` boxes, ``null`` for a frame without one).

Each record becomes a :class:`~reelrl.data.schema.VideoRow`:

* ``id`` = the video name without extension; ``video`` = ``out_dir/videos/<id>.mp4`` (absolute);
* ``question`` = :data:`QUESTION` with the sentence (final period removed, as STVG-R1's loader does);
* ``answer`` = ``"Target ID: k, Time range: s to e"`` with ``st_time`` / ``ed_time`` rounded to 2 decimals
  (STVG-R1's prompt asks for two decimals); ``time_span`` = the same; ``problem_type`` =
  ``spatio_temporal_grounding``; ``task`` = ``hc_stvg``;
* ``meta`` = ``{"video_name", "caption", "event", "st_frame", "img_num", "height", "width", "target_id", "ids"}``,
  ``event`` being STVG-R1's problem text (the sentence stripped, lower-cased, final period removed; the
  ``stvg_r1`` prompt template reads it).

The source video is ``video_root/<name>``, or ``video_root/<folder>/<name>`` for one level of folders (v2 ships
``video_parts/0`` ... ``9``). Malformed records (a missing or mistyped field, a box that is not 4 finite
numbers with positive size, a span that is not ``0 <= st_time < ed_time``, a non-positive ``st_frame``, an
empty sentence, a wrong ``ed_frame``) and missing videos raise a :class:`~reelrl.data.schema.DataError`
naming the file and the record.
"""

from __future__ import annotations

import glob
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from reelrl.data.schema import DataError, VideoRow, write_jsonl
from reelrl.data.target_ids import format_target
from reelrl.video.id_prompts import Track, TrackError, draw_ids
from reelrl.video.probe import VideoError

__all__ = ["QUESTION", "convert_hc_stvg", "read_hc_stvg", "read_extra_tracks"]

QUESTION = ('Each person in the video carries an ID number. Which person does this: "{sentence}", and when? '
            "Give the target ID and the time range in seconds.")
"""The question of every imported row (reelrl's wording; the recipe's prompt template wraps it)."""


def _number(rec: dict, key: str, where: str) -> float:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(f"{where}: field {key} must be a finite number, got {v!r}")
    return float(v)


def _int(rec: dict, key: str, where: str, lo: int) -> int:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise DataError(f"{where}: field {key} must be an integer >= {lo}, got {v!r}")
    return v


def _boxes(value: Any, where: str) -> list[tuple[float, float, float, float] | None]:
    """``[x, y, w, h]`` boxes -> ``(x1, y1, x2, y2)``; ``null`` entries stay ``None`` (a frame without a box)."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field bbox must be a non-empty list of [x, y, w, h] boxes")
    out: list[tuple[float, float, float, float] | None] = []
    for j, b in enumerate(value):
        if b is None:
            out.append(None)
            continue
        if not isinstance(b, list) or len(b) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b):
            raise DataError(f"{where}: bbox[{j}] must be four finite numbers [x, y, w, h], got {b!r}")
        x, y, w, h = (float(v) for v in b)
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: bbox[{j}] {b} has no area (w and h must be > 0)")
        out.append((x, y, x + w, y + h))
    return out


def _read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; a missing or unparsable file is a DataError naming it as ``what``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a JSON file ({e})") from None


def read_hc_stvg(path: str | Path) -> dict[str, dict[str, Any]]:
    """Validated records ``{video name: {caption, st_time, ed_time, st_frame, boxes, img_num, height, width}}``."""
    path = Path(path)
    data = _read_json(path, "annotation file")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object keyed by video file name")
    out = {}
    for name, rec in data.items():
        where = f"{path}: record {name!r}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        sentence = rec.get("caption", rec.get("English"))
        if not isinstance(sentence, str) or not sentence.strip():
            raise DataError(f"{where}: needs a non-empty sentence in field caption (v1) or English (v2)")
        st, ed = _number(rec, "st_time", where), _number(rec, "ed_time", where)
        if not 0 <= st < ed:
            raise DataError(f"{where}: st_time {st} and ed_time {ed} are not 0 <= st_time < ed_time")
        st_frame = _int(rec, "st_frame", where, 1)
        boxes = _boxes(rec.get("bbox"), where)
        if "ed_frame" in rec and _int(rec, "ed_frame", where, 1) != st_frame + len(boxes) - 1:
            raise DataError(f"{where}: ed_frame {rec['ed_frame']} is not the last box's frame "
                            f"(st_frame {st_frame} + {len(boxes)} boxes - 1)")
        if "img_size" in rec:
            size = rec["img_size"]
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
                raise DataError(f"{where}: field img_size must be [height, width] positive integers, got {size!r}")
            height, width = size
        else:
            height, width = _int(rec, "height", where, 1), _int(rec, "width", where, 1)
        out[name] = {"caption": sentence.strip(), "st_time": st, "ed_time": ed, "st_frame": st_frame,
                     "boxes": boxes, "img_num": _int(rec, "img_num", where, 1), "height": height, "width": width}
    return out


def read_extra_tracks(path: str | Path) -> dict[str, list[dict[int, tuple[float, float, float, float]]]]:
    """``{video name: [{0-based frame: (x1, y1, x2, y2)}, ...]}`` of a tracks file (module docstring)."""
    path = Path(path)
    data = _read_json(path, "tracks file")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by video file name")
    out: dict[str, Any] = {}
    for name, tracks in data.items():
        if not isinstance(tracks, list):
            raise DataError(f"{path}: record {name!r}: expected a list of tracks")
        out[name] = []
        for i, tr in enumerate(tracks):
            where = f"{path}: record {name!r} track {i}"
            if not isinstance(tr, dict) or set(tr) != {"st_frame", "bbox"}:
                raise DataError(f"{where}: needs exactly the keys st_frame and bbox")
            st = _int(tr, "st_frame", where, 1)
            out[name].append({st - 1 + j: b for j, b in enumerate(_boxes(tr["bbox"], where)) if b is not None})
    return out


def _find_video(root: Path, name: str) -> Path | None:
    direct = root / name
    if direct.is_file():
        return direct
    hits = sorted(p for p in root.glob(f"*/{glob.escape(name)}") if p.is_file())
    return hits[0] if hits else None


def convert_hc_stvg(src: str | Path, video_root: str | Path, out: str | Path, tracks: str | Path | None = None,
                    seed: int = 0, scale: int | None = None) -> dict[str, int]:
    """Convert ``src`` to ``out`` (JSONL) with ID-prompted videos in ``out``'s folder ``videos/`` (module docstring).

    Returns counts: ``rows``, ``extra_tracks``, ``labels`` (drawn), ``outside`` (boxes past the decoded frames).
    """
    src, root, out = Path(src), Path(video_root), Path(out)
    records = read_hc_stvg(src)
    extra = read_extra_tracks(tracks) if tracks is not None else {}
    unknown = sorted(set(extra) - set(records))
    if unknown:
        raise DataError(f"{tracks}: tracks for videos that {src} does not annotate: {unknown[:5]}")
    rows, counts = [], {"rows": 0, "extra_tracks": 0, "labels": 0, "outside": 0}
    for name, rec in records.items():
        where = f"{src}: record {name!r}"
        video = _find_video(root, name)
        if video is None:
            raise DataError(f"{where}: video {name} not found in {root} or its folders")
        boxes = [{rec["st_frame"] - 1 + j: b for j, b in enumerate(rec["boxes"]) if b is not None}]
        boxes += extra.get(name, [])
        ids = [int(i) + 1 for i in np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(boxes))]
        stem = Path(name).stem
        dst = (out.parent / "videos" / f"{stem}.mp4").resolve()
        try:
            done = draw_ids(video, dst, [Track(i, b) for i, b in zip(ids, boxes)], scale=scale)
        except (VideoError, TrackError) as e:
            raise DataError(f"{where}: {e}") from None
        st, ed = round(rec["st_time"], 2), round(rec["ed_time"], 2)
        if not st < ed:
            raise DataError(f"{where}: st_time and ed_time are equal at 2 decimals ({st})")
        sentence = rec["caption"][:-1] if rec["caption"].endswith(".") else rec["caption"]
        rows.append(VideoRow(
            id=stem, video=str(dst), question=QUESTION.format(sentence=sentence), answer=format_target(ids[0], st, ed),
            problem_type="spatio_temporal_grounding", task="hc_stvg", time_span=(st, ed),
            meta={"video_name": name, "caption": rec["caption"], "event": sentence.lower(), "st_frame": rec["st_frame"],
                  "img_num": rec["img_num"], "height": rec["height"], "width": rec["width"],
                  "target_id": ids[0], "ids": ids}))
        counts["rows"] += 1
        counts["extra_tracks"] += len(boxes) - 1
        counts["labels"] += done["labels"]
        counts["outside"] += done["outside"]
    write_jsonl(rows, out)
    return counts
