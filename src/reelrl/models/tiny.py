"""Build a tiny checkpoint of a real architecture (Qwen2.5-VL) for CPU tests and demos.

:func:`build_tiny` writes a directory that the ordinary transformers loaders read
back with no reelrl code involved::

    AutoModelForImageTextToText.from_pretrained(dir)  # Qwen2_5_VLForConditionalGeneration
    AutoProcessor.from_pretrained(dir)                # Qwen2_5_VLProcessor (needs torchvision)
    AutoTokenizer.from_pretrained(dir)                # Qwen2Tokenizer with the chat template

The processor files are written by hand in the hub layout of Qwen2.5-VL
(``preprocessor_config.json``, ``video_preprocessor_config.json``,
``chat_template.jinja``) because transformers' video processor class cannot be
instantiated without torchvision; reelrl itself reads them with
:class:`reelrl.models.processing.ReelProcessor`.

The model is transformers' own ``Qwen2_5_VLForConditionalGeneration`` (vision
tower with window attention + patch merger, M-RoPE language model), randomly
initialised from a fixed seed, float32, a few million parameters. The tokenizer
is a byte-level BPE trained locally (``tokenizers``) on the given texts with
Qwen's pre-tokenizer, wrapped as transformers' ``Qwen2Tokenizer``; it carries
Qwen's special tokens and the reasoning tags ``<think> </think> <answer>
</answer>`` as single, non-special tokens (decode keeps them).

Deviations from a real Qwen2.5-VL checkpoint:
- the language model's ``vocab_size`` equals the tokenizer length exactly (no
  padded rows), so every logit is a real token;
- the special tokens sit at ids 0..7 and the tags at 8..11 (Qwen puts them
  after the BPE vocabulary);
- the M-RoPE sections are scaled to the small head dim (Qwen's 16:24:24 ratio).

Same texts + same seed -> byte-identical weights and tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

#: Qwen special tokens, in the id order the tiny tokenizer gives them (0..7).
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
)
#: Reasoning / answer tags: single tokens, but *not* special (decode keeps them).
TAG_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

DEFAULT_SYSTEM = "You are a helpful assistant."

#: Qwen2.5-VL's chat template (video, image and text content parts; add_vision_id;
#: a default system turn when the first message is not a system message).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    + DEFAULT_SYSTEM
    + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# What the chat template wraps around every prompt (tokenizer-training text).
_TEMPLATE_TEXT = (
    f"{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n{IM_START}user\n{VISION_START}{VIDEO_PAD}{VISION_END}"
    f"{IM_END}\n{IM_START}assistant\n{IM_END}\n"
)

# Qwen's pre-tokenisation regex (single digits, letters with one leading non-letter, ...).
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Frame-size bounds of the tiny processor: 56x56 .. 168x168 pixels (28 * 28 * 36).
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 28 * 28 * 36


def default_corpus() -> list[str]:
    """Generic tokenizer-training texts for when no gym texts are given.

    Covers the shapes of video QA prompts and answers: questions, lettered
    options, reasoning inside ``<think>``, answers inside ``<answer>``, digits,
    seconds and the chat-template words.
    """
    colors = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
    shapes = ["circle", "square", "triangle", "ball", "box", "dot", "star"]
    verbs = ["moves", "appears", "disappears", "bounces", "turns", "stops", "falls"]
    texts = [
        "Answer the question about the video.",
        "Think step by step inside <think> </think> tags, then give the final answer inside <answer> </answer> tags.",
        "Output the thinking process in <think> </think> and the final answer in <answer> </answer> tags.",
        "Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags.",
        "Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
        "Please provide the time span in seconds as start-end (e.g., 1.5-3.0) within the <answer> </answer> tags.",
        "Options:", "A.", "B.", "C.", "D.", "E.", "A, B, C, D",
        "0 1 2 3 4 5 6 7 8 9 10 11 12 0.5 1.0 1.5 2.0 2.5 3.0 seconds",
    ]
    for i, c in enumerate(colors):
        s = shapes[i % len(shapes)]
        v = verbs[i % len(verbs)]
        texts += [
            f"How many {c} {s}s appear in the video?",
            f"Which {s} {v} first?",
            f"When does the {c} {s} {v}? Give the start and end time in seconds.",
            f"What color is the {s} that {v} last?",
            "In which order do the objects appear?",
            f"A. {c} {s}",
            f"<think>I count the {c} {s}s frame by frame. The {s} {v} at 1.5 seconds.</think><answer>{i % 4 + 1}</answer>",
            f"<think>The {c} {s} {v} before the others.</think><answer>{'ABCD'[i % 4]}</answer>",
        ]
    return texts


def _train_tokenizer(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen's pre-tokenizer; return (vocab, merges)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix=""))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS) + list(TAG_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The tags and specials are reserved ids matched before BPE; cut them out of the
    # training text (as a line break, which the pre-tokenizer splits on anyway).
    cleaned = []
    for t in texts:
        for sp in SPECIAL_TOKENS + TAG_TOKENS:
            t = t.replace(sp, "\n")
        cleaned.append(t)
    tok.train_from_iterator(cleaned, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Any:
    """Return a ``Qwen2Tokenizer`` (fast) trained on ``texts`` plus the template strings.

    Raises ``ValueError`` when ``vocab_size`` cannot hold the byte alphabet and
    the reserved tokens.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    n_reserved = 256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS)
    if vocab_size < n_reserved:
        raise ValueError(f"vocab_size={vocab_size} is below the {n_reserved} reserved byte/special tokens")
    corpus = [t for t in texts if t] or default_corpus()
    # The chat-template text, often enough (min_frequency=2) for its words to merge.
    corpus += [_TEMPLATE_TEXT] * 4
    vocab, merges = _train_tokenizer(corpus, vocab_size)

    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        errors="replace",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    tok.chat_template = CHAT_TEMPLATE
    for t in SPECIAL_TOKENS + TAG_TOKENS:
        if tok.convert_tokens_to_ids(t) != vocab[t]:
            raise RuntimeError(f"reserved token {t!r} moved from id {vocab[t]} while wrapping the tokenizer")
    return tok


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary pairs into (t, h, w) sections in Qwen's 16:24:24 ratio."""
    half = head_dim // 2
    t = max(1, round(half * 16 / 64))
    h = (half - t) // 2
    w = half - t - h
    return [t, h, w]


