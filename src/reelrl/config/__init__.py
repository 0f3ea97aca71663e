"""Typed recipe configuration: one YAML per recipe, dotted ``key=value`` overrides.

A recipe is a YAML file whose keys mirror :class:`RecipeConfig`. Every field is
documented in its section's class; unknown keys are errors, and an error names the field path
and, for choices, the allowed values. The fully resolved config is written to
``<output_dir>/config.yaml`` by every run.

This package knows names only: it imports no trainer, loss or reward code.
Fields that name a registered component (``rl.loss``, ``rl.rewards``, ...)
and their kwargs are checked against the registries by
:func:`reelrl.train.catalog.check_recipe`, which ``reelrl.pipeline.load_recipe``
runs right after :func:`read_recipe`, before any model is built.

Modules: ``base`` (strict models, :class:`ConfigError`, components, the
optimiser, rewards), ``parts`` (model, data, prompt, rollout, eval, logging,
checkpoint sections), ``stages`` (``sft``, ``rl``, ``dpo``), ``recipe``
(:class:`RecipeConfig` and its cross-checks), ``load`` (reading YAML recipes
with ``base:`` inheritance and overrides). Everything is importable from
``reelrl.config``.
"""

from __future__ import annotations

from reelrl.config.base import (
    ComponentSpec,
    ConfigError,
    OptimConfig,
    RewardItem,
)
from reelrl.config.parts import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    GymConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    PromptConfig,
    RolloutConfig,
)
from reelrl.config.stages import (
    DPOConfig,
    GroupFilterConfig,
    RLConfig,
    RowSourceConfig,
    SFTConfig,
    TemporalConfig,
    TokenWeightsConfig,
    VerifierConfig,
)
from reelrl.config.recipe import (
    RecipeConfig,
    STAGES,
)
from reelrl.config.load import (
    RECIPES_DIR,
    REQUIRED,
    config_from_dict,
    packaged_recipes,
    parse_overrides,
    read_recipe,
    read_recipe_tree,
    resolve_recipe,
    save_config,
)

__all__ = [
    "CheckpointConfig",
    "ComponentSpec",
    "ConfigError",
    "DPOConfig",
    "DataConfig",
    "EvalConfig",
    "GroupFilterConfig",
    "GymConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "PromptConfig",
    "RECIPES_DIR",
    "REQUIRED",
    "RLConfig",
    "RecipeConfig",
    "RewardItem",
    "RolloutConfig",
    "RowSourceConfig",
    "SFTConfig",
    "STAGES",
    "TemporalConfig",
    "TokenWeightsConfig",
    "VerifierConfig",
    "config_from_dict",
    "packaged_recipes",
    "parse_overrides",
    "read_recipe",
    "read_recipe_tree",
    "resolve_recipe",
    "save_config",
]
