"""Mixed precision: a bf16 model trains with fp32 master weights, so small updates are not rounded away."""

from __future__ import annotations

import json

import torch

from reelrl.config import config_from_dict
from reelrl.data.schema import load_jsonl
from reelrl.models.precision import loaded_half_dtype, upcast_trainable
from reelrl.monitor.metrics import MetricsLogger
from reelrl.pipeline import Pipeline
from reelrl.train.loop import fit
from reelrl.train.sft import SFTTrainer

LR = 1e-5  # Adam moves each weight by ~lr per step: far below half a bf16 ulp of a weight of |w| ~ 0.02 (4e-5)


def _sft(recipe_dict, tmp_path, name, **model):
    cfg = config_from_dict(dict(recipe_dict, stages=["sft"], output_dir=str(tmp_path / name),
                                model=dict(recipe_dict["model"], **model),
                                sft=dict(recipe_dict["sft"], batch_size=2, micro_batch_size=2, epochs=1,
                                         optim={"lr": LR, "schedule": "constant"})))
    pipe = Pipeline(cfg)
    vlm, processor = pipe.load(for_training=True)
    rows = load_jsonl(recipe_dict["data"]["train"])[:2]
    trainer = SFTTrainer(cfg, vlm, processor.tokenizer, pipe.encoder(processor), rows, tmp_path / name / "sft")
    before = {n: p.detach().float().clone() for n, p in vlm.wrapped.named_parameters()}
    fit(trainer, processor, MetricsLogger(tmp_path / name / "log", tensorboard=False, enabled=False), cfg.checkpoint,
        progress=False)
    after = {n: p.detach().float().clone() for n, p in vlm.wrapped.named_parameters()}
    delta = torch.cat([(after[n] - before[n]).flatten() for n in before])  # [n_params]
    return vlm, delta, tmp_path / name / "sft" / "model"


def test_upcast_keeps_frozen_weights_and_finds_the_loaded_dtype() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).to(torch.bfloat16)
    m[1].requires_grad_(False)
    assert loaded_half_dtype(m) == torch.bfloat16
    assert upcast_trainable(m) == 2  # weight and bias of the trainable layer
    assert m[0].weight.dtype == torch.float32 and m[1].weight.dtype == torch.bfloat16
    assert loaded_half_dtype(torch.nn.Linear(2, 2)) is None


def test_bf16_full_finetune_moves_weights_like_fp32(recipe_dict, tmp_path) -> None:
    vlm, d_mixed, saved = _sft(recipe_dict, tmp_path, "mixed", dtype="bfloat16")
    assert vlm.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in vlm.wrapped.parameters() if p.requires_grad)
    _, d_pure, _ = _sft(recipe_dict, tmp_path, "pure", dtype="bfloat16", master_weights="model")
    _, d_fp32, _ = _sft(recipe_dict, tmp_path, "fp32", dtype="float32")

    moved = lambda d: float((d != 0).float().mean())  # noqa: E731
    # pure bf16: updates of ~lr round away on most weights; fp32 masters keep (nearly) all, as fp32 does
    assert moved(d_pure) < 0.5, moved(d_pure)
    assert moved(d_mixed) > 0.95 and moved(d_fp32) > 0.95, (moved(d_mixed), moved(d_fp32))
    # the same update as fp32 up to bf16 compute noise: Adam's first step is ~lr * sign(grad)
    cos = torch.nn.functional.cosine_similarity(d_mixed, d_fp32, dim=0)
    assert cos > 0.9, float(cos)
    assert float(torch.nn.functional.cosine_similarity(d_pure, d_fp32, dim=0)) < float(cos)
    # the final model is written in the loaded dtype
    assert json.loads((saved / "config.json").read_text()).get("dtype") == "bfloat16"
    from safetensors.torch import load_file

    weights = load_file(str(saved / "model.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.bfloat16}
