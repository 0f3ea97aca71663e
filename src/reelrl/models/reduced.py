"""Real-format checkpoints at reduced depth: a published Qwen-VL layout, random weights.

:func:`build_reduced` writes a directory that looks to every loader exactly like
a downloaded Qwen2-VL-7B-Instruct, Qwen2.5-VL-7B-Instruct or Qwen3-VL-8B-Instruct
checkpoint, except that the language model has ``num_layers`` layers, the vision
tower ``vision_depth`` blocks, and the weights are random (fixed seed):

- ``config.json``: the published config (packaged under
  ``reelrl/models/published/<family>/``, or read from ``like=`` a local
  checkpoint) with only the depth changed (and the width, when
  ``width="reduced"``); the real ``vocab_size`` and every special-token id;
- ``preprocessor_config.json``, ``chat_template.json`` and (Qwen3-VL)
  ``video_preprocessor_config.json``: the published files, byte for byte;
- the tokenizer: given a Qwen ``tokenizer.json`` (the real Qwen BPE, 151,643
  regular tokens), it is kept as is, with the added tokens of the family
  (Qwen2-VL: ids 151643..151656, Qwen2.5-VL: ..151664, Qwen3-VL: ..151668 with
  ``<think>`` / ``</think>``); without one, a byte-level BPE trained on the
  given texts and padded to the same 151,643 regular ids, so every special
  token sits at its real id. Either way ``tokenizer_config.json`` follows the
  hub's (eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos).

Reduction rules (what a smaller published model of the family would do):
- text: ``num_hidden_layers = num_layers`` (``max_window_layers`` capped);
- vision: ``depth = vision_depth``; Qwen2.5-VL's full-attention blocks become
  the last block (the others keep window attention); Qwen3-VL's deepstack
  indexes are scaled to the new depth (``floor(i * depth / published_depth)``,
  duplicates dropped);
- ``width="reduced"`` also shrinks the widths while keeping every head
  dimension (so the M-RoPE sections and the vision rotary stay valid): text
  2 attention heads / 1 KV head (hidden ``2 * head_dim``, MLP 512), vision
  2 heads (hidden ``2 * vision_head_dim``), projector to the new text width.

Weights are saved in the published dtype (bfloat16) unless told otherwise.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch

#: Families with a packaged published layout (model_type -> published checkpoint).
PUBLISHED: dict[str, str] = {
    "qwen2_vl": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-8B-Instruct",
}
#: Regular (BPE) tokens of the Qwen vocabulary; added tokens start at this id.
QWEN_BPE_SIZE = 151643
#: Last added-token id each family's tokenizer carries.
LAST_ADDED_ID: dict[str, int] = {"qwen2_vl": 151656, "qwen2_5_vl": 151664, "qwen3_vl": 151668}
#: Qwen's added tokens from id 151643 on: (content, special).
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)
#: Processor files of the published layout, copied byte for byte.
_PUBLISHED_PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json",
                              "chat_template.jinja")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json")

Width = Literal["published", "reduced"]


def published_dir(family: str) -> Path:
    """The packaged directory holding ``family``'s published config and processor files."""
    if family not in PUBLISHED:
        raise ValueError(f"no published layout for family {family!r}; known: {', '.join(PUBLISHED)}")
    return Path(str(importlib.resources.files("reelrl.models") / "published" / family))


