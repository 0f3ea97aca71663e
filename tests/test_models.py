"""Tests of reelrl.models: tiny checkpoint, loader, LoRA, and prompt/video encoding."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reelrl.models.load import (
    apply_lora,
    find_vision_tower,
    freeze_vision_tower,
    load_model_and_processor,
    model_family,
)
from reelrl.models.processing import (
    IGNORE_INDEX,
    ReelProcessor,
    build_messages,
    encode_prompt,
    encode_sft_example,
    patchify_frames,
    video_token_count,
)
from reelrl.models.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, TAG_TOKENS, build_tiny

TEXTS = [
    "How many red circles appear in the video?",
    "Which object moves first? Options: A. the red circle B. the blue square C. the green triangle",
    "<think>I count two red circles in the first frames and one more later.</think><answer>3</answer>",
    "<think>The blue square moves before the others.</think><answer>B</answer>",
    "When does the ball stop? Give the start and end time in seconds.",
    "<think>The ball stops at 1.5 seconds.</think><answer>1.5-3.0</answer>",
] * 3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), TEXTS, seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_dir: Path):
    return load_model_and_processor(tiny_dir)


def _frames(t: int = 8, h: int = 84, w: int = 84, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- tiny checkpoint
def test_tiny_dir_loads_with_transformers_auto_classes(tiny_dir: Path) -> None:
    from transformers import (
        AutoModelForImageTextToText,
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
    )

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)
    assert type(model) is Qwen2_5_VLForConditionalGeneration
    assert all(p.dtype == torch.float32 for p in model.parameters())
    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    cfg = model.config
    # ids in the config agree with the tokenizer
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>") == tok.pad_token_id
    assert cfg.text_config.vocab_size == len(tok)
    vc = cfg.vision_config
    assert (vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size, vc.tokens_per_second) == (14, 2, 2, 2)
    assert vc.out_hidden_size == cfg.text_config.hidden_size
    # tied embeddings: one tensor
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    # the HF chat template renders video + text content lists
    text = tok.apply_chat_template(build_messages("hi"), tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n")
    assert (tiny_dir / "README.md").read_text().startswith("# reelrl tiny Qwen2.5-VL checkpoint")


def test_tiny_weights_are_the_seeded_init(tiny_dir: Path) -> None:
    """Loading the dir gives exactly what a seed-0 init of the same config produces in memory."""
    from transformers import (
        AutoConfig,
        AutoModelForImageTextToText,
        Qwen2_5_VLForConditionalGeneration,
    )

    config = AutoConfig.from_pretrained(tiny_dir, local_files_only=True)
    torch.manual_seed(0)
    fresh = Qwen2_5_VLForConditionalGeneration(config).state_dict()
    loaded = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True).state_dict()
    assert fresh.keys() == loaded.keys()
    for name, tensor in fresh.items():
        assert torch.equal(loaded[name], tensor), name
    # the file holds every tensor once (the tied head is not duplicated), in float32
    saved = load_file(str(tiny_dir / "model.safetensors"))
    assert sum(t.numel() for t in saved.values()) == sum(
        t.numel() for n, t in fresh.items() if n != "lm_head.weight"
    )
    assert {t.dtype for t in saved.values()} == {torch.float32}


def test_tiny_param_count_matches_hand_formula(loaded) -> None:
    model, processor = loaded
    v, h, n_layers, n_heads, n_kv, inter = len(processor.tokenizer), 128, 4, 4, 2, 512
    hd = h // n_heads
    text = v * h + n_layers * (
        (h * h + h) + 2 * (h * n_kv * hd + n_kv * hd) + h * h + 3 * h * inter + 2 * h
    ) + h
    vh, depth, vi = 128, 2, 256
    block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)
    vision = 3 * 2 * 14 * 14 * vh + depth * block + vh + (16 * vh * vh + 4 * vh) + (4 * vh * h + h)
    n = sum(p.numel() for p in model.parameters())
    assert n == text + vision
    assert 1_000_000 <= n <= 20_000_000


def test_tokenizer_tags_are_single_tokens_and_roundtrip(loaded) -> None:
    tok = loaded[1].tokenizer
    s = "<think>a</think><answer>B</answer>"
    ids = tok(s, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<think>", "a", "</think>", "<answer>", "B", "</answer>"]
    assert tok.decode(ids) == s
    assert tok.decode(ids, skip_special_tokens=True) == s  # tags are not special
    # the Qwen special tokens and tags sit at the reserved ids
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + TAG_TOKENS] == list(range(12))
    # special tokens are dropped by skip_special_tokens
    im_start, im_end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode([im_start] + ids + [im_end], skip_special_tokens=True) == s
    # numbers tokenise digit by digit (Qwen pre-tokenizer)
    assert tok.convert_ids_to_tokens(tok("12.5", add_special_tokens=False)["input_ids"]) == ["1", "2", ".", "5"]
    # arbitrary text round-trips (byte-level BPE)
    odd = "Ünïcødé 🎬 text\twith\nnewlines"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd


def test_build_tiny_is_deterministic(tmp_path: Path, tiny_dir: Path) -> None:
    """Same texts + seed -> byte-identical files, also from a fresh process (Rust hash seeds)."""
    code = (
        "import sys; from reelrl.models.tiny import build_tiny; "
        f"build_tiny(sys.argv[1], {TEXTS!r}, seed=0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], check=True, capture_output=True, timeout=120)
    again = tmp_path / "a"
    for name in ("model.safetensors", "tokenizer.json", "config.json", "video_preprocessor_config.json"):
        assert (tiny_dir / name).read_bytes() == (again / name).read_bytes(), name
    # the seed changes the weights but not the tokenizer
    other_seed = build_tiny(tmp_path / "b", TEXTS, seed=1)
    a, c = (load_file(str(d / "model.safetensors")) for d in (tiny_dir, other_seed))
    assert a.keys() == c.keys()
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert (tiny_dir / "tokenizer.json").read_bytes() == (other_seed / "tokenizer.json").read_bytes()
    # other texts -> another vocabulary
    other_texts = build_tiny(tmp_path / "c", ["zebra quokka axolotl"] * 5, seed=0)
    assert (tiny_dir / "tokenizer.json").read_bytes() != (other_texts / "tokenizer.json").read_bytes()


def test_build_tiny_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_kv_heads"):
        build_tiny(tmp_path, TEXTS, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="reserved"):
        build_tiny(tmp_path, TEXTS, vocab_size=100)


# ----------------------------------------------------------------------------- loader
def test_loader_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_and_processor(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model_and_processor(tmp_path / "empty")


def test_loader_dtype_and_family(tiny_dir: Path, loaded) -> None:
    model, processor = loaded
    assert model_family(model) == "qwen2_5_vl" == processor.family
    assert not model.training
    name, tower = find_vision_tower(model)
    assert name == "model.visual" and tower is model.model.visual
    bf16, _ = load_model_and_processor(tiny_dir, dtype="bfloat16", attn_implementation="eager")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model_and_processor(tiny_dir, dtype="float8")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- encoding
def test_encode_prompt_shapes_and_counts(loaded) -> None:
    _, processor = loaded
    frames = _frames(8, 84, 84)
    enc = encode_prompt(processor, "How many red circles appear?", frames, fps=2.0)
    assert enc["video_grid_thw"].tolist() == [[4, 6, 6]]  # 8 frames / 2, 84 / 14
    n_video = int((enc["input_ids"] == processor.video_token_id).sum())
    assert n_video == enc["video_grid_thw"].prod().item() // 4 == 36 == video_token_count(processor, frames.shape)
    assert enc["pixel_values_videos"].shape == (4 * 6 * 6, 3 * 2 * 14 * 14)
    assert enc["attention_mask"].shape == enc["input_ids"].shape and bool(enc["attention_mask"].all())
    assert torch.equal(enc["mm_token_type_ids"], (enc["input_ids"] == processor.video_token_id).long() * 2)
    assert enc["second_per_grid_ts"].tolist() == [1.0]  # 2 / fps
    assert encode_prompt(processor, "q", frames, fps=4.0)["second_per_grid_ts"].tolist() == [0.5]
    # the prompt ends with the generation prompt
    assert processor.decode(enc["input_ids"][0], skip_special_tokens=False).endswith(
        "?<|im_end|>\n<|im_start|>assistant\n"
    )
    # the template words are whole tokens of the tiny tokenizer
    assert processor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0, -3:].tolist()) == [
        "<|im_start|>", "assistant", "Ċ"
    ]
    # odd frame count: padded to the temporal patch; non-square frames
    assert video_token_count(processor, (7, 84, 112, 3)) == 4 * 6 * 8 // 4
    enc7 = encode_prompt(processor, "q", _frames(7, 84, 112), fps=1.0)
    assert enc7["video_grid_thw"].tolist() == [[4, 6, 8]]


def test_patchify_first_patch_by_hand() -> None:
    from reelrl.models.processing import VideoSpec

    spec = VideoSpec()
    frames = _frames(2, 28, 56, seed=3)
    pixels, grid = patchify_frames(frames, spec)
    assert grid == (1, 2, 4)
    mean = torch.tensor(spec.image_mean).view(3, 1, 1, 1)
    std = torch.tensor(spec.image_std).view(3, 1, 1, 1)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0  # [C, T, H, W]
    x = (x - mean) / std
    # merge-window order: patch 1 is row 0 / col 1 of the first 2x2 window; patch 4 starts the next window
    assert torch.allclose(pixels[0], x[:, :, 0:14, 0:14].reshape(-1), atol=1e-5)
    assert torch.allclose(pixels[1], x[:, :, 0:14, 14:28].reshape(-1), atol=1e-5)
    assert torch.allclose(pixels[2], x[:, :, 14:28, 0:14].reshape(-1), atol=1e-5)
    assert torch.allclose(pixels[4], x[:, :, 0:14, 28:42].reshape(-1), atol=1e-5)


def test_encode_prompt_rejects_bad_frames(loaded) -> None:
    _, processor = loaded
    with pytest.raises(ValueError, match="multiple of 28"):
        encode_prompt(processor, "q", _frames(4, 80, 84), fps=2.0)
    with pytest.raises(ValueError, match="uint8"):
        encode_prompt(processor, "q", _frames(4).astype(np.float32), fps=2.0)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        encode_prompt(processor, "q", _frames(4)[..., :1], fps=2.0)
    with pytest.raises(ValueError, match="fps"):
        encode_prompt(processor, "q", _frames(4), fps=0.0)


def test_forward_logits_and_sft_labels(loaded) -> None:
    model, processor = loaded
    frames = _frames(8)
    enc = encode_prompt(processor, "How many?", frames, fps=2.0)
    with torch.no_grad():
        logits = model(**enc).logits  # [1, P, V]
    assert logits.shape == (1, enc["input_ids"].shape[1], len(processor.tokenizer))
    assert torch.isfinite(logits).all()

    target = "<think>two then one</think><answer>3</answer>"
    sft = encode_sft_example(processor, "How many?", frames, 2.0, target)
    p = enc["input_ids"].shape[1]
    assert torch.equal(sft["input_ids"][:, :p], enc["input_ids"])
    assert (sft["labels"][:, :p] == IGNORE_INDEX).all()
    assert torch.equal(sft["labels"][:, p:], sft["input_ids"][:, p:])
    assert processor.decode(sft["labels"][0, p:], skip_special_tokens=False) == target + "<|im_end|>"
    out = model(**sft)
    assert torch.isfinite(out.loss)
    # the loss is next-token CE over the assistant tokens only
    ref = torch.nn.functional.cross_entropy(
        out.logits[0, :-1], sft["labels"][0, 1:], ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(out.loss, ref, atol=1e-5)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_second_per_grid_ts_sets_temporal_rope_positions(loaded) -> None:
    """Temporal M-RoPE ids of video tokens step by tokens_per_second * 2 / fps per grid."""
    model, processor = loaded
    frames = _frames(8)
    for fps, step in ((2.0, 2), (4.0, 1), (1.0, 4)):
        enc = encode_prompt(processor, "q", frames, fps=fps)
        pos, _ = model.model.get_rope_index(
            enc["input_ids"], enc["mm_token_type_ids"], video_grid_thw=enc["video_grid_thw"],
            second_per_grid_ts=enc["second_per_grid_ts"], attention_mask=enc["attention_mask"],
        )  # [3, 1, P]
        video = enc["input_ids"][0] == processor.video_token_id
        start = int(video.nonzero()[0])  # text tokens before the video take positions 0..start-1
        t_ids = pos[0, 0, video].view(4, 9).unique(dim=1)  # [4, 1]: one temporal id per grid
        assert t_ids.squeeze(1).tolist() == [start + step * k for k in range(4)]
    with torch.no_grad():
        a = model(**encode_prompt(processor, "q", frames, fps=2.0)).logits
        b = model(**encode_prompt(processor, "q", frames, fps=4.0)).logits
    assert not torch.allclose(a[0, -1], b[0, -1])  # the forward consumes second_per_grid_ts


def test_greedy_generate(loaded) -> None:
    model, processor = loaded
    enc = encode_prompt(processor, "How many?", _frames(4), fps=2.0)
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with torch.no_grad():
        out1 = model.generate(**enc, **kwargs)
        out2 = model.generate(**enc, **kwargs)
    p = enc["input_ids"].shape[1]
    assert out1.shape == (1, p + 4)
    assert torch.equal(out1[:, :p], enc["input_ids"])
    assert torch.equal(out1, out2)
    # greedy: the first new token is the argmax of the prompt's last logits
    with torch.no_grad():
        first = model(**enc).logits[0, -1].argmax()
    assert int(out1[0, p]) == int(first)


def test_processor_save_roundtrip(tmp_path: Path, loaded) -> None:
    _, processor = loaded
    processor.save_pretrained(tmp_path)
    again = ReelProcessor.from_pretrained(tmp_path, family="qwen2_5_vl")
    assert again.spec == processor.spec and again.chat_template == CHAT_TEMPLATE
    frames = _frames(4)
    a, b = encode_prompt(processor, "q", frames, 2.0), encode_prompt(again, "q", frames, 2.0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert cfg["do_sample_frames"] is False and cfg["processor_class"] == "Qwen2_5_VLProcessor"


def test_saved_processor_files_equal_the_base_checkpoints(tmp_path: Path, tiny_dir: Path) -> None:
    """A base whose image and video processors differ (as the hub's do) is saved byte for byte."""
    import shutil

    from reelrl.models.processing import PROCESSOR_FILES

    base = tmp_path / "base"
    shutil.copytree(tiny_dir, base)
    image = json.loads((base / "preprocessor_config.json").read_text())
    image.update(min_pixels=3136, max_pixels=12845056, size={"shortest_edge": 3136, "longest_edge": 12845056})
    (base / "preprocessor_config.json").write_text(json.dumps(image, indent=1))
    video = json.loads((base / "video_preprocessor_config.json").read_text())
    video.update(video_processor_type="Qwen3VLVideoProcessor", fps=2, min_frames=4, max_frames=768,
                 do_sample_frames=True)
    (base / "video_preprocessor_config.json").write_text(json.dumps(video))
    processor = ReelProcessor.from_pretrained(base)
    out = tmp_path / "saved"
    written = processor.save_pretrained(out)
    assert "preprocessor_config.json" in written and "video_preprocessor_config.json" in written
    for name in PROCESSOR_FILES:
        if (base / name).is_file():
            assert (out / name).read_bytes() == (base / name).read_bytes(), name
    note = json.loads((out / "processor_source.json").read_text())
    assert note["copied_from"] == str(base) and note["changed"] == []
    again = ReelProcessor.from_pretrained(out, family="qwen2_5_vl")
    assert again.spec == processor.spec and again.chat_template == processor.chat_template


def test_qwen3_layout_puts_timestamps_in_text(loaded) -> None:
    _, p25 = loaded
    p3 = ReelProcessor(p25.tokenizer, CHAT_TEMPLATE, p25.spec, family="qwen3_vl")
    enc = encode_prompt(p3, "q", _frames(4), fps=2.0)  # frames at 0, .5, 1, 1.5 s -> groups at .25, 1.25
    text = p3.decode(enc["input_ids"][0], skip_special_tokens=False)
    assert "<0.2 seconds><|vision_start|>" in text and "<1.2 seconds><|vision_start|>" in text
    assert "second_per_grid_ts" not in enc
    assert int((enc["input_ids"] == p3.video_token_id).sum()) == 2 * 9
    with pytest.raises(ValueError, match="unsupported model family"):
        ReelProcessor(p25.tokenizer, CHAT_TEMPLATE, p25.spec, family="llava")


# ----------------------------------------------------------------------------- LoRA / freezing
def test_freeze_vision_tower(tiny_dir: Path) -> None:
    model, _ = load_model_and_processor(tiny_dir)
    tower = freeze_vision_tower(model)
    assert tower is model.model.visual
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())



