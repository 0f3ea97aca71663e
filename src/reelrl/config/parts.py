"""The recipe's other sections: model, data, prompt, rollout engine, evaluation, logging, checkpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reelrl.config.base import _Strict


class LoraConfig(_Strict):
    """LoRA adapters (peft) on the language model."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="peft target modules; 'all-linear' = every linear layer of the language model."
    )


class ModelConfig(_Strict):
    """Which checkpoint to load and what to train of it."""

    path: str = Field(description="Local directory of a transformers checkpoint (never downloaded).")
    build_tiny_if_missing: bool = Field(
        False, description="If `path` does not exist, build the tiny Qwen2.5-VL checkpoint there (quickstart, tests)."
    )
    tiny: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of reelrl.models.tiny.build_tiny.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Dtype the weights load in (auto: the checkpoint's own); half precision = the compute "
        "dtype of training and the dtype final models are saved in."
    )
    master_weights: Literal["float32", "model"] = Field(
        "float32", description="Training a half-precision model: float32 = trainable parameters and AdamW in fp32, "
        "forward passes under autocast to `dtype` (mixed precision); model = train in `dtype` itself (pure bf16: "
        "updates below half an ulp round away). See reelrl.models.precision."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        "sdpa", description="Attention kernel passed to from_pretrained."
    )
    freeze_vision: bool = Field(False, description="Freeze the vision tower (then its embeddings are reused by the update).")
    train_merger: bool = Field(
        False, description="With freeze_vision: keep the tower's merger (the projector into the language model) "
        "trainable and its ViT blocks frozen (Qwen2.5-VL's tune_mm_mlp); the update then re-encodes with gradient."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")

    @model_validator(mode="after")
    def _merger_needs_frozen_tower(self) -> "ModelConfig":
        if self.train_merger and not self.freeze_vision:
            raise ValueError("model.train_merger needs model.freeze_vision: true (a tower that is not frozen trains "
                             "its merger already)")
        return self


class GymConfig(_Strict):
    """Synthetic video data generated on demand when the dataset files are missing."""

    enabled: bool = Field(False, description="Generate the gym into `dir` if its files are missing.")
    dir: str = Field(".cache/gym", description="Output directory of the generated gym.")
    spec: dict[str, Any] = Field(default_factory=dict, description="Fields of reelrl.gym.GymSpec.")
    n_train: int = Field(512, ge=1)
    n_val: int = Field(64, ge=0)
    n_test: int = Field(256, ge=1)


class DataConfig(_Strict):
    """Dataset files (JSONL rows, see reelrl.data.schema)."""

    train: str | None = Field(None, description="Training JSONL; defaults to <gym.dir>/train.jsonl when the gym is on.")
    sft_train: str | None = Field(
        None, description="Training JSONL of the SFT stage when it differs from `train` (Video-R1: COT-165k for SFT, "
        "260k for RL); null = `train`."
    )
    val: str | None = Field(None, description="Validation JSONL.")
    test: str | None = Field(None, description="Held-out JSONL used by `eval`.")
    gym: GymConfig = Field(default_factory=GymConfig)
    shuffle: bool = Field(True, description="Reshuffle the training rows every epoch (seeded).")
    max_rows: int | None = Field(None, ge=1, description="Use only the first N training rows.")
    max_prompt_tokens: int | None = Field(
        65536, ge=1, description="A row whose prompt (text and visual tokens) is longer is a counted skip naming "
        "the row, in training and eval; the question alone is checked before its video is decoded. null: no limit.")


class PromptConfig(_Strict):
    """How a row becomes the user turn, the system turn and the SFT target (reelrl.data.templates)."""

    system: str | None = Field(
        None, description="System message for every stage; null = the template's own (by stage; none: the chat "
        "template's default)."
    )
    template: str = Field(
        "reelrl",
        description="A registered prompt template (reelrl, video_r1, tw_grpo, longvila_r1; `reelrl templates`), "
        "'module.path:factory', or a format string with {question} (the question with lettered options).",
    )

    @field_validator("template")
    @classmethod
    def _known(cls, v: str) -> str:
        from reelrl.data.templates import get_template

        try:
            get_template(v)
        except (KeyError, ImportError, AttributeError, TypeError, ValueError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        return v


class RolloutConfig(_Strict):
    """What generates completions for every stage: RL rollouts, DPO's sampled pairs, evaluation."""

    engine: str = Field(
        "kv_cache",
        description="Registered rollout engine (reelrl.rollout.engine.ROLLOUT_ENGINES); kv_cache = the policy in "
        "this process: one prefill per prompt, its KV cache forked G ways, batched decoding.",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the engine.")


class EvalConfig(_Strict):
    """Greedy evaluation on a split."""

    split: Literal["test", "val", "train"] = "test"
    max_new_tokens: int = Field(64, ge=1)
    max_rows: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1, description="Rows decoded together (greedy; the tokens do not depend on it).")
    video: dict[str, Any] = Field(
        default_factory=dict, description="Fields of `video` that differ at evaluation (papers evaluate on more "
        "frames / pixels than they train on, e.g. {max_frames: 32, max_pixels: 200704}); {} = as in training."
    )
    levels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Generalisation levels (SEED-Bench-R1's L1/L2/L3): level name -> the "
        "fields of data.gym.spec that differ in that level's test gym, e.g. {L1: {}, L2: {environment: "
        "noise_shapes}, L3: {environment: noise_shapes, families: [count]}}. Each eval stage then evaluates the "
        "data.gym.n_test test rows of every level (generated under <data.gym.dir>/levels/<name>; a level equal "
        "to the training spec uses the gym's own test split) and the summary reports each level with its chance "
        "(reelrl.eval.levels). {} = evaluate eval.split only."
    )

    @field_validator("levels")
    @classmethod
    def _level_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in v:
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise ValueError(f"level name {name!r} must be letters, digits, '_' or '-' (it names a folder)")
        return v


class LoggingConfig(_Strict):
    tensorboard: bool = True
    wandb: bool = Field(False, description="Also log to Weights & Biases if it is installed.")
    wandb_project: str = "reelrl"
    progress: bool = Field(True, description="Rich progress bars.")
    memory: Literal["off", "peak", "tensors"] = Field(
        "peak",
        description="Peak memory metrics of every step, the largest over the ranks (reelrl.monitor.memory): peak = "
        "CUDA allocator peak (memory/cuda_peak_gb) and process RSS (memory/rss_gb), free; tensors = peak live "
        "bytes of the tensors created in the step (memory/tensors_peak_mb), any device, slow (for benchmarks).",
    )


class CheckpointConfig(_Strict):
    every: int = Field(0, ge=0, description="Save a resumable checkpoint every N optimizer steps (0: only at the end).")
    keep: int = Field(2, ge=1, description="How many step checkpoints to keep.")
    checksums: bool = Field(True, description="SHA-256 of every checkpoint file in its manifest, verified at "
                            "--resume; false: sizes only (faster for multi-GB optimizer states).")
