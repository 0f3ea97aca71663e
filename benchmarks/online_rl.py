"""Online RL with a served video critic as the only reward (SOLE-R1), against the same policy on the true reward.

1. The critic: the recipe ``sole_r1`` (the reaching gym's episodes cut at every timestep, prompted as
   ``reelrl serve`` prompts, SFT on the true progress) trained into ``--critic-run`` unless ``--critic``
   names a checkpoint (the pipeline resumes an interrupted run).
2. ``reelrl serve CRITIC`` as a subprocess on a free localhost port.
3. Per seed, the pixel policy of ``reelrl online-rl`` (:mod:`reelrl.online.policy`) trained by REINFORCE
   for ``--iters`` updates on the served progress alone, and on the true progress; each evaluated on
   greedy episodes with the served critic watching: success rate (true state), and the served progress
   against the true progress on those frames (Pearson r). An untrained (uniform) policy is the floor.
4. Probes (:data:`reelrl.online.reach.PROBES`): scripted behaviours a policy exploiting the critic might
   produce (circling the goal, overshooting, going to a corner, shaking at the start): served vs true
   progress per behaviour.

Every (seed, reward) result is written to ``OUT/seed{S}-{reward}/result.json`` and skipped when present, so
an interrupted run continues. Prints markdown tables, writes ``OUT/online_rl.json`` and
``OUT/online_rl.png`` (success per update, served vs true progress on the probes).

    python benchmarks/online_rl.py [--critic DIR] [--seeds 0 1 2] [--iters 80] [--out runs/online_rl] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import Served  # noqa: E402 - the reelrl serve subprocess of the latency benchmark

from reelrl.gym.reaching import REACH_GOAL, reach_progress, render_reach  # noqa: E402
from reelrl.online.policy import OnlineConfig, PixelPolicy, agreement, evaluate, save, train_policy  # noqa: E402
from reelrl.online.progress import ServedProgress, TrueProgress  # noqa: E402
from reelrl.online.reach import PROBES, probe_path  # noqa: E402


def ensure_critic(run: Path, threads: int) -> Path:
    model = run / "0-sft" / "model"
    if not (run / "0-sft" / "done.json").is_file():
        cmd = [sys.executable, "-m", "reelrl", "train", "sole_r1", f"output_dir={run}", f"threads={threads}"]
        print("training the critic:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return model


def run_one(out: Path, cfg: OnlineConfig, reward: str, served: ServedProgress) -> dict:
    """Train on ``reward`` (true | served), evaluate with the served critic watching; cached in ``out``."""
    path = out / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    source = served if reward == "served" else TrueProgress()
    policy, history = train_policy(cfg, source, out)
    result = evaluate(policy, cfg, served)
    save(out, cfg, reward, history, result)
    return json.loads(path.read_text())


def probes(served: ServedProgress, n: int, size: int) -> dict[str, dict]:
    """Served vs true progress over ``n`` episodes of each probe behaviour."""
    out = {}
    for name in PROBES:
        rng = np.random.default_rng(123)
        paths = [probe_path(name, rng, size, size) for _ in range(n)]
        goal = np.array([size / 2.0, size / 2.0])
        true = np.stack([reach_progress(p, s, goal) for p, s in paths])  # [n, T]
        frames = np.stack([render_reach(p, size, size) for p, _ in paths])  # [n, T, H, W, 3]
        served.start(REACH_GOAL, n)
        try:
            prog = np.stack([served.observe(frames[:, t], None) for t in range(frames.shape[1])], 1)  # [n, T]
        finally:
            served.finish()
        out[name] = {**agreement(prog, true), "final_served": float(prog[:, -1].mean()),
                     "final_true": float(true[:, -1].mean()), "served": prog.tolist(), "true": true.tolist()}
    return out


def mean_std(xs: list[float]) -> str:
    return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if xs else "-"


def fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.3f}"


def plot(results: dict, probe: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for reward, colour in (("true", "tab:green"), ("served", "tab:blue")):
        curves = np.array([[h["success"] for h in r["history"]] for r in results[reward]])  # [seeds, iters]
        if len(curves):
            m, s = curves.mean(0), curves.std(0)
            a.plot(m, color=colour, label=f"{reward} reward")
            a.fill_between(range(len(m)), m - s, m + s, color=colour, alpha=0.2)
    a.set(xlabel="policy update", ylabel="success rate (training batch)", ylim=(-0.02, 1.02),
          title="reaching: served critic vs true progress as the reward")
    a.legend()
    for name, v in probe.items():
        b.scatter(np.ravel(v["true"]), np.ravel(v["served"]), s=6, alpha=0.5, label=name)
    b.plot([0, 1], [0, 1], color="grey", lw=0.8)
    b.set(xlabel="true progress", ylabel="served progress", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
          title="probe behaviours, every frame")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--critic", type=Path, default=None, help="critic checkpoint (default: train sole_r1)")
    ap.add_argument("--critic-run", type=Path, default=Path("runs/sole_r1"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=80)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--probe-episodes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server and of this process")
    ap.add_argument("--out", type=Path, default=Path("runs/online_rl"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    critic = args.critic or ensure_critic(args.critic_run, args.threads)
    srv = Served(critic, args.threads)
    served = ServedProgress(srv.url, workers=args.batch)
    try:
        results: dict[str, list[dict]] = {"true": [], "served": []}
        for seed in args.seeds:
            cfg = OnlineConfig(iters=args.iters, batch=args.batch, lr=args.lr, seed=seed, height=args.size,
                               width=args.size)
            for reward in ("true", "served"):
                results[reward].append(run_one(args.out / f"seed{seed}-{reward}", cfg, reward, served))
        floor = [evaluate(PixelPolicy(args.size, args.size, OnlineConfig().hidden),
                          OnlineConfig(seed=s, height=args.size, width=args.size), served) for s in args.seeds]
        probe = probes(served, args.probe_episodes, args.size)
    finally:
        served.close()
        srv.stop()

    print(f"\n### Online RL on the reaching task ({len(args.seeds)} seeds, {args.iters} updates of {args.batch} "
          f"episodes, critic {critic})\n")
    print("| policy | success (greedy, 64 episodes) | final true progress | served vs true progress: Pearson r |"
          " served mean | true mean | served − true in training (last 10 updates) |")
    print("|---|---|---|---|---|---|---|")
    rows = [("untrained (uniform)", floor, None)] + [(f"trained on {k} reward", [r["eval"] for r in v], v)
                                                      for k, v in results.items()]
    for label, evs, runs in rows:
        gap = mean_std([float(np.mean([h["gap"] for h in r["history"][-10:]])) for r in runs]) if runs else "-"
        print(f"| {label} | {mean_std([e['success'] for e in evs])} | {mean_std([e['final_true'] for e in evs])} | "
              f"{mean_std([e['pearson'] for e in evs])} | {mean_std([e['source_mean'] for e in evs])} | "
              f"{mean_std([e['true_mean'] for e in evs])} | {gap} |")
    print("\n### Probes: served vs true progress on scripted behaviours\n")
    print("| behaviour | Pearson r | served mean | true mean | final served | final true |")
    print("|---|---|---|---|---|---|")
    for name, v in probe.items():
        print(f"| {name} | {fmt(v['pearson'])} | {v['source_mean']:.3f} | {v['true_mean']:.3f} | "
              f"{v['final_served']:.3f} | {v['final_true']:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"critic": str(critic), "seeds": args.seeds, "iters": args.iters, "floor": floor,
               "runs": {k: [{"eval": r["eval"], "history": r["history"]} for r in v] for k, v in results.items()},
               "probes": {k: {m: x for m, x in v.items() if m not in ("served", "true")} for k, v in probe.items()}}
    (args.out / "online_rl.json").write_text(json.dumps(summary, indent=1))
    plot(results, probe, args.out / "online_rl.png")
    print(f"\nwrote {args.out / 'online_rl.json'} and {args.out / 'online_rl.png'}")


if __name__ == "__main__":
    main()
