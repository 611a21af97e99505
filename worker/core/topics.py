"""Categories and topics of an item (SPEC §4)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from worker.core.text import fold

# Eulerpool writes "Finanzen / KI / DeepSeek / Huawei / Nvidia" as one category string.
_CATEGORY_SEPARATORS = re.compile(r"\s*[/,;|]\s*")


def split_categories(raw: Iterable[str]) -> tuple[str, ...]:
    """Split combined category strings and drop empties and case-insensitive repeats, keeping order."""
    result: dict[str, str] = {}
    for entry in raw:
        for part in _CATEGORY_SEPARATORS.split(entry or ""):
            part = " ".join(part.split())
            if part:
                result.setdefault(fold(part), part)
    return tuple(result.values())


@lru_cache(maxsize=16_384)
def fold_name(name: str) -> str:
    """fold() for the few thousand topic, tag and category names that recur on every item."""
    return fold(name)


def merge_topics(*sources: Iterable[str]) -> tuple[str, ...]:
    """Union of topic names, compared folded; the first spelling given wins. Sorted for stable output."""
    chosen: dict[str, str] = {}
    for source in sources:
        for name in source:
            chosen.setdefault(fold_name(name), name)
    return tuple([chosen[folded] for folded in sorted(chosen)])
