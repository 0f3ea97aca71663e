"""Physics counterexamples: paired scenes that differ exactly by the violation, answers, judges, paired consistency."""

from __future__ import annotations

import numpy as np
import pytest

from reelrl.data.schema import LETTERS, VideoRow
from reelrl.gym import GymSpec, chance_accuracy, make_sample
from reelrl.gym.physics import DESCRIPTIONS, OPTION_TEXT, THICK, open_chance
from reelrl.gym.render import PALETTE

SPEC = GymSpec(families=["physics", "physics_open"], seed=3)


def pairs(spec: GymSpec, family: str, n: int) -> list[tuple]:
    """The first ``n`` pairs of ``family``: (member 0 sample, member 1 sample)."""
    k, pos = len(spec.families), spec.families.index(family)
    out = []
    for p in range(n):
        i0 = pos + 2 * p * k
        out.append((make_sample(spec, "train", i0)[1], make_sample(spec, "train", i0 + k)[1]))
    return out


def ball(frames: np.ndarray, color: str) -> np.ndarray:
    """Per frame, the ball's pixels: a bool mask [T, H, W] of its exact palette colour."""
    return (frames == np.asarray(PALETTE[color], dtype=np.uint8)).all(axis=-1)  # [T, H, W]


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()])


ALL_PAIRS = pairs(SPEC, "physics", 24)


def test_pairs_share_the_scene_and_differ_exactly_by_the_violation() -> None:
    seen = set()
    for a, b in ALL_PAIRS:
        assert a.meta["group"]["id"] == b.meta["group"]["id"] and a.meta["spawn_key"] == b.meta["spawn_key"]
        assert (a.meta["group"]["member"], b.meta["group"]["member"]) == (0, 1)
        assert (a.question, a.options, a.meta["scene"], a.meta["color"]) == (b.question, b.options, b.meta["scene"],
                                                                             b.meta["color"])
        bad, good = (a, b) if a.meta["violation"] else (b, a)
        assert good.meta["violation"] is None and bad.meta["violation"] == good.meta["pair_violation"]
        assert a.answer != b.answer
        k = bad.meta["event_frame"]
        assert np.array_equal(bad.frames[:k], good.frames[:k])  # identical up to the event
        assert not np.array_equal(bad.frames[k], good.frames[k])
        seen.add((bad.meta["scene"], bad.meta["violation"]))
    assert len(seen) >= 6  # most of the 7 (scene, violation) kinds occur in 24 pairs


def test_violations_in_the_pixels() -> None:
    """Each violation is visible where physics forbids it; the physical partner never shows it."""
    for a, b in ALL_PAIRS:
        bad, good = (a, b) if a.meta["violation"] else (b, a)
        v, k, c = bad.meta["violation"], bad.meta["event_frame"], bad.meta["color"]
        mb, mg = ball(bad.frames, c), ball(good.frames, c)  # [T, H, W]
        floor = bad.meta["floor_top"]
        assert not mg[:, floor:].any()  # the physical ball never enters the floor
        if bad.meta["scene"] == "slide":
            w = bad.meta["wall"]
            far = slice(w + THICK, None) if bad.meta["direction"] == "right" else slice(0, w)
            assert not mg[:, :, far].any()  # nor gets past the wall
        steps = [np.abs(centroid(mg[t + 1]) - centroid(mg[t])).max() for t in range(15)]
        if v == "teleport":
            jump = np.abs(centroid(mb[k]) - centroid(mb[k - 1])).max()
            assert jump > 2 * max(steps), (jump, max(steps))
        elif v == "pass_through":
            beyond = mb[:, floor + THICK:] if bad.meta["scene"] == "drop" else mb[:, :, far]
            assert beyond.any()
        elif v == "size_change":
            ratio = mb[k].sum() / mb[k - 1].sum()
            assert ratio > 1.3 or ratio < 1 / 1.3
            assert all(mg[t].sum() == mg[0].sum() for t in range(16))  # the physical ball keeps its size
        elif v == "falls_upward":
            ys = [centroid(mb[t])[0] for t in range(16) if mb[t].sum() > 10]
            assert len(ys) >= 3 and all(y1 < y0 for y0, y1 in zip(ys, ys[1:]))
            assert centroid(mg[3])[0] > centroid(mg[0])[0]  # the physical ball falls


