"""Add and remove one element of a libcst list, tuple, set or import-alias sequence, keeping its style.

``append`` copies the sequence's own comma and spacing pattern, so ``drop_at`` of the appended element
gives back the original text byte for byte.
"""

from __future__ import annotations

from typing import List, TypeVar

import libcst as cst

Item = TypeVar("Item", bound=cst.CSTNode)


def drop_at(items: List[Item], index: int) -> List[Item]:
    """Remove ``items[index]``; when it is the last, the one before inherits its comma (and spacing)."""
    if index == len(items) - 1 and index > 0:
        items = [*items[:index - 1], items[index - 1].with_changes(comma=items[index].comma),  # type: ignore
                 items[index]]
    return items[:index] + items[index + 1:]


def append(items: List[Item], new_item: Item) -> List[Item]:
    """Append ``new_item`` copying the sequence's comma/spacing pattern, so ``drop_at`` undoes it."""
    if not items:
        return [new_item]
    last = items[-1]
    previous_comma = items[-2].comma if len(items) > 1 else cst.Comma(  # type: ignore[attr-defined]
        whitespace_after=cst.SimpleWhitespace(" "))
    return items[:-1] + [last.with_changes(comma=previous_comma),  # type: ignore[list-item]
                         new_item.with_changes(comma=last.comma)]  # type: ignore[attr-defined]
