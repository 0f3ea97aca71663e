"""The frames a model saw, as one small JPEG strip per video (a ``data:`` URI), with reelrl's own sampling.

Each stage wrote the video sampling it resolved (``video_sampling.json``); the strip decodes the row's video
with :func:`reelrl.video.decode.load_video` under that sampling, so it shows the sampled frames at the size the
processor got them (before any frame transform a training hook applied; a group's ``variant`` names those).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reelrl.video.decode import VideoError, load_video
from reelrl.video.sample import VideoSampling


@dataclass(frozen=True)
class Strip:
    """A strip of sampled frames: its ``data:`` URI and a caption (frame count, rate, time range)."""

    uri: str
    caption: str


class FrameStrips:
    """Decodes each (video, sampling) once; ``max_frames`` frames at most per strip, ``height`` pixels high."""

    def __init__(self, max_frames: int = 16, height: int = 56, quality: int = 80,
                 search: tuple[Path, ...] = ()) -> None:
        self.max_frames, self.height, self.quality = max_frames, height, quality
        self.search = search  # folders a relative video path is tried under (after the working directory)
        self._cache: dict[tuple[str, str], Strip | str] = {}

    @staticmethod
    def sampling(stage_dir: Path) -> VideoSampling | None:
        """The stage's resolved video sampling, or None when it wrote none."""
        p = Path(stage_dir) / "video_sampling.json"
        return VideoSampling(**json.loads(p.read_text())) if p.is_file() else None

    def _resolve(self, video: str) -> Path:
        p = Path(video)
        if p.is_absolute() or p.is_file():
            return p
        return next((d / p for d in self.search if (d / p).is_file()), p)

    def strip(self, video: str | None, sampling: VideoSampling | None) -> Strip | str:
        """The strip of ``video``, or a sentence saying why there is none (no path, unreadable file)."""
        if not video:
            return "no video path recorded"
        if sampling is None:
            return "the stage wrote no video_sampling.json"
        key = (video, sampling.model_dump_json())
        if key not in self._cache:
            self._cache[key] = self._make(video, sampling)
        return self._cache[key]

    def _make(self, video: str, sampling: VideoSampling) -> Strip | str:
        path = self._resolve(video)
        if not path.is_file():
            return f"video not found: {path}"
        try:
            sv = load_video(path, sampling)
        except (VideoError, OSError) as e:
            return f"video not readable: {e}"
        frames = sv.frames  # [T, H, W, 3] uint8
        keep = np.unique(np.linspace(0, len(frames) - 1, min(self.max_frames, len(frames))).round().astype(int))
        h, w = frames.shape[1:3]
        tw = max(1, round(w * self.height / h))
        tiles = [Image.fromarray(frames[i]).resize((tw, self.height), Image.Resampling.BILINEAR) for i in keep]
        canvas = Image.new("RGB", (len(tiles) * (tw + 2) - 2, self.height), (255, 255, 255))
        for j, tile in enumerate(tiles):
            canvas.paste(tile, (j * (tw + 2), 0))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=self.quality)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        ts = sv.timestamps
        shown = f"{len(keep)} of {len(frames)}" if len(keep) < len(frames) else f"{len(frames)}"
        caption = (f"{shown} sampled frames ({w}x{h}), {sv.fps:.2f} fps, t = {ts[0]:.2f}-{ts[-1]:.2f} s "
                   f"of {path.name}")
        return Strip(uri, caption)
