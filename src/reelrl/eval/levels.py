"""Generalisation levels: one test gym per level, evaluated by every eval stage, summarised per level.

SEED-Bench-R1 (Chen et al. 2025, arXiv 2503.24376) validates at three levels:
L1 in-distribution, L2 cross-environment (unseen scenes, the same tasks), L3
cross-environment and cross-task. A recipe states its levels in
``eval.levels`` as level name -> the fields of ``data.gym.spec`` that differ
(``environment``, ``families``, ...; validated at load by
:class:`reelrl.config.RecipeConfig`). Each level's test gym has
``data.gym.n_test`` rows drawn from the test streams of the gym's seed, so a
level that only changes the environment shows the same scenes in another
style. A level whose spec equals the training spec is the gym's own test
split (no copy is generated); the others live in ``<data.gym.dir>/levels/<name>``.

Summary (``summary.json``): ``levels`` holds each level's spec differences,
row count and chance accuracy (the rows' mean of the per-family chance in
its ``gym.json``); each entry of ``rows`` (``chance`` first, then one per
eval stage) holds ``levels: {name: {accuracy, mean_reward, format,
per_task}}``, so a script reads ``rows[i]["levels"]["L2"]["accuracy"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reelrl.config import RecipeConfig
from reelrl.data.schema import VideoRow, load_jsonl
from reelrl.gym import GymSpec, ensure_gym


def level_specs(cfg: RecipeConfig) -> dict[str, tuple[GymSpec, Path]]:
    """Each level's gym spec and directory, in the recipe's order (empty when no levels are set)."""
    if not cfg.eval.levels:
        return {}
    gym = cfg.data.gym
    base = GymSpec(**gym.spec)
    out: dict[str, tuple[GymSpec, Path]] = {}
    for name, over in cfg.eval.levels.items():
        spec = GymSpec(**{**gym.spec, **over})
        out[name] = (spec, Path(gym.dir) if spec == base else Path(gym.dir) / "levels" / name)
    return out


def prepare_levels(cfg: RecipeConfig) -> None:
    """Generate every level's test gym whose files are missing or stale (train and val stay empty)."""
    gym = cfg.data.gym
    for spec, path in level_specs(cfg).values():
        if path != Path(gym.dir):
            ensure_gym(path, spec, 0, 0, gym.n_test, progress=cfg.logging.progress)


def level_rows(cfg: RecipeConfig, name: str) -> list[VideoRow]:
    """The test rows of level ``name`` (the first ``eval.max_rows`` when set)."""
    rows = load_jsonl(level_specs(cfg)[name][1] / "test.jsonl")
    return rows[: cfg.eval.max_rows] if cfg.eval.max_rows else rows


def level_chance(cfg: RecipeConfig) -> dict[str, dict[str, float]]:
    """Per level, the chance accuracy of each of its families (from its ``gym.json``)."""
    return {name: json.loads((path / "gym.json").read_text())["chance_accuracy"]
            for name, (_, path) in level_specs(cfg).items()}


def _mean_chance(per_task: dict[str, dict], chance: dict[str, float]) -> float:
    """Chance accuracy of a level's evaluated rows: each family's chance weighted by its row count."""
    n = sum(v["n"] for v in per_task.values())
    return sum(chance[t] * v["n"] for t, v in per_task.items()) / max(1, n)


def summarize_levels(cfg: RecipeConfig, evals: list[dict]) -> dict[str, Any]:
    """The ``levels`` and ``rows`` of ``summary.json`` (module docstring) for eval results with ``levels``."""
    chance = level_chance(cfg)
    first = evals[0]["levels"]
    levels = {name: {"spec": cfg.eval.levels[name], "n": first[name]["n"],
                     "chance": _mean_chance(first[name]["per_task"], chance[name])} for name in first}
    rows = [{"model": "chance", "levels": {
        name: {"accuracy": levels[name]["chance"], "mean_reward": None, "format": None,
               "per_task": {t: chance[name][t] for t in first[name]["per_task"]}} for name in first}}]
    for r in evals:
        rows.append({"model": r["label"], "levels": {
            name: {"accuracy": res["accuracy"], "mean_reward": res["mean_reward"], "format": res["format"],
                   "per_task": {t: v["accuracy"] for t, v in res["per_task"].items()}}
            for name, res in r["levels"].items()}})
    return {"levels": levels, "rows": rows}


def print_levels(summary: dict[str, Any], run_dir: Path) -> None:
    """Print the model x level accuracy table and write it to ``run_dir/summary.md``."""
    names = list(summary["levels"])
    table = Table(title=f"{summary['recipe']} (seed {summary['seed']}): accuracy per generalisation level")
    md = ["| model | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for col in ["model", *names]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in summary["rows"]:
        cells = [r["model"], *(f"{r['levels'][n]['accuracy']:.3f}" for n in names)]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    md.append("")
    md += [f"- {n}: {summary['levels'][n]['n']} rows, spec differences {json.dumps(summary['levels'][n]['spec'])}"
           for n in names]
    Console().print(table)
    (run_dir / "summary.md").write_text("\n".join(md) + "\n")
