"""Named registries of pure functions (rewards, advantage estimators, losses, transforms).

A registry refuses duplicate names and, when asked for an unknown name, lists
the valid ones. The trainer looks functions up by name and never branches on it.
"""

from __future__ import annotations

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