# ------------------------------------------------------------------ config
def _scaled_indexes(indexes: list[int], old_depth: int, new_depth: int) -> list[int]:
    """Block indexes of a ``old_depth`` tower mapped onto ``new_depth`` blocks (sorted, unique)."""
    return sorted({min(new_depth - 1, i * new_depth // old_depth) for i in indexes})


def reduce_config(config: dict[str, Any], num_layers: int, vision_depth: int, width: Width = "published") -> dict[str, Any]:
    """The published ``config.json`` dict at the reduced depth (and width); see the module docstring."""
    if num_layers < 1 or vision_depth < 1:
        raise ValueError(f"num_layers={num_layers} and vision_depth={vision_depth} must be >= 1")
    if width not in ("published", "reduced"):
        raise ValueError(f"width must be 'published' or 'reduced', got {width!r}")
    d = json.loads(json.dumps(config))
    text = d["text_config"] if isinstance(d.get("text_config"), dict) else d
    vision = d["vision_config"]
    text["num_hidden_layers"] = num_layers
    text.pop("layer_types", None)
    if "max_window_layers" in text:
        text["max_window_layers"] = min(int(text["max_window_layers"]), num_layers)
    old_depth = int(vision["depth"])
    vision["depth"] = vision_depth
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [vision_depth - 1]
    if "deepstack_visual_indexes" in vision:
        vision["deepstack_visual_indexes"] = _scaled_indexes(vision["deepstack_visual_indexes"], old_depth, vision_depth)
    if width == "reduced":
        head_dim = int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"])
        text.update(num_attention_heads=2, num_key_value_heads=1, hidden_size=2 * head_dim, intermediate_size=512)
        if "head_dim" in text:
            text["head_dim"] = head_dim
        if "embed_dim" in vision:  # Qwen2-VL: embed_dim is the tower width, hidden_size its output
            v_head = int(vision["embed_dim"]) // int(vision["num_heads"])
            vision.update(embed_dim=2 * v_head, num_heads=2, hidden_size=text["hidden_size"])
        else:
            v_head = int(vision["hidden_size"]) // int(vision["num_heads"])
            vision.update(hidden_size=2 * v_head, num_heads=2, intermediate_size=4 * v_head,
                          out_hidden_size=text["hidden_size"])
    return d


# --------------------------------------------------------------- tokenizer
def _added_tokens_json(family: str) -> list[dict[str, Any]]:
    """``added_tokens`` entries of tokenizer.json for ``family`` (real ids and flags)."""
    last = LAST_ADDED_ID[family]
    return [
        dict(id=QWEN_BPE_SIZE + i, content=c, single_word=False, lstrip=False, rstrip=False, normalized=False,
             special=s)
        for i, (c, s) in enumerate(QWEN_ADDED_TOKENS)
        if QWEN_BPE_SIZE + i <= last
    ]


def _real_tokenizer_json(path: Path, family: str) -> dict[str, Any]:
    """A Qwen tokenizer.json with the family's added tokens; raises if it is not Qwen's vocabulary."""
    f = path / "tokenizer.json" if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"tokenizer {path}: no tokenizer.json")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: not a tokenizers JSON file with a BPE vocabulary ({e})") from e
    if len(vocab) != QWEN_BPE_SIZE or sorted(vocab.values()) != list(range(QWEN_BPE_SIZE)):
        raise ValueError(f"{f}: {len(vocab)} regular tokens with ids 0..{max(vocab.values())}; "
                         f"Qwen's vocabulary has {QWEN_BPE_SIZE} (ids 0..{QWEN_BPE_SIZE - 1})")
    by_id = {t["id"]: t for t in data.get("added_tokens", [])}
    for want in _added_tokens_json(family):
        have = by_id.get(want["id"])
        if have is None or have["content"] != want["content"]:
            raise ValueError(f"{f}: id {want['id']} is {have and have['content']!r}, Qwen's is {want['content']!r}")
    data["added_tokens"] = _added_tokens_json(family)
    return data


def _filler(n: int, taken: set[str]) -> list[str]:
    """``n`` byte-level strings not in ``taken`` (2 then 3 alphabet characters), in a fixed order."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    out: list[str] = []
    for length in itertools.count(2):
        for combo in itertools.product(alphabet, repeat=length):
            s = "".join(combo)
            if s not in taken:
                out.append(s)
                if len(out) == n:
                    return out
    raise AssertionError("unreachable")


def _synthetic_tokenizer_json(texts: list[str], family: str) -> dict[str, Any]:
    """A Qwen-layout tokenizer.json: BPE trained on ``texts``, padded to Qwen's 151,643 regular ids."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    from reelrl.models.tiny import _PRETOKENIZE_REGEX, default_corpus

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix=""))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=4096, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    specials = [c for c, _ in QWEN_ADDED_TOKENS]
    corpus = []
    for t in list(texts) + default_corpus():
        for sp in specials:
            t = t.replace(sp, "\n")
        corpus.append(t)
    tok.train_from_iterator(corpus, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    for i, s in enumerate(_filler(QWEN_BPE_SIZE - len(vocab), set(vocab)), start=len(vocab)):
        vocab[s] = i
    data["model"]["vocab"] = vocab
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    data["post_processor"] = dict(data["decoder"])
    data["added_tokens"] = _added_tokens_json(family)
    return data


def _tokenizer_config(family: str) -> dict[str, Any]:
    """tokenizer_config.json in the hub's Qwen layout."""
    added = _added_tokens_json(family)
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in added
        },
        "additional_special_tokens": [t["content"] for t in added if t["special"] and t["id"] > QWEN_BPE_SIZE],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768 if family == "qwen2_vl" else 131072,
        "pad_token": "<|endoftext|>",
        "processor_class": {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
                            "qwen3_vl": "Qwen3VLProcessor"}[family],
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _write_tokenizer(out: Path, family: str, tokenizer: Path | None, like: Path | None, texts: list[str]) -> str:
    """Write the tokenizer files into ``out``; returns where the vocabulary came from."""
    if tokenizer is None and like is not None and (like / "tokenizer.json").is_file():
        for name in _TOKENIZER_FILES:
            if (like / name).is_file():
                shutil.copyfile(like / name, out / name)
        return f"copied from {like}"
    if tokenizer is not None:
        data, source = _real_tokenizer_json(Path(tokenizer), family), f"Qwen vocabulary from {tokenizer}"
    else:
        data, source = _synthetic_tokenizer_json(texts, family), "synthetic BPE padded to Qwen's ids"
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(family), indent=2) + "\n")
    return source


