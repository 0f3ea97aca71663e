"""Every packaged recipe loads, validates, and runs its stages for a step on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reelrl.config import RECIPES_DIR, packaged_recipes
from reelrl.pipeline import Pipeline, load_recipe

RECIPES = packaged_recipes()


def test_the_zoo_is_packaged():
    expected = {"grpo", "video_r1", "dr_grpo", "dapo", "gspo", "tw_grpo", "reg_grpo", "deepvideo_r1", "veripo",
                "videotg_curriculum", "videohallu_staged"}
    assert expected <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_header_documents_the_method(name):
    text = (RECIPES_DIR / f"{name}.yaml").read_text()
    header = text.split("\nname:")[0]
    assert header.startswith("#") and "real checkpoint" in header
    if name != "quickstart":
        assert "Reproduces:" in header and "Paper numbers:" in header and "Choices" in header


def tiny_overrides(tiny_gym: Path, tiny_model_dir: Path, out: Path) -> list[str]:
    """Shrink any recipe to a smoke run on the session's tiny gym and model."""
    return [
        f"model.path={tiny_model_dir}", "model.build_tiny_if_missing=false",
        "data.gym.enabled=false", f"data.train={tiny_gym / 'train.jsonl'}", f"data.sft_train={tiny_gym / 'train.jsonl'}", f"data.test={tiny_gym / 'test.jsonl'}",
        f"output_dir={out}",
        "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=4", "rl.max_new_tokens=6",
        "sft.epochs=0.5", "sft.batch_size=4", "sft.micro_batch_size=4",
        "dpo.prompts=2", "dpo.rollouts_per_prompt=2", "dpo.max_new_tokens=6",
        "eval.max_rows=2", "eval.max_new_tokens=6", "eval.levels={}",  # levels need the gym (test_environments)
        "logging.progress=false", "logging.tensorboard=false", "checkpoint.every=0",
    ]


# Recipes whose environment needs rows of one kind run end to end in their own test, on such rows.
OWN_RUN_TEST = {"scene_r1": "tests/test_scene_grounding.py::test_scene_r1_recipe_runs_sft_eval_rl_eval",
                "stvg_r1": "tests/test_id_grounding.py::test_stvg_r1_recipe_runs_sft_eval_rl_eval",
                "vst": "tests/test_streaming.py::test_vst_recipe_runs_sft_eval_rl_eval_and_reports_latency",
                "primo_r1": "tests/test_primo.py::test_primo_r1_recipe_runs_sft_eval_rl_eval",
                "sole_r1": "tests/test_sole_r1.py::test_sole_r1_recipe_trains_a_critic_that_reelrl_serve_serves"}


@pytest.mark.parametrize("name", [r for r in RECIPES if r not in OWN_RUN_TEST])
def test_recipe_runs_on_the_tiny_model(name, tiny_gym, tiny_model_dir, tmp_path):
    cfg = load_recipe(name, tiny_overrides(tiny_gym, tiny_model_dir, tmp_path / "run"))
    summary = Pipeline(cfg).run()
    for i, kind in enumerate(cfg.stages):
        assert (tmp_path / "run" / f"{i}-{kind}" / "done.json").is_file(), (name, i, kind)
    rl_dirs = [tmp_path / "run" / f"{i}-rl" for i, k in enumerate(cfg.stages) if k == "rl"]
    for d in rl_dirs:
        metrics = [json.loads(x) for x in open(d / "metrics.jsonl")]
        assert len(metrics) == 1 and "reward/mean" in metrics[0]
        if cfg.rl.temporal is not None:
            assert "reward/temporal_bonus/mean" in metrics[0] and "temporal/ordered_acc" in metrics[0]
    if rl_dirs:
        assert [r["model"] for r in summary["rows"]][-1].endswith("GRPO")
    else:  # an eval-only recipe (bench): one row, the model as given
        assert [r["model"] for r in summary["rows"]] == ["base"]


def test_base_recipes_merge_under_the_child(tmp_path):
    from reelrl.config import ConfigError

    (tmp_path / "parent.yaml").write_text(
        "name: parent\nmodel: {path: /models/x}\ndata: {train: t.jsonl}\nrl: {steps: 7, loss: grpo, optim: {lr: 1.0e-4, grad_clip: 0.5}}\nstages: [sft, rl]\n"
    )
    (tmp_path / "child.yaml").write_text(
        "base: parent.yaml\nname: child\nrl: {loss: dapo, optim: {lr: 3.0e-4}}\nstages: [rl]\n"
    )
    cfg = load_recipe(tmp_path / "child.yaml", ["rl.steps=9"])
    assert cfg.name == "child" and cfg.rl.loss == "dapo" and cfg.stages == ["rl"]  # the child wins, lists replace
    assert cfg.rl.optim.lr == 3.0e-4 and cfg.rl.optim.grad_clip == 0.5  # mappings merge key by key
    assert cfg.rl.steps == 9  # overrides apply last
    assert load_recipe(tmp_path / "parent.yaml").rl.steps == 7
    (tmp_path / "parent.yaml").write_text("base: child.yaml\nname: parent\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_recipe(tmp_path / "child.yaml")
    (tmp_path / "child.yaml").write_text("base: nowhere.yaml\nname: child\n")
    with pytest.raises(ConfigError, match="nowhere"):
        load_recipe(tmp_path / "child.yaml")
