"""Draw object-ID visual prompts onto real videos from box tracks (STVG-R1's marker videos).

STVG-R1 (github.com/XiaowZhang00/stvg-r1, ``preprocess/mask2marker.py``) tracks every object of a video
(GroundedSAM2), then re-encodes the video with each object's ID written at its mask centre on every frame
the object is tracked. :func:`draw_ids` does the same from box tracks: the label of each :class:`Track` is
drawn centred on its box (for a box, the reference's centre rule -- the middle row of the mask, the mean
x on it -- is the box centre) on every frame that track has a box, in reelrl's legible label
(:mod:`reelrl.video.glyphs`: black bitmap digits on white, ``scale`` from
:func:`reelrl.video.glyphs.default_scale` unless given; the reference writes red ``cv2.putText`` text).
Boxes are source pixels ``(x1, y1, x2, y2)``; a label near the border is shifted inside the frame.

The video is decoded with PyAV (:func:`reelrl.video.decode.decode_frames`, upright, every frame; a
constant-rate stream, as HC-STVG's are) and written as H.264 at the source frame rate
(:func:`reelrl.video.write.write_video`, ``crf`` 18 by default). Odd frame sizes are cropped by one pixel
row/column (yuv420p needs even sizes). All frames are held in memory (a 20 s 640 x 360 clip: ~350 MB).

Tracks file (``reelrl draw-ids --tracks``; :func:`load_tracks`): a JSON list of
``{"id": k, "start_frame": f, "boxes": [[x1, y1, x2, y2], ...]}``, ``id`` a non-negative integer,
``start_frame`` the 0-based index of the first box's frame, one box per consecutive frame; ``null`` in
place of a box skips that frame. Errors name the file and the track: :class:`TrackError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reelrl.video.decode import decode_frames, probe, write_video
from reelrl.video.glyphs import default_scale, draw_label, label_size

__all__ = ["Track", "TrackError", "draw_ids", "draw_tracks", "load_tracks", "parse_tracks"]

BoxXYXY = tuple[float, float, float, float]


class TrackError(ValueError):
    """A malformed track (the message names the file and the track)."""


@dataclass
class Track:
    """One object's ID and its boxes ``(x1, y1, x2, y2)`` in source pixels, by 0-based frame index."""

    id: int
    boxes: dict[int, BoxXYXY] = field(default_factory=dict)


def draw_tracks(frames: np.ndarray, tracks: list[Track], scale: int | None = None, pad: int = 1) -> np.ndarray:
    """Draw every track's ID label on ``frames`` ``[T, H, W, 3]`` in place (boxes past ``T`` are ignored); returns it."""
    T, H, W = frames.shape[:3]
    s = default_scale(H, W) if scale is None else scale
    for tr in tracks:
        for t, (x1, y1, x2, y2) in tr.boxes.items():
            if 0 <= t < T:
                draw_label(frames[t], str(tr.id), (y1 + y2) / 2, (x1 + x2) / 2, s, pad)
    return frames


def draw_ids(src: str | Path, dst: str | Path, tracks: list[Track], scale: int | None = None, pad: int = 1,
             crf: int = 18) -> dict[str, Any]:
    """Decode ``src``, draw the tracks' ID labels (module docstring), write ``dst``; returns what was done.

    The summary: ``frames``, ``fps``, ``height``, ``width`` (of ``dst``), ``scale``, ``tracks``, ``labels``
    (label drawings), ``outside`` (boxes on frames the video does not have). A label that does not fit the
    frame is a :class:`TrackError`; decoding and encoding errors are
    :class:`reelrl.video.probe.VideoError` naming the file.
    """
    info = probe(src)
    frames = decode_frames(src, np.arange(info.num_frames))  # [T, H, W, 3]
    T, H, W = frames.shape[:3]
    frames = frames[:, : H - H % 2, : W - W % 2]  # [T, H', W', 3] even sizes for yuv420p
    s = default_scale(*frames.shape[1:3]) if scale is None else scale
    for tr in tracks:
        h, w = label_size(str(tr.id), s, pad)
        if h > frames.shape[1] or w > frames.shape[2]:
            raise TrackError(f"{src}: the label of track {tr.id} ({h}x{w} px at scale {s}) does not fit the "
                             f"{frames.shape[1]}x{frames.shape[2]} frames")
    draw_tracks(frames, tracks, s, pad)
    write_video(dst, np.ascontiguousarray(frames), info.fps, crf=crf)
    labels = sum(1 for tr in tracks for t in tr.boxes if 0 <= t < T)
    return {"frames": T, "fps": info.fps, "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "scale": s, "tracks": len(tracks), "labels": labels,
            "outside": sum(len(tr.boxes) for tr in tracks) - labels}


def _box(value: Any, where: str) -> BoxXYXY:
    """A finite ``[x1, y1, x2, y2]`` with ``x2 >= x1`` and ``y2 >= y1``, or a TrackError naming ``where``."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise TrackError(f"{where}: a box must be four finite numbers [x1, y1, x2, y2], got {value!r}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 < x1 or y2 < y1:
        raise TrackError(f"{where}: box {list(value)} has x2 < x1 or y2 < y1")
    return x1, y1, x2, y2


def parse_tracks(data: Any, where: str) -> list[Track]:
    """Tracks from the parsed JSON of a tracks file (module docstring); errors name ``where`` and the track."""
    if not isinstance(data, list):
        raise TrackError(f"{where}: expected a JSON list of tracks, got {type(data).__name__}")
    tracks, seen = [], set()
    for i, rec in enumerate(data):
        at = f"{where}: track {i}"
        if not isinstance(rec, dict) or set(rec) != {"id", "start_frame", "boxes"}:
            got = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise TrackError(f"{at}: needs exactly the keys id, start_frame, boxes, got {got}")
        tid, start, boxes = rec["id"], rec["start_frame"], rec["boxes"]
        for key, v in (("id", tid), ("start_frame", start)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TrackError(f"{at}: field {key} must be a non-negative integer, got {v!r}")
        if tid in seen:
            raise TrackError(f"{at}: duplicate id {tid}")
        seen.add(tid)
        if not isinstance(boxes, list):
            raise TrackError(f"{at}: field boxes must be a list, got {type(boxes).__name__}")
        tracks.append(Track(tid, {start + j: _box(b, f"{at} box {j}") for j, b in enumerate(boxes) if b is not None}))
    return tracks


def load_tracks(path: str | Path) -> list[Track]:
    """Read a tracks file (module docstring)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrackError(f"{p}: tracks file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrackError(f"{p}: not a JSON tracks file ({e})") from None
    return parse_tracks(data, str(p))