# ------------------------------------------------------------------- build
def build_reduced(
    out_dir: str | Path,
    family: str = "qwen2_5_vl",
    *,
    like: str | Path | None = None,
    tokenizer: str | Path | None = None,
    texts: Iterable[str] | None = None,
    num_layers: int = 2,
    vision_depth: int = 2,
    width: Width = "published",
    dtype: Literal["bfloat16", "float32"] = "bfloat16",
    seed: int = 0,
) -> Path:
    """Write a real-format checkpoint of ``family`` at reduced depth with random weights.

    Args:
        out_dir: target directory (created; existing files are overwritten).
        family: ``qwen2_vl`` | ``qwen2_5_vl`` | ``qwen3_vl`` (ignored when ``like``
            is given: its ``model_type`` decides).
        like: a local checkpoint directory whose config, processor and tokenizer
            files to reduce instead of the packaged published ones.
        tokenizer: a Qwen ``tokenizer.json`` (or a directory holding one) with the
            real vocabulary; ``None``: the ``like`` checkpoint's tokenizer, else a
            synthetic one at the real ids trained on ``texts``.
        texts: tokenizer-training texts for the synthetic tokenizer.
        num_layers, vision_depth: reduced depths.
        width: ``"published"`` keeps every width; ``"reduced"`` shrinks them (see module docstring).
        dtype: saved weight dtype (published: bfloat16).
        seed: torch seed of the random init.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    src = Path(like) if like is not None else published_dir(family)
    cfg_file = src / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{src}: no config.json to reduce")
    published = json.loads(cfg_file.read_text())
    family = published.get("model_type", "")
    if family not in PUBLISHED:
        raise ValueError(f"{cfg_file}: model_type {family!r} is not one of {', '.join(PUBLISHED)}")
    reduced = reduce_config(published, num_layers, vision_depth, width)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(reduced))
        config = AutoConfig.from_pretrained(tmp, local_files_only=True)
    torch.manual_seed(seed)
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    model = AutoModelForImageTextToText.from_config(config, dtype=torch_dtype).eval()
    text_cfg = getattr(config, "text_config", config)
    model.generation_config = GenerationConfig(
        bos_token_id=QWEN_BPE_SIZE, eos_token_id=[QWEN_BPE_SIZE + 2, QWEN_BPE_SIZE], pad_token_id=QWEN_BPE_SIZE
    )
    model.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    del model

    for name in _PUBLISHED_PROCESSOR_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    vocab_source = _write_tokenizer(out, family, Path(tokenizer) if tokenizer else None,
                                    Path(like) if like is not None else None, list(texts or []))
    _write_readme(out, family, str(src) if like is not None else PUBLISHED[family], reduced, text_cfg,
                  n_params, vocab_source, dtype, seed)
    return out


def _write_readme(out: Path, family: str, source: str, reduced: dict[str, Any], text_cfg: Any, n_params: int,
                  vocab_source: str, dtype: str, seed: int) -> None:
    """README.md of a reduced checkpoint: what it is, what differs from the source."""
    vision = reduced["vision_config"]
    text = f"""# Reduced real-format {family} checkpoint (random weights)

Built by `reelrl.models.reduced.build_reduced` from the layout of `{source}`:
same config (vocabulary {text_cfg.vocab_size}, special-token ids, rotary and vision settings),
chat template and image/video processor files, with

- language model: {text_cfg.num_hidden_layers} layers, hidden {text_cfg.hidden_size},
  {text_cfg.num_attention_heads} heads / {text_cfg.num_key_value_heads} KV heads;
- vision tower: {vision["depth"]} blocks;
- {n_params:,} parameters, random init (seed {seed}), saved as {dtype};
- tokenizer: {vocab_source}.

It knows nothing: it exists to run reelrl's real-checkpoint recipes end to end
(prompt text, token ids, frame sizes, memory and time per step) without the
published weights.
"""
    (out / "README.md").write_text(text)
