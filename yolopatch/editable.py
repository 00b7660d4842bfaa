"""Refuse a Python file yolopatch cannot edit safely, before anything is planned."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable

import libcst as cst

from yolopatch.errors import YolopatchError
from yolopatch.transforms import lossless


def check_parseable(path: Path, text: str, parse: Callable[[str], cst.Module]) -> None:
    """Refuse a file Python cannot compile (at Python's own line) or libcst cannot give back exactly."""
    try:
        ast.parse(text, filename=str(path))
    except SyntaxError as error:
        raise YolopatchError(f"cannot parse: {error.msg}", path=path, line=error.lineno,
                             hint="fix the syntax error (python -m py_compile shows it), then run again") from error
    try:
        parse(text)
    except cst.ParserSyntaxError as error:
        raise YolopatchError(f"cannot parse: {error.message}", path=path, line=error.raw_line,
                             hint="fix the syntax error, then run again") from error
    except lossless.NotLossless as error:
        raise YolopatchError("libcst cannot reproduce this file byte for byte, so yolopatch will not edit it",
                             path=path, line=error.line,
                             hint="please report the file to the yolopatch authors; nothing was changed") from error
