"""The rules every registry of ours follows (metrics, training modes): adding the same entry again is a no-op, a
different entry under a taken name raises naming both (timm's registry only warns; mergekit's overwrites), and an
unknown name is an error listing the choices."""

from __future__ import annotations

from typing import TypeVar

Entry = TypeVar("Entry")


def add_entry(table: dict[str, Entry], name: str, entry: Entry, kind: str) -> Entry:
    """Put ``entry`` into ``table`` under ``name``; ``kind`` names the registry in the error ("metric")."""
    known = table.get(name)
    if known is not None and known != entry:
        raise ValueError(f"{kind} {name!r} is already registered ({known!r}); refusing {entry!r}")
    table[name] = entry
    return entry


def get_entry(table: dict[str, Entry], name: str, kind: str) -> Entry:
    """``table[name]``, or a ValueError naming ``kind``, the unknown name and the registered choices."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; choices: {', '.join(table)}") from None
