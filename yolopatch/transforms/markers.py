"""The comment markers yolopatch leaves on the lines it inserts.

A marker is a trailing comment on the header line of an inserted statement:

    class SOCA(nn.Module):  # yolopatch: soca v1 sha256:0123456789ab
    def _SOCAHelper(x):  # yolopatch: soca
    import torch.nn.functional as F  # yolopatch: added import
    elif m is SOCA:  # yolopatch: soca

Markers travel with the file (copying the tree elsewhere keeps them), survive libcst round trips,
and say which module a statement belongs to, which template version was inserted, and the digest
of the inserted code (to tell a hand edit from an older yolopatch's insertion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import libcst as cst

PREFIX = "# yolopatch:"
ADDED_IMPORT = "added import"


@dataclass(frozen=True)
class Marker:
    """A parsed marker: the module key, and for a module's main class its version and digest."""

    key: str
    version: Optional[int] = None
    digest: Optional[str] = None

    def render(self) -> str:
        if self.version is None:
            return f"{PREFIX} {self.key}"
        return f"{PREFIX} {self.key} v{self.version} sha256:{self.digest}"


def parse(comment: Optional[cst.Comment]) -> Optional[Marker]:
    """The marker in ``comment``, or None when it is not a yolopatch marker."""
    if comment is None or not comment.value.startswith(PREFIX):
        return None
    words = comment.value[len(PREFIX):].split()
    if not words:
        return None
    if words[:2] == ADDED_IMPORT.split():
        return Marker(key=ADDED_IMPORT)
    version = digest = None
    for word in words[1:]:
        if word.startswith("v") and word[1:].isdigit():
            version = int(word[1:])
        elif word.startswith("sha256:"):
            digest = word[len("sha256:"):]
    return Marker(key=words[0], version=version, digest=digest)


def header_of(statement: cst.CSTNode) -> Optional[cst.TrailingWhitespace]:
    """The trailing whitespace of a statement's first line (where its marker lives)."""
    if isinstance(statement, (cst.ClassDef, cst.FunctionDef, cst.If, cst.Else)):
        body = statement.body
        return body.header if isinstance(body, cst.IndentedBlock) else None
    if isinstance(statement, cst.SimpleStatementLine):
        return statement.trailing_whitespace
    return None


def marker_of(statement: cst.CSTNode) -> Optional[Marker]:
    header = header_of(statement)
    return parse(header.comment) if header is not None else None


def _with_header(statement: cst.CSTNode, header: cst.TrailingWhitespace) -> cst.CSTNode:
    if isinstance(statement, cst.SimpleStatementLine):
        return statement.with_changes(trailing_whitespace=header)
    body = statement.body  # type: ignore[attr-defined]
    return statement.with_changes(body=body.with_changes(header=header))


def with_marker(statement: cst.CSTNode, marker: Marker) -> cst.CSTNode:
    """``statement`` with ``marker`` as the trailing comment of its first line."""
    header = header_of(statement)
    if header is None:
        raise ValueError(f"cannot mark a {type(statement).__name__}")
    if header.comment is not None:
        raise ValueError("template statements must not carry their own comment on the header line")
    marked = header.with_changes(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(marker.render()))
    return _with_header(statement, marked)


def without_marker(statement: cst.CSTNode) -> cst.CSTNode:
    """``statement`` with its yolopatch marker (and the spaces before it) taken off."""
    header = header_of(statement)
    if header is None or parse(header.comment) is None:
        return statement
    plain = header.with_changes(whitespace=cst.SimpleWhitespace(""), comment=None)
    return _with_header(statement, plain)


def parse_text(comment: str) -> Optional[Marker]:
    """The marker in a comment's text (``# yolopatch: soca``), or None."""
    return parse(cst.Comment(comment)) if comment.startswith(PREFIX) else None
