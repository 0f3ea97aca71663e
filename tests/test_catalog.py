"""Recipe components are checked when the recipe loads: before any model, processor or data is touched."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from reelrl.algos import TOKEN_WEIGHTS
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
    (["rl.token_weights={name: tw_grpoo}"], r"rl.token_weights.name: unknown token weights 'tw_grpoo'; allowed: \["),
    (["rl.loss=tw_grpo", "rl.token_weights=null"], r"rl.loss: 'tw_grpo' needs rl.token_weights"),
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


@pytest.mark.parametrize("name", TOKEN_WEIGHTS.names())
def test_every_registered_token_weighting_takes_the_trainers_arguments(name):
    """The catalog checks rl.token_weights.name only; the trainer then calls every weighting the same way
    (TokenWeighter: logits, mask, alpha, group_size=, temperature=, chunk_size=): each one must accept that."""
    import torch

    from reelrl.config import TokenWeightsConfig
    from reelrl.train.hooks import TokenWeighter

    g, t, v = 2, 3, 5
    w = TokenWeighter(TokenWeightsConfig(name=name, alpha=1.7, chunk_size=2), temperature=1.0)(
        torch.randn(2 * g, t, v), torch.ones(2 * g, t), g)  # logits [N, T, V], mask [N, T]
    assert w.shape == (2 * g, t) and torch.isfinite(w).all()


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


#: the published settings each real-checkpoint recipe must carry (see each recipe's header for the sources)
PUBLISHED = {
    "video_r1_7b": {
        "stages": ["sft", "rl", "eval"], "model.freeze_vision": False, "rl.optim.lr": 1e-6, "sft.optim.lr": 1e-6,
        "rl.group_size": 8, "rl.prompts_per_step": 4, "rl.max_new_tokens": 768, "rl.beta": 0.04, "rl.steps": 1200,
        "rl.loss": "grpo", "rl.optim.grad_clip": 5.0, "rl.optim.weight_decay": 0.01,
        "video.fps": 2.0, "video.max_frames": 16, "video.max_pixels": 100352,
        "eval.max_new_tokens": 1024, "eval_video.max_frames": 32, "eval_video.max_pixels": 200704,
    },
    "tw_grpo_7b": {
        "stages": ["rl", "eval"], "model.freeze_vision": True, "rl.optim.lr": 1e-6, "rl.optim.schedule": "linear",
        "rl.optim.warmup_steps": 0, "rl.optim.weight_decay": 0.0, "rl.optim.grad_clip": 20.0,
        "rl.group_size": 8, "rl.prompts_per_step": 2, "rl.max_new_tokens": 4096, "rl.temperature": 1.0,
        "rl.beta": 0.0, "rl.steps": 500, "rl.loss": "tw_grpo", "rl.token_weights.alpha": 1.7,
        "rl.loss_kwargs": {"agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28},
        "rl.rewards": [("multi_choice_soft", 1.0), ("format", 1.0)], "rl.augment": ["qa_inversion"],
        "prompt.template": "tw_grpo", "video.fps": 2.0, "video.nframes": None, "video.min_frames": 4,
        "video.max_frames": 16, "video.min_pixels": 100352, "video.max_pixels": 153664,
        "eval.max_new_tokens": 4096, "eval_video.nframes": 16, "eval_video.max_pixels": 153664,
    },
    "seed_bench_r1_7b": {
        "stages": ["rl", "eval"], "model.freeze_vision": False, "rl.optim.lr": 1e-6, "rl.optim.schedule": "linear",
        "rl.optim.warmup_steps": 0, "rl.optim.weight_decay": 0.0, "rl.group_size": 8, "rl.prompts_per_step": 8,
        "rl.max_new_tokens": 256, "rl.temperature": 1.0, "rl.beta": 0.1, "rl.kl_estimator": "k3", "rl.loss": "grpo",
        "rl.rewards": [("accuracy", 1.0)], "rl.augment": [], "sft.optim.lr": 2e-5, "sft.optim.schedule": "cosine",
        "sft.batch_size": 128, "video.fps": 2.0, "video.nframes": None, "video.max_frames": 16,
        "video.min_pixels": 100352, "video.max_pixels": 153664, "eval.max_new_tokens": 256,
        "eval_video.max_frames": 16, "eval_video.max_pixels": 153664,
    },
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_checkpoint_recipes_carry_the_published_settings(name):
    from reelrl.config import read_recipe_tree

    tree = read_recipe_tree(name)
    assert tree["model"]["path"] == "???" and tree["model"]["build_tiny_if_missing"] is False
    assert tree["data"]["gym"]["enabled"] is False and tree["threads"] is None
    assert tree["output_dir"] == "runs/{name}-seed{seed}"
    cfg = load_recipe(name, ["model.path=/m", "data.train=/t", "data.sft_train=/s", "data.test=/e"])
    assert (cfg.model.dtype, cfg.model.master_weights, cfg.model.gradient_checkpointing) == ("bfloat16", "float32", True)
    values = {**cfg.model_dump(), "eval_video": cfg.eval_video().model_dump()}
    for key, want in PUBLISHED[name].items():
        got = _get(values, key) if "." in key else values[key]
        if key == "rl.rewards":
            got = [(r["name"], r["weight"]) for r in got]
        elif key == "rl.augment":
            got = [a["name"] for a in got]
        if isinstance(want, float):
            assert got == pytest.approx(want), (name, key)
        else:
            assert got == want, (name, key)


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