def test_freeze_vision_tower_keeping_the_merger(tiny_dir: Path) -> None:
    model, processor = load_model_and_processor(tiny_dir)
    freeze_vision_tower(model, keep_merger=True)
    visual = model.model.visual
    trained = {n for n, p in visual.named_parameters() if p.requires_grad}
    assert trained == {f"merger.{n}" for n, _ in visual.merger.named_parameters()} and trained
    sft = encode_sft_example(processor, "q", _frames(4), 2.0, "<answer>A</answer>")
    model(**sft).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in visual.merger.parameters())
    assert all(p.grad is None for n, p in visual.named_parameters() if not n.startswith("merger."))
    with pytest.raises(ValueError, match="no merger submodule"):
        freeze_vision_tower(torch.nn.ModuleDict({"visual": torch.nn.Linear(2, 2)}), keep_merger=True)


def test_apply_lora_with_a_trained_merger(tiny_dir: Path) -> None:
    model, processor = load_model_and_processor(tiny_dir)
    peft_model = apply_lora(model, r=2, alpha=4, freeze_vision=True, train_merger=True)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    vision = [n for n in trainable if ".visual." in n]
    assert vision and all(".merger.modules_to_save." in n for n in vision)  # the copy peft saves, not the original
    assert all("lora_" in n for n in trainable if ".visual." not in n)
    sft = encode_sft_example(processor, "q", _frames(4), 2.0, "<answer>A</answer>")
    peft_model(**sft).loss.backward()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if n in vision)

