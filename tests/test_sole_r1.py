"""SOLE-R1: the reaching gym's true progress by hand, the training prompt equal to the served one, the recipe
end to end, and the online policy-gradient loop learning on the true reward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrl.data.schema import DataError, load_jsonl
from reelrl.gym import GymSpec, generate_gym
from reelrl.gym.reaching import (
    AGENT_SIDE,
    REACH_GOAL,
    goal_center,
    reach_progress,
    render_reach,
    start_distance,
    start_position,
)
from reelrl.gym.render import PALETTE
from reelrl.video.sample import VideoSampling

SPEC = dict(families=["reach_progress"], frames=8, height=56, width=56, seed=3)
SAMPLING = VideoSampling(nframes=8, min_pixels=56 * 56, max_pixels=56 * 56)


@pytest.fixture(scope="module")
def reach_gym(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reach")
    generate_gym(out, GymSpec(**SPEC), 12, 0, 4, progress=False)
    return out


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from reelrl.models.load import load_model_and_processor

    model, processor = load_model_and_processor(tiny_model_dir)
    return model.eval(), processor


# ------------------------------------------------------------------ the environment


def test_true_progress_by_hand() -> None:
    goal, start = np.array([28.0, 28.0]), np.array([28.0, 6.0])  # 22 px to the left of the goal
    pos = np.array([[28.0, 6.0], [28.0, 17.0], [28.0, 28.0], [28.0, 0.0], [39.0, 28.0], [28.0, 50.0]])
    # 0; half way; on the goal; 28 px away (clipped at 0); 11 px off on the other axis; 22 px past the goal
    assert reach_progress(pos, start, goal).tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="zero start distance"):
        reach_progress(pos, goal, goal)
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = start_position(rng, 56, 56)
        assert math.dist(s, goal_center(56, 56)) == pytest.approx(start_distance(56, 56)) == pytest.approx(22.4)


def test_render_draws_the_agent_where_it_is() -> None:
    pos = np.array([[10.0, 12.0], [28.0, 28.0]])
    frames = render_reach(pos, 56, 56)  # [2, 56, 56, 3]
    assert frames.shape == (2, 56, 56, 3) and frames.dtype == np.uint8
    for f, (y, x) in zip(frames, pos):
        red = np.all(f == PALETTE["red"], axis=-1)  # [56, 56]
        ys, xs = np.nonzero(red)
        assert abs(ys.mean() + 0.5 - y) < 0.6 and abs(xs.mean() + 0.5 - x) < 0.6
        assert ys.max() - ys.min() + 1 == AGENT_SIDE
    assert np.all(frames[0, 21:23, 21:35] == PALETTE["green"])  # the goal outline's top edge (side 14, centred)
    with pytest.raises(ValueError, match="multiples of 28"):
        render_reach(pos, 50, 56)


def test_gym_rows_are_cut_episodes_labelled_with_their_progress(reach_gym: Path) -> None:
    rows = load_jsonl(reach_gym / "train.jsonl")
    for r in rows:
        t = r.meta["cut"]
        assert r.question == REACH_GOAL and r.problem_type == "progress" and r.reasoning is None
        assert [im.frame for im in r.images] == list(range(t))
        assert r.answer == f"{r.meta['progress'][t - 1]:.2f}"
        pos, start, goal = (np.array(r.meta[k]) for k in ("positions", "start", "goal"))
        assert reach_progress(pos, start, goal) == pytest.approx(r.meta["progress"], abs=1e-3)


# ------------------------------------------------------------------ training prompt == served prompt


def test_training_prompt_tokens_equal_what_the_server_builds(reach_gym: Path, loaded) -> None:
    from reelrl.data.prompts import PromptEncoder
    from reelrl.data.progress_prompt import ANSWER_OPEN
    from reelrl.serve.prompt import ProgressPrompt
    from reelrl.video.decode import decode_frames

    _, processor = loaded
    served = ProgressPrompt(processor)
    rows = [r for r in load_jsonl(reach_gym / "train.jsonl") if r.meta["cut"] > 1][:3]
    assert rows
    for stage in ("sft", "rl", "eval"):
        enc = PromptEncoder(processor, SAMPLING, "served_progress", stage=stage)
        for row in rows:
            prompt = enc.encode(row)
            t = row.meta["cut"]
            frames = decode_frames(row.video, list(range(t)), size=(56, 56))  # [t, 56, 56, 3]
            n = served.image_tokens(frames[0].shape)
            server_ids = served.head_ids(row.question) + served.frame_ids(n, True) + sum(
                (served.frame_ids(n, False) for _ in range(t - 1)), []) + served.tail_ids()
            opening = processor.tokenizer(ANSWER_OPEN, add_special_tokens=False)["input_ids"]
            assert prompt.input_ids[0].tolist() + opening == server_ids, (stage, row.id)
            pixels = torch.cat([served.patchify(f)[0] for f in frames])  # [t*16, d]
            assert torch.equal(prompt.vision_inputs["pixel_values"], pixels)
            assert prompt.vision_inputs["image_grid_thw"].tolist() == [[1, 4, 4]] * t
            assert "pixel_values_videos" not in prompt.vision_inputs
    ex = PromptEncoder(processor, SAMPLING, "served_progress", stage="sft").encode_sft(rows[0], f"<answer>{rows[0].answer}</answer>")
    labelled = ex["input_ids"][0][ex["labels"][0] != -100].tolist()
    assert processor.decode(labelled, skip_special_tokens=False) == f"<answer>{rows[0].answer}</answer><|im_end|>"


def test_served_progress_template_refuses_rows_it_cannot_prompt(reach_gym: Path, tiny_gym: Path, loaded) -> None:
    from reelrl.data.prompts import PromptEncoder

    _, processor = loaded
    video_row = load_jsonl(tiny_gym / "train.jsonl")[0]
    enc = PromptEncoder(processor, SAMPLING, "served_progress")
    with pytest.raises(DataError, match="field images"):
        enc.check_rows([video_row])
    wrong = load_jsonl(reach_gym / "train.jsonl")[0].model_copy(update={"problem_type": "regression"})
    with pytest.raises(DataError, match="field problem_type"):
        enc.check_rows([wrong])
    with pytest.raises(ValueError, match="prompt.system"):
        PromptEncoder(processor, SAMPLING, "served_progress", system="You are a critic.")


def test_image_only_prompt_scores_as_one_plain_forward(reach_gym: Path, loaded) -> None:
    """The VLM's cached-prefix scoring of an image-only prompt equals one plain transformers forward."""
    from reelrl.data.prompts import PromptEncoder
    from reelrl.models.vlm import VLM

    model, processor = loaded
    row = [r for r in load_jsonl(reach_gym / "train.jsonl") if r.meta["cut"] > 2][0]
    prompt = PromptEncoder(processor, SAMPLING, "served_progress").encode(row)
    vlm = VLM(model)
    completion = torch.tensor([processor.tokenizer("<answer>0.5", add_special_tokens=False)["input_ids"]])  # [1, A]
    with torch.no_grad():
        got = vlm.completion_logits(prompt, completion, vlm.encode_vision(prompt))  # [1, A, V]
        ids = torch.cat([prompt.input_ids, completion], 1)  # [1, P+A]
        plain = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                      mm_token_type_ids=torch.cat([prompt.mm_token_type_ids, torch.zeros_like(completion)], 1),
                      pixel_values=prompt.vision_inputs["pixel_values"],
                      image_grid_thw=prompt.vision_inputs["image_grid_thw"]).logits[:, prompt.length - 1:-1]
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ the recipe


