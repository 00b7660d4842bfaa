"""Parse Python source with libcst only when the parse gives back every byte.

libcst 1.x does not round-trip every file: several indented comment lines (or whitespace-only lines)
after a module's last statement come back as the last one only. yolopatch never edits a tree it cannot
reproduce: ``parse`` checks ``module.code == source``; where libcst loses that trailing trivia, the
comment and blank lines after the last statement are parsed apart and kept verbatim as the module's
footer (so edits still work, and still keep every byte); where the text still does not come back,
``NotLossless`` names the first line that would change.
"""

from __future__ import annotations

import ast
from typing import List, Tuple

import libcst as cst


class NotLossless(ValueError):
    """libcst cannot reproduce this text exactly; ``line`` is the first line it would change."""

    def __init__(self, line: int) -> None:
        super().__init__(f"libcst cannot reproduce this file exactly (line {line} would change)")
        self.line = line


def parse(source: str) -> cst.Module:
    """``cst.parse_module(source)``, guaranteed to print back as ``source``."""
    module = cst.parse_module(source)
    if module.code == source:
        return module
    head, tail = split_trailing_trivia(source)
    if tail:
        module = cst.parse_module(head)
        module = module.with_changes(footer=[*module.footer, *_empty_lines(tail)],
                                     has_trailing_newline=tail.endswith(("\n", "\r")))
        if module.code == source:
            return module
    raise NotLossless(_first_difference(source, module.code))


def split_trailing_trivia(source: str) -> Tuple[str, str]:
    """(``source`` up to the end of its last statement, the comment/blank lines after it)."""
    tree = ast.parse(source)
    if not tree.body:
        return "", source
    last_line = max(getattr(tree.body[-1], "end_lineno", 0) or 0, tree.body[-1].lineno)
    lines = source.splitlines(keepends=True)
    return "".join(lines[:last_line]), "".join(lines[last_line:])


def _empty_lines(tail: str) -> List[cst.EmptyLine]:
    """``tail`` (comment and whitespace-only lines) as libcst footer lines that print it verbatim."""
    result = []
    for line in tail.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        stripped = body.lstrip(" \t\f")
        indent = body[:len(body) - len(stripped)]
        result.append(cst.EmptyLine(
            indent=False, whitespace=cst.SimpleWhitespace(indent),
            comment=cst.Comment(stripped) if stripped else None,
            newline=cst.Newline(value=ending or None)))  # the last line's missing ending: has_trailing_newline
    return result


def _first_difference(expected: str, actual: str) -> int:
    for number, (one, other) in enumerate(zip(expected.splitlines(True), actual.splitlines(True)), start=1):
        if one != other:
            return number
    return min(len(expected.splitlines()), len(actual.splitlines())) + 1
