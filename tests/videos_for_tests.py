"""Test videos: frames that carry their own index, and a writer for unusual files.

:func:`encode_index` draws a frame whose pixels spell its index: a 4x2 grid of
blocks holds the 8 bits of the index in black/white, and the grid below holds
the inverted bits, so every bit is read as a large brightness difference that
survives H.264 compression (and any resize).

:func:`write_raw` writes what :func:`reelrl.video.write.write_video` will not:
explicit timestamps (variable frame rate), a display matrix or ``rotate`` tag,
other pixel formats (10-bit, 4:4:4 for odd sizes), other containers.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def encode_index(i: int, side: int = 64) -> np.ndarray:
    """Frame ``[side, side, 3]`` uint8 whose blocks spell the 8 bits of ``i`` (and their inverse)."""
    a = np.zeros((side, side, 3), dtype=np.uint8)  # [H, W, 3]
    c = side // 4
    for b in range(8):
        r, col = divmod(b, 4)
        bit = (i >> b) & 1
        a[r * c : (r + 1) * c, col * c : (col + 1) * c] = 255 * bit
        a[2 * c + r * c : 2 * c + (r + 1) * c, col * c : (col + 1) * c] = 255 * (1 - bit)
    return a


def read_index(frame: np.ndarray) -> int:
    """Inverse of :func:`encode_index` for a frame of any size (reads the block centres)."""
    h, w = frame.shape[:2]
    gray = frame.astype(np.float64).mean(axis=2)  # [H, W]
    value = 0
    for b in range(8):
        r, col = divmod(b, 4)

        def centre(row: int) -> float:
            y, x = int((row + 0.5) * h / 4), int((col + 0.5) * w / 4)
            dy, dx = max(1, h // 16), max(1, w // 16)
            return float(gray[y - dy : y + dy, x - dx : x + dx].mean())

        on, off = centre(r), centre(2 + r)
        assert abs(on - off) > 150, f"bit {b} unreadable ({on:.0f} vs {off:.0f})"
        value |= int(on > off) << b
    return value


def codes(frames: np.ndarray) -> list[int]:
    """Frame indices read back from ``[T, H, W, 3]`` frames."""
    return [read_index(f) for f in frames]


def blocks(n: int, height: int, width: int, seed: int = 0, block: int = 8) -> np.ndarray:
    """``[n, height, width, 3]`` uint8 frames of random ``block``-pixel squares (any orientation error shows)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, -(-height // block), -(-width // block), 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, block, axis=1), block, axis=2)  # [n, >=H, >=W, 3]
    return np.ascontiguousarray(big[:, :height, :width])  # [n, H, W, 3]


def write_raw(
    path: str | Path,
    frames: np.ndarray,
    *,
    rate: int = 25,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    rotation: int | None = None,
    hflip: bool = False,
    tags: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` ``[T, H, W, 3]`` uint8 RGB with full control over timestamps and metadata.

    Args:
        pts: per-frame presentation timestamps in ``time_base`` units (default ``0, 1, 2, ...``
            with ``time_base = 1 / rate``).
        rotation: counter-clockwise display rotation written as the stream's display matrix.
        hflip: mirror after the rotation (display matrix).
        tags: stream metadata (e.g. ``{"rotate": "90"}``, kept by Matroska).
        options: encoder options (x264: single-threaded unless given).
    """
    p = Path(path)
    tb = time_base if time_base is not None else Fraction(1, rate)
    c = av.open(str(p), "w")
    try:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = pix_fmt
        s.time_base = tb
        s.codec_context.time_base = tb
        opts = {"x264-params": "threads=1"} if codec == "libx264" else {}
        if gop is not None:
            opts["g"] = str(gop)
        opts.update(options or {})
        s.options = opts
        if rotation is not None:
            s.set_display_rotation(rotation, hflip=hflip)
        for k, v in (tags or {}).items():
            s.metadata[k] = v
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")  # [H, W, 3]
            vf.pts = i if pts is None else pts[i]
            vf.time_base = tb
            for packet in s.encode(vf):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    finally:
        c.close()
    return p
