"""Typed recipe configuration: one YAML per recipe, dotted ``key=value`` overrides.

A recipe is a YAML file whose keys mirror :class:`RecipeConfig`. Every field is
documented below; unknown keys are errors, and an error names the field path
and, for choices, the allowed values. The fully resolved config is written to
``<output_dir>/config.yaml`` by every run.

This module knows names only: it imports no trainer, loss or reward code.
Fields that name a registered component (``rl.loss``, ``rl.rewards``, ...)
and their kwargs are checked against the registries by
:func:`reelrl.train.catalog.check_recipe`, which ``reelrl.pipeline.load_recipe``
runs right after :func:`read_recipe`, before any model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from reelrl.dist.parallel import ParallelConfig
from reelrl.video.sample import VideoSampling


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the field."""


class _Strict(BaseModel):
    """Unknown keys are errors; every float field must be finite (``lr=.inf`` or a NaN eps is refused at load)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    lora: LoraConfig = Field(default_factory=LoraConfig)
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")


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


class OptimConfig(_Strict):
    """AdamW with linear warmup and cosine / constant / linear decay."""

    lr: float = Field(1e-5, gt=0.0, le=10.0, description="Peak learning rate (at most 10: above, AdamW only diverges, "
                      "and near fp32's range its step overflows).")
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0, description="AdamW's epsilon.")
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Final lr as a fraction of lr (cosine/linear).")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Max global grad norm; null disables clipping.")


class RewardItem(_Strict):
    """One reward function and its weight in the total."""

    name: str = Field(description="Registered reward name, or 'package.module:function'.")
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SFTConfig(_Strict):
    """CoT supervised fine-tuning on the rows' reasoning traces (loss on assistant tokens only)."""

    epochs: float = Field(1.0, gt=0.0, description="Passes over the training rows (fractions allowed).")
    batch_size: int = Field(8, ge=1, description="Rows per optimizer step.")
    micro_batch_size: int = Field(8, ge=1, description="Rows per forward pass (gradient accumulation).")
    max_rows: int | None = Field(
        None,
        ge=1,
        description=(
            "Train on the first N training rows only (after data.max_rows): a small chain-of-thought "
            "cold-start set, while the rl stage uses every row's answer (Video-R1's CoT set is likewise "
            "a subset of its RL set)."
        ),
    )
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=10))
    rows_without_reasoning: Literal["error", "skip", "answer_only"] = Field(
        "error", description="What to do with rows lacking a reasoning trace."
    )
    trace: str = Field(
        "plain",
        description="Which reasoning trace a row is trained on (reelrl.gym.clues.TRACES): 'plain' = the row's own "
        "reasoning; 'clues' = a Video-Thinker clue trace (<time>s-e</time> <caption>...</caption> per event) "
        "written from the row's events (gym meta, or meta.events), as blocks with their own <think> under a "
        "template that does not wrap the trace (video_thinker), inline inside the one <think> otherwise.",
    )

    demonstrations: bool = Field(
        False,
        description="Train on whole gold episodes of the multi-turn environment (rl.env's demonstration(): "
        "every model turn's trace and answer with the observations between them; loss on the model turns "
        "only), e.g. two_stage_grounding's span, frame and box. Needs rl.env.",
    )

    @field_validator("trace")
    @classmethod
    def _known_trace(cls, v: str) -> str:
        from reelrl.gym.clues import TRACES

        if v not in TRACES:
            raise ValueError(f"unknown SFT trace style {v!r}; valid names: {', '.join(TRACES.names())}")
        return v


class ComponentSpec(_Strict):
    """A registered component (by name) and its keyword arguments."""

    name: str = Field(description="Registered name.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the component.")


class RowSourceConfig(ComponentSpec):
    """Which rows each RL step sees: a factory of reelrl.data.curriculum.ROW_SOURCES.

    ``uniform`` (seeded epoch permutations; honours ``data.shuffle``),
    ``difficulty_curriculum`` (VideoTG-R1; needs ``kwargs.total_steps``),
    ``staged`` (VideoHallu; ``kwargs.stages``), ``filter_all_correct`` (VerIPO,
    row level). Its state is saved in every checkpoint.
    """

    name: str = Field("uniform", description="Registered row source (reelrl.data.curriculum.ROW_SOURCES).")


