"""Run a recipe with 3 seeds and print chance / SFT-only / SFT+GRPO held-out accuracy.

    python benchmarks/seeds.py [--recipe quickstart] [--seeds 0 1 2] [--jobs 2] [--threads T] [--out DIR] [key=value ...]

Each seed is a full `reelrl train RECIPE seed=S` run (SFT -> eval -> GRPO ->
eval) in runs/<recipe>-seeds/seed<S>. The gym and the tiny checkpoint are
shared and built once. The verdict compares the mean gain of SFT+GRPO over
SFT-only with the seed spread (max - min across seeds) of each arm; a progress
critic's rows (primo_r1) also get their MAE and failure-detection accuracy, and
the verdict on the MAE (lower is better). For a
grounding gym the accuracy is the mIoU; a recipe with ``eval.levels``
(SEED-Bench-R1) gets one table and one verdict per level.

Resumable: a seed whose run wrote summary.json is not run again, and a seed
whose run was interrupted continues from its last checkpoint (``--resume``).
Across machines: a finished seed's small results (summary.json, summary.md,
each stage's eval.json, the overrides it ran with) are also kept in
benchmarks/results/<out dir name>/seed<S>/, meant to be committed; a fresh
clone restores a seed from there instead of running it again, when it was run
with the same overrides (``--no-keep`` turns this off).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table


RESULTS = Path(__file__).with_name("results")
"""Where finished seeds' small results are kept (module docstring)."""
KEPT = ("summary.json", "summary.md", "*/eval.json", "*/*/eval.json")


def keep_results(run: Path, kept: Path, overrides: list[str]) -> None:
    """Copy a finished run's summary and eval files (KBs, no checkpoints) to ``kept``."""
    for pattern in KEPT:
        for f in run.glob(pattern):
            dst = kept / f.relative_to(run)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
    (kept / "overrides.json").write_text(json.dumps(overrides))
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if rev.returncode == 0:  # the code the seed ran (results are exact for it; later code may round differently)
        (kept / "commit").write_text(rev.stdout)


def restore_results(run: Path, kept: Path, overrides: list[str]) -> bool:
    """Restore a seed kept by an earlier machine into ``run``; False when none was kept with these overrides."""
    if not (kept / "summary.json").is_file() or not (kept / "overrides.json").is_file():
        return False
    if json.loads((kept / "overrides.json").read_text()) != overrides:
        print(f"{kept} was run with other overrides; running the seed again", file=sys.stderr)
        return False
    shutil.copytree(kept, run, dirs_exist_ok=True)
    return True


def run_seed(recipe: str, seed: int, out: Path, overrides: list[str], threads: int,
             keep: Path | None = RESULTS) -> tuple[int, float, int]:
    """Run (or resume, or restore) one seed of ``recipe`` in ``out/seed<seed>``: (seed, wall seconds, exit code)."""
    run = out / f"seed{seed}"
    kept = keep / out.name / f"seed{seed}" if keep is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if (run / "summary.json").is_file() or (kept is not None and restore_results(run, kept, overrides)):
        return seed, 0.0, 0
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "reelrl.cli", "train", recipe, f"seed={seed}",
           f"output_dir={run}", "logging.progress=false", *overrides]
    if run.exists():
        cmd.append("--resume")
    t0 = time.time()
    log = open(out / f"seed{seed}.log", "a")
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc == 0 and kept is not None:
        keep_results(run, kept, overrides)
    return seed, time.time() - t0, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="seeds run in parallel (each with cores/jobs threads)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per seed (default cores/jobs; lower it when other jobs share the machine)")
    ap.add_argument("--out", type=Path, default=None, help="default runs/<recipe>-seeds")
    ap.add_argument("--no-keep", action="store_true", help=f"do not keep or restore finished seeds in {RESULTS}")
    ap.add_argument("overrides", nargs="*", help="recipe overrides passed to every seed")
    args = ap.parse_args()
    args.out = args.out or Path(f"runs/{Path(args.recipe).stem}-seeds")
    args.out.mkdir(parents=True, exist_ok=True)

    from reelrl.pipeline import load_recipe, prepare_data, prepare_model

    cfg = load_recipe(args.recipe, args.overrides)
    prepare_data(cfg)  # shared by every seed: build once, before the parallel runs
    prepare_model(cfg)

    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda s: run_seed(args.recipe, s, args.out, args.overrides, threads,
                                                      None if args.no_keep else RESULTS), args.seeds))
    failed = [s for s, _, rc in done if rc != 0]
    if failed:
        sys.exit(f"seeds {failed} failed; see {args.out}/seed<S>.log")

    summaries = {s: json.loads((args.out / f"seed{s}" / "summary.json").read_text()) for s in args.seeds}
    console = Console()
    name = Path(args.recipe).stem
    result: dict = {"recipe": args.recipe, "seeds": args.seeds, "wall_s": {s: t for s, t, _ in done}}
    levels = summaries[args.seeds[0]].get("levels")
    if levels:  # eval.levels: one table per level, chance from the level's gym
        result["levels"] = {}
        for level in levels:
            per_seed = {s: [{"model": r["model"], **r["levels"][level]} for r in summaries[s]["rows"]]
                        for s in args.seeds}
            result["levels"][level] = report(console, f"{name} {level}", per_seed, args.seeds)
    else:
        result.update(report(console, name, {s: summaries[s]["rows"] for s in args.seeds}, args.seeds))
    console.print("wall time per seed: " + ", ".join(f"seed {s}: {t / 60:.1f} min" for s, t, _ in done))
    (args.out / "seeds.json").write_text(json.dumps(result, indent=2))


