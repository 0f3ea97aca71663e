"""A whole recipe (:class:`RecipeConfig`): its sections and the checks across them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from reelrl.config.base import ConfigError, _Strict
from reelrl.config.parts import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    PromptConfig,
    RolloutConfig,
)
from reelrl.config.stages import DPOConfig, RLConfig, SFTConfig
from reelrl.dist.parallel import ParallelConfig
from reelrl.video.sample import VideoSampling

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
