"""Trainer behaviour: resume is exact, rewards rise, SFT learns, bad input fails loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from reelrl.config import config_from_dict
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import DataError, load_jsonl
from reelrl.models.load import load_model_and_processor
from reelrl.models.vlm import VLM, collate, labelled_nll
from reelrl.pipeline import Pipeline
from reelrl.train.sft import SFTTrainer


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_resume_gives_same_weights_as_uninterrupted(recipe_dict, tmp_path):
    full = dict(recipe_dict, output_dir=str(tmp_path / "full"))
    full["rl"] = dict(recipe_dict["rl"], steps=3)
    Pipeline(config_from_dict(full)).run()

    part = dict(full, output_dir=str(tmp_path / "part"))
    out = Pipeline(config_from_dict(part)).run(stop_after=2)
    assert out == {"interrupted": True, "stage": 0}
    assert not (tmp_path / "part" / "0-rl" / "model").exists()
    Pipeline(config_from_dict(part)).run(resume=True)

    a, b = _weights(tmp_path / "full" / "0-rl" / "model"), _weights(tmp_path / "part" / "0-rl" / "model")
    init = _weights(Path(recipe_dict["model"]["path"]))
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training changed the weights
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in open(tmp_path / "part" / "0-rl" / "metrics.jsonl")]
    assert steps == [1, 2, 3]


def test_trained_checkpoint_loads_with_auto_classes_and_config_saved(recipe_dict, tmp_path):
    cfg = dict(recipe_dict, stages=["rl", "eval"])
    cfg["rl"] = dict(recipe_dict["rl"], beta=0.04)  # loads a frozen reference copy and logs the KL
    Pipeline(config_from_dict(cfg)).run()
    run = Path(recipe_dict["output_dir"])
    model = AutoModelForImageTextToText.from_pretrained(run / "0-rl" / "model", local_files_only=True)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    saved = (run / "config.yaml").read_text()
    assert "group_size: 4" in saved and "cache_vision: true" in saved  # defaults resolved and written
    ev = json.loads((run / "1-eval" / "eval.json").read_text())
    assert ev["n"] == 4 and set(ev["per_task"]) <= {"count", "order", "direction", "color_change"}
    lines = (run / "1-eval" / "eval_samples.jsonl").read_text().splitlines()
    assert len(lines) == 4
    metrics = [json.loads(line) for line in open(run / "0-rl" / "metrics.jsonl")]
    for key in ("reward/mean", "reward/accuracy/mean", "reward/format/mean", "completion/length", "loss/kl",
                "loss/clip_frac", "loss/entropy", "grad_norm", "time/decode",
                "time/rollout", "time/update", "time/encode"):
        assert key in metrics[0], key
    assert list((run / "0-rl" / "tb").glob("events.out.tfevents.*"))


def test_end_to_end_training_reward_rises(recipe_dict, tmp_path):
    cfg = dict(recipe_dict, output_dir=str(tmp_path / "e2e"))
    cfg["rl"] = dict(recipe_dict["rl"], steps=14, prompts_per_step=2, group_size=8, max_new_tokens=8,
                     rewards=[{"name": "tests.rewards_for_tests:brevity"}],
                     optim={"lr": 1e-2, "schedule": "constant"})
    cfg["checkpoint"] = {"every": 0}
    Pipeline(config_from_dict(cfg)).run()
    rewards = [json.loads(line)["reward/mean"] for line in open(tmp_path / "e2e" / "0-rl" / "metrics.jsonl")]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.1, rewards


def _sft_setup(recipe_dict, tmp_path, micro, lr=1e-3):
    cfg = config_from_dict(dict(recipe_dict, stages=["sft"],
                                sft=dict(recipe_dict["sft"], batch_size=4, micro_batch_size=micro,
                                         epochs=16, optim={"lr": lr, "schedule": "constant"})))
    model, processor = load_model_and_processor(recipe_dict["model"]["path"])
    enc = PromptEncoder(processor, cfg.video, cfg.prompt.template)
    rows = load_jsonl(recipe_dict["data"]["train"])[:4]
    return SFTTrainer(cfg, VLM(model), processor.tokenizer, enc, rows, tmp_path / f"sft{micro}"), model


def test_sft_accumulation_invariance_and_learning(recipe_dict, tmp_path):
    trainer, model = _sft_setup(recipe_dict, tmp_path, 4)
    ex = [trainer._example(i) for i in range(4)]
    tokens = float(sum(int((e["labels"][:, 1:] != -100).sum()) for e in ex))

    def loss_of(batches):
        model.zero_grad()
        total = 0.0
        for b in batches:
            batch = collate(b, trainer.pad_id)
            labels = batch.pop("labels")
            loss = labelled_nll(model(**batch, use_cache=False).logits, labels) / tokens
            loss.backward()
            total += float(loss.detach())
        return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    l4, g4 = loss_of([ex])
    l1, g1 = loss_of([[e] for e in ex])
    assert abs(l4 - l1) < 1e-5
    for n in g4:
        assert torch.allclose(g4[n], g1[n], atol=1e-5, rtol=1e-4), n
    # learning: overfitting four rows lowers the loss a lot
    trainer, _ = _sft_setup(recipe_dict, tmp_path, 2, lr=5e-3)
    losses = [trainer.train_step()["sft/loss"] for _ in range(16)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_sft_labels_cover_only_assistant_tokens(recipe_dict, tmp_path):
    trainer, _ = _sft_setup(recipe_dict, tmp_path, 4)
    ex = trainer._example(0)
    labels, ids = ex["labels"][0], ex["input_ids"][0]
    labelled = labels != -100
    tok = trainer.encoder.processor.tokenizer
    text = tok.decode(ids[labelled])
    assert text.startswith("<think>") and "</answer>" in text
    assert int(labelled.sum()) < len(ids) // 2


def test_sft_max_rows_trains_on_the_first_rows_only(recipe_dict, tmp_path):
    cfg = config_from_dict(dict(recipe_dict, stages=["sft"], sft=dict(recipe_dict["sft"], batch_size=2, max_rows=3)))
    model, processor = load_model_and_processor(recipe_dict["model"]["path"])
    rows = load_jsonl(recipe_dict["data"]["train"])[:8]
    trainer = SFTTrainer(cfg, VLM(model), processor.tokenizer, PromptEncoder(processor, cfg.video, cfg.prompt.template),
                         rows, tmp_path / "sft")
    assert [r.id for r, _ in trainer.rows] == [r.id for r in rows[:3]]
    assert trainer.total_steps == 2  # ceil(1 epoch x 3 rows / batch 2)


def test_missing_video_and_malformed_row_name_file_and_line(tiny_gym, tmp_path):
    rows = (tiny_gym / "train.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    shutil.copytree(tiny_gym / "videos", tmp_path / "videos")
    bad.write_text("\n".join([rows[0], rows[1].replace(".mp4", "_missing.mp4")]) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: video file not found"):
        load_jsonl(bad)
    bad.write_text(rows[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        load_jsonl(bad)
    bad.write_text(rows[0].replace('"answer"', '"answr"') + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: invalid row: field answer"):
        load_jsonl(bad)


def test_truncated_video_is_a_counted_skip(recipe_dict, tiny_gym, tmp_path):
    shutil.copytree(tiny_gym / "videos", tmp_path / "videos")
    lines = (tiny_gym / "train.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    victim = json.loads(lines[0])
    path = tmp_path / victim["video"]
    path.write_bytes(path.read_bytes()[:300])  # truncated file
    cfg = dict(recipe_dict, data={"train": str(tmp_path / "train.jsonl")}, checkpoint={"every": 0})
    cfg["rl"] = dict(recipe_dict["rl"], steps=4, prompts_per_step=2)
    res = Pipeline(config_from_dict(cfg)).run()
    done = json.loads((Path(cfg["output_dir"]) / "0-rl" / "done.json").read_text())
    assert done["skipped_videos"] == 1
    assert res["rows"] == []


def test_nan_loss_raises_with_row(recipe_dict, monkeypatch):
    from reelrl.algos import LOSSES
    from reelrl.algos.losses import LossOutput

    real = LOSSES.get("grpo")

    def nan_loss(batch, **kw):
        out = real(batch, **kw)
        return LossOutput(loss=out.loss * float("nan"), metrics=out.metrics)

    monkeypatch.setitem(LOSSES._items, "grpo", nan_loss)
    with pytest.raises(FloatingPointError, match="non-finite loss .* on row train-"):
        Pipeline(config_from_dict(recipe_dict)).run()


def test_sft_example_as_prompt_and_completion_scores_the_same_nll(recipe_dict, tmp_path):
    """What the sequence-parallel SFT path computes (prompt + labelled tail as a completion) equals the full forward."""
    from reelrl.models.vlm import token_logprobs

    trainer, model = _sft_setup(recipe_dict, tmp_path, 4)
    vlm = trainer.vlm
    for i in range(2):
        ex = trainer._example(i)
        full = vlm.sft_nll([ex], trainer.pad_id)
        prompt, target = vlm.sft_prompt(ex)  # target [1, A]
        assert prompt.length + target.shape[1] == ex["input_ids"].shape[1]
        logits = vlm.completion_logits(prompt, target, None, share_prefix=False)  # [1, A, V]
        split = -token_logprobs(logits, target).sum()
        assert float(full) > 1.0 and abs(float(full) - float(split)) < 1e-4 * float(full)
    bad = dict(ex, labels=ex["input_ids"].clone())  # every token labelled: no prompt
    with pytest.raises(ValueError, match="one run at the end"):
        vlm.sft_prompt(bad)


def test_step_memory_metrics(recipe_dict, tmp_path):
    """logging.memory: 'peak' logs the process RSS; 'tensors' the step's tensor peak, at least its logits' bytes."""
    for mode in ("peak", "tensors"):
        cfg = dict(recipe_dict, stages=["sft"], output_dir=str(tmp_path / mode), logging={"memory": mode,
                   "tensorboard": False, "progress": False},
                   sft=dict(recipe_dict["sft"], batch_size=4, micro_batch_size=4, epochs=1, max_rows=4))
        pipe = Pipeline(config_from_dict(cfg))
        pipe.run()
        m = json.loads((tmp_path / mode / "0-sft" / "metrics.jsonl").read_text().splitlines()[0])
        if mode == "peak":
            assert 0.05 < m["memory/rss_gb"] < 24 and "memory/tensors_peak_mb" not in m
            continue
        model, processor = load_model_and_processor(recipe_dict["model"]["path"])
        enc = PromptEncoder(processor, pipe.cfg.video, pipe.cfg.prompt.template)
        rows = load_jsonl(recipe_dict["data"]["train"])[:4]
        width = max(enc.encode(r).length for r in rows)  # prompts only: the conversations are longer still
        logits_mb = 4 * width * model.config.text_config.vocab_size * 4 / 2**20
        assert m["memory/tensors_peak_mb"] > logits_mb, (m["memory/tensors_peak_mb"], logits_mb)


def test_train_merger_trains_the_projector_and_not_the_vit_blocks(recipe_dict, tmp_path):
    """model.train_merger through the pipeline: SFT then GRPO change the merger; the frozen ViT blocks are unchanged."""
    cfg = dict(recipe_dict, stages=["sft", "rl"], output_dir=str(tmp_path / "m"), checkpoint={"every": 0},
               model=dict(recipe_dict["model"], freeze_vision=True, train_merger=True))
    Pipeline(config_from_dict(cfg)).run()
    init = _weights(Path(recipe_dict["model"]["path"]))
    for stage in ("0-sft", "1-rl"):
        w = _weights(tmp_path / "m" / stage / "model")
        changed = {k for k in w if not torch.equal(w[k], init[k])}
        vision = {k for k in changed if ".visual." in k or k.startswith("visual.")}
        assert vision and all(".merger." in k for k in vision), (stage, sorted(vision)[:3])
        assert any(k.startswith("model.layers.") for k in changed), stage
    sft, rl = _weights(tmp_path / "m" / "0-sft" / "model"), _weights(tmp_path / "m" / "1-rl" / "model")
    assert any(not torch.equal(sft[k], rl[k]) for k in sft if ".merger." in k)  # GRPO's update reached the merger
    with pytest.raises(ValueError, match="model.train_merger needs model.freeze_vision"):
        config_from_dict(dict(recipe_dict, model=dict(recipe_dict["model"], train_merger=True)))
