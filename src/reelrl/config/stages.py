"""The training stages' settings: CoT-SFT (``sft``), GRPO-family RL (``rl``), VerIPO's DPO (``dpo``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from reelrl.config.base import ComponentSpec, OptimConfig, RewardItem, _Strict


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
