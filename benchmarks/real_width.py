"""One RL step of a 2-layer Qwen2.5-VL at the 7B's real widths: CPU time per phase and peak memory.

    python benchmarks/real_width.py                  # frames 8 32; lora, full, full-bf16; fp32 compute
    python benchmarks/real_width.py --frames 8 --modes lora --dtype bfloat16

The checkpoint is ``reelrl tiny --family qwen2_5_vl`` at published width: the
7B's config (hidden 3584, 28 heads / 4 KV heads, MLP 18944, vocabulary 152064,
vision 1280 wide) with 2 language-model layers and 2 vision blocks, random
weights (about 1.6 B parameters: the untied embedding and LM head are 1.09 B
of them). Each mode is one ``reelrl`` RL stage (Pipeline, the trainer every
recipe uses) in its own process, at Video-R1's per-process training settings:
1 prompt x G = 8 completions, k3 KL beta 0.04 against a frozen reference,
frames of 128 x 28 x 28 pixels. Completions run to ``--max-new-tokens``
(no stop strings; random weights almost never sample EOS), far below
Video-R1's 768, to keep a CPU step in minutes.

Modes: ``lora`` (peft rank 16 on every linear layer of the language model,
vision frozen; the reference is the policy with adapters disabled), ``full``
(every weight, vision included; AdamW state in fp32, and fp32 master
weights when ``--dtype bfloat16``; the reference a frozen copy), ``full-bf16``
(every weight in bf16, ``model.master_weights=model``). A mode whose static
memory (weights, master copy, gradients, AdamW state, reference) exceeds the
machine's available memory is not started; its estimate is reported instead.
A bf16 mode is not started either where the CPU's bf16 matmul is over 10x
slower than its fp32 one (``--slow-bf16`` runs it anyway).

``--dtype float32`` is the default because a CPU without bf16 matrix units
(no AVX512-BF16 / AMX) runs bf16 matmuls on a generic kernel: the run first
times one LM-head-shaped matmul in both dtypes and prints the ratio.

Times are the trainer's phase timers of the measured step (``time/*`` in the
stage's metrics.jsonl; the step after ``--warmup`` unmeasured ones); peak
memory is the worker's max RSS. Results are written to ``--out`` as each mode
finishes and modes already there are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("lora", "full", "full-bf16")
PHASES = ("decode", "encode", "rollout", "logprob", "update")
RESULT_TAG = "BENCH_RESULT "
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens per completion (EOS disabled)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights / compute dtype (bf16 is for CPUs with bf16 matrix units, and GPUs)")
    ap.add_argument("--slow-bf16", action="store_true",
                    help="run bf16 modes even where the CPU's bf16 matmul is over 10x slower than fp32")
    ap.add_argument("--warmup", type=int, default=0, help="unmeasured steps before the measured one")
    ap.add_argument("--pixels", type=int, default=128 * 28 * 28, help="pixels per frame (Video-R1: 128x28x28)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--workdir", type=Path, default=Path(".cache/bench-real-width"))
    ap.add_argument("--out", type=Path, default=Path(".cache/bench-real-width/results.json"))
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per mode")
    ap.add_argument("--swap", action="store_true",
                    help="count free swap as available memory (for a mode larger than RAM; its times include paging)")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def prepare(args: argparse.Namespace) -> dict:
    """The gym videos and the real-width checkpoint, built once into ``--workdir``."""
    from reelrl.gym import GymSpec, generate_gym
    from reelrl.models.reduced import build_reduced

    args.workdir.mkdir(parents=True, exist_ok=True)
    n_rows = 1 + args.warmup
    spec = GymSpec(families=["count", "order", "direction", "color_change"], frames=max(args.frames), fps=8.0,
                   height=224, width=224, difficulty=0.3, count_mode="multiple_choice", seed=11)
    gym = args.workdir / f"gym-f{spec.frames}-n{n_rows}"
    if not (gym / "train.jsonl").is_file():
        generate_gym(gym, spec, n_rows, 1, 1, progress=False)
    model = args.workdir / "qwen2_5_vl-2l-published"
    if not (model / "config.json").is_file():
        build_reduced(model, "qwen2_5_vl", width="published", num_layers=2, vision_depth=2, dtype="bfloat16")
    return {"train": str(gym / "train.jsonl"), "model": str(model), "n_rows": n_rows}


def count_params(model_dir: str) -> dict:
    """Parameters of the checkpoint (meta device, nothing allocated) and of its LoRA adapters."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(model_dir))
    total = sum(p.numel() for p in model.parameters())
    lin = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "visual" not in n
           and not n.endswith("lm_head")]
    lora = sum(16 * (m.in_features + m.out_features) for m in lin)
    return {"total": total, "lora": lora}


