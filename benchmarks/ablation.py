"""Ablation of the algorithm zoo: every RL recipe from one shared SFT checkpoint, several seeds.

    python benchmarks/ablation.py [--quick] [--recipes grpo dapo ...] [--seeds 0 1 2] [--jobs 1]
                                  [--out runs/ablation] [key=value ...]

1. The CoT-SFT stage of the base recipe (``--base``, default ``grpo``) runs once
   (seed 0) into ``<out>/sft``; its model and a greedy evaluation of it are
   reused by every arm (the "SFT" row).
2. Every recipe (default: each packaged recipe with an ``rl`` stage, except
   quickstart, which uses another gym) runs its training stages after SFT
   (``rl``, ``dpo`` ...) and a final ``eval`` from that SFT model, for each
   seed, as a ``reelrl train`` subprocess on a resolved config written to
   ``<out>/<recipe>/seed<S>/recipe.yaml``. Step-based schedules of row
   sources (``total_steps``, ``unmask_steps``, staged ``steps``) are rescaled
   to the run's ``rl.steps``.
3. Prints a table in the layout of the papers' tables (one row per method,
   held-out accuracy per task family and overall as mean ± std over seeds,
   seconds per RL step), and writes ``<out>/ablation.json`` and
   ``<out>/ablation.png`` (bar chart with the SFT and chance levels) and ``<out>/ablation.html``
   (``reelrl report``'s comparison: every run's final evaluation, RL curves overlaid).

``--quick`` shrinks everything (4 RL steps of 4 prompts x 4 completions, 16
test rows, half an SFT epoch) so the whole ablation finishes in minutes on a
laptop; numbers from it show that every arm runs, not which method is best.
Extra ``key=value`` overrides go to every run (after the quick ones).
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

QUICK = [
    "rl.steps=4", "rl.prompts_per_step=4", "rl.group_size=4", "eval.max_rows=16", "sft.epochs=0.5",
    "dpo.prompts=8", "dpo.rollouts_per_prompt=4",
]
STEP_KEYS = ("total_steps", "unmask_steps")


def rl_recipes() -> list[str]:
    from reelrl.config import packaged_recipes
    from reelrl.pipeline import load_recipe

    return [n for n in packaged_recipes() if n != "quickstart" and "rl" in load_recipe(n).stages]


def rescale_schedules(cfg, old_steps: int) -> None:
    """Step counts inside ``rl.row_source.kwargs`` follow a changed ``rl.steps`` (proportionally)."""
    new = cfg.rl.steps
    if new == old_steps:
        return
    kw = dict(cfg.rl.row_source.kwargs)

    def scale(x: int) -> int:
        return max(1, round(x * new / old_steps))

    for key in STEP_KEYS:
        if isinstance(kw.get(key), int):
            kw[key] = scale(kw[key])
    if isinstance(kw.get("stages"), list):
        kw["stages"] = [dict(s, steps=scale(int(s["steps"]))) for s in kw["stages"]]
    if isinstance(kw.get("inner_kwargs"), dict):
        kw["inner_kwargs"] = {k: scale(v) if k in STEP_KEYS and isinstance(v, int) else v
                              for k, v in kw["inner_kwargs"].items()}
    cfg.rl.row_source = cfg.rl.row_source.model_copy(update={"kwargs": kw})


def write_run_config(name: str, overrides: list[str], run_dir: Path, stages: list[str] | None, seed: int,
                     model_path: str | None) -> tuple[Path, bool]:
    """Resolve recipe ``name`` with overrides, rescale its schedules, save it as ``run_dir/recipe.yaml``.

    Returns the path and whether a finished run with exactly this config is already there.
    """
    from reelrl.config import save_config
    from reelrl.pipeline import load_recipe

    original = load_recipe(name)
    cfg = load_recipe(name, overrides)
    rescale_schedules(cfg, original.rl.steps)
    cfg.seed, cfg.output_dir = seed, str(run_dir)
    cfg.logging.progress = False
    if stages is not None:
        cfg.stages = stages
    if model_path is not None:
        cfg.model.path, cfg.model.build_tiny_if_missing = model_path, False
    path = run_dir / "recipe.yaml"
    old = path.read_text() if path.is_file() else None
    save_config(cfg, path)
    return path, old == path.read_text() and (run_dir / "summary.json").is_file()


def clear_run(run_dir: Path) -> None:
    """Remove the stage folders and summary of an earlier run (its recipe.yaml stays)."""
    for p in run_dir.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        elif p.name.startswith("summary"):
            p.unlink()


def run(config: Path, log: Path, threads: int) -> tuple[float, int]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    with log.open("w") as f:
        rc = subprocess.run([sys.executable, "-m", "reelrl.cli", "train", str(config)], stdout=f,
                            stderr=subprocess.STDOUT, env=env).returncode
    return time.time() - t0, rc


def seconds_per_step(run_dir: Path) -> float | None:
    """Mean over the RL steps of the run of the summed phase times (time/*)."""
    per_step = []
    for metrics in sorted(run_dir.glob("*-rl/metrics.jsonl")):
        for line in metrics.read_text().splitlines():
            m = json.loads(line)
            per_step.append(sum(v for k, v in m.items() if k.startswith("time/")))
    return statistics.mean(per_step) if per_step else None


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=None, help="recipes to compare (default: every RL recipe)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--base", default="grpo", help="recipe whose SFT stage makes the shared checkpoint")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the whole ablation in minutes")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with cores/jobs threads)")
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("overrides", nargs="*", help="recipe overrides passed to every run")
    args = ap.parse_args()
    overrides = (QUICK if args.quick else []) + args.overrides
    recipes = args.recipes or rl_recipes()
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=max(Console().width, 140))  # the table stays readable in a log file
    threads = max(1, (os.cpu_count() or 2) // args.jobs)

    from reelrl.pipeline import load_recipe, prepare_data, prepare_model

    base = load_recipe(args.base, overrides)
    prepare_data(base)
    prepare_model(base)
    for name in recipes:  # every arm must read the same gym as the SFT checkpoint
        cfg = load_recipe(name, overrides)
        if cfg.data.model_dump() != base.data.model_dump() or cfg.video != base.video:
            sys.exit(f"recipe {name} uses other data or video settings than {args.base}; it cannot share the SFT model")

    # 1. shared SFT checkpoint + its evaluation
    sft_dir = args.out / "sft"
    sft_model = sft_dir / "0-sft" / "model"
    sft_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, sft_done = write_run_config(args.base, overrides, sft_dir, ["sft", "eval"], 0, None)
    if not sft_done:
        clear_run(sft_dir)
        console.print(f"[bold]SFT[/] ({args.base}) -> {sft_dir}")
        wall, rc = run(cfg_path, sft_dir / "train.log", os.cpu_count() or 2)
        if rc:
            sys.exit(f"SFT failed; see {sft_dir / 'train.log'}")
    sft_summary = json.loads((sft_dir / "summary.json").read_text())

    # 2. every arm x seed from the SFT model
    jobs = []
    for name in recipes:
        stages = [s for s in load_recipe(name).stages if s not in ("sft", "eval")] + ["eval"]
        for seed in args.seeds:
            run_dir = args.out / name / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg_path, done = write_run_config(name, overrides, run_dir, stages, seed, str(sft_model))
            if not (done and sft_done):  # a new SFT model invalidates every arm
                clear_run(run_dir)
                jobs.append((name, seed, run_dir, cfg_path))
    console.print(f"{len(jobs)} runs to do ({len(recipes)} recipes x {len(args.seeds)} seeds; unchanged finished runs are reused)")

    def do(job):
        name, seed, run_dir, cfg_path = job
        wall, rc = run(cfg_path, run_dir / "train.log", threads)
        console.print(f"  {name} seed {seed}: {'ok' if rc == 0 else f'FAILED (rc {rc})'} in {wall:.0f} s")
        return name, seed, rc

    with ThreadPoolExecutor(args.jobs) as pool:
        failed = [(n, s) for n, s, rc in pool.map(do, jobs) if rc]
    if failed:
        sys.exit(f"runs failed: {failed}; see <out>/<recipe>/seed<S>/train.log")

    # 3. collect, print, save
    tasks = list(sft_summary["rows"][-1]["per_task"])
    chance = next((r for r in sft_summary["rows"] if r["model"] == "chance"), None)
    result: dict = {"seeds": args.seeds, "quick": args.quick, "overrides": overrides, "tasks": tasks,
                    "chance": chance, "sft": sft_summary["rows"][-1], "arms": {}}
    for name in recipes:
        runs = []
        for seed in args.seeds:
            run_dir = args.out / name / f"seed{seed}"
            last = json.loads((run_dir / "summary.json").read_text())["rows"][-1]
            runs.append({"seed": seed, "accuracy": last["accuracy"], "per_task": last["per_task"],
                         "mean_reward": last["mean_reward"], "s_per_step": seconds_per_step(run_dir)})
        acc_m, acc_sd = mean_sd([r["accuracy"] for r in runs])
        steps = [r["s_per_step"] for r in runs if r["s_per_step"] is not None]
        result["arms"][name] = {
            "runs": runs, "accuracy_mean": acc_m, "accuracy_sd": acc_sd,
            "per_task_mean": {t: statistics.mean(r["per_task"][t] for r in runs) for t in tasks},
            "s_per_step_mean": statistics.mean(steps) if steps else None,
        }
    (args.out / "ablation.json").write_text(json.dumps(result, indent=2))
    print_table(result, console)
    plot(result, args.out / "ablation.png")
    compare_runs(args.out, recipes, args.seeds, args.out / "ablation.html")
    console.print(f"wrote {args.out / 'ablation.json'}, {args.out / 'ablation.png'} and {args.out / 'ablation.html'}")


def print_table(result: dict, console: Console) -> None:
    tasks = result["tasks"]
    n = len(result["seeds"])
    table = Table(title=f"Held-out test accuracy from one SFT checkpoint, mean ± std over {n} seed(s)"
                        + (" [quick]" if result["quick"] else ""))
    for col in ["Method", *tasks, "Avg", "s / RL step"]:
        table.add_column(col, justify="left" if col == "Method" else "right")
    if result["chance"]:
        c = result["chance"]
        table.add_row("chance", *[f"{c['per_task'].get(t, float('nan')):.3f}" for t in tasks], f"{c['accuracy']:.3f}",
                      "-")
    s = result["sft"]
    table.add_row("SFT", *[f"{s['per_task'][t]:.3f}" for t in tasks], f"{s['accuracy']:.3f}", "-")
    for name, arm in result["arms"].items():
        sps = arm["s_per_step_mean"]
        table.add_row(f"SFT + {name}", *[f"{arm['per_task_mean'][t]:.3f}" for t in tasks],
                      f"{arm['accuracy_mean']:.3f} ± {arm['accuracy_sd']:.3f}", "-" if sps is None else f"{sps:.1f}")
    console.print(table)


def compare_runs(out: Path, recipes: list[str], seeds: list[int], path: Path) -> None:
    """``reelrl report``'s comparison of the SFT run and every arm's run: each run's final evaluation in one
    table and their RL curves (reward, accuracy, format, KL, entropy, length, clip fraction) overlaid."""
    from reelrl.report import write_comparison

    write_comparison([out / "sft", *[out / name / f"seed{seed}" for name in recipes for seed in seeds]], path)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["arms"])
    means = [result["arms"][n]["accuracy_mean"] for n in names]
    sds = [result["arms"][n]["accuracy_sd"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(names) + 2), 4))
    ax.bar(range(len(names)), means, yerr=sds, capsize=4, color="#4878a8")
    ax.axhline(result["sft"]["accuracy"], color="black", linestyle="--", label="SFT")
    if result["chance"]:
        ax.axhline(result["chance"]["accuracy"], color="grey", linestyle=":", label="chance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"SFT + RL recipe, mean ± std over {len(result['seeds'])} seed(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