def test_sole_r1_recipe_trains_a_critic_that_reelrl_serve_serves(tiny_model_dir: Path, reach_gym: Path,
                                                                  tmp_path: Path) -> None:
    from reelrl.models.load import load_model_and_processor
    from reelrl.pipeline import Pipeline, load_recipe
    from reelrl.serve.critic import ProgressCritic

    cfg = load_recipe("sole_r1", [
        f"output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", "data.gym.enabled=false",
        f"data.train={reach_gym / 'train.jsonl'}", f"data.test={reach_gym / 'test.jsonl'}", "sft.epochs=1",
        "sft.batch_size=4", "sft.micro_batch_size=4", "eval.max_new_tokens=8", "logging.progress=false",
        "checkpoint.every=0"])
    assert cfg.stages == ["sft", "eval"] and cfg.prompt.template == "served_progress"
    Pipeline(cfg).run()
    ev = json.loads((tmp_path / "run" / "1-eval" / "eval.json").read_text())
    assert ev["n"] == 4 and "mae" in ev["per_task"]["reach_progress"]["progress"]
    model_dir = tmp_path / "run" / "0-sft" / "model"
    model, processor = load_model_and_processor(model_dir)
    critic = ProgressCritic(model.eval(), processor)
    ep = critic.open(REACH_GOAL)
    frames = render_reach(np.array([[28.0, 6.0], [28.0, 17.0]]), 56, 56)  # [2, 56, 56, 3]
    results = [critic.add_frames([(ep.id, f)])[0] for f in frames]
    assert [r.t for r in results] == [0, 1] and all(0.0 <= r.progress <= 1.0 for r in results)
