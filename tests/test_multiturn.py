"""Multi-turn rollouts: appended turns equal one forward over the whole conversation; loss only on model tokens."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.envs.base import Observation, Turn
from reelrl.models.load import load_model_and_processor
from reelrl.models.turns import TurnEncoder
from reelrl.models.vlm import VLM, token_logprobs
from reelrl.rollout.hf import SamplingParams, make_generators
from reelrl.rollout.multiturn import EpisodeRequest, continuation_logits, rollout_episodes
from reelrl.video.sample import VideoSampling


class ScriptedEnv:
    """Shows ``turns - 1`` more turns, each with one frame of the video (frame index = turn * 5) and a text."""

    def __init__(self, frames: np.ndarray, turns: int = 3, stop_after: int | None = None) -> None:
        self.frames, self.max_turns, self.k, self.stop_after = frames, turns, 0, stop_after
        self.seen: list[str] = []

    def step(self, text: str) -> Turn:
        self.k += 1
        self.seen.append(text)
        if self.stop_after is not None and self.k >= self.stop_after:
            return Turn({"turn": self.k}, None)
        img = self.frames[(self.k * 5) % len(self.frames)]  # [H, W, 3]
        return Turn({"turn": self.k}, Observation(f"look again {self.k}", [img]))


@pytest.fixture(scope="module")
def setup(tiny_gym, tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir)
    model.eval()
    vlm = VLM(model)
    enc = PromptEncoder(processor, VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136), "{question}")
    rows = load_jsonl(tiny_gym / "train.jsonl")
    return vlm, processor, enc, rows


def _params(processor, **kw) -> SamplingParams:
    tok = processor.tokenizer
    return SamplingParams(eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id,
                          suppress_ids=(processor.image_token_id, processor.video_token_id), **kw)


def _full_forward_logprobs(vlm, processor, prompt, tokens_row, ctx_pixels, ctx_grid) -> torch.Tensor:
    """Log-probs of every continuation token from ONE transformers forward over the whole conversation.

    Positions are left to transformers (it builds the 3D RoPE index from mm_token_type_ids and both grids).
    """
    ids = torch.cat([prompt.input_ids, tokens_row.view(1, -1)], dim=1)  # [1, P+T]
    types = torch.zeros_like(ids)
    types[ids == processor.image_token_id] = 1
    types[ids == processor.video_token_id] = 2
    kw = dict(prompt.vision_inputs)
    if ctx_pixels is not None:
        kw.update(pixel_values=ctx_pixels, image_grid_thw=ctx_grid)
    out = vlm.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types, **kw)
    logits = out.logits[:, prompt.length - 1 : -1]  # [1, T, V]
    return token_logprobs(logits, tokens_row.view(1, -1))[0]  # [T]


def _shared_equals_whole(vlm, prompt, ro, ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuation log-probs ``[G, T]`` from the shared-prefix path, checked equal to the whole-conversation
    path on the model tokens; returns them and the model-token mask ``[G, T]``."""
    vision = vlm.encode_vision(prompt)
    with torch.no_grad():
        shared = token_logprobs(continuation_logits(vlm, prompt, ro.tokens, ctx, vision, share_prefix=True), ro.tokens)
        whole = token_logprobs(continuation_logits(vlm, prompt, ro.tokens, ctx, vision, share_prefix=False), ro.tokens)
    m = ro.mask.bool()
    torch.testing.assert_close(shared[m], whole[m], atol=1e-5, rtol=1e-5)
    return shared, m


def test_turn_encoder_follows_the_chat_template(setup):
    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    frame = np.zeros((56, 56, 3), dtype=np.uint8)
    open_turn = te.encode("where?", [frame], closed=False)
    closed_turn = te.encode("where?", [frame], closed=True)
    text = processor.tokenizer.decode(open_turn.ids, skip_special_tokens=False)
    # 56x56 pixels = 4x4 patches of 14, merged 2x2: 4 image tokens
    assert text == ("<|im_end|>\n<|im_start|>user\n<|vision_start|>" + processor.image_token * 4
                    + "<|vision_end|>where?<|im_end|>\n<|im_start|>assistant\n")
    assert closed_turn.ids == open_turn.ids[1:]  # a turn that ended on <|im_end|> is not closed twice
    assert open_turn.image_grid_thw.tolist() == [[1, 4, 4]]
    assert open_turn.pixel_values.shape == (16, 3 * 2 * 14 * 14)
    with pytest.raises(ValueError, match="multiple of 28"):
        te.encode("x", [np.zeros((50, 56, 3), dtype=np.uint8)], closed=False)