def test_apply_lora_trains_only_lora_params(tiny_dir: Path) -> None:
    model, processor = load_model_and_processor(tiny_dir)
    r = 4
    peft_model = apply_lora(model, r=r, alpha=8, dropout=0.0, freeze_vision=True)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any(".visual." in n for n in trainable)
    h, kv, inter, layers = 128, 64, 512, 4  # kv = 2 heads * 32
    per_layer = r * ((h + h) + (h + kv) * 2 + (h + h) + (h + inter) * 2 + (inter + h))
    assert sum(p.numel() for p in trainable.values()) == layers * per_layer

    sft = encode_sft_example(processor, "q", _frames(4), 2.0, "<answer>A</answer>")
    peft_model.train()
    peft_model(**sft).loss.backward()
    for n, p in peft_model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert any(p.grad.abs().sum() > 0 for n, p in trainable.items() if ".lora_B." in n)


def test_apply_lora_can_train_vision(tiny_dir: Path) -> None:
    model, _ = load_model_and_processor(tiny_dir)
    peft_model = apply_lora(model, r=2, alpha=4, target_modules=["q_proj", "v_proj"], freeze_vision=False)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert len(lora) == 4 * 2 * 2  # layers * (q, v) * (A, B)
    assert all("language_model" in n for n in lora)
    assert any(".visual." in n and "modules_to_save" in n for n in trainable)
    with pytest.raises(ValueError, match="no language-model linear layer"):
        apply_lora(load_model_and_processor(tiny_dir)[0], target_modules=["nonexistent"])