def test_answers_consistent_with_meta() -> None:
    kinds = set()
    for s in [x for p in ALL_PAIRS for x in p]:
        kinds.add(s.meta["question_kind"])
        chosen = s.options[LETTERS.index(s.answer)]
        if s.meta["question_kind"] == "event":
            assert chosen == OPTION_TEXT[(s.meta["scene"], s.meta["outcome"])]
        else:
            assert chosen == ("no" if s.meta["violation"] else "yes")
        assert s.reasoning.endswith(f"{chosen}.")
    assert kinds == {"event", "possible"}
    for a, b in pairs(SPEC, "physics_open", 4):
        for s in (a, b):
            assert s.problem_type == "free_form" and s.options is None
            assert s.answer == DESCRIPTIONS[(s.meta["scene"], s.meta["outcome"])]


def test_pairs_stay_identical_in_another_environment() -> None:
    from reelrl.gym.environments import ENVIRONMENTS

    env = next(n for n in ENVIRONMENTS.names() if n != "default")
    spec = SPEC.model_copy(update={"environment": env})
    for a, b in pairs(spec, "physics", 4):
        bad, good = (a, b) if a.meta["violation"] else (b, a)
        k = bad.meta["event_frame"]
        assert np.array_equal(bad.frames[:k], good.frames[:k]) and not np.array_equal(bad.frames[k], good.frames[k])


def test_chance_levels() -> None:
    from reelrl.rewards.functions import rouge_mean_f1

    assert chance_accuracy("physics", SPEC) == pytest.approx(0.5 * 0.5 + 0.5 * (0.25 + 0.25) / 2)
    assert chance_accuracy("physics", SPEC.model_copy(update={"n_options": 6})) == pytest.approx(
        0.25 + 0.5 * (1 / 5 + 1 / 4) / 2)
    drop = [DESCRIPTIONS[("drop", o)] for o in ("bounce", "teleport", "pass_through", "size_change", "falls_upward")]
    slide = [DESCRIPTIONS[("slide", o)] for o in ("stop_at_wall", "teleport", "pass_through", "size_change")]
    want = 0.0
    for refs, n_v in ((drop, 4), (slide, 3)):
        for j, ref in enumerate(refs):
            p = 0.5 if j == 0 else 0.5 / n_v
            want += 0.5 * p * np.mean([rouge_mean_f1(ref, g) for g in refs])
    assert open_chance() == pytest.approx(want)


# ------------------------------------------------------------------ judges


@pytest.mark.parametrize("answer, reference, score", [
    ("The ball falls and then bounces on the floor.", "It falls and bounces on the floor.", 1.0),
    ("It drops.", "It falls and bounces on the floor.", 0.5),
    ("It falls and bounces, then teleports.", "It falls and bounces on the floor.", 0.0),
    ("The ball does not teleport.", "It teleports to another place.", 0.0),
    ("The ball does not teleport; it falls and bounces.", "It falls and bounces on the floor.", 1.0),
    ("It doesn't fall or bounce, it floats away.", "It falls upward.", 1.0),
    ("It doesn't fall or bounce.", "It falls and bounces on the floor.", 0.0),
    ("Instead of falling, it rises.", "It falls upward.", 1.0),
    ("It bounces and rises again, then comes to rest.", "It falls and bounces on the floor.", 0.5),
    ("It vanishes and reappears elsewhere.", "It teleports to another place.", 1.0),
    ("It goes right through the wall.", "It passes through the wall.", 1.0),
    ("It slides and stops; it never passes through the wall.", "It slides and stops at the wall.", 1.0),
    ("It suddenly gets bigger.", "It changes size.", 1.0),
    ("It falls normally.", "It changes size.", 0.0),
])
def test_rule_judge_on_hand_written_answers(answer: str, reference: str, score: float) -> None:
    from reelrl.rewards.judge import rule_score

    assert rule_score(answer, reference) == score