def test_greedy_episode_equals_full_forward_and_masks_env_tokens(setup):
    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    prompt = enc.encode(rows[0])
    frames = enc.frames(rows[0]).frames  # [T, H, W, 3]
    envs = [ScriptedEnv(frames, turns=3) for _ in range(2)]
    params = _params(processor, max_new_tokens=5, temperature=0.0)
    (ep,) = rollout_episodes(vlm, te, [EpisodeRequest(prompt, envs)], params)
    ro, ctx = ep.rollout, ep.rollout.context
    assert [len(t) for t in ep.turn_texts] == [3, 3] and [e.k for e in envs] == [3, 3]
    assert ctx.image_grid_thw.shape[0] == 4  # 2 trajectories x 2 later turns, one image each
    for i in range(2):
        n = int(ro.lengths[i])
        toks = ro.tokens[i, :n]
        model = ro.mask[i, :n].bool()
        # the loss mask: exactly the model turns (3 turns of at most 5 tokens), never an image or user token
        assert int(model.sum()) <= 15 and not bool(torch.isin(toks[model], torch.tensor(
            [processor.image_token_id, processor.video_token_id])).any())
        assert (toks[~model] == processor.image_token_id).sum() == 2 * 4
        mine = slice(i * 32, (i + 1) * 32)  # this trajectory's 2 images x 16 patches
        logp = _full_forward_logprobs(vlm, processor, prompt, toks, ctx.pixel_values[mine], ctx.image_grid_thw[2 * i: 2 * i + 2])
        # greedy: every model token is the argmax of the full forward at its position
        ids = torch.cat([prompt.input_ids[0], toks])
        types = torch.zeros_like(ids)
        types[ids == processor.image_token_id] = 1
        types[ids == processor.video_token_id] = 2
        out = vlm.model(input_ids=ids[None], mm_token_type_ids=types[None], pixel_values=ctx.pixel_values[mine],
                        image_grid_thw=ctx.image_grid_thw[2 * i: 2 * i + 2], **prompt.vision_inputs)
        argmax = out.logits[0, prompt.length - 1 : -1].argmax(-1)  # [T]
        assert torch.equal(argmax[model], toks[model])
        assert torch.isfinite(logp).all()


def test_continuation_logprobs_equal_one_full_forward(setup):
    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    prompt = enc.encode(rows[1])
    frames = enc.frames(rows[1]).frames
    envs = [ScriptedEnv(frames, turns=3, stop_after=s) for s in (1, 2, 3)]  # 1, 2 and 3 model turns
    params = _params(processor, max_new_tokens=6, temperature=1.0)
    (ep,) = rollout_episodes(vlm, te, [EpisodeRequest(prompt, envs, make_generators(5, 3))], params)
    ro, ctx = ep.rollout, ep.rollout.context
    assert [len(t) for t in ep.turn_texts] == [1, 2, 3]
    shared, m = _shared_equals_whole(vlm, prompt, ro, ctx)
    img = 0
    for i in range(3):
        n = int(ro.lengths[i])
        k = int((ro.tokens[i, :n] == processor.image_token_id).sum()) // 4  # images (4 tokens, 16 patches each)
        pix = ctx.pixel_values[img * 16 : (img + k) * 16] if k else None
        grid = ctx.image_grid_thw[img : img + k] if k else None
        img += k
        with torch.no_grad():
            ref = _full_forward_logprobs(vlm, processor, prompt, ro.tokens[i, :n], pix, grid)
        torch.testing.assert_close(shared[i, :n][m[i, :n]], ref[m[i, :n]], atol=1e-5, rtol=1e-5)