def build_tiny(
    out_dir: str | Path,
    texts: Iterable[str] | None = None,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 512,
    vision_depth: int = 2,
    vision_hidden: int = 128,
    vision_heads: int = 4,
    vision_intermediate: int = 256,
    seed: int = 0,
    min_pixels: int = TINY_MIN_PIXELS,
    max_pixels: int = TINY_MAX_PIXELS,
    rope_theta: float = 1000000.0,
) -> Path:
    """Write a tiny random-init Qwen2.5-VL checkpoint + processor to ``out_dir``.

    Args:
        out_dir: target directory (created; existing files are overwritten).
        texts: tokenizer-training texts (gym questions, options, reasoning,
            answers); ``None`` or empty uses :func:`default_corpus`.
        vocab_size: BPE target size (an upper bound: a small corpus may stop
            earlier); the model's embedding has exactly ``len(tokenizer)`` rows.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size:
            language-model shape (head_dim = hidden_size / num_heads, even).
        vision_depth, vision_hidden, vision_heads, vision_intermediate: vision
            tower shape; its ``out_hidden_size`` is ``hidden_size``.
        seed: torch seed of the random init.
        rope_theta: base of the language model's (3D) rotary embedding; with a
            small head_dim a smaller base keeps positions tell-apart.
        min_pixels, max_pixels: per-frame pixel bounds of the image and video
            processors (frames outside are resized by the processor when it
            resizes; reelrl's encoder passes frames through unresized).

    Returns:
        The output directory as a ``Path``.
    """
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    from reelrl.models.processing import VideoSpec, write_processor_files

    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size={hidden_size} must split into {num_heads} heads of even size")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    if vision_hidden % vision_heads or (vision_hidden // vision_heads) % 4:
        raise ValueError(f"vision_hidden={vision_hidden} / vision_heads={vision_heads} must be a multiple of 4")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(list(texts) if texts is not None else [], vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    n_vocab = len(tokenizer)

    head_dim = hidden_size // num_heads
    text_config = dict(
        vocab_size=n_vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": _mrope_section(head_dim)},
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[ENDOFTEXT],
        tie_word_embeddings=True,
    )
    vision_config = dict(
        depth=vision_depth,
        hidden_size=vision_hidden,
        intermediate_size=vision_intermediate,
        num_heads=vision_heads,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
        window_size=112,
        out_hidden_size=hidden_size,
        fullatt_block_indexes=[vision_depth - 1],
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=True,
    )
    # Top-level copies: generation and some trainers read them from the root config.
    config.bos_token_id = ids[ENDOFTEXT]
    config.eos_token_id = ids[IM_END]
    config.pad_token_id = ids[ENDOFTEXT]

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT]
    )
    model.save_pretrained(out)

    spec = VideoSpec(patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=min_pixels, max_pixels=max_pixels)
    write_processor_files(out, tokenizer, CHAT_TEMPLATE, spec, family="qwen2_5_vl")
    _write_readme(out, model, n_vocab, seed)
    return out


def _write_readme(out: Path, model: torch.nn.Module, n_vocab: int, seed: int) -> None:
    """Write a short README.md describing the tiny checkpoint."""
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    text = f"""# reelrl tiny Qwen2.5-VL checkpoint

Random-init (seed {seed}) `Qwen2_5_VLForConditionalGeneration`, float32, {n_params:,} parameters,
built by `reelrl.models.tiny.build_tiny`. It knows nothing: it exists so that the whole
video-RL pipeline runs end to end on a CPU in minutes, on the same code path as a real
Qwen2.5-VL checkpoint.

- language model: {cfg.text_config.num_hidden_layers} layers, hidden {cfg.text_config.hidden_size},
  {cfg.text_config.num_attention_heads} heads / {cfg.text_config.num_key_value_heads} KV heads,
  M-RoPE sections {cfg.text_config.rope_parameters.get("mrope_section")}, tied embeddings
- vision tower: {cfg.vision_config.depth} blocks, hidden {cfg.vision_config.hidden_size},
  patch 14, temporal patch 2, spatial merge 2, tokens_per_second {cfg.vision_config.tokens_per_second}
- tokenizer: byte-level BPE ({n_vocab} tokens) trained locally with Qwen's pre-tokenizer;
  Qwen special tokens at ids 0..7; `<think> </think> <answer> </answer>` are single
  non-special tokens; Qwen2.5-VL chat template

Load with:

```python
from reelrl.models.load import load_model_and_processor
model, processor = load_model_and_processor(path)  # processor: reelrl ReelProcessor

# or with transformers alone (AutoProcessor needs torchvision for the video processor)
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained(path)
processor = AutoProcessor.from_pretrained(path)
```
"""
    (out / "README.md").write_text(text)