class GroupFilterConfig(ComponentSpec):
    """Drops groups after scoring (reelrl.algos.GROUP_FILTERS): dynamic_sampling (DAPO), drop_all_correct (VerIPO)."""

    max_refills: int = Field(
        0,
        ge=0,
        description="Extra generation batches per step to replace dropped groups (DAPO samples until the batch is "
        "full, at most max_num_gen_batches batches; this is that cap minus 1). 0: train on the kept groups only.",
    )


class TemporalConfig(_Strict):
    """T-GRPO (Video-R1): extra completions on a frame-shuffled copy of each video and a temporal bonus."""

    shuffled: int | None = Field(
        None, ge=1, description="Completions per prompt on the shuffled video; null = group_size // 2 (Video-R1)."
    )
    ratio: float = Field(0.8, ge=0.0, description="mu: bonus only when p_ordered >= ratio * p_shuffled.")
    bonus: float = Field(0.3, description="Reward added to each qualifying ordered completion.")
    threshold: float = Field(0.1, description="An ordered completion qualifies when its accuracy exceeds this.")


class TokenWeightsConfig(_Strict):
    """Per-token loss weights (reelrl.algos.TOKEN_WEIGHTS), computed without gradient from the behaviour logits."""

    name: str = Field("tw_grpo", description="Registered token weighting.")
    alpha: float = Field(1.7, ge=1.0, description="Largest weight (TW-GRPO paper 1.7; its code defaults to 1.4).")
    chunk_size: int = Field(64, ge=1, description="Positions per float32 log-softmax chunk (memory bound).")


