"""The rollout engine interface: every stage generates through the recipe's ``rollout.engine``."""

from __future__ import annotations

import json

import pytest
import yaml

from reelrl.config import ConfigError, config_from_dict
from reelrl.pipeline import Pipeline, load_recipe
from reelrl.rollout.engine import ROLLOUT_ENGINES, KVCacheEngine
from tests.engine_for_tests import RecordingEngine


def _samples(path):
    return [(r["step"], r["key"], r["token_sha1"]) for r in map(json.loads, path.read_text().splitlines())]


def test_an_engine_named_by_import_path_serves_rl_and_eval_unchanged(recipe_dict, tmp_path):
    base = dict(recipe_dict, stages=["rl", "eval"])
    base["rl"] = dict(recipe_dict["rl"], steps=2, log_samples_every=1)
    base["eval"] = {"max_new_tokens": 6, "max_rows": 3, "batch_size": 2}
    Pipeline(config_from_dict(dict(base, output_dir=str(tmp_path / "default")))).run()
    RecordingEngine.calls.update(generate=0, requests=0, sync_weights=0)
    own = dict(base, output_dir=str(tmp_path / "own"),
               rollout={"engine": "tests.engine_for_tests:RecordingEngine", "engine_kwargs": {"label": "y"}})
    Pipeline(config_from_dict(own)).run()
    assert _samples(tmp_path / "own" / "0-rl" / "samples.jsonl") == _samples(tmp_path / "default" / "0-rl" /
                                                                             "samples.jsonl")
    ev = [(tmp_path / d / "1-eval" / "eval_samples.jsonl").read_text() for d in ("default", "own")]
    assert ev[0] == ev[1]
    prompts = base["rl"]["prompts_per_step"]
    # RL: one generate call per step with all its prompts; eval: 3 rows in batches of 2; one weight sync per update
    assert RecordingEngine.calls == {"generate": 2 + 2, "requests": 2 * prompts + 3, "sync_weights": 2}


def test_the_default_engine_is_registered():
    assert ROLLOUT_ENGINES.get("kv_cache") is KVCacheEngine


@pytest.mark.parametrize("engine, kwargs, message", [
    ("vllm_server", {}, "rollout.engine: unknown rollout engine 'vllm_server'; valid names: kv_cache"),
    ("tests.engine_for_tests:Missing", {}, "has no attribute 'Missing'"),
    ("kv_cache", {"share_prefix": False}, "rollout.engine_kwargs.share_prefix: not allowed here (set rl.share_prefix)"),
    ("kv_cache", {"port": 1}, "rollout.engine_kwargs: got an unexpected keyword argument 'port'"),
])
def test_a_bad_engine_fails_when_the_recipe_loads(recipe_dict, tmp_path, engine, kwargs, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(dict(recipe_dict, rollout={"engine": engine, "engine_kwargs": kwargs})))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert message in str(e.value)
