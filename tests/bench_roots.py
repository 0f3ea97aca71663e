"""Benchmark roots for tests: the annotation fixtures of tests/fixtures/bench/<name> (the published schemas,
a few records each) copied with synthetic encoded videos at the paths each benchmark's layout names."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.videos_for_tests import blocks, write_raw

FIXTURES = Path(__file__).parent / "fixtures" / "bench"

#: the video files of each fixture, relative to its root, as the benchmark distributes them
VIDEOS: dict[str, list[str]] = {
    "videomme": ["data/fFjv93ACGo8.mp4", "data/8Jc5RNvXzlA.mp4", "data/Ck1bL3vFe2o.mp4"],
    "mvbench": ["video/star/Charades_segment/3FF5X.mp4", "video/star/Charades_segment/GQ4ZL.mp4",
                "video/clevrer/video_validation/video_10342.mp4", "video/clevrer/video_validation/video_11010.mp4",
                "video/clevrer/video_validation/video_12453.mp4"],
    "vsibench": ["arkitscenes/41069025.mp4", "scannet/scene0015_00.mp4", "scannetpp/09c1414f1b.mp4"],
    "longvideobench": ["videos/86CxyhFV9MI.mp4", "videos/Xq3tPzLp1.mp4"],
    "mmvu": ["videos/Computer_Science/12.mp4", "videos/Biology/3.mp4"],
    "clevrer": ["video_validation/video_10000-11000/video_10000.mp4",
                "video_validation/video_10000-11000/video_10001.mp4"],
    "video_holmes": ["videos/RSmjqss0XKQ.mp4", "videos/dGS48Kcax5k.mp4"],
}


def bench_root(name: str, dest: Path, videos: bool = True) -> Path:
    """``dest/name``: the fixture's annotations and (with ``videos``) a 16-frame 56x56 H.264 file per video."""
    root = dest / name
    shutil.copytree(FIXTURES / name, root)
    if videos:
        for i, rel in enumerate(VIDEOS[name]):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_raw(path, blocks(16, 56, 56, seed=i), rate=8)
    return root
