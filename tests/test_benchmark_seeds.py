"""benchmarks/seeds.py keeps finished seeds' small results so that a fresh clone restores them instead of rerunning."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def seeds():
    path = Path(__file__).parents[1] / "benchmarks" / "seeds.py"
    spec = importlib.util.spec_from_file_location("reelrl_bench_seeds_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def finished_run(run: Path) -> None:
    (run / "1-eval").mkdir(parents=True)
    (run / "1-eval" / "eval.json").write_text(json.dumps({"accuracy": 0.25}))
    (run / "1-eval" / "eval_samples.jsonl").write_text("{}\n")
    (run / "2-rl" / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "2-rl" / "checkpoints" / "step-1" / "model.safetensors").write_bytes(b"\0" * 64)
    (run / "summary.json").write_text(json.dumps({"rows": [{"model": "SFT", "accuracy": 0.25}]}))


def test_kept_seed_is_restored_not_run_again(seeds, tmp_path) -> None:
    finished_run(tmp_path / "a" / "seed0")
    kept = tmp_path / "results" / "x-seeds" / "seed0"
    seeds.keep_results(tmp_path / "a" / "seed0", kept, ["rl.steps=4"])
    files = sorted(str(f.relative_to(kept)) for f in kept.rglob("*") if f.is_file())
    assert files == ["1-eval/eval.json", "commit", "overrides.json", "summary.json"]  # no samples, no checkpoints

    # a fresh clone: runs/ is empty; the recipe name does not exist, so running it would fail (rc != 0)
    out = tmp_path / "fresh" / "x-seeds"
    seed, wall, rc = seeds.run_seed("no_such_recipe", 0, out, ["rl.steps=4"], 1, keep=tmp_path / "results")
    assert (seed, wall, rc) == (0, 0.0, 0)
    assert json.loads((out / "seed0" / "1-eval" / "eval.json").read_text()) == {"accuracy": 0.25}
    assert (out / "seed0" / "summary.json").is_file()


def test_seed_kept_with_other_overrides_runs_again(seeds, tmp_path, capsys) -> None:
    finished_run(tmp_path / "a" / "seed1")
    kept = tmp_path / "results" / "x-seeds" / "seed1"
    seeds.keep_results(tmp_path / "a" / "seed1", kept, ["rl.steps=4"])
    assert not seeds.restore_results(tmp_path / "b" / "seed1", kept, ["rl.steps=8"])
    assert "other overrides" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert not seeds.restore_results(tmp_path / "b" / "seed2", tmp_path / "results" / "x-seeds" / "seed2", [])


def test_verdicts_per_metric_with_direction(seeds) -> None:
    """Accuracy, ID accuracy and span mIoU: higher is better; progress MAE: lower is better; each its own verdict."""
    from rich.console import Console

    def rows(acc, ids, miou, mae):
        return [{"model": "SFT", "accuracy": acc[0], "id_accuracy": {"t": ids[0]}, "mIoU": {"t": miou[0]},
                 "progress_mae": {"t": mae[0]}},
                {"model": "SFT+GRPO", "accuracy": acc[1], "id_accuracy": {"t": ids[1]}, "mIoU": {"t": miou[1]},
                 "progress_mae": {"t": mae[1]}}]

    per_seed = {0: rows((0.10, 0.12), (0.10, 0.30), (0.40, 0.45), (0.30, 0.20)),
                1: rows((0.11, 0.10), (0.12, 0.33), (0.50, 0.52), (0.31, 0.21)),
                2: rows((0.12, 0.13), (0.11, 0.31), (0.45, 0.50), (0.32, 0.22))}
    out = seeds.report(Console(quiet=True), "t", per_seed, [0, 1, 2])
    assert out["gains"] == pytest.approx([0.02, -0.01, 0.01]) and not out["grpo_beats_sft_beyond_spread"]
    assert out["id_gains"] == pytest.approx([0.20, 0.21, 0.20]) and out["id_spread"] == pytest.approx(0.03)
    assert out["id_grpo_beats_sft_beyond_spread"]
    assert out["mae_gains"] == pytest.approx([0.10, 0.10, 0.10]) and out["mae_grpo_beats_sft_beyond_spread"]
    # span mIoU: every seed gains (+0.05, +0.02, +0.05) but the SFT seeds span 0.10
    assert out["miou_spread"] == pytest.approx(0.10) and not out["miou_grpo_beats_sft_beyond_spread"]