class RLConfig(_Strict):
    """GRPO-family training: rollouts, rewards, advantages, loss."""

    steps: int = Field(100, ge=1, description="Optimizer steps (one rollout batch each).")
    prompts_per_step: int = Field(4, ge=1, description="B: prompts per step.")
    group_size: int = Field(8, ge=2, description="G: completions per prompt.")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(
        default_factory=lambda: ["</answer>"],
        description="Extra stop strings besides EOS, matched on the decoded text (any tokenization of the string "
        "stops; the token completing it is kept).",
    )
    rewards: list[RewardItem] = Field(
        default_factory=lambda: [RewardItem(name="accuracy"), RewardItem(name="format")]
    )
    advantage: str = Field("grpo", description="Registered advantage estimator.")
    advantage_kwargs: dict[str, Any] = Field(default_factory=dict)
    loss: str = Field("grpo", description="Registered policy loss.")
    loss_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the loss (clip_low, clip_high, agg...); not beta or kl_estimator.",
    )
    beta: float | None = Field(
        None,
        ge=0.0,
        description="KL coefficient to the reference model (the only way to set it); null = the loss's own "
        "default (grpo 0.04, reg_grpo 0.1, the others 0), resolved when the recipe loads; 0 loads no reference.",
    )
    kl_estimator: str = Field("k3", description="Registered KL estimator (k1, k2, k3, low_var_kl).")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=0))
    mini_batches: int = Field(1, ge=1, description="Optimizer steps per rollout batch (groups split evenly).")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout batch (mu in GRPO).")
    cache_vision: bool = Field(True, description="Encode each video once per step and reuse the embeddings.")
    share_prefix: bool = Field(
        True,
        description="Prefill the shared prompt once and fork its KV cache for the G rollouts and the log-prob passes; "
        "false prefills G copies of the prompt (the naive baseline).",
    )
    decode_batch: int | None = Field(
        None,
        ge=1,
        description=(
            "Most prompts whose completions decode in one batch (their prefilled caches are left-padded and "
            "stacked, G rows each); null = all prompts of the step. Lower it when B*G forked video prefixes "
            "do not fit in memory; the tokens do not change."
        ),
    )
    update_batch: int = Field(
        1,
        ge=1,
        description=(
            "Groups per forward/backward pass of the update and of the old/reference log-prob passes: their "
            "prompts prefill in one left-padded batch and all their completions run together (needs "
            "share_prefix). More is faster on small models; activations grow with it. Gradients do not change "
            "(up to float rounding)."
        ),
    )
    skip_zero_advantage: bool = Field(
        True,
        description=(
            "Leave out of the update's forward/backward passes the groups whose advantages are all zero when "
            "beta = 0 and the loss is advantage-weighted (every GRPO-family surrogate but reg_grpo): their "
            "gradient is exactly zero, so the update is unchanged; only the entropy / clip metrics then cover "
            "the other groups. The normalisers (token and sequence counts) still include them."
        ),
    )
    prefetch: bool = Field(
        True, description="Decode and encode a step's rows in a background thread while earlier rows roll out."
    )
    vision_cache_dir: str | None = Field(
        None,
        description="Directory of the on-disk video-embedding cache shared across epochs, runs and processes "
        "(reelrl.models.embed_cache); null disables it. Needs a frozen vision tower and cache_vision: true.",
    )
    vision_cache_gb: float = Field(
        20.0, gt=0.0, description="Size bound of vision_cache_dir in GiB; least recently used entries are evicted."
    )
    log_samples_every: int = Field(
        10,
        ge=1,
        description="Every N steps, append the step's trained groups to <stage>/samples.jsonl (row id, task, video, "
        "question, answer, completions, token hashes, rewards, advantages, reward columns; rank 0 writes), "
        "the training groups of reelrl report's rollout browser.",
    )
    row_source: RowSourceConfig = Field(
        default_factory=RowSourceConfig, description="Which rows each step sees (uniform, curricula, filters)."
    )
    augment: list[ComponentSpec] = Field(
        default_factory=list,
        description="Row / frame / prompt augmentations, applied in order (reelrl.train.augments.AUGMENTS): "
        "qa_inversion (TW-GRPO), difficulty_aware (DeepVideo-R1), curriculum_mask (VideoTG-R1).",
    )
    reward_shaping: list[ComponentSpec] = Field(
        default_factory=list,
        description="Terms added to the rewards before advantages (reelrl.algos.REWARD_SHAPING): overlong_penalty "
        "(DAPO), length_bonus (Video-R1).",
    )
    group_filter: GroupFilterConfig | None = Field(None, description="Group filter after scoring; null keeps all.")
    temporal: TemporalConfig | None = Field(None, description="T-GRPO temporal contrast; null disables it.")
    token_weights: TokenWeightsConfig | None = Field(
        None, description="Token weights set on PolicyBatch.token_weights (needed by loss tw_grpo); null: none."
    )
    overlong_filter: bool = Field(False, description="DAPO overlong filtering: truncated completions get no loss.")
    env: ComponentSpec | None = Field(
        None,
        description="Multi-turn rollouts: an environment of reelrl.envs.ENVS (two_stage_grounding: Scene-R1) "
        "answers each model turn with the next observation; rl.rewards score every turn with the columns the "
        "environment gives it and a trajectory's reward is their sum. null: single-turn groups.",
    )


class VerifierConfig(_Strict):
    """Rollout-aware rule verifier of the DPO stage (VerIPO); see reelrl.train.verifier."""

    accuracy_reward: str = Field("accuracy", description="Reward giving each rollout's accuracy (name or module:fn).")
    correct_threshold: float = Field(1.0, description="A rollout is correct when its accuracy >= this.")
    require_format: bool = Field(True, description="A chosen rollout must match the <think>/<answer> format.")
    repetition_ngram: int = Field(3, ge=1, description="n of the word n-grams counted for repetition.")
    max_repetition: float = Field(
        0.3, ge=0.0, le=1.0, description="A rollout is repetitive when this fraction of its n-grams are repeats."
    )
    min_tokens: int = Field(1, ge=0, description="Shorter rollouts fail the length check.")
    max_tokens: int | None = Field(None, ge=1, description="Longer rollouts fail the length check.")
    allow_truncated: bool = Field(False, description="Rollouts cut by the token budget may pass the length check.")
    judge_path: str | None = Field(
        None, description="Optional local judge checkpoint: consistency also needs P(yes) >= judge_threshold."
    )
    judge_threshold: float = Field(0.5, ge=0.0, le=1.0)


