"""Long videos over several processes: step time and peak memory per rank for 1 process, dp=2 and sp=2 (MR-SP).

    python benchmarks/scaling.py                      # CPU, tiny model: 256 / 1024 / 4096 frames + budget search
    python benchmarks/scaling.py --frames 256 1024 --budget-mb 0        # no search
    python benchmarks/scaling.py --device cuda --dtype bfloat16 --model DIR --side 224   # 2 GPUs, a real shape

Every measurement is a real ``reelrl train`` run of one recipe (``python -m
reelrl`` for one process, ``torchrun --nproc-per-node 2 -m reelrl`` for two)
on rendered H.264 videos of N frames; the numbers are what the trainer logs in
``metrics.jsonl``. The layouts share the global batch (``--prompts`` prompts
of one N-frame video each, G completions of ``--max-new-tokens`` tokens):

* ``1``   one process does the whole step;
* ``dp2`` two data-parallel ranks, each with half the prompts (gradients summed);
* ``sp2`` one sequence-parallel group of two ranks (``parallel.sp=2``,
  ``parallel.sp_threshold`` below every prompt): every prompt's frames are
  encoded half per rank, and its prefill, log-prob and update passes run with
  Ulysses attention over the two ranks (MR-SP).

Step time: a run of ``--steps`` RL steps with ``logging.memory: peak``, the
mean wall time of the steps after the first (from the step timestamps of
``metrics.jsonl``), with the trainer's phase timers of rank 0. Peak memory per
rank: a one-step run with ``logging.memory: tensors``, the peak live bytes of
the tensors created during the step on the busiest rank
(``memory/tensors_peak_mb``, :mod:`reelrl.monitor.memory`): activations, KV
caches, logits, gradients, optimizer state; not the weights loaded before the
step. On GPU the CUDA allocator's peak is reported too (``memory/cuda_peak_gb``).

Budget search (``--budget-mb``, per-rank tensor memory): for layouts ``1``
and ``sp2`` the largest frame count (a multiple of ``--search-step``) whose
step fits the budget, found by doubling and then bisection. This is the point
of MR-SP: the activations of one long video are split over the SP group.

Results are cached in ``--workdir/results.json`` by (layout, frames, what was
measured), so an interrupted run continues where it stopped; ``--fresh``
discards them. The tables are printed and written to ``--out`` (markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"1": (1, {}), "dp2": (2, {"dp": 2}), "sp2": (2, {"sp": 2, "sp_threshold": 64})}
PHASES = ("decode", "encode", "rollout", "update")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[256, 1024, 4096], help="frames per video")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (the global batch)")
    ap.add_argument("--group-size", type=int, default=4, help="G: completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="steps of the timing run (the first is not timed)")
    ap.add_argument("--side", type=int, default=56, help="frame side in pixels (a multiple of 28)")
    ap.add_argument("--budget-mb", type=float, default=256.0,
                    help="per-rank tensor-memory budget of the search (0: no search)")
    ap.add_argument("--search-step", type=int, default=256, help="frame granularity of the search")
    ap.add_argument("--search-max", type=int, default=32768, help="largest frame count tried")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (one GPU per rank)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: the tiny Qwen2.5-VL, built)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "scaling")
    ap.add_argument("--out", type=Path, default=None, help="write the tables here (markdown)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    ap.add_argument("--fresh", action="store_true", help="forget the cached results")
    args = ap.parse_args(argv)
    if args.side % 28:
        ap.error(f"--side must be a multiple of 28, got {args.side}")
    if any(f % 2 for f in args.frames) or args.search_step % 2:
        ap.error("frame counts must be even (two frames per temporal patch)")
    return args


# ======================================================================== data and model


def video_rows(args: argparse.Namespace, frames: int) -> Path:
    """``--prompts`` rows, each with its own rendered video of ``frames`` frames (a square moving across)."""
    from reelrl.video.write import write_video

    out = args.workdir / "data" / f"f{frames}-s{args.side}"
    rows_path = out / "train.jsonl"
    if rows_path.is_file():
        return rows_path
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    side = args.side
    for k in range(args.prompts):
        rng = np.random.default_rng(frames * 10 + k)
        video = np.full((frames, side, side, 3), 40 + 30 * k, dtype=np.uint8)  # [T, H, W, 3]
        colour = rng.integers(80, 256, size=3).astype(np.uint8)
        size = side // 4
        for t in range(frames):
            x = int((side - size) * (0.5 + 0.5 * np.sin(2 * np.pi * t / max(8, frames // 4) + k)))
            y = int((side - size) * t / max(1, frames - 1))
            video[t, y : y + size, x : x + size] = colour
        path = write_video(out / f"v{k}.mp4", video, fps=8.0)
        rows.append({"id": f"long-{frames}-{k}", "video": str(path), "question": "Where does the square end?",
                     "options": ["top", "bottom", "left", "right"], "answer": "B",
                     "problem_type": "multiple_choice", "task": "long"})
    tmp = rows_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(rows_path)
    return rows_path


def tiny_model(args: argparse.Namespace) -> Path:
    from reelrl.models.tiny import build_tiny, default_corpus

    path = args.workdir / "tiny-qwen2.5-vl"
    if not (path / "config.json").is_file():
        build_tiny(path, list(default_corpus()) + ["Where does the square end?", "top bottom left right"])
    return path


def recipe(args: argparse.Namespace, frames: int, layout: str, memory: str, steps: int, run_dir: Path) -> Path:
    """The run's recipe file: RL on the long-video rows, with the layout's ``parallel`` section."""
    _, parallel = LAYOUTS[layout]
    tree = {
        "name": "scaling", "seed": 0, "output_dir": str(run_dir), "device": args.device, "threads": args.threads,
        "stages": ["rl"],
        "model": {"path": str(args.model), "dtype": args.dtype, "freeze_vision": True},
        "data": {"train": str(video_rows(args, frames)), "shuffle": False},
        "video": {"nframes": frames, "resized_height": args.side, "resized_width": args.side, "total_pixels": None},
        "rl": {"steps": steps, "prompts_per_step": args.prompts, "group_size": args.group_size,
               "max_new_tokens": args.max_new_tokens, "stop": [], "beta": 0.0, "temperature": 1.0,
               "prefetch": False, "skip_zero_advantage": False, "log_samples_every": 1000,
               "rewards": [{"name": "format"}], "optim": {"lr": 1e-5}},
        "logging": {"progress": False, "tensorboard": False, "memory": memory},
        "checkpoint": {"every": 0, "save_final_model": False},
        "parallel": parallel,
    }
    path = run_dir.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree))
    return path


# ======================================================================== runs


def run(args: argparse.Namespace, frames: int, layout: str, what: str) -> dict:
    """One ``reelrl train`` run; ``what`` = ``time`` (several steps) or ``memory`` (one step, tensor tracker)."""
    nproc, _ = LAYOUTS[layout]
    run_dir = args.workdir / "runs" / f"{layout}-f{frames}-{what}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    steps = args.steps if what == "time" else 1
    path = recipe(args, frames, layout, "peak" if what == "time" else "tensors", steps, run_dir)
    if nproc == 1:
        cmd = [sys.executable, "-m", "reelrl", "train", str(path)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "reelrl", "train", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2500:]
        if "out of memory" in tail.lower() or proc.returncode in (-9, 137):
            return {"oom": True, "wall_s": time.time() - t0}
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    rows = [json.loads(x) for x in (run_dir / "0-rl" / "metrics.jsonl").read_text().splitlines()]
    out: dict = {"wall_s": round(time.time() - t0, 1)}
    if what == "time":
        stamps = [r["time"] for r in rows]
        out["step_s"] = float(np.mean(np.diff(stamps))) if len(stamps) > 1 else None
        out["phases"] = {p: float(np.mean([r.get(f"time/{p}", 0.0) for r in rows[1:] or rows])) for p in PHASES}
        out["rss_gb"] = max(r.get("memory/rss_gb", 0.0) for r in rows)
        if "memory/cuda_peak_gb" in rows[0]:
            out["cuda_peak_gb"] = max(r["memory/cuda_peak_gb"] for r in rows)
    else:
        out["tensors_peak_mb"] = rows[0]["memory/tensors_peak_mb"]
    return out


class Results:
    """Measurements cached on disk by key, so the benchmark resumes where it stopped."""

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path = path
        self.data = {} if fresh or not path.is_file() else json.loads(path.read_text())

    def get(self, args: argparse.Namespace, frames: int, layout: str, what: str) -> dict:
        key = f"{layout}|{frames}|{what}|{args.side}|{args.prompts}x{args.group_size}x{args.max_new_tokens}|" \
              f"{args.device}|{args.dtype}|{args.model.name}"
        if key not in self.data:
            print(f"  run {layout:>3} {frames:>6} frames ({what}) ...", flush=True)
            self.data[key] = run(args, frames, layout, what)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.rename(self.path)
        return self.data[key]


def fits(res: Results, args: argparse.Namespace, frames: int, layout: str) -> bool:
    m = res.get(args, frames, layout, "memory")
    return not m.get("oom") and m["tensors_peak_mb"] <= args.budget_mb


def largest_fitting(res: Results, args: argparse.Namespace, layout: str) -> tuple[int | None, int | None]:
    """(largest frame count that fits, smallest tried that does not), at ``--search-step`` granularity."""
    step = args.search_step
    lo, hi = None, None
    f = step
    while f <= args.search_max:
        if fits(res, args, f, layout):
            lo, f = f, f * 2
        else:
            hi = f
            break
    if lo is None or hi is None:
        return lo, hi
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if fits(res, args, mid, layout):
            lo = mid
        else:
            hi = mid
    return lo, hi


# ======================================================================== report


def video_tokens(frames: int, side: int) -> int:
    return frames // 2 * (side // 28) ** 2


def tables(res: Results, args: argparse.Namespace, search: dict) -> str:
    lines = [f"Device {args.device}, {args.dtype}, model {args.model.name}; {args.prompts} prompts x G="
             f"{args.group_size} x {args.max_new_tokens} new tokens per step; frames {args.side}x{args.side} "
             f"({(args.side // 28) ** 2} visual tokens per 2 frames); {args.threads} thread(s) per process.", "",
             "| frames | video tokens | layout | step s | decode | encode | rollout | update | "
             "tensor peak / rank MB | vs 1 process |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for frames in args.frames:
        base = None
        for layout in args.layouts:
            t = res.get(args, frames, layout, "time")
            m = res.get(args, frames, layout, "memory")
            if t.get("oom") or m.get("oom"):
                lines.append(f"| {frames} | {video_tokens(frames, args.side)} | {layout} | out of memory | | | | | | |")
                continue
            peak = m["tensors_peak_mb"]
            base = peak if layout == "1" else base
            ratio = f"{peak / base:.2f}x" if base else "-"
            ph = t["phases"]
            lines.append(f"| {frames} | {video_tokens(frames, args.side)} | {layout} | {t['step_s']:.2f} | "
                         f"{ph['decode']:.2f} | {ph['encode']:.2f} | {ph['rollout']:.2f} | {ph['update']:.2f} | "
                         f"{peak:.1f} | {ratio} |")
    if search:
        lines += ["", f"Largest video whose step fits {args.budget_mb:.0f} MB of tensor memory per rank "
                      f"(search step {args.search_step} frames):", "",
                  "| layout | largest fitting frames | video tokens | first frame count over budget |", "|---|---|---|---|"]
        for layout, (lo, hi) in search.items():
            lines.append(f"| {layout} | {lo if lo is not None else 'none'} | "
                         f"{video_tokens(lo, args.side) if lo else '-'} | {hi if hi is not None else '> max'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        args.model = tiny_model(args)
    res = Results(args.workdir / "results.json", args.fresh)
    for frames in args.frames:
        for layout in args.layouts:
            res.get(args, frames, layout, "time")
            res.get(args, frames, layout, "memory")
    search = {}
    if args.budget_mb > 0:
        for layout in [x for x in args.layouts if x in ("1", "sp2")]:
            search[layout] = largest_fitting(res, args, layout)
    text = tables(res, args, search)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
