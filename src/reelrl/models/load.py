"""Load local VLM checkpoints (tiny or real) and prepare them for training.

One loader for every checkpoint: the tiny directory written by
:func:`reelrl.models.tiny.build_tiny` and a real local Qwen2-VL / Qwen2.5-VL /
Qwen3-VL checkpoint go through the same ``AutoModelForImageTextToText`` call
(``local_files_only=True`` always: reelrl never downloads). The processor is a
:class:`reelrl.models.processing.ReelProcessor` read from the same directory
(see that module for why it is not ``AutoProcessor``).

Also: :func:`model_family`, :func:`find_vision_tower`,
:func:`freeze_vision_tower` (optionally keeping the merger trainable), :func:`language_model_linear_names` and
:func:`apply_lora` (peft, language model only by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from reelrl.models.processing import ReelProcessor

DType = Literal["float32", "bfloat16", "float16", "auto"]
_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}
#: Submodule names under which VLMs keep their vision encoder (Qwen: ``model.visual``).
VISION_TOWER_NAMES = ("visual", "vision_tower", "vision_model", "vision_encoder")
#: Submodules of the vision tower that project its patches into the language model's space (Qwen2/2.5/3-VL's
#: ``merger``, Qwen3-VL's ``deepstack_merger_list``): the projector that ``train_merger`` keeps trainable.
MERGER_NAMES = ("merger", "deepstack_merger_list")
#: Modules never given LoRA by default: output head and multimodal projectors.
_NON_LM_NAMES = ("lm_head", "multi_modal_projector", "mm_projector")


def check_checkpoint_dir(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is a local checkpoint directory, else raise a clear error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"model path {str(p)!r} does not exist; reelrl loads local checkpoints only "
            "(build a tiny one with reelrl.models.tiny.build_tiny or `reelrl tiny OUT_DIR`)"
        )
    if not p.is_dir():
        raise NotADirectoryError(f"model path {str(p)!r} is a file, expected a checkpoint directory")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"model path {str(p)!r} holds no config.json: not a transformers checkpoint")
    return p


def load_model_and_processor(
    path: str | Path,
    *,
    dtype: DType = "float32",
    device: str | torch.device = "cpu",
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = "sdpa",
    trust_remote_code: bool = False,
) -> tuple[nn.Module, ReelProcessor]:
    """Load a local image/video-text-to-text checkpoint and its processor.

    Args:
        path: checkpoint directory (must hold ``config.json``).
        dtype: weight dtype; "auto" keeps the checkpoint's own.
        device: where to put the model.
        attn_implementation: transformers attention backend (``None``: its default).
        trust_remote_code: forwarded to transformers (off by default).

    Returns:
        ``(model, processor)``; the model is in eval mode.
    """
    from transformers import AutoModelForImageTextToText

    root = check_checkpoint_dir(path)
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    kwargs: dict[str, Any] = dict(dtype=_DTYPES[dtype], local_files_only=True, trust_remote_code=trust_remote_code)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(root, **kwargs)
    model.to(device)
    model.eval()
    processor = ReelProcessor.from_pretrained(root, family=model_family(model))
    return model, processor


def model_family(model: nn.Module) -> str:
    """The checkpoint family, i.e. ``config.model_type`` ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", ...)."""
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    if not family:
        raise ValueError(f"{type(model).__name__} has no config.model_type")
    return str(family)


