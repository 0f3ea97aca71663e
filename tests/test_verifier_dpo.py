"""VerIPO: the rollout-aware verifier on hand-written completions, pair building, and the DPO stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reelrl.config import VerifierConfig, config_from_dict
from reelrl.data.answers import claims, final_claim
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.models.load import load_model_and_processor
from reelrl.models.vlm import VLM
from reelrl.pipeline import Pipeline, load_rows
from reelrl.rewards import RewardSpec, compute_rewards
from reelrl.train.dpo import DPOTrainer
from reelrl.train.rl import ReferencePolicy
from reelrl.train.verifier import (
    Judge,
    build_pairs,
    repetition_rate,
    self_correction_rejection,
    verify,
)

COUNT = VideoRow(id="c0", video="v.mp4", question="How many times does the square flash?",
                 options=["1", "2", "3", "4"], answer="C", problem_type="multiple_choice", task="count")
NUMERIC = VideoRow(id="n0", video="v.mp4", question="How many flashes?", answer="3", problem_type="numerical")

TEXTS = [
    "<think>flashes at 0.5s, 1.5s, 2.5s. 3 flashes.</think><answer>C</answer>",  # good
    "<think>flashes at 0.5s, 2.5s. 2 flashes.</think><answer>B</answer>",  # wrong (but consistent)
    "<think>flashes at 0.5s, 2.5s. 2 flashes.</think><answer>C</answer>",  # right answer, reasoning says 2
    "<think>flash flash flash flash flash flash flash flash 3</think><answer>C</answer>",  # repetitive
    "<think>I count 2 flashes. Wait, I missed one: 3 flashes.</think><answer>C</answer>",  # self-corrected
    "<think>flashes at 0.5s, 1.5s, 2.5s. 3 flashes.</think><answer>C</answer>",  # good text, but truncated
]
LENGTHS = [20, 18, 18, 16, 22, 64]
TRUNCATED = [False, False, False, False, False, True]


def _accuracy(texts, row):
    cols = {k: [v] * len(texts) for k, v in row.model_dump().items()}
    return compute_rewards([RewardSpec("accuracy")], texts, cols)[0].tolist()


def test_claims_and_helpers_by_hand():
    think = "flashes at 0.5s, 1.5s, 2s, 3.5s. 4 flashes. The answer is (B)."
    assert [c for _, c in claims(think, COUNT)] == ["D", "B"]  # "1.5s", "2s", "3.5s" are times, not options
    assert final_claim("no option named here", COUNT) is None
    assert final_claim("so option C, i.e. 3", COUNT) == "C"
    assert final_claim("at 1.5s then 3 flashes", NUMERIC) == "3"
    assert final_claim("about 2.999 flashes", NUMERIC) == "3"  # rounded to 2 decimals
    assert repetition_rate("a b c a b c", 3) == pytest.approx(1 - 3 / 4)
    assert repetition_rate("a b", 3) == 0.0
    assert self_correction_rejection(TEXTS[4], COUNT) == "<think>I count 2 flashes.</think><answer>B</answer>"
    assert self_correction_rejection(TEXTS[0], COUNT) is None  # no correction marker
    # a "correction" that keeps the claim is no self-correction
    assert self_correction_rejection("<think>3 flashes. Wait, yes 3.</think><answer>C</answer>", COUNT) is None


def test_verifier_on_hand_written_completions():
    v = verify(TEXTS, _accuracy(TEXTS, COUNT), LENGTHS, TRUNCATED, COUNT, VerifierConfig())
    assert [x.correct for x in v] == [True, False, True, True, True, True]
    assert [x.consistent for x in v] == [True, True, False, True, True, True]
    assert [x.repetitive for x in v] == [False, False, False, True, False, False]
    assert [x.length_ok for x in v] == [True, True, True, True, True, False]
    assert v[3].repetition == pytest.approx(1 - 3 / 8)  # words: flash x8, 3, C -> 8 trigrams, 3 distinct
    assert [x.good for x in v] == [True, False, False, False, True, False]
    assert [x.faults[:1] for x in v] == [[], ["wrong"], ["inconsistent"], ["repetitive"], [], ["length"]]
    assert (v[0].claim, v[0].answer, v[2].claim) == ("C", "C", "B")
    relaxed = verify(TEXTS, _accuracy(TEXTS, COUNT), LENGTHS, TRUNCATED, COUNT,
                     VerifierConfig(allow_truncated=True, max_repetition=0.8))
    assert relaxed[5].good and relaxed[3].good


def test_pairs_from_hand_written_completions():
    v = verify(TEXTS, _accuracy(TEXTS, COUNT), LENGTHS, TRUNCATED, COUNT, VerifierConfig())
    pairs = build_pairs(COUNT, TEXTS, v, max_pairs=10)
    got = [(p.chosen, p.rejected, p.reason) for p in pairs]
    assert got == [
        (4, "<think>I count 2 flashes.</think><answer>B</answer>", "self_correction"),
        (0, 1, "wrong"),  # good rollouts in score order (tie: index), rejections most serious first
        (4, 2, "inconsistent"),
    ]
    assert [(p.chosen, p.rejected) for p in build_pairs(COUNT, TEXTS, v, max_pairs=2, self_correction=False)] == [
        (0, 1), (4, 2)]
    unformatted = TEXTS[0].replace("<think>", "")
    v2 = verify([unformatted, TEXTS[1]], _accuracy([unformatted, TEXTS[1]], COUNT), [9, 9], [False, False], COUNT,
                VerifierConfig())
    assert build_pairs(COUNT, [unformatted, TEXTS[1]], v2, max_pairs=2) == []  # chosen must be formatted
    assert len(build_pairs(COUNT, [unformatted, TEXTS[1]], v2, max_pairs=2, require_format=False)) == 1


def test_judge_scores_consistency_with_a_local_model(tiny_model_dir):
    judge = Judge(str(tiny_model_dir))
    p = judge("How many?", "3 flashes.", "C")
    assert 0.0 < p < 1.0
    strict = verify(TEXTS[:1], [1.0], [20], [False], COUNT, VerifierConfig(judge_path="x", judge_threshold=1.0), judge)
    assert strict[0].judge == pytest.approx(judge(COUNT.prompt_text(), "flashes at 0.5s, 1.5s, 2.5s. 3 flashes.", "C"))
    assert not strict[0].consistent  # P(yes) < 1 fails a threshold of 1


def _dpo_config(recipe_dict, tmp_path) -> dict:
    return dict(recipe_dict, output_dir=str(tmp_path / "run"), stages=["dpo"],
                dpo={"prompts": 6, "rollouts_per_prompt": 4, "max_new_tokens": 6, "epochs": 6, "batch_size": 4,
                     "self_correction_pairs": False, "optim": {"lr": 2e-3, "schedule": "constant"},
                     "verifier": {"accuracy_reward": "tests.rewards_for_tests:brevity", "correct_threshold": 0.7,
                                  "require_format": False, "allow_truncated": True, "max_repetition": 1.0}})


@torch.no_grad()
def mean_loss(trainer: DPOTrainer) -> float:
    """Pair loss averaged over every pair, without gradient."""
    trainer.vlm.model.eval()
    return float(sum(float(trainer._loss(p, len(trainer.pairs)).loss) for p in trainer.pairs))


def test_dpo_trainer_builds_pairs_and_lowers_the_loss(recipe_dict, tmp_path):
    cfg = config_from_dict(_dpo_config(recipe_dict, tmp_path))
    model, processor = load_model_and_processor(recipe_dict["model"]["path"])
    ref, _ = load_model_and_processor(recipe_dict["model"]["path"])
    vlm = VLM(model)
    trainer = DPOTrainer(cfg, vlm, processor.tokenizer, PromptEncoder(processor, cfg.video, cfg.prompt.template),
                         load_rows(cfg, "train"), tmp_path / "stage", ReferencePolicy(vlm, VLM(ref)))
    assert len(trainer.pairs) >= 2 and trainer.total_steps == -(-6 * len(trainer.pairs) // 4)
    for p in trainer.pairs:
        assert p["chosen"] != p["rejected"] and p["ref_logp"].shape == (2,)
        assert len(p["chosen_text"]) <= 12 < len(p["rejected_text"])  # brevity >= 0.7 is "correct" here
    before = mean_loss(trainer)
    assert before == pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item(), abs=1e-4)  # policy == ref
    for _ in range(trainer.total_steps):
        metrics = trainer.train_step()
    after = mean_loss(trainer)
    assert after < before - 0.05, (before, after)
    assert metrics["dpo/pairs"] == len(trainer.pairs) and "dpo/reward_margin" in metrics
    lines = (tmp_path / "stage" / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == len(trainer.pairs) and json.loads(lines[0])["reason"]


def test_dpo_stage_in_a_pipeline_between_rl_stages(recipe_dict, tmp_path):
    cfg = _dpo_config(recipe_dict, tmp_path)
    cfg["stages"] = ["rl", "dpo", "rl"]
    cfg["dpo"] = dict(cfg["dpo"], epochs=1)
    cfg["rl"] = dict(cfg["rl"], steps=1)
    Pipeline(config_from_dict(cfg)).run()
    run = Path(cfg["output_dir"])
    done = json.loads((run / "1-dpo" / "done.json").read_text())
    assert done["dpo/pairs"] >= 1 and done["steps"] >= 1
    assert (run / "1-dpo" / "model" / "model.safetensors").is_file() and (run / "2-rl" / "model").is_dir()
    # the report shows every pair: its row, why the rejected one lost, both texts and reference log-probs
    from html import escape

    from reelrl.report import write_report

    pairs = [json.loads(x) for x in (run / "1-dpo" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and len(pairs) == done["dpo/pairs"]
    assert all(p["question"] and Path(p["video"]).is_file() and len(p["ref_logp"]) == 2 for p in pairs)
    assert all(isinstance(p["accuracy"][0], float) for p in pairs)
    html = write_report(run).read_text()
    assert "preference pairs (1-dpo)" in html and html.count('data-source="1-dpo"') == min(len(pairs), 40)
    for p in pairs[:3]:
        assert f"row <b>{escape(p['row_id'])}</b> · task <b>{escape(str(p['task']))}</b> · rejected for <b>" \
               f"{escape(p['reason'])}</b>" in html
        assert f'<td class="text">{escape(p["chosen_text"])}</td><td class="num">{p["ref_logp"][0]:.3f}</td>' in html
        assert f'<td class="text">{escape(p["rejected_text"])}</td><td class="num">{p["ref_logp"][1]:.3f}</td>' in html
