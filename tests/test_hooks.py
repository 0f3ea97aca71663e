"""Trainer hooks: shaping / filter maths by hand, and each hook wired into a real (tiny) trainer step."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reelrl.algos import (
    GROUP_FILTERS,
    LOSSES,
    REWARD_SHAPING,
    overlong_keep,
    temporal_bonus,
)
from reelrl.algos.token_weights import tw_grpo_weights_from_logits
from reelrl.config import ConfigError, config_from_dict
from reelrl.data.curriculum import irrelevant_spans
from reelrl.data.prompts import PromptEncoder
from reelrl.models.load import load_model_and_processor
from reelrl.models.vlm import VLM
from reelrl.pipeline import Pipeline, load_rows
from reelrl.rewards import functions as reward_functions
from reelrl.train import loop as loop_module
from reelrl.train.catalog import check_recipe
from reelrl.train.groups import PromptView
from reelrl.train.hooks import GroupFilter
from reelrl.train.policy import ReferencePolicy
from reelrl.train.rl import RLTrainer
from reelrl.video.transforms import mask_span


@GROUP_FILTERS.register("test_rows_div4")
def _rows_div4(rewards, accuracy, *, generator=None):
    """Keeps groups whose row index (passed in as rewards[:, 0]) is a multiple of 4: a filter a test can predict."""
    return (rewards[:, 0].round().long() % 4) == 0  # [B]


# ------------------------------------------------------------------ pure maths


def test_temporal_bonus_by_hand():
    acc_o = torch.tensor([[1.0, 0.0, 0.5, 0.05], [0.0, 0.0, 0.0, 0.0], [1.0, 0.2, 0.1, 0.0]])
    acc_s = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    # p = 0.3875, 0, 0.325; q = 0.5, 0, 0.25; gate p >= 0.8 q: no (0.3875 < 0.4), yes, yes (0.325 >= 0.2)
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.0, 0.0]])  # 0.1 is not > 0.1
    assert torch.allclose(temporal_bonus(acc_o, acc_s), expected)
    loose = temporal_bonus(acc_o, acc_s, ratio=0.7, bonus=0.5, threshold=0.04)  # row 0: 0.3875 >= 0.35
    assert torch.allclose(loose[0], torch.tensor([0.5, 0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="acc_shuffled"):
        temporal_bonus(acc_o, acc_s[:2])


def test_overlong_penalty_by_hand():
    fn = REWARD_SHAPING.get("overlong_penalty")
    lengths = torch.tensor([[3, 6, 7, 9, 10]])
    zeros = torch.zeros(1, 5)
    kw = dict(lengths=lengths, truncated=zeros.bool(), accuracy=zeros, max_len=10)
    # L_exp = 10 - 4 = 6: (6 - |y|) / 4 past it
    assert torch.allclose(fn(zeros, cache_len=4, **kw), torch.tensor([[0.0, 0.0, -0.25, -0.75, -1.0]]))
    assert torch.allclose(fn(zeros, cache_len=4, penalty=0.5, **kw), torch.tensor([[0.0, 0.0, -0.125, -0.375, -0.5]]))
    # default cache = round(0.2 * 10) = 2: L_exp = 8
    assert torch.allclose(fn(zeros, **kw), torch.tensor([[0.0, 0.0, 0.0, -0.5, -1.0]]))
    with pytest.raises(ValueError, match="cache_len"):
        fn(zeros, cache_len=11, **kw)


def test_length_bonus_needs_two_correct_in_range():
    fn = REWARD_SHAPING.get("length_bonus")
    lengths = torch.tensor([[350, 400, 100, 600], [350, 10, 10, 10]])
    acc = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    out = fn(torch.zeros(2, 4), lengths=lengths, truncated=torch.zeros(2, 4, dtype=torch.bool), accuracy=acc,
             max_len=1024)
    assert torch.allclose(out, torch.tensor([[0.2, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))  # row 2: only one correct


def test_overlong_keep_and_group_filters_by_hand():
    assert torch.equal(overlong_keep(torch.tensor([True, False, False])), torch.tensor([0.0, 1.0, 1.0]))
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.5, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    acc = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    ds = GROUP_FILTERS.get("dynamic_sampling")
    assert ds(rewards, acc).tolist() == [False, True, False, False]
    assert ds(rewards, acc, signal="accuracy").tolist() == [False, True, False, True]
    drop = GROUP_FILTERS.get("drop_all_correct")
    assert drop(rewards, acc, generator=torch.Generator().manual_seed(0), drop_frac=1.0).tolist() == [
        False, True, True, True]
    assert drop(rewards, acc, generator=torch.Generator().manual_seed(0), drop_frac=0.0).all()


def test_group_filter_hook_uses_rewards_and_accuracy_columns():
    groups = [SimpleNamespace(rewards=torch.tensor([1.0, 1.0]), columns={"accuracy": torch.tensor([1.0, 1.0])}),
              SimpleNamespace(rewards=torch.tensor([0.0, 1.0]), columns={"accuracy": torch.tensor([0.0, 1.0])})]
    host = SimpleNamespace(cfg=SimpleNamespace(seed=0), step_idx=3)
    f = GroupFilter(config_from_dict(_minimal()).rl.group_filter.model_copy(update={"name": "dynamic_sampling"}))
    assert f(host, groups, 0) == [False, True]
    assert f.metrics() == {"filter/kept_frac": 0.5}
    bad = _minimal()
    bad["rl"]["group_filter"]["kwargs"] = {"bogus": 1}
    with pytest.raises(ConfigError, match="rl.group_filter.kwargs: got an unexpected keyword argument 'bogus'"):
        check_recipe(config_from_dict(bad))


def _minimal() -> dict:
    return {"model": {"path": "x"}, "data": {"train": "x"}, "rl": {"group_filter": {"name": "drop_all_correct"}}}


def test_config_names_the_bad_field():
    bad = {"model": {"path": "x"}, "data": {"train": "x"}, "rl": {"augment": [{"name": "nope"}]}}
    with pytest.raises(ConfigError, match=r"rl.augment\[0\].name: unknown augment 'nope'"):
        check_recipe(config_from_dict(bad))
    bad = {"model": {"path": "x"}, "data": {"train": "x"}, "rl": {"loss": "tw_grpo"}}
    with pytest.raises(ConfigError, match="rl.token_weights"):
        check_recipe(config_from_dict(bad))
    bad = {"model": {"path": "x"}, "data": {"train": "x"}, "rl": {"row_source": {"name": "curriculum"}}}
    with pytest.raises(ConfigError, match="rl.row_source.name"):
        check_recipe(config_from_dict(bad))


# ------------------------------------------------------------------ hooks inside a trainer


def _trainer(recipe_dict, tmp_path, **rl) -> RLTrainer:
    cfg = check_recipe(config_from_dict({**recipe_dict, "rl": {**recipe_dict["rl"], **rl}}))
    model, processor = load_model_and_processor(recipe_dict["model"]["path"])
    enc = PromptEncoder(processor, cfg.video, cfg.prompt.template)
    return RLTrainer(cfg, VLM(model), processor.tokenizer, enc, load_rows(cfg, "train"), tmp_path / "stage")


def _odd_length_accuracy(completions, **columns):
    """A stand-in accuracy the random tiny model scores about half of the time on (text length parity)."""
    return [float(len(c) % 2) for c in completions]


def test_temporal_contrast_adds_the_rule_to_rewards(recipe_dict, tmp_path, monkeypatch):
    monkeypatch.setitem(reward_functions.REWARDS._items, "accuracy", _odd_length_accuracy)
    t = _trainer(recipe_dict, tmp_path, temporal={"ratio": 0.0, "shuffled": 3})
    made = []
    real = t.rollout_many

    def spy(requests):
        out = real(requests)
        made.extend((view, n, g) for (view, _, _, n), g in zip(requests, out))
        return out

    t.rollout_many = spy
    groups, _ = t.collect(t.source.next_batch(0))
    shuffled = [(v, n, g) for v, n, g in made if n == 3]
    assert len(shuffled) == len(groups) == 2
    for g, (view, _, sg) in zip(groups, shuffled):
        assert view.variant.startswith("shuffle(") and view.row.id == g.row.id
        # the shuffled copy keeps the temporal RoPE input of the ordered one
        assert torch.equal(sg.prompt.vision_inputs["second_per_grid_ts"], g.prompt.vision_inputs["second_per_grid_ts"])
        assert not torch.equal(sg.prompt.vision_inputs["pixel_values_videos"],
                               g.prompt.vision_inputs["pixel_values_videos"])
        acc = torch.tensor(_odd_length_accuracy(g.texts))
        bonus = temporal_bonus(acc[None], torch.tensor(_odd_length_accuracy(sg.texts))[None], ratio=0.0)[0]
        assert torch.allclose(g.columns["temporal_bonus"], bonus)
        assert torch.allclose(g.rewards - bonus, _base_rewards(t, g))
    assert any(float(g.columns["temporal_bonus"].sum()) > 0 for g in groups)  # ratio 0: every correct one gets it


def _base_rewards(t: RLTrainer, g) -> torch.Tensor:
    from reelrl.rewards import compute_rewards
    from reelrl.train.rl import _columns

    return compute_rewards(t.reward_specs, g.texts, _columns([g.row], [len(g.texts)]))[0]


def test_token_weights_are_set_detached_and_match_the_formula(recipe_dict, tmp_path, monkeypatch):
    t = _trainer(recipe_dict, tmp_path, loss="tw_grpo", token_weights={"alpha": 1.5}, skip_zero_advantage=False)
    groups, kept, _ = t.gather()
    t.advantages(groups, kept)
    t.reference_pass(groups)
    with torch.no_grad():
        expected = [tw_grpo_weights_from_logits(t._policy_logp([g], grad=False)[0][1], g.rollout.mask, 1.5, group_size=4)
                    for g in groups]
    seen = []
    real = LOSSES.get("tw_grpo")
    monkeypatch.setitem(LOSSES._items, "tw_grpo", lambda batch, **kw: seen.append(batch) or real(batch, **kw))
    t.update(groups, kept)
    assert len(seen) == len(groups)
    for batch, w in zip(seen, expected):
        assert batch.token_weights is not None and not batch.token_weights.requires_grad
        assert torch.allclose(batch.token_weights, w, atol=1e-5)
        valid = batch.mask > 0
        assert float(batch.token_weights[valid].min()) >= 1.0 - 1e-6
        assert float(batch.token_weights[valid].max()) <= 1.5 + 1e-6


def test_qa_inversion_and_curriculum_mask_views(recipe_dict, tmp_path):
    t = _trainer(recipe_dict, tmp_path, augment=[{"name": "qa_inversion", "kwargs": {"p": 1.0}}])
    i = next(k for k, r in enumerate(t.rows) if r.problem_type == "multiple_choice")
    view = t.hooks.view(t, i)
    assert view.row.id == f"{t.rows[i].id}-inv" and view.row.problem_type == "multi_choice"
    assert t.rows[i].options[ord(t.rows[i].answer) - 65] not in [view.row.options[ord(a) - 65]
                                                                 for a in view.row.answer.split(",")]
    assert t.hooks.view(t, i).row == view.row  # same step, same row: same draw
    assert t.hooks.metrics()["augment/inverted_frac"] == 1.0

    curriculum = {"name": "difficulty_curriculum",
                  "kwargs": {"total_steps": 10, "hard_threshold": 2.0, "mask_max_frac": 0.5, "unmask_steps": 4}}
    t = _trainer(recipe_dict, tmp_path, row_source=curriculum, augment=[{"name": "curriculum_mask"}])
    row = t.rows[0]
    video = t.encoder.frames(row)
    spans = irrelevant_spans(0.5, row.time_span, video.info.duration)
    assert spans
    view = t.hooks.view(t, 0)
    assert view.variant.startswith("tgmask(")
    want = video.frames
    for s, e in spans:
        want = mask_span(want, s, e)
    assert np.array_equal(view.frame_transform()(video.frames), want)
    t.step_idx = 4  # fully un-masked
    assert t.hooks.view(t, 0).transforms == ()
    with pytest.raises(ValueError, match="difficulty_curriculum"):
        _trainer(recipe_dict, tmp_path, augment=[{"name": "curriculum_mask"}])


def test_difficulty_aware_rerolls_easy_with_noise_and_hard_with_hint(recipe_dict, tmp_path):
    t = _trainer(recipe_dict, tmp_path, augment=[{"name": "difficulty_aware", "kwargs": {"window": 4, "scale": 0.5}}])
    hook = t.hooks.augments[0]
    groups = [t.rollout(PromptView(t.rows[i]), i, (i,)) for i in (0, 1)]
    t.score(groups)
    groups[0].rewards = torch.full((4,), 2.0)  # far above the replay mean: easy -> noise
    groups[1].rewards = torch.full((4,), -2.0)  # far below: hard -> hint from the row's reasoning
    hook.buffer.observe([0.0, 0.0])
    out = hook.after_score(t, groups)
    assert out[0] is not groups[0] and out[0].view.variant.startswith("noise(level=20/20")
    assert out[1].view.hint.startswith("Hint: ") and out[1].view.hint[6:] in t.rows[1].reasoning
    assert out[0].rewards.shape == (4,) and "accuracy" in out[0].columns
    assert hook.buffer.replay_mean() == pytest.approx(0.0)  # (0 + 0 + 2 - 2) / 4
    assert hook.metrics() == {"augment/noise_frac": 0.5, "augment/hint_frac": 0.5, "augment/abs_gap": 2.0}
    with pytest.raises(ValueError, match="unknown kwargs"):
        _trainer(recipe_dict, tmp_path, augment=[{"name": "difficulty_aware", "kwargs": {"sigma": 3}}])


def test_group_filter_refills_from_more_batches(recipe_dict, tmp_path, monkeypatch):
    t = _trainer(recipe_dict, tmp_path, group_filter={"name": "test_rows_div4", "max_refills": 5})

    def index_rewards(groups):  # every reward = the group's row index, so the filter keeps rows 0 and 4
        for g in groups:
            g.rewards = torch.full((len(g.texts),), float(g.index))
            g.columns = {"accuracy": torch.zeros(len(g.texts))}

    monkeypatch.setattr(t, "score", index_rewards)
    monkeypatch.setattr(t.hooks, "after_score", lambda host, groups: groups)
    kept, _, seen = t.gather()
    assert sorted(g.index for g in kept) == [0, 4]  # one epoch of the 8 rows holds both
    assert len(seen) > 2 and [g.key for g in seen] == [(k,) for k in range(len(seen))]  # distinct seeds


def test_overlong_filter_and_shaping_in_a_step(recipe_dict, tmp_path):
    t = _trainer(recipe_dict, tmp_path, overlong_filter=True,
                 reward_shaping=[{"name": "overlong_penalty", "kwargs": {"cache_len": 2}}])
    groups, _ = t.collect(t.source.next_batch(0))
    for g in groups:
        cut = g.rollout.truncated
        assert torch.equal(g.seq_keep, (~cut).float())
        assert torch.equal(g.loss_mask[cut], torch.zeros_like(g.loss_mask[cut]))
        n = g.rollout.lengths.float()
        want = torch.where(n <= 4, 0.0, (4 - n) / 2)
        assert torch.allclose(g.columns["overlong_penalty"], want)
    metrics = t.train_step()
    assert "reward/overlong_penalty/mean" in metrics and metrics["batch/groups"] == 2


# ------------------------------------------------------------------ resume


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_resume_is_exact_with_a_stateful_row_source_and_augment(recipe_dict, tmp_path):
    rl = dict(recipe_dict["rl"], steps=3,
              row_source={"name": "filter_all_correct",
                          "kwargs": {"drop_frac": 1.0, "inner": "difficulty_curriculum",
                                     "inner_kwargs": {"total_steps": 3, "start_frac": 0.4}}},
              augment=[{"name": "difficulty_aware", "kwargs": {"window": 3}}])
    full = dict(recipe_dict, output_dir=str(tmp_path / "full"), rl=rl)
    Pipeline(config_from_dict(full)).run()
    part = dict(full, output_dir=str(tmp_path / "part"))
    assert Pipeline(config_from_dict(part)).run(stop_after=2) == {"interrupted": True, "stage": 0}
    Pipeline(config_from_dict(part)).run(resume=True)
    a, b = _weights(tmp_path / "full" / "0-rl" / "model"), _weights(tmp_path / "part" / "0-rl" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = [json.loads(x) for x in open(tmp_path / "full" / "0-rl" / "metrics.jsonl")]
    mb = [json.loads(x) for x in open(tmp_path / "part" / "0-rl" / "metrics.jsonl")]
    assert [m["reward/mean"] for m in ma] == [m["reward/mean"] for m in mb]
    state = torch.load(sorted((tmp_path / "part" / "0-rl").glob("checkpoint-*"))[-1] / "trainer_state.pt",
                       weights_only=False)["data"]
    assert state["source"]["kind"] == "filter_all_correct" and len(state["hooks"]["augment"][0]["buffer"]["buffer"]) == 3


@pytest.mark.parametrize("loss,extra", [("grpo", {}), ("tw_grpo", {"token_weights": {"alpha": 1.5}})])
def test_batched_update_gives_the_gradients_of_one_group_per_pass(recipe_dict, tmp_path, monkeypatch, loss, extra):
    """rl.update_batch and rl.skip_zero_advantage change how the update is computed, not what it is."""
    monkeypatch.setitem(reward_functions.REWARDS._items, "accuracy", _odd_length_accuracy)
    t = _trainer(recipe_dict, tmp_path, loss=loss, mini_batches=2, prompts_per_step=4, max_new_tokens=12,
                 rewards=[{"name": "accuracy"}], **extra)
    groups, kept, _ = t.gather()
    assert len(groups) == 4 and len({g.prompt.length for g in groups}) > 1  # left padding is exercised
    t.advantages(groups, kept)
    groups[1].advantages = torch.zeros_like(groups[1].advantages)  # a group the update may leave out
    t.reference_pass(groups)
    start = {k: v.clone() for k, v in t.vlm.model.state_dict().items()}
    opt_state = copy.deepcopy(t.opt.state_dict())
    grads: list[list[torch.Tensor]] = []
    real_clip = loop_module.clip_and_norm

    def recording_clip(params, max_norm):  # the gradients of each optimizer step (Adam would amplify rounding)
        grads[-1].append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
        return real_clip(params, max_norm)

    monkeypatch.setattr(loop_module, "clip_and_norm", recording_clip)
    skipped = []
    for size, skip in ((1, False), (len(groups), True)):
        t.vlm.model.load_state_dict(start)
        t.opt.load_state_dict(copy.deepcopy(opt_state))
        t.rl.update_batch, t.rl.skip_zero_advantage = size, skip
        grads.append([])
        skipped.append(t.update(groups, kept)["batch/skipped_groups"])
    assert skipped == [0, 1]
    one, many = grads
    assert len(one) == len(many) == 2  # two mini-batches, two optimizer steps
    for a, b in zip(one, many):
        assert a.abs().max() > 0
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_batched_reference_logprobs_equal_per_group(recipe_dict, tmp_path):
    t = _trainer(recipe_dict, tmp_path, prompts_per_step=3)
    groups, _, _ = t.gather()
    copy_model, _ = load_model_and_processor(recipe_dict["model"]["path"])
    with torch.no_grad():  # a reference that differs from the policy, so a mix-up would show
        for p in copy_model.parameters():
            p.mul_(0.9)
    ref = ReferencePolicy(t.vlm, VLM(copy_model))
    for shared in (True, False):
        many = ref.logprobs_many(groups, 1.0, True, shared)
        one = [ref.logprobs(g, 1.0, True, shared) for g in groups]
        policy = [lp.detach() for lp, _ in t._policy_logp(groups, grad=False)]
        for a, b, c in zip(many, one, policy):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
            assert not torch.allclose(a, c, atol=1e-3)