def find_vision_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` of the vision encoder (shallowest match).

    Looks for a submodule whose own name is one of :data:`VISION_TOWER_NAMES`;
    raises ``ValueError`` listing them when none exists.
    """
    matches = [
        (name, mod) for name, mod in model.named_modules() if name and name.rsplit(".", 1)[-1] in VISION_TOWER_NAMES
    ]
    if not matches:
        raise ValueError(f"{type(model).__name__} has no vision tower submodule named one of {VISION_TOWER_NAMES}")
    return min(matches, key=lambda nm: nm[0].count("."))


def freeze_vision_tower(model: nn.Module, keep_merger: bool = False) -> nn.Module:
    """Set ``requires_grad=False`` on every vision-tower parameter; return the tower.

    ``keep_merger=True`` leaves the tower's merger (:data:`MERGER_NAMES`, the projector into the language
    model) trainable: the ViT blocks frozen, the projector trained, as Qwen2.5-VL's fine-tuning scripts do with
    ``tune_mm_vision=False, tune_mm_mlp=True``. Under peft's ``modules_to_save`` only the trained copy is
    unfrozen. Raises ``ValueError`` when the tower has no merger.
    """
    _, tower = find_vision_tower(model)
    for p in tower.parameters():
        p.requires_grad_(False)
    if keep_merger:
        mergers = _mergers(tower)
        if not mergers:
            raise ValueError(f"{type(tower).__name__} has no merger submodule named one of {MERGER_NAMES}")
        for mod in mergers.values():
            trained = getattr(mod, "modules_to_save", None)  # peft's ModulesToSaveWrapper: its trained copy
            (trained if isinstance(trained, nn.Module) else mod).requires_grad_(True)
    return tower


def _mergers(tower: nn.Module) -> dict[str, nn.Module]:
    """The tower's merger submodules (:data:`MERGER_NAMES`) by their name inside the tower."""
    return {name: mod for name, mod in tower.named_modules() if name.rsplit(".", 1)[-1] in MERGER_NAMES}


def merger_names(model: nn.Module) -> list[str]:
    """Qualified names of the vision tower's merger submodules (:data:`MERGER_NAMES`)."""
    vision_name, tower = find_vision_tower(model)
    return [f"{vision_name}.{name}" for name in _mergers(tower)]


def language_model_linear_names(model: nn.Module, suffixes: list[str] | None = None) -> list[str]:
    """Qualified names of the ``nn.Linear`` layers of the language model.

    Excludes the vision tower, the output head and multimodal projectors. With
    ``suffixes`` (e.g. ``["q_proj", "v_proj"]``) keeps only names ending in one.
    """
    vision_name, _ = find_vision_tower(model)
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if name == vision_name or name.startswith(vision_name + "."):
            continue
        if any(part in _NON_LM_NAMES for part in name.split(".")):
            continue
        if suffixes is not None and name.rsplit(".", 1)[-1] not in suffixes:
            continue
        names.append(name)
    return names


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    freeze_vision: bool = True,
    train_merger: bool = False,
) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters on the language model.

    Args:
        model: a loaded VLM.
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: "all-linear" (every linear layer of the language model,
            not the vision tower, not ``lm_head``), or a list of layer-name
            suffixes (e.g. ``["q_proj", "v_proj"]``), also restricted to the
            language model.
        freeze_vision: True keeps the vision tower frozen; False trains it
            fully (peft ``modules_to_save``, so it is saved with the adapter).
        train_merger: with ``freeze_vision``, train the tower's merger in full
            (``modules_to_save``) and keep its ViT blocks frozen.

    Returns:
        the ``PeftModel``; only LoRA parameters (and the vision tower when
        ``freeze_vision=False``, its merger when ``train_merger``) require grad.
    """
    from peft import LoraConfig, get_peft_model

    if r <= 0:
        raise ValueError(f"LoRA rank r must be positive, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if target_modules == "all-linear":
        names = language_model_linear_names(model)
    elif isinstance(target_modules, (list, tuple)) and target_modules:
        names = language_model_linear_names(model, list(target_modules))
    else:
        raise ValueError(f"target_modules must be 'all-linear' or a non-empty list of names, got {target_modules!r}")
    if not names:
        raise ValueError(f"no language-model linear layer matches target_modules={target_modules!r}")
    vision_name, _ = find_vision_tower(model)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names,
        modules_to_save=[vision_name] if not freeze_vision else (merger_names(model) if train_merger else None),
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    if freeze_vision:
        freeze_vision_tower(peft_model, keep_merger=train_merger)
    return peft_model


__all__ = [
    "VISION_TOWER_NAMES",
    "apply_lora",
    "check_checkpoint_dir",
    "find_vision_tower",
    "freeze_vision_tower",
    "language_model_linear_names",
    "load_model_and_processor",
    "merger_names",
    "model_family",
]
