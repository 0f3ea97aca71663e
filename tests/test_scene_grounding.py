"""Scene-R1 two-stage grounding: the frame the first answer picks, the gold box of that frame, gold episodes for SFT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reelrl.data.boxes import parse_box
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.envs import ENVS
from reelrl.envs.grounding import NO_BOX, track_box
from reelrl.models.load import load_model_and_processor
from reelrl.models.processing import IGNORE_INDEX
from reelrl.models.vlm import VLM
from reelrl.video.sample import VideoSampling

SPEC = dict(families=["temporal_grounding"], frames=16, fps=4.0, height=56, width=56, difficulty=0.3,
            object_scale=1.2, seed=3)


@pytest.fixture(scope="module")
def tg_gym(tmp_path_factory):
    from reelrl.gym import GymSpec, generate_gym

    out = tmp_path_factory.mktemp("tg")
    generate_gym(out, GymSpec(**SPEC), 6, 0, 4, progress=False)
    return out


@pytest.fixture(scope="module")
def setup(tg_gym, tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir)
    enc = PromptEncoder(processor, VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136), "{question}")
    return VLM(model), processor, enc, load_jsonl(tg_gym / "train.jsonl")


def _env(enc, row):
    return ENVS.get("two_stage_grounding")(row, enc.frames(row))


def test_second_turn_shows_the_frame_at_the_answer_and_scores_its_box(setup):
    vlm, processor, enc, rows = setup
    row = rows[0]
    video = enc.frames(row)
    s, e = row.time_span
    env = _env(enc, row)
    turn = env.step(f"<think>x</think><answer>{s:g} to {e:g}</answer>")
    assert turn.columns == {}  # the first turn is scored with the row's own columns (tIoU)
    (img,) = turn.observation.images
    mid = (s + e) / 2
    i = int(np.abs(video.timestamps - mid).argmin())
    assert np.array_equal(img, video.frames[i]) and f"{video.timestamps[i]:g} s" in turn.observation.text
    target = row.meta["target"]
    assert f"{target['color']} {target['shape']}" in turn.observation.text
    last = env.step("<answer>[1, 2, 3, 4]</answer>")
    y, x, size = target["box"]
    assert last.observation is None and last.columns["problem_type"] == "box"
    assert parse_box(last.columns["answer"]) == (x, y, x + size, y + size)
    # the gold box covers the target's pixels in the frame shown: its colour dominates the box
    box = img[y : y + size, x : x + size].astype(int)  # [s, s, 3]
    outside = img.astype(int).sum() - box.sum()
    assert box.sum() > 0 and box.mean() > img.mean() and outside >= 0


def test_frame_without_the_object_and_answers_without_a_span(setup):
    vlm, processor, enc, rows = setup
    row = rows[1]
    s, e = row.time_span
    video = enc.frames(row)
    env = _env(enc, row)
    outside = (e + 0.25, video.timestamps[-1] + 0.25) if e < video.timestamps[-1] else (0.0, max(0.25, s - 0.25))
    env.step(f"<answer>{outside[0]:g} to {outside[1]:g}</answer>")
    assert env.step("<answer>[0, 0, 5, 5]</answer>").columns["answer"] == NO_BOX  # not visible: every box scores 0
    for text in ["no tags 1 to 2", "<answer>soon</answer>", "<answer>3 to 1</answer>"]:
        ended = _env(enc, row).step(text)
        assert ended.observation is None and ended.info["ended"]


def test_track_boxes_scale_to_the_frame_the_model_saw(setup):
    row = setup[3][0].model_copy(update={"meta": {"object": "cup", "track": [
        {"time": 0.0, "box": [10, 20, 30, 40]}, {"time": 2.0, "box": [50, 60, 70, 80]}]}, "time_span": (0.0, 3.0)})
    assert track_box(row, 1.9, (56, 56), (112, 224)) == (12.5, 30.0, 17.5, 40.0)  # nearest entry, x / 4, y / 2
    assert track_box(row, 3.0, (56, 56), (112, 224)) is None  # outside the span


def test_gold_episode_sft_example(setup):
    vlm, processor, enc, rows = setup
    row = rows[2]
    demo = _env(enc, row).demonstration()
    targets = [enc.prompt.target(r, a) for r, a in demo.answers]
    ex = enc.encode_sft_episode(row, targets, demo.observations)
    labels = ex["labels"][0]
    tok = processor.tokenizer
    labelled = tok.decode(ex["input_ids"][0][labels != IGNORE_INDEX], skip_special_tokens=False)
    assert labelled == targets[0] + "<|im_end|>" + targets[1] + "<|im_end|>"  # loss on the two model turns only
    assert int((ex["input_ids"] == processor.image_token_id).sum()) == 4 and ex["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert bool((ex["mm_token_type_ids"][0] == 1).eq(ex["input_ids"][0] == processor.image_token_id).all())
    assert parse_box(demo.answers[1][1]) is not None and '"label"' in demo.answers[1][1]
    with torch.no_grad():
        nll = vlm.sft_nll([ex], tok.pad_token_id)  # the model builds video + image positions itself
    assert torch.isfinite(nll) and float(nll) > 0


def test_scene_r1_recipe_runs_sft_eval_rl_eval(tg_gym, tiny_model_dir, tmp_path):
    from reelrl.pipeline import Pipeline, load_recipe

    cfg = load_recipe("scene_r1", [
        f"output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", "data.gym.enabled=false",
        f"data.train={tg_gym / 'train.jsonl'}", f"data.test={tg_gym / 'test.jsonl'}", "sft.epochs=1",
        "sft.batch_size=3", "sft.micro_batch_size=3", "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=2",
        "rl.max_new_tokens=8", "eval.max_new_tokens=8", "logging.progress=false", "checkpoint.every=0"])
    Pipeline(cfg).run()
    ev = json.loads((tmp_path / "run" / "3-eval" / "eval.json").read_text())
    assert ev["n"] == 4 and "turn1" in ev["turns"] and "grounding" in ev
    m = json.loads((tmp_path / "run" / "2-rl" / "metrics.jsonl").read_text().splitlines()[0])
    assert "reward/turn1/accuracy/mean" in m and "reward/turn2/accuracy/mean" in m
