"""Latency and throughput of ``reelrl serve`` on localhost, and per-frame cost against episode length.

Starts ``reelrl serve MODEL`` (KV cache per episode) and ``reelrl serve MODEL --no-cache``
(the baseline that re-reads the whole episode for every frame) as subprocesses on free
ports, and drives them with :class:`reelrl.serve.client.ProgressClient` over HTTP:

1. bounded load: 1, 4 and 16 concurrent episodes, each a closed loop (a client sends its
   next frame when the previous one is answered), ``--frames`` frames each; throughput
   (frames/s over the phase) and p50 / p99 latency per added frame, and the server's mean
   batch size (frames per forward pass) in the phase;
2. per-frame latency against the episode's length: one episode of ``--length`` frames on
   each server, mean latency of the frames in each length bucket.

Without ``--model`` it builds the tiny Qwen2.5-VL checkpoint (``build_tiny`` defaults:
4 layers, hidden 128, random init) in a temporary directory. Prints markdown tables.

    python benchmarks/serve_latency.py [--model DIR] [--frames 32] [--length 64] [--size 112] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from reelrl.serve.client import ProgressClient

GOAL = "push the red block onto the green square"


def build_model(out: Path) -> Path:
    from reelrl.data.progress_prompt import PROGRESS_GOAL, PROGRESS_QUESTION, progress_target
    from reelrl.models.tiny import build_tiny, default_corpus

    texts = list(default_corpus()) + [PROGRESS_GOAL.format(goal=GOAL), PROGRESS_QUESTION]
    texts += [progress_target(i / 20) for i in range(21)]
    return build_tiny(out, texts, seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A ``reelrl serve`` subprocess."""

    def __init__(self, model: Path, threads: int, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "reelrl", "serve", str(model), "--port", str(self.port), "--threads",
               str(threads), "--max-episodes", "64", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(self.url + "/health", timeout=1)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"reelrl serve did not start: {self.proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def episode_frames(n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]  # [H, W, 3] each


def stream(url: str, frames: list[np.ndarray], lat: list[float]) -> None:
    """One closed-loop episode: each frame sent when the previous one is answered; latencies appended."""
    with ProgressClient(url) as c, c.episode(GOAL) as ep:
        for f in frames:
            t0 = time.perf_counter()
            ep.add_frame(f)
            lat.append(time.perf_counter() - t0)


def load_phase(srv: Served, concurrency: int, n_frames: int, size: int) -> dict:
    lats: list[list[float]] = [[] for _ in range(concurrency)]
    work = [episode_frames(n_frames, size, seed=100 * concurrency + i) for i in range(concurrency)]
    before = srv.health()
    threads = [threading.Thread(target=stream, args=(srv.url, work[i], lats[i])) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = srv.health()
    flat = np.array([x for lat in lats for x in lat]) * 1000  # [concurrency * n_frames] ms
    batches = after["batches"] - before["batches"]
    return {"concurrency": concurrency, "frames": len(flat), "throughput": len(flat) / wall,
            "p50": float(np.percentile(flat, 50)), "p99": float(np.percentile(flat, 99)),
            "mean_batch": (after["frames"] - before["frames"]) / max(batches, 1)}


def length_phase(srv: Served, length: int, size: int) -> list[float]:
    lat: list[float] = []
    stream(srv.url, episode_frames(length, size, seed=7), lat)
    return [x * 1000 for x in lat]  # [length] ms


def buckets(length: int) -> list[tuple[int, int]]:
    """Frame-index ranges (1-based, inclusive): the first 4 frames, then ending at each power of two."""
    out, end = [(1, 4)], 8
    while end <= length:
        out.append((end - 3, end))
        end *= 2
    if out[-1][1] != length:
        out.append((length - 3, length))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: build the tiny one)")
    ap.add_argument("--frames", type=int, default=32, help="frames per episode in the load phase")
    ap.add_argument("--length", type=int, default=64, help="episode length in the length phase")
    ap.add_argument("--size", type=int, default=112, help="frame side in pixels (a multiple of 28)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    model = args.model or build_model(Path(tmp.name) / "tiny")
    print(f"model {model if args.model else 'tiny (build_tiny defaults)'}; frames {args.size}x{args.size}; "
          f"server torch threads {args.threads}; {os.cpu_count()} CPUs\n")

    srv = Served(model, args.threads)
    try:
        stream(srv.url, episode_frames(4, args.size, 0), [])  # warm-up
        rows = [load_phase(srv, c, args.frames, args.size) for c in args.concurrency]
        cached = length_phase(srv, args.length, args.size)
    finally:
        srv.stop()
    base_srv = Served(model, args.threads, "--no-cache")
    try:
        stream(base_srv.url, episode_frames(4, args.size, 0), [])
        base = length_phase(base_srv, args.length, args.size)
    finally:
        base_srv.stop()

    print("| concurrent episodes | frames | throughput (frames/s) | p50 latency (ms) | p99 latency (ms) | "
          "mean batch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['frames']} | {r['throughput']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['mean_batch']:.1f} |")
    print(f"\nPer-frame latency (ms, mean of the frames in the range) of one episode of {args.length} frames:\n")
    print("| frames | KV cache (reelrl serve) | no cache (re-reads the episode) | ratio |")
    print("|---|---|---|---|")
    for lo, hi in buckets(args.length):
        c, b = float(np.mean(cached[lo - 1 : hi])), float(np.mean(base[lo - 1 : hi]))
        print(f"| {lo}-{hi} | {c:.1f} | {b:.1f} | {b / c:.1f}x |")
    first, last = np.mean(cached[:4]), np.mean(cached[-4:])
    print(f"\nKV cache: last 4 frames / first 4 = {last / first:.2f}; "
          f"no cache: {np.mean(base[-4:]) / np.mean(base[:4]):.2f}")


if __name__ == "__main__":
    main()
