"""A small name -> factory registry, in the timm manner (register, list, create)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from skyfuse.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names fail with the list of known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        key = name.lower()
        if key in self._items:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._items[key] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self, pattern: str = "*") -> list[str]:
        return [n for n in sorted(self._items) if fnmatch.fnmatch(n, pattern.lower())]