def test_prompt_with_its_own_images_continues_over_later_images(setup):
    """A prompt with extra images (VideoRow.images, before and after its video) and later turns with images:
    the later images' RoPE ids follow the prompt's, and the shared, whole and transformers forwards agree."""
    from reelrl.data.schema import ImageRef

    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    row = rows[3].model_copy(update={"images": [ImageRef(role="initial_state", frame=0, position="before"),
                                                ImageRef(role="current_state", frame=-1, position="after")]})
    prompt = enc.encode(row)
    assert prompt.vision_inputs["image_grid_thw"].shape[0] == 2
    first_pixels = prompt.vision_inputs["pixel_values"]  # [2 * 16, d]
    frames = enc.frames(row).frames
    envs = [ScriptedEnv(frames, turns=3, stop_after=s) for s in (2, 3)]  # 1 and 2 later images
    params = _params(processor, max_new_tokens=6, temperature=1.0)
    (ep,) = rollout_episodes(vlm, te, [EpisodeRequest(prompt, envs, make_generators(4, 2))], params)
    ro, ctx = ep.rollout, ep.rollout.context
    assert ctx.images_per_row == [1, 2]
    shared, m = _shared_equals_whole(vlm, prompt, ro, ctx)
    img = 0
    for i, k in enumerate(ctx.images_per_row):
        n = int(ro.lengths[i])
        ids = torch.cat([prompt.input_ids[0], ro.tokens[i, :n]])[None]  # [1, P+T]
        types = torch.zeros_like(ids)
        types[ids == processor.image_token_id] = 1
        types[ids == processor.video_token_id] = 2
        kw = dict(prompt.vision_inputs)
        kw["pixel_values"] = torch.cat([first_pixels, ctx.pixel_values[img * 16 : (img + k) * 16]])
        kw["image_grid_thw"] = torch.cat([prompt.vision_inputs["image_grid_thw"], ctx.image_grid_thw[img : img + k]])
        img += k
        with torch.no_grad():
            out = vlm.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types, **kw)
            ref = token_logprobs(out.logits[:, prompt.length - 1 : -1], ro.tokens[i : i + 1, :n])[0]  # [T]
        torch.testing.assert_close(shared[i, :n][m[i, :n]], ref[m[i, :n]], atol=1e-5, rtol=1e-5)
        # a later image's positions start after the prompt's text, never on the prompt's images' ids
        later = (ro.tokens[i, :n] == processor.image_token_id).nonzero()[:, 0]
        assert int(ctx.positions[0, i, later].min()) > int(vlm.positions(prompt)[0].max())


def test_trajectory_tokens_do_not_depend_on_the_batch(setup):
    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    prompt = enc.encode(rows[2])
    frames = enc.frames(rows[2]).frames
    params = _params(processor, max_new_tokens=6, temperature=1.0)
    (group,) = rollout_episodes(vlm, te, [EpisodeRequest(prompt, [ScriptedEnv(frames) for _ in range(3)],
                                                         make_generators(9, 3))], params)
    for i, gen in enumerate(make_generators(9, 3)):
        (one,) = rollout_episodes(vlm, te, [EpisodeRequest(prompt, [ScriptedEnv(frames)], [gen])], params)
        n = int(group.rollout.lengths[i])
        assert int(one.rollout.lengths[0]) == n
        assert torch.equal(group.rollout.tokens[i, :n], one.rollout.tokens[0, :n])
        assert one.turn_texts[0] == group.turn_texts[i]


def test_trainer_learns_a_second_turn_reward(recipe_dict, tmp_path):
    """Through `reelrl train`'s pipeline: only the second turn is rewarded, and its reward rises."""
    import json

    from reelrl.config import config_from_dict
    from reelrl.pipeline import Pipeline

    cfg = dict(recipe_dict, output_dir=str(tmp_path / "mt"))
    cfg["rl"] = dict(recipe_dict["rl"], steps=20, prompts_per_step=2, group_size=8, max_new_tokens=8,
                     env={"name": "tests.envs_for_tests:show_frame"},
                     rewards=[{"name": "tests.rewards_for_tests:second_turn_brevity"},
                              {"name": "format", "weight": 0.0}],
                     log_samples_every=1, optim={"lr": 1e-2, "schedule": "constant"})
    cfg["checkpoint"] = {"every": 0}
    Pipeline(config_from_dict(cfg)).run()
    metrics = [json.loads(line) for line in open(tmp_path / "mt" / "0-rl" / "metrics.jsonl")]
    second = [m["reward/turn2/tests.rewards_for_tests:second_turn_brevity/mean"] for m in metrics]
    assert all(math.isnan(m["reward/turn1/tests.rewards_for_tests:second_turn_brevity/mean"]) for m in metrics)
    assert sum(second[-4:]) / 4 > sum(second[:4]) / 4 + 0.1, second
    sample = json.loads((tmp_path / "mt" / "0-rl" / "samples.jsonl").read_text().splitlines()[0])
    assert all("[turn 1]" in c and "[turn 2]" in c for c in sample["completions"])
