"""Keyword tables: the first entry whose words occur in a text."""
from __future__ import annotations

from collections.abc import Iterable


def first_match(text: str, table: Iterable[tuple[str, Iterable[str]]]) -> str | None:
    """The key of the first ``(key, words)`` entry with a word occurring in ``text``."""
    for key, words in table:
        if any(w in text for w in words):
            return key
    return None
