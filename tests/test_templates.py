"""Prompt templates: reelrl's default unchanged, Video-R1's prompt equal to the text its repository builds."""

from __future__ import annotations

import pytest

from reelrl.config import ConfigError, config_from_dict
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import DataError, VideoRow
from reelrl.data.templates import TEMPLATES, get_template
from reelrl.models.processing import build_messages

# Video-R1 (tulerfeng/Video-R1 @ 59d65c3): the user text that grpo.py / sft_video.py build for the dataset card's
# multiple-choice example, `QUESTION_TEMPLATE.format(Question=problem + "Options:\n" + op + "\n" ...) +
# TYPE_TEMPLATE["multiple choice"]`, written out from the repository's strings.
VR1_HEAD = ("Please think about this question as if you were a human pondering deeply. Engage in an internal dialogue "
            "using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', 'let's break it down', etc, or other "
            "natural language thought expressions It's encouraged to include self-reflection or verification in the "
            "reasoning process. ")
VR1_TRAIN_TAIL = ("Provide your detailed reasoning between the <think> </think> tags, and then give your final answer "
                  "between the <answer> </answer> tags.")
VR1_EVAL_TAIL = ("Provide your detailed reasoning between the <think> and </think> tags, and then give your final "
                 "answer between the <answer> and </answer> tags.")
VR1_TYPES = {
    "multiple_choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> "
                       "</answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "ocr": " Please transcribe text from the image/video clearly and provide your text answer within the <answer> "
           "</answer> tags.",
    "free_form": " Please provide your text answer within the <answer> </answer> tags.",
}
MC_QUESTION = ("What appears on the screen in Russian during the missile's ascent?Options:\n"
               "A. A YouTube subscription notification\nB. A military command\nC. A warning message\n"
               "D. A weather update\n")


def _row(problem_type: str, **kw) -> VideoRow:
    base = dict(id="r1", video="v.mp4", question="What appears on the screen in Russian during the missile's ascent?",
                answer="A", problem_type=problem_type)
    return VideoRow(**{**base, **kw})


MC = dict(options=["A YouTube subscription notification", "A military command", "A warning message",
                   "A weather update"])


def test_video_r1_train_and_eval_prompts_equal_the_published_text() -> None:
    tpl = get_template("video_r1")
    row = _row("multiple_choice", **MC)
    expected_train = MC_QUESTION + "\n" + VR1_HEAD + VR1_TRAIN_TAIL + VR1_TYPES["multiple_choice"]
    assert tpl.user_text(row, "rl") == expected_train
    assert tpl.user_text(row, "sft") == expected_train
    assert tpl.user_text(row, "eval") == MC_QUESTION + "\n" + VR1_HEAD + VR1_EVAL_TAIL + VR1_TYPES["multiple_choice"]
    assert len(tpl.user["rl"]) == 480 and len(tpl.user["eval"]) == 488  # as the repository's two templates


@pytest.mark.parametrize("ptype", ["numerical", "regression", "ocr", "free_form"])
def test_video_r1_open_questions_use_the_problem_verbatim_and_their_type_format(ptype) -> None:
    tpl = get_template("video_r1")
    row = _row(ptype, question="How many cubes are there?", answer="3")
    assert tpl.user_text(row, "rl") == "How many cubes are there?\n" + VR1_HEAD + VR1_TRAIN_TAIL + VR1_TYPES[ptype]


def test_video_r1_system_turns_and_sft_target() -> None:
    tpl = get_template("video_r1")
    assert tpl.system_text("sft") == "You are a helpful assistant"  # sft_video.py: no period
    assert tpl.system_text("rl") is None and tpl.system_text("eval") is None  # the chat template's default
    assert tpl.target("let me think", "A") == "<think>let me think</think>\n<answer>A</answer>"


def test_video_r1_refuses_problem_types_it_has_no_format_for() -> None:
    with pytest.raises(DataError, match="row r1: prompt template 'video_r1' has no answer format.*multi_choice"):
        get_template("video_r1").user_text(_row("multi_choice", answer="A,B", **MC), "rl")


def test_reelrl_default_keeps_its_layout_and_custom_formats_work() -> None:
    row = _row("multiple_choice", **MC)
    default = get_template("reelrl")
    assert default.user_text(row, "rl") == (row.prompt_text() + "\nThink inside <think></think>, then answer inside "
                                            "<answer></answer>.")
    assert default.target("r", "A") == "<think>r</think><answer>A</answer>" and default.system_text("sft") is None
    assert get_template("Q: {question}").user_text(row, "eval") == "Q: " + row.prompt_text()
    assert {"reelrl", "video_r1", "tw_grpo", "longvila_r1"} <= set(TEMPLATES.names())


def test_unknown_template_is_a_config_error_listing_the_names(recipe_dict) -> None:
    with pytest.raises(ConfigError, match="prompt.template.*unknown prompt template 'video-r1'.*video_r1"):
        config_from_dict(dict(recipe_dict, prompt={"template": "video-r1"}))


def test_encoder_uses_the_stage_texts_and_system_turn(tiny_model_dir) -> None:
    from reelrl.models.load import load_model_and_processor
    from reelrl.video.sample import VideoSampling

    _, processor = load_model_and_processor(tiny_model_dir)
    sampling = VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136)
    row = _row("multiple_choice", **MC)
    sft = PromptEncoder(processor, sampling, "video_r1", stage="sft")
    ev = PromptEncoder(processor, sampling, "video_r1", stage="eval")
    assert sft.system == "You are a helpful assistant" and ev.system is None
    assert ev.user_text(row).endswith(VR1_EVAL_TAIL + VR1_TYPES["multiple_choice"])
    assert sft.target(row.model_copy(update={"reasoning": "hm"})) == "<think>hm</think>\n<answer>A</answer>"
    text = processor.apply_chat_template(build_messages(sft.user_text(row), sft.system))
    assert "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n<|vision_start|>" in text


def test_cli_lists_and_shows_templates() -> None:
    from typer.testing import CliRunner

    from reelrl.cli import app

    res = CliRunner().invoke(app, ["templates"])
    assert res.exit_code == 0 and res.output.split() == TEMPLATES.names()
    res = CliRunner().invoke(app, ["templates", "video_r1"])
    assert res.exit_code == 0 and "'You are a helpful assistant'" in res.output
    assert "Please think about this question" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["templates", "nope"])
    assert res.exit_code == 2 and "valid names" in res.output


def test_required_recipe_values_and_eval_sampling(tmp_path, recipe_dict) -> None:
    import yaml

    from reelrl.config import read_recipe

    rec = tmp_path / "r.yaml"
    rec.write_text(yaml.safe_dump({**recipe_dict, "model": {"path": "???"}, "eval": {"video": {"nframes": 32}}}))
    with pytest.raises(ConfigError, match=r"needs model.path on the command line, e.g. model.path=\.\.\."):
        read_recipe(rec)
    cfg = read_recipe(rec, [f"model.path={recipe_dict['model']['path']}"])
    assert cfg.eval_video().nframes == 32 and cfg.video.nframes == 16
    assert cfg.eval_video().max_pixels == cfg.video.max_pixels == 3136  # the rest as in training
    assert cfg.split_path("sft_train") == cfg.split_path("train")
