"""Numeric health: non-finite settings refused at load, non-finite updates stop the run before anything is saved."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from reelrl.cli import app
from reelrl.config import ConfigError, config_from_dict
from reelrl.pipeline import Pipeline, load_recipe
from reelrl.train.optim import all_finite, nonfinite_parameters


@pytest.mark.parametrize(("override", "field"), [
    ("rl.optim.lr=.inf", "rl.optim.lr"), ("rl.optim.eps=.nan", "rl.optim.eps"), ("sft.optim.lr=-.inf", "sft.optim.lr"),
    ("rl.beta=.nan", "rl.beta"), ("rl.temperature=.inf", "rl.temperature"), ("video.fps=.nan", "video.fps"),
    ("rl.optim.betas=[0.9,1.0]", "rl.optim.betas.1"), ("rl.optim.eps=0", "rl.optim.eps"),
    ("rl.optim.lr=3e38", "rl.optim.lr"),  # finite, but AdamW's lr / bias correction overflows fp32
])
def test_non_finite_or_out_of_range_numbers_are_refused_at_load(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_recipe("quickstart", [override])


def test_all_finite_and_nonfinite_parameters_name_the_tensor():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    assert all_finite(model.parameters()) and nonfinite_parameters(model) == []
    with torch.no_grad():
        model[1].bias[2] = float("nan")
    assert not all_finite(model.parameters()) and nonfinite_parameters(model) == ["1.bias"]
    with torch.no_grad():
        model[1].bias[2] = 0.0
        model[0].weight[0, 0] = float("-inf")
    assert not all_finite(model.parameters()) and nonfinite_parameters(model) == ["0.weight"]


def _no_model_saved(run: Path) -> bool:
    return not list(run.glob("*/model/*.safetensors"))


def test_an_optimizer_step_that_writes_non_finite_weights_is_caught_after_it(recipe_dict, monkeypatch):
    """The parameter check after the update (e.g. a fused optimizer overflowing) names the step and the lr."""
    real = torch.optim.AdamW.step

    def overflowing(self, *a, **kw):
        out = real(self, *a, **kw)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing)
    cfg = dict(recipe_dict, stages=["sft"], checkpoint={"every": 1, "keep": 3})
    with pytest.raises(FloatingPointError, match=r"(?i)sft step 1: the optimizer step made weights non-finite \(lr 0.001"):
        Pipeline(config_from_dict(cfg)).run()
    run = Path(cfg["output_dir"])
    assert _no_model_saved(run) and not list(run.glob("*/checkpoint-*"))


def test_a_non_finite_gradient_stops_the_step_before_the_update(recipe_dict, monkeypatch):
    from reelrl.train import loop

    seen = {}

    def inf_norm(params, max_norm):
        seen["before"] = [p.detach().clone() for p in params]
        return float("inf")

    monkeypatch.setattr(loop, "clip_and_norm", inf_norm)
    cfg = dict(recipe_dict, stages=["sft"])
    with pytest.raises(FloatingPointError, match=r"(?i)sft step 1: non-finite gradient norm inf .* weights were not updated"):
        Pipeline(config_from_dict(cfg)).run()
    assert seen and _no_model_saved(Path(cfg["output_dir"]))


def test_the_final_model_is_never_saved_with_non_finite_weights(recipe_dict, monkeypatch):
    """Even if weights turn non-finite outside the optimizer step, the final save refuses them."""
    from reelrl.train import loop

    monkeypatch.setattr(loop, "all_finite", lambda params: True)  # the per-step check misses it

    def poison(self):
        with torch.no_grad():
            next(p for p in self.params).fill_(math.nan)
        return 0.0

    monkeypatch.setattr(loop.StageTrainer, "optimizer_step", poison)
    cfg = dict(recipe_dict, stages=["sft"], checkpoint={"every": 0},
               sft=dict(recipe_dict["sft"], max_rows=4, batch_size=4, micro_batch_size=2))  # one step
    with pytest.raises(FloatingPointError, match="the final weights are not finite .* not saved"):
        Pipeline(config_from_dict(cfg)).run()
    assert _no_model_saved(Path(cfg["output_dir"]))


def test_cli_reports_a_non_finite_run_as_a_message_and_exit_code(recipe_dict, tmp_path):
    from reelrl.train import loop

    cfg = dict(recipe_dict, stages=["sft"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "clip_and_norm", lambda params, max_norm: float("nan"))
        res = CliRunner().invoke(app, ["train", str(recipe)])
    assert res.exit_code == 2 and "SFT step 1: non-finite gradient norm nan" in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    res = CliRunner().invoke(app, ["train", str(recipe), "rl.optim.lr=.inf"])
    assert res.exit_code == 2 and "rl.optim.lr: Input should be a finite number" in res.output