def static_gib(mode: str, dtype: str, params: dict) -> float:
    """Memory held for the whole step before activations: weights, master copy, gradients, AdamW, reference."""
    n, w = params["total"], 2 if dtype == "bfloat16" else 4
    if mode == "lora":  # bf16/fp32 base, fp32 adapters + gradients + AdamW; the reference is the base itself
        return (n * w + params["lora"] * 16) / GIB
    master = 4 if mode == "full" and w == 2 else 0  # fp32 master copy of a half-precision model
    state = (4 + 8) if mode == "full" else (2 + 4)  # gradients + AdamW moments, fp32 or in the model's dtype
    return (n * w + n * (master + state) + n * w) / GIB  # last term: the frozen reference copy


def _meminfo_gib(field: str, path: str = "/proc/meminfo") -> float | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def available_gib(swap: bool = False) -> float:
    have = _meminfo_gib("MemAvailable")
    if have is None:
        return float("inf")
    return have + ((_meminfo_gib("SwapFree") or 0.0) if swap else 0.0)


class FootprintPeak:
    """Samples this process's resident plus swapped-out memory (VmRSS + VmSwap) every 0.2 s; max RSS alone
    undercounts a process that pages."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            rss, swap = (_meminfo_gib(f, "/proc/self/status") for f in ("VmRSS", "VmSwap"))
            self.peak = max(self.peak, (rss or 0.0) + (swap or 0.0))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def recipe(job: dict) -> dict:
    mode = job["mode"]
    return {
        "name": "bench-real-width", "seed": 0, "device": "cpu", "stages": ["rl"],
        "output_dir": str(Path(job["workdir"]) / "runs" / f"{mode}-f{job['frames']}"),
        "threads": job["threads"],
        "model": {"path": job["model"], "dtype": "bfloat16" if mode == "full-bf16" else job["dtype"],
                  "freeze_vision": mode == "lora",
                  "master_weights": "model" if mode == "full-bf16" else "float32",
                  "lora": {"enabled": mode == "lora", "r": 16, "alpha": 32}},
        "data": {"train": job["train"], "shuffle": False},
        "video": {"nframes": job["frames"], "min_pixels": job["pixels"], "max_pixels": job["pixels"]},
        "rl": {"steps": job["warmup"] + 1, "prompts_per_step": 1, "group_size": job["group_size"],
               "max_new_tokens": job["max_new_tokens"], "stop": [], "beta": 0.04,
               "optim": {"lr": 1e-6, "schedule": "constant"}},
        "eval": {"max_rows": 1},
        "logging": {"progress": False, "tensorboard": False},
        "checkpoint": {"every": 0},
    }


def worker(job: dict) -> None:
    """Subprocess: run the RL stage, print one tagged JSON line with the measured step."""
    from reelrl.config import config_from_dict
    from reelrl.pipeline import Pipeline

    cfg = config_from_dict(recipe(job))
    footprint = FootprintPeak()
    t0 = time.perf_counter()
    Pipeline(cfg).run()
    wall = time.perf_counter() - t0
    peak_with_swap = footprint.stop()
    lines = (Path(cfg.output_dir) / "0-rl" / "metrics.jsonl").read_text().splitlines()
    m = [json.loads(x) for x in lines if '"time/update"' in x][-1]
    phases = {p: m.get(f"time/{p}", 0.0) for p in PHASES}
    out = {"phases": phases, "step_s": sum(phases.values()), "stage_wall_s": wall,
           "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "peak_rss_swap_gib": peak_with_swap,
           "completion_tokens": m.get("completion/length")}
    print(RESULT_TAG + json.dumps(out), flush=True)


def run_worker(job: dict, timeout: int) -> dict:
    env = dict(os.environ)
    if job.get("threads"):
        env.update(OMP_NUM_THREADS=str(job["threads"]))
    try:
        proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(job)], capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}


def gemm_probe(threads: int | None) -> dict:
    """Seconds of one (700 x 3584) @ (3584 x 152064) matmul, the LM head of a short sequence, in fp32 and bf16."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    out = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(700, 3584, dtype=dt), torch.randn(3584, 1024, dtype=dt)
        t0 = time.perf_counter()
        a @ b
        out[name] = (time.perf_counter() - t0) * 152064 / 1024  # a slice of the head, scaled to the vocabulary
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._worker is not None:
        return worker(json.loads(args._worker))
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 150)
    with console.status("preparing the gym videos and the real-width checkpoint"):
        paths = prepare(args)
    params = count_params(paths["model"])
    probe = gemm_probe(args.threads)
    console.print(f"LM-head matmul: fp32 {probe['float32']:.2f} s, bf16 {probe['bfloat16']:.2f} s "
                  f"({probe['bfloat16'] / probe['float32']:.0f}x) on this CPU")
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"results": []}
    report.update(host=platform.node(), cpu_count=os.cpu_count(), params=params, gemm_probe_s=probe,
                  settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                            if k not in ("_worker", "out", "workdir", "timeout")})
    done = {(r["mode"], r["frames"]) for r in report["results"]}
    for frames in args.frames:
        for mode in args.modes:
            if (mode, frames) in done:
                continue
            need = static_gib(mode, "bfloat16" if mode == "full-bf16" else args.dtype, params)
            have = available_gib(args.swap)
            res: dict = {"mode": mode, "frames": frames, "static_gib": round(need, 1)}
            if args.swap and need > 0.9 * available_gib():
                res["paged"] = True  # larger than RAM: its times include swapping
            slow = probe["bfloat16"] / probe["float32"]
            bf16 = mode == "full-bf16" or args.dtype == "bfloat16"
            if need > 0.9 * have:
                res["skipped"] = (f"needs ~{need:.1f} GiB before activations, {have:.1f} GiB available"
                                  + ("" if args.swap else " (--swap counts swap)"))
            elif bf16 and slow > 10 and not args.slow_bf16:
                res["skipped"] = f"bf16 matmuls run {slow:.0f}x slower than fp32 on this CPU (--slow-bf16 runs it)"
            else:
                job = dict(mode=mode, frames=frames, workdir=str(args.workdir), threads=args.threads,
                           group_size=args.group_size, max_new_tokens=args.max_new_tokens, warmup=args.warmup,
                           pixels=args.pixels, dtype=args.dtype, **paths)
                with console.status(f"{mode}, {frames} frames"):
                    t0 = time.time()
                    res.update(run_worker(job, args.timeout), wall_s=round(time.time() - t0, 1))
            console.print(f"[dim]{mode} {frames} frames: {res.get('step_s', res.get('error') or res.get('skipped'))}")
            report["results"].append(res)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))
    print_table(report, console)