# ----------------------------------------------------------------------------- HF parity
_TORCHVISION_STUB = '''
"""Stand-in for torchvision (no CPU wheel here): submodules resolve lazily; only
transforms.v2.functional.normalize (per-channel (x - mean) / std) is implemented."""
import importlib, importlib.abc, importlib.machinery, sys, types
from enum import Enum
import torch
__version__ = "0.28.0"

class InterpolationMode(Enum):
    NEAREST = "nearest"; NEAREST_EXACT = "nearest-exact"; BILINEAR = "bilinear"
    BICUBIC = "bicubic"; BOX = "box"; HAMMING = "hamming"; LANCZOS = "lanczos"

def normalize(x, mean, std, inplace=False):
    return (x - torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)) / torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)

_SUBMODULES = {"transforms", "v2", "functional", "io", "ops", "datasets", "models", "utils", "_utils"}

def _missing(name):
    def f(*a, **k):
        raise RuntimeError("torchvision stub: " + name)
    return f

class _Mod(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _SUBMODULES:
            return importlib.import_module(self.__name__ + "." + name)
        return {"InterpolationMode": InterpolationMode, "normalize": normalize}.get(name) or _missing(name)

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True) if fullname.startswith("torchvision.") else None
    def create_module(self, spec):
        m = _Mod(spec.name); m.__path__ = []; return m
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _Finder())

def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module("torchvision." + name)
    raise AttributeError(name)
'''