class DPOConfig(_Strict):
    """VerIPO's DPO stage: rollouts -> verifier -> preference pairs -> DPO against a frozen reference."""

    prompts: int = Field(64, ge=1, description="Training rows rolled out (a seeded sample of the train split).")
    rollouts_per_prompt: int = Field(8, ge=2, description="Completions per prompt.")
    max_new_tokens: int | None = Field(None, ge=1, description="Rollout budget; null = rl.max_new_tokens.")
    temperature: float = Field(1.0, gt=0.0, description="Rollout temperature (log-probs use temperature 1).")
    max_pairs_per_prompt: int = Field(2, ge=1, description="Most preference pairs built from one prompt.")
    self_correction_pairs: bool = Field(
        True, description="Also pair a self-corrected rollout (chosen) with its cut-off first wrong attempt."
    )
    loss: str = Field("dpo", description="Registered pair loss (reelrl.algos.PAIR_LOSSES: dpo, ipo).")
    beta: float = Field(0.1, gt=0.0, description="DPO beta (VerIPO 0.1).")
    loss_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra pair-loss arguments.")
    epochs: float = Field(1.0, gt=0.0, description="Passes over the pairs.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step (one forward pass per pair).")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-7, warmup_steps=0))
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)


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


STAGES = ("sft", "eval", "rl", "dpo")


class RecipeConfig(_Strict):
    """A whole recipe: model, data, stages and their settings."""

    name: str = Field("run", description="Recipe name, used in the run directory.")
    description: str = Field("", description="What the recipe reproduces.")
    seed: int = 0
    output_dir: str = Field("runs/{name}-seed{seed}", description="Run directory; {name} and {seed} are filled in.")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1'.")
    threads: int | None = Field(
        None,
        ge=1,
        description=(
            "CPU threads of torch's intra-op pool (torch.set_num_threads); null = torch's default. The tiny "
            "model's matrices are too small to split: 1 thread ran its GRPO steps faster than 2 on 2 cores. "
            "Results at one seed still depend on the thread setup (float summation order)."
        ),
    )
    stages: list[str] = Field(default_factory=lambda: ["rl"], description=f"Stages run by `train`, from {STAGES}.")
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    video: VideoSampling = Field(default_factory=VideoSampling)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = Field(
        default_factory=ParallelConfig,
        description="Processes and sharding (reelrl.dist.parallel): data-parallel / sequence-parallel degrees, "
        "FSDP2; launch with `reelrl train RECIPE --nproc N` or torchrun.",
    )

    @field_validator("stages")
    @classmethod
    def _stages_known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; allowed: {list(STAGES)}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "RecipeConfig":
        if self.sft.batch_size % self.sft.micro_batch_size:
            raise ValueError("sft.batch_size must be a multiple of sft.micro_batch_size")
        if self.rl.prompts_per_step % self.rl.mini_batches:
            raise ValueError("rl.prompts_per_step must be a multiple of rl.mini_batches")
        if self.eval.video:
            try:
                self.eval_video()
            except ValidationError as e:
                raise ValueError(f"eval.video: {e}") from None
        if self.eval.levels:
            self._check_levels()
        if self.rl.vision_cache_dir is not None and not self.rl.cache_vision:
            raise ValueError("rl.vision_cache_dir needs rl.cache_vision: true (the cache stores those embeddings)")
        if not self.data.gym.enabled:
            needed = {"train": {"sft", "rl"}, self.eval.split: {"eval"}}
            for split, stages in needed.items():
                if set(self.stages) & stages and getattr(self.data, split, None) is None:
                    raise ValueError(f"data.{split} is required by stage(s) {sorted(set(self.stages) & stages)} "
                                     "unless data.gym.enabled is true")
        return self

    def _check_levels(self) -> None:
        """Every ``eval.levels`` entry over ``data.gym.spec`` is a valid gym spec (errors name the level's field)."""
        from reelrl.gym.tasks import GymSpec

        if not self.data.gym.enabled:
            raise ValueError("eval.levels needs data.gym.enabled: true (each level is a generated test gym)")
        for name, over in self.eval.levels.items():
            try:
                GymSpec(**{**self.data.gym.spec, **over})
            except ValidationError as e:
                raise ValueError("; ".join(f"eval.levels.{name}.{'.'.join(map(str, x['loc'])) or 'spec'}: "
                                           f"{x['msg'].removeprefix('Value error, ')}"
                                           for x in e.errors())) from None

    # ------------------------------------------------------------------ paths
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name, seed=self.seed))

    def eval_video(self) -> VideoSampling:
        """The frame sampling of evaluation: ``video`` with ``eval.video`` over it."""
        return VideoSampling.model_validate({**self.video.model_dump(exclude_unset=True), **self.eval.video})

    def split_path(self, split: str) -> Path:
        if split == "sft_train" and self.data.sft_train is None:
            split = "train"
        explicit = getattr(self.data, split)
        if explicit is not None:
            return Path(explicit)
        if self.data.gym.enabled:
            return Path(self.data.gym.dir) / f"{split}.jsonl"
        raise ConfigError(f"data.{split} is not set and the gym is disabled")


