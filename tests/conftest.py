"""Shared fixtures: a tiny gym and a tiny checkpoint built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

TINY_SPEC = dict(families=["count", "order", "direction", "color_change"], frames=16, fps=4.0, height=56, width=56,
                 difficulty=0.3, count_mode="multiple_choice", seed=7)


@pytest.fixture(scope="session")
def tiny_gym(tmp_path_factory) -> Path:
    from reelrl.gym import GymSpec, generate_gym

    out = tmp_path_factory.mktemp("gym")
    generate_gym(out, GymSpec(**TINY_SPEC), 8, 4, 8, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_gym) -> Path:
    from reelrl.data.schema import load_jsonl
    from reelrl.models.tiny import build_tiny, default_corpus

    texts = list(default_corpus())
    for r in load_jsonl(tiny_gym / "train.jsonl"):
        texts += [r.prompt_text(), r.reasoning or "", f"<answer>{r.answer}</answer>"]
    out = tmp_path_factory.mktemp("tiny") / "model"
    return build_tiny(out, texts, hidden_size=64, num_layers=2, intermediate_size=128, vision_hidden=64,
                      vision_depth=1, seed=0)


@pytest.fixture()
def recipe_dict(tiny_gym, tiny_model_dir, tmp_path) -> dict:
    """A small recipe over the tiny gym and model, writing into tmp_path."""
    return {
        "name": "test",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "stages": ["rl"],
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": str(tiny_gym / "train.jsonl"), "test": str(tiny_gym / "test.jsonl")},
        "video": {"nframes": 16, "min_pixels": 3136, "max_pixels": 3136},
        "sft": {"epochs": 1, "batch_size": 4, "micro_batch_size": 2, "optim": {"lr": 1e-3}},
        "rl": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 6, "beta": 0.0,
               "rewards": [{"name": "tests.rewards_for_tests:digit_fraction"}, {"name": "format", "weight": 0.5}],
               "optim": {"lr": 1e-3, "schedule": "constant"}},
        "eval": {"max_new_tokens": 6, "max_rows": 4},
        "logging": {"progress": False, "tensorboard": True},
        "checkpoint": {"every": 1, "keep": 3},
    }
