"""Every component a recipe names, checked against its registry when the recipe loads.

:func:`check_recipe` runs before any model, processor or data file is
touched (``reelrl.pipeline.load_recipe`` and ``Pipeline`` call it). For each
field that names a registered component it checks the name, binds the
keyword arguments to the component's signature, and, for the pure tensor
functions (advantages, policy and pair losses, reward shaping, group
filters), calls the component once on a tiny made-up batch with the recipe's
arguments, so a bad value (an unknown aggregation, a clip range out of
bounds, a filter signal typo) fails here too. Every error names the recipe
field, and all of them are reported together as one :class:`ConfigError`.

The KL coefficient reaches a policy loss through one path: ``rl.beta``
(``null`` means the loss's own default, e.g. 0.04 for ``grpo``; the resolved
value is written back into the config). ``rl.loss_kwargs`` may not carry
``beta`` or ``kl_estimator`` (``rl.kl_estimator``) or the normalisers the
trainer passes (``num_tokens``, ``num_seqs``, ``max_len``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from reelrl.algos import (
    ADVANTAGES,
    GROUP_FILTERS,
    KL_ESTIMATORS,
    LOSSES,
    PAIR_LOSSES,
    REWARD_SHAPING,
    TOKEN_WEIGHTS,
    PolicyBatch,
)
from reelrl.config import ConfigError, RecipeConfig, RLConfig
from reelrl.data.curriculum import ROW_SOURCES
from reelrl.envs import ENVS
from reelrl.registry import Registry
from reelrl.rewards import REWARDS, resolve_reward
from reelrl.rollout.engine import ROLLOUT_ENGINES
from reelrl.train.augments import AUGMENTS

__all__ = ["check_recipe", "resolved_beta"]

LOSS_ARGS_FROM_TRAINER = {
    "beta": "give the KL coefficient as rl.beta",
    "kl_estimator": "give the KL estimator as rl.kl_estimator",
    "num_tokens": "the trainer passes the step's token count",
    "num_seqs": "the trainer passes the step's sequence count",
    "max_len": "the trainer passes rl.max_new_tokens",
}
PAIR_ARGS_FROM_TRAINER = {
    "beta": "give the DPO beta as dpo.beta",
    "num_pairs": "the trainer passes the step's pair count",
}


def resolved_beta(rl: RLConfig) -> float:
    """``rl.beta``, or the default ``beta`` of ``rl.loss`` when it is null."""
    if rl.beta is not None:
        return float(rl.beta)
    param = inspect.signature(LOSSES.get(rl.loss)).parameters.get("beta")
    return 0.0 if param is None or param.default is inspect.Parameter.empty else float(param.default)


def _message(e: BaseException) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


class _Checks:
    """Collects ``field: problem`` lines."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def name(self, field: str, registry: Registry, name: str) -> bool:
        if name in registry:
            return True
        self.errors.append(f"{field}: unknown {registry.kind} {name!r}; allowed: {registry.names()}")
        return False

    def call(self, field: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Bind, then call ``fn``; any failure becomes an error naming ``field``."""
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            self.errors.append(f"{field}: {e}")
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every failure of a dry run is a config error
            self.errors.append(f"{field}: {_message(e)}")

    def bind(self, field: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            self.errors.append(f"{field}: {e}")

    def reserved(self, field: str, kwargs: dict[str, Any], reserved: dict[str, str]) -> bool:
        bad = [k for k in kwargs if k in reserved]
        for k in bad:
            self.errors.append(f"{field}.{k}: not allowed here ({reserved[k]})")
        return not bad


def _made_up_rewards(b: int, g: int) -> torch.Tensor:
    return torch.arange(b * g, dtype=torch.float32).view(b, g) % 3  # [B, G] with spread in every group


def _check_rl(c: _Checks, rl: RLConfig) -> None:
    g = rl.group_size
    if c.name("rl.advantage", ADVANTAGES, rl.advantage):
        c.call("rl.advantage_kwargs", ADVANTAGES.get(rl.advantage), _made_up_rewards(2, g), **rl.advantage_kwargs)
    c.name("rl.kl_estimator", KL_ESTIMATORS, rl.kl_estimator)
    if c.name("rl.loss", LOSSES, rl.loss) and c.reserved("rl.loss_kwargs", rl.loss_kwargs, LOSS_ARGS_FROM_TRAINER):
        beta = resolved_beta(rl)
        t = min(3, rl.max_new_tokens)
        batch = PolicyBatch(
            logp=torch.zeros(2 * g, t),  # [N, T]
            mask=torch.ones(2 * g, t),  # [N, T]
            ref_logp=torch.zeros(2 * g, t) if beta > 0 else None,  # [N, T]
            advantages=_made_up_rewards(2, g).flatten(),  # [N]
            token_weights=torch.ones(2 * g, t) if rl.token_weights is not None else None,  # [N, T]
            group_size=g,
        )
        c.call("rl.loss_kwargs", LOSSES.get(rl.loss), batch, num_tokens=float(2 * g * t), num_seqs=float(2 * g),
               max_len=rl.max_new_tokens, beta=beta, kl_estimator=rl.kl_estimator if rl.kl_estimator in KL_ESTIMATORS
               else "k3", **rl.loss_kwargs)
        if rl.beta is None and not c.errors:
            rl.beta = beta
    if rl.token_weights is not None:
        c.name("rl.token_weights.name", TOKEN_WEIGHTS, rl.token_weights.name)
    elif rl.loss == "tw_grpo":
        c.errors.append("rl.loss: 'tw_grpo' needs rl.token_weights (e.g. {name: tw_grpo, alpha: 1.7})")
    src = rl.row_source
    if c.name("rl.row_source.name", ROW_SOURCES, src.name):
        c.bind("rl.row_source.kwargs", ROW_SOURCES.get(src.name), [], rl.prompts_per_step, 0, **src.kwargs)
    for i, a in enumerate(rl.augment):
        if c.name(f"rl.augment[{i}].name", AUGMENTS, a.name):
            c.bind(f"rl.augment[{i}].kwargs", AUGMENTS.get(a.name), None, **a.kwargs)
            check = AUGMENTS.trait(a.name, "check")
            if callable(check):
                c.call(f"rl.augment[{i}].kwargs", check, rl, **a.kwargs)
    shape_inputs = dict(lengths=torch.ones(1, g, dtype=torch.long), truncated=torch.zeros(1, g, dtype=torch.bool),
                        accuracy=torch.ones(1, g), max_len=rl.max_new_tokens)
    for i, s in enumerate(rl.reward_shaping):
        if c.name(f"rl.reward_shaping[{i}].name", REWARD_SHAPING, s.name):
            c.call(f"rl.reward_shaping[{i}].kwargs", REWARD_SHAPING.get(s.name), torch.ones(1, g), **shape_inputs,
                   **s.kwargs)
    if rl.env is not None:
        _check_env(c, rl)
    f = rl.group_filter
    if f is not None and c.name("rl.group_filter.name", GROUP_FILTERS, f.name):
        c.call("rl.group_filter.kwargs", GROUP_FILTERS.get(f.name), _made_up_rewards(2, g), torch.ones(2, g),
               generator=torch.Generator().manual_seed(0), **f.kwargs)


def _check_env(c: _Checks, rl: RLConfig) -> None:
    """``rl.env`` resolves (a registered name or module:factory), its kwargs bind and pass its check."""
    try:
        factory = ENVS.resolve(rl.env.name)
    except Exception as e:  # noqa: BLE001 - unknown name, import error, not callable
        c.errors.append(f"rl.env.name: {_message(e)}")
        return
    c.bind("rl.env.kwargs", factory, None, None, **rl.env.kwargs)
    check = ENVS.trait(rl.env.name, "check") if rl.env.name in ENVS else None
    if callable(check):
        c.call("rl.env.kwargs", check, **rl.env.kwargs)
    if rl.temporal is not None:
        c.errors.append("rl.env: multi-turn rollouts do not combine with rl.temporal (T-GRPO re-rolls single turns)")


def _check_reward(c: _Checks, field: str, name: str, kwargs: dict[str, Any]) -> None:
    """The reward resolves, each of its kwargs is a named parameter of the function (not swallowed by **), and a
    reward registered with a ``check`` trait accepts their values (``check(**kwargs)`` raises otherwise)."""
    try:
        fn = resolve_reward(name)
    except Exception as e:  # noqa: BLE001 - unknown name, import error, not callable
        c.errors.append(f"{field}.name: {_message(e)}")
        return
    params = inspect.signature(fn).parameters
    named = [p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    for k in kwargs:
        if k not in named[1:]:  # the first parameter is the completions
            c.errors.append(f"{field}.kwargs.{k}: reward {name!r} takes no argument {k!r} (it takes {named[1:]})")
    check = REWARDS.trait(name, "check") if name in REWARDS else None  # a reward's own check of its kwargs' values
    if callable(check) and not any(e.startswith(f"{field}.kwargs") for e in c.errors):
        c.call(f"{field}.kwargs", check, **kwargs)


def _check_dpo(c: _Checks, cfg: RecipeConfig) -> None:
    d = cfg.dpo
    if c.name("dpo.loss", PAIR_LOSSES, d.loss) and c.reserved("dpo.loss_kwargs", d.loss_kwargs, PAIR_ARGS_FROM_TRAINER):
        logp = torch.tensor([-1.0, -2.0])  # [P]
        c.call("dpo.loss_kwargs", PAIR_LOSSES.get(d.loss), logp, logp - 1, logp, logp, beta=d.beta, num_pairs=2.0,
               **d.loss_kwargs)
    _check_reward(c, "dpo.verifier.accuracy_reward", d.verifier.accuracy_reward, {})


def check_recipe(cfg: RecipeConfig) -> RecipeConfig:
    """Check every named component and its kwargs (module docstring); resolves ``rl.beta``. Raises ConfigError."""
    c = _Checks()
    _check_rl(c, cfg.rl)
    if cfg.sft.demonstrations and cfg.rl.env is None:
        c.errors.append("sft.demonstrations: needs rl.env (the environment whose gold episodes SFT trains on)")
    for i, r in enumerate(cfg.rl.rewards):
        _check_reward(c, f"rl.rewards[{i}]", r.name, r.kwargs)
    _check_dpo(c, cfg)
    r = cfg.rollout
    try:
        engine = ROLLOUT_ENGINES.resolve(r.engine)
    except Exception as e:  # noqa: BLE001 - unknown name, import error, not callable
        c.errors.append(f"rollout.engine: {_message(e)}")
    else:
        if c.reserved("rollout.engine_kwargs", r.engine_kwargs, {"share_prefix": "set rl.share_prefix"}):
            c.bind("rollout.engine_kwargs", engine, None, share_prefix=True, **r.engine_kwargs)
    if c.errors:
        raise ConfigError(f"invalid recipe {cfg.name!r}:\n" + "\n".join(f"  {e}" for e in c.errors))
    return cfg