def test_judge_reward_rows_and_errors() -> None:
    from reelrl.rewards import REWARDS

    fn = REWARDS.get("judge")
    out = fn(["<answer>it falls upward</answer>", "it falls upward", "<answer>B</answer>"],
             answer=["It falls upward.", "It falls upward.", "B"], problem_type=["free_form", "free_form",
                                                                                   "multiple_choice"])
    assert out == [1.0, 0.0, None]  # no tag: 0; a choice row: not applicable
    with pytest.raises(ValueError, match="row 0: the reference 'B' states no event"):
        fn(["<answer>x</answer>"], answer=["B"])
    with pytest.raises(ValueError, match="unknown judge 'modle'"):
        fn(["<answer>x</answer>"], answer=["It falls."], judge="modle")
    with pytest.raises(ValueError, match="needs path"):
        fn(["<answer>x</answer>"], answer=["It falls."], judge="model")


def test_judge_kwargs_checked_at_recipe_load(tmp_path) -> None:
    from reelrl.config import ConfigError
    from reelrl.pipeline import load_recipe
    from reelrl.train.catalog import check_recipe

    cfg = load_recipe("videohallu")
    assert [r.name for r in cfg.rl.rewards] == ["accuracy", "format", "judge"]
    cfg.rl.rewards[2].kwargs = {"judge": "model", "path": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match=r"rl.rewards\[2\].kwargs: .*not a local checkpoint directory"):
        check_recipe(cfg)
    cfg.rl.rewards[2].kwargs = {"judge": "rule", "temperature": 0.0}
    with pytest.raises(ConfigError, match="takes no argument 'temperature'"):
        check_recipe(cfg)


def _always_says(out_dir, text: str):
    """A 1-layer Qwen2 causal LM whose greedy next token is always ``text`` (a one-token string)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reelrl.models.tiny import build_tokenizer, default_corpus

    tok = build_tokenizer(default_corpus(), vocab_size=512)
    target = tok.encode(text, add_special_tokens=False)
    assert len(target) == 1
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=32, tie_word_embeddings=False,
                      eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # residual stream = embedding = ones; the head reads one token from it
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[target[0]] = 1.0
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def test_model_judge_through_the_interface(tmp_path, monkeypatch) -> None:
    from reelrl.rewards import REWARDS
    from reelrl.rewards.judge import JUDGES, JudgeConfig, model_judge, parse_score

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(_always_says(tmp_path / "judge", "7"))
    out = REWARDS.get("judge")(["<answer>it teleports</answer>", "<answer>it bounces</answer>"],
                               answer=["It teleports to another place."] * 2, question=["What happens?"] * 2,
                               judge="model", path=path, max_new_tokens=1)
    assert out == [0.7, 0.7]  # the model writes "7": 7 / 10
    assert model_judge(path, "cpu", 1) is JUDGES.get("model")(JudgeConfig(judge="model", path=path, max_new_tokens=1))
    assert model_judge(path, "cpu", 3).generate("Score:") == "777"
    assert REWARDS.get("judge")(["<answer>x</answer>"], answer=["It falls."], judge="model", path=path,
                                max_new_tokens=3) == [0.0]  # "777" is no 0-10 score
    assert [parse_score(t) for t in ("8", " 10/10", "score: 3.5", "11", "none")] == [0.8, 1.0, 0.35, None, None]


# ------------------------------------------------------------------ paired consistency


def test_paired_consistency_hand_computed() -> None:
    from reelrl.eval.pairs import paired_consistency

    def row(task: str, gid: str, member: int) -> VideoRow:
        return VideoRow(id=f"{gid}-{member}", video="v.mp4", question="q", answer="A", options=["x", "y"],
                        problem_type="multiple_choice", task=task,
                        meta={"group": {"id": gid, "member": member, "size": 2}})

    rows = [row("physics", "g0", 0), row("physics", "g0", 1), row("physics", "g1", 0), row("physics", "g1", 1),
            row("physics", "g2", 0), row("count", "x", 0)]
    rows[-1].meta = {}
    acc = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # g0 both right, g1 one right, g2 incomplete
    assert paired_consistency(rows, acc) == {"physics": {"pairs": 2, "consistency": 0.5}}