# ---------------------------------------------------------------------- loading


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if k not in node or node[k] is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        node = node[k]
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``a.b=value`` strings; values are read as YAML (numbers, lists, null...)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else "")) 
    return out


def _format_validation(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"  {loc}: {msg}")
    return f"invalid config {source}:\n" + "\n".join(lines)


RECIPES_DIR = Path(__file__).parent / "recipes"


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with reelrl (``reelrl train NAME``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a packaged recipe (``quickstart``, ``video_r1`` ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = RECIPES_DIR / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and packaged.is_file() and len(path.parts) <= 2:
        return packaged
    raise ConfigError(f"recipe not found: {name_or_path} (packaged recipes: {', '.join(packaged_recipes())})")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a recipe file, with its ``base:`` recipe (if any) merged underneath.

    ``base`` names a packaged recipe or a path relative to the recipe file; a
    recipe then lists only what differs from its base (``base: grpo`` plus the
    method's ``rl`` fields).
    """
    path = resolve_recipe(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: recipe bases form a cycle: {chain}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a recipe name or path, got {base!r}")
    rel = path.parent / base
    try:
        base_tree = read_recipe_tree(rel if rel.is_file() else base, (*_seen, path.resolve()))
    except ConfigError as e:
        raise ConfigError(f"{path}: base {base!r}: {e}") from None
    return _deep_merge(base_tree, tree)


def read_recipe(path: str | Path, overrides: list[str] | None = None,
                fill: dict[str, Any] | None = None) -> RecipeConfig:
    """Read a recipe YAML (or packaged recipe name) and its bases, apply dotted overrides, validate the fields.

    Values the recipe leaves :data:`REQUIRED` are needed only by the stages
    that read them (:data:`USED_BY`): ``stages=[eval]`` needs no training
    data. ``fill`` gives values for keys still REQUIRED after the overrides
    (``reelrl eval --model DIR`` fills ``model.path``). Component names and
    their kwargs are checked by ``reelrl.pipeline.load_recipe``.
    """
    path = resolve_recipe(path)
    tree = read_recipe_tree(path)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    stages = set(tree.get("stages") or [])
    for key in _required(tree):
        if key in (fill or {}):
            _set_dotted(tree, key, fill[key])  # type: ignore[index]
        elif key in USED_BY and stages and not stages & USED_BY[key]:
            _set_dotted(tree, key, None)
    missing = _required(tree)
    if missing:
        raise ConfigError(f"{path}: the recipe needs {', '.join(missing)} on the command line, e.g. "
                          + " ".join(f"{k}=..." for k in missing))
    return config_from_dict(tree, source=str(path))


#: a recipe value that the user must give (``model.path: ???``): local paths a packaged recipe cannot know
REQUIRED = "???"

#: the stages that read each data path a recipe may leave REQUIRED (``data.train`` is SFT's rows when
#: ``data.sft_train`` is unset); a REQUIRED path no stage of the run reads is left unset
USED_BY: dict[str, set[str]] = {"data.train": {"sft", "rl"}, "data.sft_train": {"sft"},
                                "data.val": {"eval"}, "data.test": {"eval"}}


def _required(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of ``tree`` still set to :data:`REQUIRED`."""
    out = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out += _required(v, f"{prefix}{k}.")
        elif v == REQUIRED:
            out.append(prefix + k)
    return out


def config_from_dict(tree: dict[str, Any], source: str = "<dict>") -> RecipeConfig:
    try:
        return RecipeConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None


def save_config(cfg: RecipeConfig, path: str | Path) -> None:
    """Write the fully resolved config (every default filled in) as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
