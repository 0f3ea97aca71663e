"""One GRPO step, phase by phase: reelrl vs the naive pipeline vs TRL's GRPOTrainer.

    python benchmarks/step.py --quick                          # CPU, tiny model, frames 16 and 64
    python benchmarks/step.py --device cuda --dtype bfloat16 \\
        --model-shape qwen2.5-vl-3b --frames 16 64 256 --out bench.json

Configurations (each runs in its own subprocess, so peak memory is its own):

* ``reelrl``       video encoded once per prompt and reused by the rollouts and
                   every log-prob pass (``rl.cache_vision``), one prefill whose KV
                   cache is forked G ways (``rl.share_prefix``), decode of row b+1
                   overlapping the rollout of row b (``rl.prefetch``);
* ``reelrl+batch`` the same with the update and reference passes batched over
                   the B prompts of the step (``rl.update_batch = B``: one
                   left-padded prefill and one completion pass instead of B);
* ``reelrl+disk``  the same as ``reelrl`` with a warm on-disk embedding cache
                   (``rl.vision_cache_dir``), i.e. a second epoch: the vision
                   tower does not run at all;
* ``naive``        the same code with the three switches off: G copies of the
                   prompt prefilled in one batch, the video encoded G times by
                   each pass (rollout, reference, update), no prefetch;
* ``trl``          TRL's ``GRPOTrainer`` on the same checkpoint and rows, with the
                   frames passed as images (TRL has no video path), if TRL is
                   installed; otherwise the reason is recorded.

All configurations train the language model with the vision tower frozen (as
most video-R1 recipes do; ``--train-vision`` changes that), sample exactly
``--max-new-tokens`` tokens per completion (EOS disabled), use beta=0.04 with a
frozen reference copy (so the log-prob phase exists in every configuration) and
one optimizer step per batch. Phases are reelrl's trainer timers: ``decode``
(video decode + processor; with prefetch, only the time the step waits for it),
``encode`` (vision tower), ``rollout``, ``logprob`` (reference / old policy),
``update`` (policy forward + backward + optimizer). ``other`` is the rest of the
step (rewards, advantages). Peak memory is the process's max RSS on CPU and
``torch.cuda.max_memory_allocated`` during the steps on GPU. MFU (GPU only) is
the update's ``6 * trainable-LM params * tokens processed (+ vision forward
flops)`` per second over ``--peak-tflops``; attention-score flops are ignored.

Every measured step uses new rows (the first epoch of the data), so nothing is
served from the in-memory prompt cache.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIGS = ("reelrl", "reelrl+batch", "reelrl+disk", "naive", "trl")
PHASES = ("decode", "encode", "rollout", "logprob", "update")
PEAK_TFLOPS = {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}  # H100 SXM dense (fp32 without TF32)

#: Qwen2.5-VL-3B-Instruct's shape (random init; nothing downloaded). Vocabulary padded to Qwen's size.
QWEN25_VL_3B = dict(
    text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                fullatt_block_indexes=[7, 15, 23, 31]),
)
RESULT_TAG = "BENCH_RESULT "


# ======================================================================== parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=None,
                    help="frames sampled per video (default 16 64 256; --quick: 16 64)")
    ap.add_argument("--group-size", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--prompts", type=int, default=2, help="B: prompts per step")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens per completion (EOS disabled)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="default: float32 on CPU, bfloat16 on GPU")
    ap.add_argument("--model-shape", default="tiny", choices=["tiny", "qwen2.5-vl-3b"],
                    help="tiny Qwen2.5-VL (CPU) or a random-init Qwen2.5-VL-3B shape (GPU)")
    ap.add_argument("--side", type=int, default=None,
                    help="frame side in pixels, a multiple of 28 (default 112 tiny, 224 for 3b)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--steps", type=int, default=2, help="measured steps per configuration")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0: no reference model)")
    ap.add_argument("--train-vision", action="store_true", help="train the vision tower too (no disk cache)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--trl-images", default="match-tokens", choices=["match-tokens", "all"],
                    help="frames TRL gets as images: every other frame (same visual tokens as the video) or all")
    ap.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak for MFU (default: H100 SXM)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: all cores)")
    ap.add_argument("--workdir", type=Path, default=Path(".cache/bench"), help="gym, checkpoints, caches")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per configuration run")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="frames 16 64, 1 warmup + 1 measured step (CPU smoke run)")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.frames is None:
        args.frames = [16, 64] if args.quick else [16, 64, 256]
    if args.quick:
        args.steps, args.warmup = 1, 1
    if args.side is None:
        args.side = 112 if args.model_shape == "tiny" else 224
    if args.side % 28:
        ap.error(f"--side must be a multiple of 28, got {args.side}")
    if max(args.frames) > 512:
        ap.error("--frames above 512 exceed the gym's video length")
    return args


def resolve(args: argparse.Namespace) -> tuple[str, str]:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {device}: CUDA is not available here")
    dtype = args.dtype or ("float32" if device == "cpu" else "bfloat16")
    return device, dtype


def prepare(args: argparse.Namespace, device: str, dtype: str) -> dict[str, Any]:
    """Build (once, reused across runs) the gym videos and the checkpoint; returns their paths."""
    from reelrl.data.schema import load_jsonl
    from reelrl.gym import GymSpec, generate_gym
    from reelrl.models.tiny import build_tiny, default_corpus

    n_rows = args.prompts * (args.warmup + args.steps)
    args.workdir.mkdir(parents=True, exist_ok=True)
    spec = GymSpec(families=["count", "order", "direction", "color_change"], frames=max(args.frames), fps=8.0,
                   height=args.side, width=args.side, difficulty=0.3, count_mode="multiple_choice", seed=11)
    gym_dir = args.workdir / f"gym-f{spec.frames}-s{args.side}-n{n_rows}"
    if not (gym_dir / "train.jsonl").is_file():
        generate_gym(gym_dir, spec, n_rows, 1, 1, progress=False)
    rows = load_jsonl(gym_dir / "train.jsonl")
    tiny_dir = args.workdir / "tiny-qwen2.5-vl"
    if not (tiny_dir / "config.json").is_file():
        texts = list(default_corpus()) + [r.prompt_text() for r in rows]
        build_tiny(tiny_dir, texts)
    model_dir = tiny_dir
    if args.model_shape == "qwen2.5-vl-3b":
        model_dir = args.workdir / f"qwen2.5-vl-3b-random-{dtype}"
        if not (model_dir / "config.json").is_file():
            _run_worker({"kind": "build_3b", "tiny": str(tiny_dir), "out": str(model_dir), "device": device,
                         "dtype": dtype}, args.timeout)
    return {"train": str(gym_dir / "train.jsonl"), "model": str(model_dir), "n_rows": n_rows}


def _run_worker(job: dict, timeout: int) -> dict:
    """Run one job in a fresh interpreter; returns its result dict or {"error": ...}."""
    cmd = [sys.executable, __file__, "--_worker", json.dumps(job)]
    env = dict(os.environ)
    if job.get("threads"):
        env.update(OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._worker is not None:
        return worker(json.loads(args._worker))
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    device, dtype = resolve(args)
    t0 = time.time()
    with console.status("preparing gym videos and checkpoint"):
        paths = prepare(args, device, dtype)
    console.print(f"[dim]prepared {paths['model']} and {paths['n_rows']} videos in {time.time() - t0:.0f} s")
    peak = args.peak_tflops or PEAK_TFLOPS[dtype]
    results: list[dict] = []
    for frames in args.frames:
        for name in args.configs:
            if name == "reelrl+disk" and args.train_vision:
                results.append({"frames": frames, "config": name, "skipped": "the disk cache needs a frozen tower"})
                continue
            job = dict(kind="trl" if name == "trl" else "reelrl", config=name, frames=frames, device=device,
                       dtype=dtype, group_size=args.group_size, prompts=args.prompts,
                       max_new_tokens=args.max_new_tokens, steps=args.steps, warmup=args.warmup, beta=args.beta,
                       train_vision=args.train_vision, gradient_checkpointing=args.gradient_checkpointing,
                       side=args.side, threads=args.threads, trl_images=args.trl_images,
                       workdir=str(args.workdir), peak_tflops=peak, **paths)
            with console.status(f"frames={frames} {name}"):
                t1 = time.time()
                res = _run_worker(job, args.timeout)
            res.update(frames=frames, config=name, wall_s=round(time.time() - t1, 1))
            status = f"step {res['step_s']:.2f} s" if "step_s" in res else res.get("error", res.get("skipped", ""))
            console.print(f"[dim]frames={frames} {name}: {status} (run {res['wall_s']} s)")
            results.append(res)
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "_worker"},
        "device": device, "dtype": dtype, "host": platform.node(), "cpu_count": os.cpu_count(),
        "gpu": _gpu_name(device), "peak_tflops": peak, "results": results,
        "comparability": COMPARABILITY,
    }
    print_tables(report, console)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.out}")


COMPARABILITY = [
    "reelrl, reelrl+disk and naive run the same trainer code on the same rows, seeds and tokens "
    "(fixed completion length); only the switches differ, so their phases compare one to one.",
    "trl is TRL's GRPOTrainer on the same checkpoint and rows, but the frames go in as images (TRL has no video "
    "path): with --trl-images match-tokens it gets every other frame so its visual-token count equals the video's; "
    "image tokens carry no temporal RoPE spacing. Its decode column is the dataset's video decode (memoised over "
    "the G repeats of a prompt) plus the processor call; the vision tower runs inside generate, so encode is "
    "counted in rollout; update is the step minus generation/scoring. Compare its step total, not phase by phase.",
    "TRL's defaults that would change the work were aligned: no gradient checkpointing (unless asked), "
    "beta as given, one generation per optimizer step, min_new_tokens = max_new_tokens.",
]


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def print_tables(report: dict, console) -> None:
    from rich.table import Table

    gpu = report["device"].startswith("cuda")
    for frames in sorted({r["frames"] for r in report["results"]}):
        rows = [r for r in report["results"] if r["frames"] == frames]
        base = next((r for r in rows if r["config"] == "naive" and "step_s" in r), None)
        table = Table(title=f"one GRPO step, {frames} frames, G={report['args']['group_size']}, "
                            f"B={report['args']['prompts']}, {report['args']['max_new_tokens']} new tokens "
                            f"({report['device']}, {report['dtype']}, {report['args']['model_shape']})")
        cols = ["config", *PHASES, "other", "step s", "speedup", "peak MB", "prompt tok"]
        if gpu:
            cols.append("update MFU")
        for c in cols:
            table.add_column(c, justify="left" if c == "config" else "right")
        for r in rows:
            if "step_s" not in r:
                table.add_row(r["config"], f"[red]{r.get('error') or r.get('skipped')}"[:200], *[""] * (len(cols) - 2))
                continue
            cells = [r["config"]]
            for p in PHASES:
                v = r["phases"].get(p)
                cells.append("-" if v is None else f"{v:.2f}")
            cells += [f"{r['other_s']:.2f}", f"{r['step_s']:.2f}",
                      f"{base['step_s'] / r['step_s']:.2f}x" if base else "-",
                      f"{r['peak_mb']:.0f}", str(r.get("prompt_tokens", "-"))]
            if gpu:
                cells.append("-" if r.get("update_mfu") is None else f"{100 * r['update_mfu']:.1f}%")
            table.add_row(*cells)
        console.print(table)
    console.print("[dim]seconds per step; speedup = naive step time / step time; peak MB = max RSS (CPU) or "
                  "max CUDA memory allocated during the steps (GPU)")
    for line in report["comparability"]:
        console.print(f"[dim]- {line}")


# ======================================================================== workers


def worker(job: dict) -> None:
    """Entry point of a subprocess: run the job, print one tagged JSON line."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    kind = job["kind"]
    try:
        out = {"build_3b": build_3b, "reelrl": run_reelrl, "trl": run_trl}[kind](job)
    except torch.OutOfMemoryError as e:
        out = {"error": f"out of memory: {str(e).splitlines()[0]}"}
    except ImportError as e:
        out = {"error": f"cannot run: {e}"}
    print(RESULT_TAG + json.dumps(out), flush=True)


