"""Reading recipes: YAML files with ``base:`` inheritance, dotted ``key=value`` overrides, required fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reelrl.config.base import ConfigError
from reelrl.config.recipe import RecipeConfig


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


RECIPES_DIR = Path(__file__).parents[1] / "recipes"


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
