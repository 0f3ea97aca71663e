"""VST vs the offline reasoning model on the streaming gym: accuracy and tokens generated after the question.

    python benchmarks/vst.py [--seeds 0 1 2] [--jobs 2] [--threads T] [key=value ...]

Runs `reelrl train vst seed=S` (streaming: a thought after each clip, then
the answer) and `reelrl train vst_offline seed=S` (the whole video, reasoning
after the question) for every seed, in runs/vst-seeds/ and
runs/vst_offline-seeds/ (the same gym: the same videos and questions), and
prints, per arm (SFT, SFT+GRPO), held-out accuracy and the response latency
in tokens generated after the question was asked: the streaming model's
answer turn (``tokens_after_question`` of its eval) against the offline
model's whole completion (``mean_length``: all of it follows the question).
Resumable: finished seeds are read back, interrupted ones continue, and
seeds finished on another machine are restored from benchmarks/results/
(benchmarks/seeds.py's run_seed; ``--no-keep`` turns that off).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

RECIPES = ("vst", "vst_offline")
STAGES = {"SFT": "1-eval", "SFT+GRPO": "3-eval"}


def _seeds_module():
    spec = importlib.util.spec_from_file_location("reelrl_bench_seeds", Path(__file__).with_name("seeds.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_arm(run: Path, stage_dir: str) -> tuple[float, float]:
    """(accuracy, tokens after the question) of one evaluated stage."""
    ev = json.loads((run / stage_dir / "eval.json").read_text())
    return float(ev["accuracy"]), float(ev.get("tokens_after_question", ev["mean_length"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-keep", action="store_true", help="do not keep or restore finished seeds in benchmarks/results")
    ap.add_argument("overrides", nargs="*", help="recipe overrides passed to both recipes")
    args = ap.parse_args()
    seeds = _seeds_module()
    from reelrl.pipeline import load_recipe, prepare_data, prepare_model

    for name in RECIPES:  # gyms and tiny checkpoints first, once
        cfg = load_recipe(name, args.overrides)
        prepare_data(cfg)
        prepare_model(cfg)
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    jobs = [(name, s) for s in args.seeds for name in RECIPES]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda j: (j, seeds.run_seed(j[0], j[1], Path(f"runs/{j[0]}-seeds"), args.overrides,
                                                          threads, None if args.no_keep else seeds.RESULTS)), jobs))
    failed = [j for j, (_, _, rc) in done if rc != 0]
    if failed:
        sys.exit(f"runs {failed} failed; see runs/<recipe>-seeds/seed<S>.log")

    table = Table(title=f"VST vs offline on the streaming gym (stream_order), seeds {args.seeds}: held-out accuracy "
                        "and tokens generated after the question (mean ± sd over seeds)")
    for col in ("recipe", "model", "accuracy", "per seed", "tokens after question"):
        table.add_column(col, justify="left" if col in ("recipe", "model") else "right")
    result: dict = {"seeds": args.seeds}
    chance = None
    for name in RECIPES:
        for arm, stage in STAGES.items():
            vals = [read_arm(Path(f"runs/{name}-seeds/seed{s}"), stage) for s in args.seeds]
            acc, tok = [v[0] for v in vals], [v[1] for v in vals]
            sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
            table.add_row(name, arm, f"{statistics.mean(acc):.3f} ± {sd(acc):.3f}", " ".join(f"{a:.3f}" for a in acc),
                          f"{statistics.mean(tok):.1f} ± {sd(tok):.1f}")
            result[f"{name}/{arm}"] = {"accuracy": acc, "tokens_after_question": tok}
        summary = json.loads(Path(f"runs/{name}-seeds/seed{args.seeds[0]}/summary.json").read_text())
        chance = next((r["accuracy"] for r in summary["rows"] if r["model"] == "chance"), chance)
    console = Console()
    console.print(table)
    if chance is not None:
        console.print(f"chance accuracy: {chance:.3f}")
        result["chance"] = chance
    for arm in STAGES:
        v, o = result[f"vst/{arm}"], result[f"vst_offline/{arm}"]
        speed = statistics.mean(o["tokens_after_question"]) / max(1e-9, statistics.mean(v["tokens_after_question"]))
        gap = statistics.mean(v["accuracy"]) - statistics.mean(o["accuracy"])
        console.print(f"{arm}: VST answers with {speed:.1f}x fewer tokens after the question; accuracy "
                      f"VST - offline = {gap:+.3f}")
        result[f"{arm}/speedup"], result[f"{arm}/accuracy_gap"] = speed, gap
    Path("runs/vst-seeds").mkdir(parents=True, exist_ok=True)
    Path("runs/vst-seeds/vst.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
