"""Named registries of pure functions (rewards, advantage estimators, losses, transforms).

A registry refuses duplicate names and, when asked for an unknown name, lists
the valid ones. The trainer looks functions up by name and never branches on it.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """A name -> function map for one kind of component (e.g. "reward")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}
        self._traits: dict[str, dict[str, object]] = {}

    def register(self, name: str, **traits: object) -> Callable[[F], F]:
        """Decorator: ``@REWARDS.register("format")``. Duplicate names raise ``ValueError``.

        ``traits`` are facts about the function that callers may rely on (e.g.
        a loss whose gradient vanishes at zero advantage); read them with :meth:`trait`.
        """

        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            self._traits[name] = dict(traits)
            return fn

        return deco

    def get(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def resolve(self, name: str) -> F:
        """A registered name, or ``"module.path:attribute"``: a component of the user's own, imported.

        Recipes name user components this way (a reward, a rollout engine) without registering them.
        """
        if ":" not in name:
            return self.get(name)
        module_name, _, attr = name.partition(":")
        if not module_name or not attr:
            raise ValueError(f"{self.kind} {name!r}: expected 'module.path:attribute'")
        try:
            obj = importlib.import_module(module_name)
        except ImportError as e:
            raise ImportError(f"{self.kind} {name!r}: cannot import module {module_name!r} ({e})") from e
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise AttributeError(f"{self.kind} {name!r}: module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{self.kind} {name!r}: {attr!r} is not callable")
        return obj  # type: ignore[return-value]

    def trait(self, name: str, key: str, default: object = None) -> object:
        """A trait the function ``name`` was registered with, or ``default``."""
        self.get(name)  # unknown names raise with the valid ones
        return self._traits.get(name, {}).get(key, default)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
