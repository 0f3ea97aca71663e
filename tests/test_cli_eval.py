"""`reelrl eval`: its own directory, results labelled by the model, never a training run overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from reelrl.cli import app, model_label


def test_model_label_names_stage_models_by_run_and_stage() -> None:
    assert model_label("runs/quickstart-seed0/2-rl/model") == "quickstart-seed0/2-rl"
    assert model_label("/models/Qwen2.5-VL-7B-Instruct") == "Qwen2.5-VL-7B-Instruct"


def test_eval_refuses_a_training_run_and_labels_results_by_model(recipe_dict, tiny_model_dir, tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict))
    run = Path(recipe_dict["output_dir"])
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"stages": ["sft", "rl"]}))
    before = (run / "config.yaml").read_bytes()
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(recipe), "--model", str(tiny_model_dir), "--out", str(run)])
    assert res.exit_code == 2 and "does not write into it" in " ".join(res.output.split()), res.output
    assert (run / "config.yaml").read_bytes() == before and not (run / "summary.json").exists()

    res = runner.invoke(app, ["eval", str(recipe), "--model", str(tiny_model_dir), "logging.progress=false"])
    assert res.exit_code == 0, res.output
    label = model_label(tiny_model_dir)
    out = run.parent / f"eval-test-{label.replace('/', '-')}"
    summary = json.loads((out / "summary.json").read_text())
    assert [r["model"] for r in summary["rows"]] == [label]
    sampling = json.loads((out / "0-eval" / "video_sampling.json").read_text())
    assert (sampling["size_factor"], sampling["frame_factor"]) == (28, 2)  # from the checkpoint
    assert (run / "config.yaml").read_bytes() == before


def test_required_paths_are_needed_only_by_the_stages_that_read_them() -> None:
    import pytest

    from reelrl.config import ConfigError
    from reelrl.pipeline import load_recipe

    cfg = load_recipe("video_r1_7b", ["stages=[eval]", "data.test=/data/eval.jsonl"], {"model.path": "/m/rl"})
    assert (cfg.model.path, cfg.data.test, cfg.data.train, cfg.data.sft_train) == ("/m/rl", "/data/eval.jsonl",
                                                                                   None, None)
    cfg = load_recipe("video_r1_7b", ["stages=[eval]", "data.test=t", "model.path=/base"], {"model.path": "/m/rl"})
    assert cfg.model.path == "/base"  # fill only replaces what the recipe left required
    with pytest.raises(ConfigError, match=r"needs model.path, data.test on the command line"):
        load_recipe("video_r1_7b", ["stages=[eval]"])
    with pytest.raises(ConfigError, match=r"needs data.sft_train on the command line"):
        load_recipe("video_r1_7b", ["model.path=m", "data.train=t", "data.test=e"])
    cfg = load_recipe("video_r1_7b", ["stages=[rl]", "model.path=m", "data.train=t"])
    assert (cfg.data.sft_train, cfg.data.test) == (None, None)
    with pytest.raises(ConfigError, match=r"data.test is required by stage\(s\) \['eval'\]"):
        load_recipe("quickstart", ["data.gym.enabled=false", "data.train=t", "data.test=null"])