EXTRA = ("progress_mae", "failure_accuracy", "id_accuracy", "mIoU")
"""Metrics some recipes' summary rows carry besides accuracy (a progress critic's MAE and failure detection;
object-ID grounding's ID accuracy and span mIoU, its accuracy being the m_vIoU)."""
VERDICTS = (("accuracy", "gain", "", True), ("progress_mae", "MAE drop", "mae_", False),
            ("id_accuracy", "ID accuracy gain", "id_", True), ("mIoU", "span mIoU gain", "miou_", True))
"""(metric, what its change is called, prefix of its keys in seeds.json, higher is better): each metric the
arms carry gets a verdict."""


def report(console: Console, title: str, per_seed: dict[int, list[dict]], seeds: list[int]) -> dict:
    """One table (arms x seeds) and the verdict: does SFT+GRPO beat SFT-only beyond the seed spread?"""
    arms: dict[str, dict[str, list[float]]] = {}
    for s in seeds:
        for row in per_seed[s]:
            arm = arms.setdefault(row["model"], {"accuracy": [], "mean_reward": []})
            for key in ("accuracy", "mean_reward", *EXTRA):
                value = row.get(key)
                if isinstance(value, dict):  # per task ({"push_progress": 0.27}): the mean over the tasks
                    value = statistics.mean(value.values()) if value else None
                if value is not None:
                    arm.setdefault(key, []).append(value)

    def fmt(xs: list[float]) -> str:
        if not xs:
            return "-"
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.3f} ± {sd:.3f}"

    table = Table(title=f"{title}, held-out test accuracy (mIoU on grounding) over seeds {seeds}")
    table.add_column("model")
    for s in seeds:
        table.add_column(f"seed {s}", justify="right")
    table.add_column("mean ± sd", justify="right")
    table.add_column("range", justify="right")
    table.add_column("mean reward", justify="right")
    extra = [k for k in EXTRA if any(v.get(k) for v in arms.values())]
    for k in extra:
        table.add_column(k.replace("_", " "), justify="right")
    for arm_name, v in arms.items():
        acc = v["accuracy"]
        if not acc:
            continue
        table.add_row(arm_name, *[f"{a:.3f}" for a in acc], fmt(acc), f"{max(acc) - min(acc):.3f}",
                      fmt(v["mean_reward"]), *[fmt(v.get(k, [])) for k in extra])
    console.print(table)
    out: dict = {"arms": arms}
    for key, what, prefix, higher in VERDICTS:
        sft, grpo = arms.get("SFT", {}).get(key), arms.get("SFT+GRPO", {}).get(key)
        if not (sft and grpo):
            continue
        gains = [(g - f) if higher else (f - g) for f, g in zip(sft, grpo)]
        spread = max(max(sft) - min(sft), max(grpo) - min(grpo))
        ok = statistics.mean(gains) > spread and min(gains) > 0
        out.update({f"{prefix}gains": gains, f"{prefix}spread": spread, f"{prefix}grpo_beats_sft_beyond_spread": ok})
        console.print(f"{title}: {what} of SFT+GRPO over SFT per seed: {', '.join(f'{g:+.3f}' for g in gains)}; "
                      f"mean {statistics.mean(gains):+.3f} vs seed spread {spread:.3f} -> "
                      f"{'[green]beyond the spread' if ok else '[red]NOT beyond the spread'}")
    return out


if __name__ == "__main__":
    main()