def build_3b(job: dict) -> dict:
    """Write a random-init checkpoint of Qwen2.5-VL-3B's shape, with the tiny tokenizer and processor files."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from reelrl.models.tiny import (
        _mrope_section,  # 128-dim heads -> [16, 24, 24], Qwen2.5-VL's own
    )

    tiny = Path(job["tiny"])
    small = Qwen2_5_VLConfig.from_pretrained(tiny)
    text = {k: v for k, v in small.text_config.to_dict().items() if k != "layer_types"}  # derived per depth
    text.update(QWEN25_VL_3B["text"])
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text["rope_parameters"] = {**small.text_config.rope_parameters, "mrope_section": _mrope_section(head_dim)}
    vision = {**small.vision_config.to_dict(), **QWEN25_VL_3B["vision"]}
    ids = {k: getattr(small, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                          "vision_end_token_id")}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, k, getattr(small, k, None))
    torch.manual_seed(0)
    with torch.device(job["device"]):
        model = Qwen2_5_VLForConditionalGeneration(config).to(getattr(torch, job["dtype"]))
    out = Path(job["out"])
    model.save_pretrained(out)
    for f in tiny.iterdir():
        if f.is_file() and not f.name.startswith(("model", "config.json", "README")):
            shutil.copy(f, out / f.name)
    return {"params": sum(p.numel() for p in model.parameters())}


def _memory(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _recipe(job: dict, cache_dir: Path | None) -> dict:
    fast = job["config"] != "naive"
    return {
        "name": "bench", "seed": 0, "output_dir": str(Path(job["workdir"]) / "runs" / job["config"]),
        "device": job["device"], "stages": ["rl"],
        "model": {"path": job["model"], "dtype": job["dtype"], "freeze_vision": not job["train_vision"],
                  "gradient_checkpointing": job["gradient_checkpointing"]},
        "data": {"train": job["train"], "shuffle": False},
        "video": {"nframes": job["frames"], "resized_height": job["side"], "resized_width": job["side"]},
        "rl": {"steps": job["warmup"] + job["steps"], "prompts_per_step": job["prompts"],
               "group_size": job["group_size"], "max_new_tokens": job["max_new_tokens"], "stop": [],
               "beta": job["beta"], "cache_vision": fast, "share_prefix": fast, "prefetch": fast,
               "vision_cache_dir": str(cache_dir) if cache_dir else None, "optim": {"lr": 1e-6},
               "update_batch": job["prompts"] if job["config"] == "reelrl+batch" else 1},
        "logging": {"progress": False, "tensorboard": False},
    }


def _lm_params(model) -> tuple[int, int]:
    """(language-model parameters incl. embeddings, vision-tower parameters)."""
    from reelrl.models.load import find_vision_tower

    _, tower = find_vision_tower(model)
    vis = sum(p.numel() for p in tower.parameters())
    return sum(p.numel() for p in model.parameters()) - vis, vis


def run_reelrl(job: dict) -> dict:
    """Time ``warmup + steps`` train steps of reelrl's trainer with the job's switches."""
    import torch

    from reelrl.config import config_from_dict
    from reelrl.data.schema import load_jsonl
    from reelrl.pipeline import Pipeline, seed_everything
    from reelrl.train.rl import ReferencePolicy, RLTrainer

    cache_dir = None
    if job["config"] == "reelrl+disk":
        cache_dir = Path(job["workdir"]) / "embed-cache" / f"f{job['frames']}-{os.getpid()}"
        shutil.rmtree(cache_dir, ignore_errors=True)
    cfg = config_from_dict(_recipe(job, cache_dir))
    seed_everything(0)
    pipe = Pipeline(cfg)
    vlm, processor = pipe.load(for_training=True)
    reference = None
    if cfg.rl.beta > 0:
        ref, _ = pipe.load(for_training=False)
        ref.model.requires_grad_(False)
        reference = ReferencePolicy(vlm, ref)
    enc = pipe.encoder(processor)
    rows = load_jsonl(cfg.data.train)[: job["n_rows"]]
    trainer = RLTrainer(cfg, vlm, processor.tokenizer, enc, rows, Path(cfg.output_dir), reference)
    trainer.sampling = dataclasses.replace(trainer.sampling, eos_ids=(), stop_seqs=())  # fixed length
    if trainer.vision_cache is not None:  # a previous epoch filled the cache
        with torch.no_grad():
            for row in rows:
                trainer.vision_cache.encode(vlm, enc.encode(row))
        enc._cache.clear()
        trainer.vision_cache.stats = type(trainer.vision_cache.stats)()
    if job["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(job["device"]))
    measured: list[dict] = []
    prompt_lens: list[int] = []
    for i in range(job["warmup"] + job["steps"]):
        _sync(job["device"])
        t0 = time.perf_counter()
        metrics = trainer.train_step()
        _sync(job["device"])
        dt = time.perf_counter() - t0
        trainer.step_idx += 1
        if i >= job["warmup"]:
            measured.append({**metrics, "step_s": dt})
    enc.close()
    for row in rows:
        p = enc._cache.get(f"{row.id}||")
        if p is not None:
            prompt_lens.append(p.length)
    phases = {p: _mean(m.get(f"time/{p}", 0.0) for m in measured) for p in PHASES}
    step_s = _mean(m["step_s"] for m in measured)
    out = {"phases": phases, "step_s": step_s, "other_s": max(0.0, step_s - sum(phases.values())),
           "peak_mb": _memory(job["device"]), "prompt_tokens": round(_mean(prompt_lens)) if prompt_lens else None,
           "completion_tokens": job["max_new_tokens"], "reward_mean": _mean(m["reward/mean"] for m in measured)}
    if trainer.vision_cache is not None:
        out["disk_cache"] = dataclasses.asdict(trainer.vision_cache.stats)
    out["update_mfu"] = _update_mfu(job, vlm.model, out, phases["update"]) if job["device"] != "cpu" else None
    return out


def _update_mfu(job: dict, model, out: dict, update_s: float) -> float | None:
    """Model-flops utilisation of the update phase (see module docstring)."""
    if not out.get("prompt_tokens") or update_s <= 0:
        return None
    lm, vis = _lm_params(model)
    b, g, p, t = job["prompts"], job["group_size"], out["prompt_tokens"], job["max_new_tokens"]
    fast = job["config"] != "naive"
    tokens = b * (p + g * t) if fast else b * g * (p + t)
    patches = job["frames"] * (job["side"] // 14) ** 2  # vision patches per video
    vision_passes = (0 if fast else b * g) if not job["train_vision"] else (b if fast else b * g)
    vision_flops = (6 if job["train_vision"] else 2) * vis * patches * vision_passes
    return (6 * lm * tokens + vision_flops) / update_s / (job["peak_tflops"] * 1e12)


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def run_trl(job: dict) -> dict:
    """Time ``warmup + steps`` steps of TRL's GRPOTrainer on the same checkpoint and rows (frames as images)."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        import datasets
        import trl
        from trl import GRPOConfig, GRPOTrainer
        from trl.extras import profiling
    except ImportError as e:
        return {"error": f"TRL not installed ({e}); pip install trl --no-deps plus datasets"}
    from transformers import Qwen2_5_VLProcessor, TrainerCallback
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from reelrl.data.schema import load_jsonl
    from reelrl.models.load import freeze_vision_tower, load_model_and_processor
    from reelrl.pipeline import seed_everything
    from reelrl.video.decode import load_video
    from reelrl.video.sample import VideoSampling

    seed_everything(0)
    model, rp = load_model_and_processor(job["model"], dtype=job["dtype"], device=job["device"])
    if not job["train_vision"]:
        freeze_vision_tower(model)
    side, spec = job["side"], rp.spec
    image_proc = Qwen2VLImageProcessorPil(
        min_pixels=side * side, max_pixels=side * side, patch_size=spec.patch_size,
        temporal_patch_size=spec.temporal_patch_size, merge_size=spec.merge_size,
        image_mean=list(spec.image_mean), image_std=list(spec.image_std),
    )


    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        """transformers' Qwen2.5-VL processor without its video half (which needs torchvision)."""

        def check_argument_for_proper_class(self, name, arg):
            return None

    processor = ImageOnlyProcessor(image_processor=image_proc, tokenizer=rp.tokenizer, video_processor=None,
                                   chat_template=rp.chat_template)
    sampling = VideoSampling(nframes=job["frames"], resized_height=side, resized_width=side)
    rows = load_jsonl(job["train"])[: job["n_rows"]]
    timers: dict[str, float] = {}
    stride = 2 if job["trl_images"] == "match-tokens" else 1

    @contextlib.contextmanager
    def timed(name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            timers[name] = timers.get(name, 0.0) + time.perf_counter() - t0

    memo: dict[str, Any] = {"idx": None, "images": None}

    def to_prompts(batch: dict) -> dict:
        """Lazy transform of a datasets.Dataset: decode the video (once per prompt, memoised over its G repeats)."""
        prompts = []
        for i in batch["idx"]:
            with timed("decode"):
                if memo["idx"] != i:
                    frames = load_video(rows[i].video, sampling).frames[::stride]  # [T/stride, H, W, 3]
                    memo.update(idx=i, images=[Image.fromarray(np.ascontiguousarray(f)) for f in frames])
            content = [{"type": "image", "image": im} for im in memo["images"]]
            content.append({"type": "text", "text": rows[i].prompt_text()})
            prompts.append([{"role": "user", "content": content}])
        return {"prompt": prompts, "answer": [rows[i].answer for i in batch["idx"]]}

    dataset = datasets.Dataset.from_dict({"idx": list(range(len(rows)))}).with_transform(to_prompts)

    def reward_len(completions, **kw) -> list[float]:
        return [float(len(c[0]["content"]) % 7) for c in completions]

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            _sync(job["device"])
            step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync(job["device"])
            step_ends.append(time.perf_counter())
            snapshots.append(dict(timers))

    snapshots: list[dict] = []
    in_gen = [False]

    def log_metrics(self, duration: float) -> None:  # TRL's profiling timers, kept instead of sent to a tracker
        name = "prof:" + self.name.split(".", 1)[-1] + ("@gen" if in_gen[0] else "")
        timers[name] = timers.get(name, 0.0) + duration

    real_log = profiling.ProfilingContext._log_metrics
    profiling.ProfilingContext._log_metrics = log_metrics
    cpu = job["device"] == "cpu"
    args = GRPOConfig(
        output_dir=str(Path(job["workdir"]) / "runs" / "trl"), report_to="none", save_strategy="no",
        use_cpu=cpu, bf16=job["dtype"] == "bfloat16", fp16=job["dtype"] == "float16",
        gradient_checkpointing=job["gradient_checkpointing"],
        per_device_train_batch_size=job["prompts"] * job["group_size"],
        gradient_accumulation_steps=1, num_generations=job["group_size"], max_completion_length=job["max_new_tokens"],
        generation_kwargs={"min_new_tokens": job["max_new_tokens"]}, temperature=1.0, top_p=1.0,
        beta=job["beta"], learning_rate=1e-6, max_steps=job["warmup"] + job["steps"], logging_steps=1,
        shuffle_dataset=False, disable_tqdm=True, dataloader_num_workers=0, seed=0, remove_unused_columns=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_len], args=args, train_dataset=dataset,
                          processing_class=processor, callbacks=[StepClock()])
    prompt_lens: list[int] = []
    real_tok = trainer._tokenize_prompts

    def tokenize(prompts):
        with timed("preprocess"):
            ids, images, fields = real_tok(prompts)
        prompt_lens.extend(len(x) for x in ids)
        return ids, images, fields

    trainer._tokenize_prompts = tokenize
    real_gen = trainer._generate_and_score_completions

    def gen_and_score(inputs):
        in_gen[0] = True
        try:
            with timed("generate_and_score"):
                return real_gen(inputs)
        finally:
            in_gen[0] = False

    trainer._generate_and_score_completions = gen_and_score
    if job["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(job["device"]))
    try:
        trainer.train()
    finally:
        profiling.ProfilingContext._log_metrics = real_log
    # per measured step: differences of the cumulative timers between step ends
    w = job["warmup"]
    before = snapshots[w - 1] if w > 0 else {}
    after = snapshots[-1]
    n = len(snapshots) - w
    d = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / n for k in after}
    step_s = (step_ends[-1] - step_ends[w]) / n
    rollout = d.get("prof:transformers.generate@gen", 0.0)
    logprob = d.get("prof:_get_per_token_logps_and_entropies@gen", 0.0)  # reference (and old) log-probs
    gen = d.get("generate_and_score", 0.0)
    phases = {"decode": d.get("decode", 0.0) + d.get("preprocess", 0.0), "encode": None, "rollout": rollout,
              "logprob": logprob, "update": max(0.0, step_s - gen - d.get("decode", 0.0))}
    other = max(0.0, gen - rollout - logprob - d.get("preprocess", 0.0))  # rewards, advantages, padding
    return {"phases": phases, "step_s": step_s, "other_s": other, "peak_mb": _memory(job["device"]),
            "prompt_tokens": round(_mean(prompt_lens)) if prompt_lens else None,
            "completion_tokens": _mean(h["completions/mean_length"] for h in trainer.state.log_history
                                       if "completions/mean_length" in h) or None,
            "trl_version": trl.__version__,
            "images_per_prompt": len(range(0, job["frames"], stride)),
            "note": "encode (vision tower) runs inside generate: counted in rollout; update = step - generation"}


if __name__ == "__main__":
    main()
