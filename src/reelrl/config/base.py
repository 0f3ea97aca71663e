"""The pieces every config section is built of: strict models, the error type, components, optimiser, rewards."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the field."""


class _Strict(BaseModel):
    """Unknown keys are errors; every float field must be finite (``lr=.inf`` or a NaN eps is refused at load)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ComponentSpec(_Strict):
    """A registered component (by name) and its keyword arguments."""

    name: str = Field(description="Registered name.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the component.")


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
