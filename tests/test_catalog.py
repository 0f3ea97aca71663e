"""Recipe components are checked when the recipe loads: before any model, processor or data is touched."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from reelrl.config import ConfigError
from reelrl.models import load as load_module
from reelrl.pipeline import Pipeline, load_recipe
from reelrl.train.catalog import resolved_beta

BAD = [
    (["rl.loss_kwargs.clip_hgih=0.3"], r"rl.loss_kwargs: got an unexpected keyword argument 'clip_hgih'"),
    (["rl.advantage_kwargs.epss=0.001"], r"rl.advantage_kwargs: got an unexpected keyword argument 'epss'"),
    (["rl.loss=sft"], r"rl.loss: unknown loss 'sft'; allowed: \['dapo', 'dr_grpo', 'grpo', 'gspo', 'reg_grpo'"),
    (["rl.loss_kwargs.beta=0.1"], r"rl.loss_kwargs.beta: not allowed here \(give the KL coefficient as rl.beta\)"),
    (["rl.loss_kwargs.kl_estimator=k2"], r"rl.loss_kwargs.kl_estimator: not allowed here"),
    (["rl.loss_kwargs.agg=token-sum"], r"rl.loss_kwargs: unknown loss aggregation 'token-sum'"),
    (["rl.loss_kwargs.clip_low=1.5"], r"rl.loss_kwargs: loss 'grpo': clip_low must be in \[0, 1\)"),
    (["rl.rewards=[{name: accuracy, kwargs: {tolerance: 0.1}}]"], r"rl.rewards\[0\].kwargs.tolerance: reward 'accuracy'"),
    (["rl.rewards=[{name: accuracy}, {name: formatt}]"], r"rl.rewards\[1\].name: unknown reward 'formatt'"),
    (["rl.rewards=[{name: 'nosuchmodule.x:f'}]"], r"rl.rewards\[0\].name: reward 'nosuchmodule.x:f': cannot import"),
    (["rl.group_filter={name: dynamic_sampling, kwargs: {signal: acc}}"], r"rl.group_filter.kwargs: .*signal must be"),
    (["rl.reward_shaping=[{name: overlong_penalty, kwargs: {cache_len: 100}}]"], r"rl.reward_shaping\[0\].kwargs"),
    (["rl.augment=[{name: curriculum_mask}]"], r"rl.augment\[0\].kwargs: curriculum_mask needs a row source"),
    (["rl.augment=[{name: difficulty_aware, kwargs: {sigma: 3}}]"], r"rl.augment\[0\].kwargs: .*unknown kwargs"),
    (["rl.row_source={name: staged, kwargs: {stagez: []}}"], r"rl.row_source.kwargs: missing a required argument: 'stages'"),
    (["rl.kl_estimator=k4"], r"rl.kl_estimator: unknown KL estimator 'k4'"),
    (["dpo.loss_kwargs.beta=0.2"], r"dpo.loss_kwargs.beta: not allowed here \(give the DPO beta as dpo.beta\)"),
    (["dpo.loss_kwargs.label_smoothing=0.7"], r"dpo.loss_kwargs: pair loss 'dpo': label_smoothing"),
    (["parallel.fsdp=true", "parallel.sp=2"], r"parallel.*fsdp with parallel.sp > 1 is not supported"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[o[0] for o, _ in BAD])
def test_a_bad_component_fails_at_load_naming_the_field(overrides, message, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(load_module, "load_model_and_processor", no_model)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_recipe("quickstart", [*overrides, f"output_dir={out}", "model.path=/nonexistent/model"])
    assert time.perf_counter() - t0 < 1.0
    assert not out.exists()


def test_every_error_of_a_recipe_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_recipe("quickstart", ["rl.loss=sft", "rl.advantage=grpoo", "rl.rewards=[{name: nope}]"])
    text = str(e.value)
    assert "rl.loss:" in text and "rl.advantage:" in text and "rl.rewards[0].name:" in text


def test_pipeline_checks_a_programmatic_config_before_loading(recipe_dict, monkeypatch):
    from reelrl.config import config_from_dict

    monkeypatch.setattr(load_module, "load_model_and_processor", lambda *a, **k: pytest.fail("model loaded"))
    cfg = config_from_dict({**recipe_dict, "rl": {**recipe_dict["rl"], "loss_kwargs": {"beta": 0.3}}})
    with pytest.raises(ConfigError, match="rl.loss_kwargs.beta"):
        Pipeline(cfg)


@pytest.mark.parametrize("loss,beta", [("grpo", 0.04), ("reg_grpo", 0.1), ("dapo", 0.0), ("dr_grpo", 0.0)])
def test_beta_null_takes_the_loss_default_and_is_written_back(loss, beta):
    cfg = load_recipe("quickstart", [f"rl.loss={loss}", "rl.beta=null"] + (
        ["rl.advantage=reg_grpo"] if loss == "reg_grpo" else []))
    assert cfg.rl.beta == pytest.approx(beta) and resolved_beta(cfg.rl) == pytest.approx(beta)


def test_an_explicit_beta_wins_over_the_loss_default():
    assert load_recipe("quickstart", ["rl.loss=grpo", "rl.beta=0"]).rl.beta == 0.0
    assert load_recipe("quickstart", ["rl.loss=dapo", "rl.beta=0.02"]).rl.beta == 0.02


def test_every_packaged_recipe_passes_the_check():
    from reelrl.config import packaged_recipes

    from reelrl.config import read_recipe_tree

    for name in packaged_recipes():
        # a real-checkpoint recipe needs its paths (``???``) on the command line
        paths = [f"{k}=/given" for k in ("model.path", "data.train", "data.sft_train", "data.test")
                 if _get(read_recipe_tree(name), k) == "???"]
        cfg = load_recipe(name, paths)
        assert cfg.rl.beta is not None, name


def _get(tree: dict, dotted: str):
    for k in dotted.split("."):
        tree = tree.get(k, {}) if isinstance(tree, dict) else {}
    return tree


def test_cli_reports_the_field_and_exits_2(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "reelrl.cli", "train", "quickstart", "rl.loss=sft", f"output_dir={out}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "rl.loss: unknown loss 'sft'" in proc.stdout.replace("\n", " ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()