_PARITY_SCRIPT = '''
import sys, numpy as np, torch
from transformers import AutoProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor
from reelrl.models.processing import ReelProcessor, VideoSpec, build_messages, encode_prompt
from reelrl.models.tiny import CHAT_TEMPLATE


def wrap(hf, family):
    """A ReelProcessor with the video settings of an already-loaded transformers processor."""
    vp = hf.video_processor
    keys = ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "rescale_factor",
            "do_rescale", "do_normalize")
    d = {k: getattr(vp, k, None) for k in keys}
    d["size"] = dict(getattr(vp, "size", {}) or {})
    return ReelProcessor(hf.tokenizer, hf.chat_template or hf.tokenizer.chat_template,
                         VideoSpec.from_dict(d, "hf video processor"), family)


tiny = sys.argv[1]
hf25 = AutoProcessor.from_pretrained(tiny, local_files_only=True)
assert type(hf25).__name__ == "Qwen2_5_VLProcessor", type(hf25)
hf3 = Qwen3VLProcessor(image_processor=hf25.image_processor, tokenizer=hf25.tokenizer,
                       video_processor=Qwen3VLVideoProcessor(patch_size=14, do_sample_frames=False),
                       chat_template=CHAT_TEMPLATE)
cases = [(hf25, ReelProcessor.from_pretrained(tiny)), (hf3, wrap(hf3, "qwen3_vl"))]
for hf, ours in cases:
    for t, h, w, fps in [(7, 84, 112, 3.0), (8, 56, 56, 2.0)]:
        frames = np.random.default_rng(t).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
        text = hf.apply_chat_template(build_messages("How many?"), tokenize=False, add_generation_prompt=True)
        meta = [{"fps": fps, "total_num_frames": t, "frames_indices": list(range(t))}]
        ref = hf(text=[text], videos=[frames], video_metadata=meta, do_sample_frames=False, do_resize=False,
                 do_convert_rgb=False, return_tensors="pt")
        got = encode_prompt(ours, "How many?", frames, fps)
        assert set(ref.keys()) == set(got.keys()), (sorted(ref.keys()), sorted(got.keys()))
        for k in ref.keys():
            a, b = torch.as_tensor(ref[k]), got[k]
            assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
            assert torch.equal(a, b), (k, (a.float() - b.float()).abs().max())
print("PARITY OK")
'''


def test_encoding_matches_transformers_processors(tmp_path: Path, tiny_dir: Path) -> None:
    """Our encoding == transformers' Qwen2.5-VL and Qwen3-VL processors, token for token.

    transformers' video processors import torchvision; when it is missing (no CPU
    wheel here) a stub providing only ``normalize`` lets their real patchify,
    padding, token expansion, timestamps and second_per_grid_ts code run.
    """
    env = dict(os.environ)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = tmp_path / "stub" / "torchvision"
        stub.mkdir(parents=True)
        (stub / "__init__.py").write_text(textwrap.dedent(_TORCHVISION_STUB))
        info = tmp_path / "stub" / "torchvision-0.28.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "stub"), env.get("PYTHONPATH", "")])
    script = tmp_path / "parity.py"
    script.write_text(_PARITY_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_dir)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "PARITY OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_video_token_count_matches_formula(loaded) -> None:
    _, processor = loaded
    for t, h, w in [(1, 28, 28), (2, 56, 28), (16, 112, 84)]:
        assert video_token_count(processor, (t, h, w)) == math.ceil(t / 2) * (h // 28) * (w // 28)