def print_table(report: dict, console) -> None:
    from rich.table import Table

    s = report["settings"]
    table = Table(title=f"one RL step, 2-layer Qwen2.5-VL at 7B widths ({report['params']['total'] / 1e9:.2f} B "
                        f"params), 1 prompt x G={s['group_size']}, {s['max_new_tokens']} new tokens, {s['dtype']}, "
                        f"{report['cpu_count']} CPU cores")
    for c in ("mode", "frames", *PHASES, "step s", "peak RSS GiB", "RSS+swap GiB", "static GiB"):
        table.add_column(c, justify="left" if c == "mode" else "right")
    for r in sorted(report["results"], key=lambda r: (r["frames"], MODES.index(r["mode"]))):
        if "step_s" not in r:
            table.add_row(r["mode"], str(r["frames"]), f"[red]{r.get('skipped') or r.get('error')}"[:160],
                          *[""] * (len(PHASES) + 2), f"{r['static_gib']:.1f}")
            continue
        both = r.get("peak_rss_swap_gib")
        table.add_row(r["mode"] + (" (paged)" if r.get("paged") else ""), str(r["frames"]),
                      *(f"{r['phases'][p]:.1f}" for p in PHASES), f"{r['step_s']:.1f}", f"{r['peak_gib']:.1f}",
                      f"{both:.1f}" if both else "", f"{r['static_gib']:.1f}")
    console.print(table)
    if any(r.get("paged") for r in report["results"]):
        console.print("(paged): larger than RAM, run with --swap; its times include swapping to disk")


if __name__ == "__main__":
    main()
