"""``Headers``: a response's headers as a read-only, case-insensitive mapping, as httpx has it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

__all__ = ["Headers"]


class Headers(Mapping[str, str]):
    """A response's headers, in the order the server sent them.

    A read-only mapping whose keys are lowercase and looked up in any case:
    ``r.headers["Content-Type"]`` and ``r.headers["content-type"]`` are the same. A header
    the server sent more than once is one key whose value joins them with ``", "`` (as
    httpx does, and as HTTP defines for list-valued headers); ``get_list(name)`` gives them
    one by one (what ``Set-Cookie`` needs), and ``multi_items()`` every ``(name, value)``
    pair. Equal to any mapping with the same names (in any case) and values.
    """

    __slots__ = ("_items", "_joined")

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        self._items: list[tuple[str, str]] = [(k.lower(), v) for k, v in pairs]
        joined: dict[str, str] = {}
        for k, v in self._items:
            joined[k] = f"{joined[k]}, {v}" if k in joined else v
        self._joined = joined

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._joined[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._joined

    def __iter__(self) -> Iterator[str]:
        return iter(self._joined)

    def __len__(self) -> int:
        return len(self._joined)

    def get_list(self, name: str) -> list[str]:
        """Every value of the header ``name`` (any case), in order; ``[]`` if absent."""
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair as received (names lowercase), repeats included."""
        return list(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {str(k).lower(): v for k, v in other.items()} == self._joined

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping: unhashable, as dict

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
