"""Code that hides a class yolopatch inserted: found statically with ``ast`` (pure, no I/O).

A module can be present and registered and still not be what YOLOv5 builds:
- common.py binds the name again after the inserted class (``SOCA = nn.Identity``, a second class);
- yolo.py binds the name after its import of models.common (``from mylib import SOCA``);
- parse_model tests the name in a branch ahead of yolopatch's (``elif m == SOCA:``), so yolopatch's
  branch never runs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, List, Optional


@dataclass(frozen=True)
class Shadow:
    """Where and how ``name`` is shadowed; ``file`` is "common" or "yolo"."""

    file: str
    line: int
    what: str


def _bound_names(node: ast.stmt) -> Iterator[str]:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        yield node.name
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            yield alias.asname or alias.name.split(".")[0]
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            yield from _target_names(target)


def _target_names(target: ast.expr) -> Iterator[str]:
    """Names an assignment target binds (``x``, ``a, *b``); not ``obj.attr`` or ``obj[i]``."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _target_names(element)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def in_common(source: str, name: str, class_line: int) -> List[Shadow]:
    """Top-level rebindings of ``name`` after the inserted class (at ``class_line``) in common.py."""
    return [Shadow("common", node.lineno, f"`{name}` is bound again here, after yolopatch's class")
            for node in ast.parse(source).body
            if node.lineno > class_line and name in set(_bound_names(node))]


def in_yolo(source: str, name: str, branch_line: Optional[int]) -> List[Shadow]:
    """Rebindings of ``name`` after yolo.py's import of models.common, and parse_model branches ahead of
    yolopatch's (at ``branch_line``) that test ``name`` other than by identity or membership."""
    tree = ast.parse(source)
    found: List[Shadow] = []
    common_line = next((node.lineno for node in tree.body if isinstance(node, ast.ImportFrom)
                        and (node.module or "").endswith("models.common")), None)
    if common_line is not None:
        found += [Shadow("yolo", node.lineno, f"`{name}` is bound here, after the import from models.common")
                  for node in tree.body
                  if node.lineno > common_line and not _is_common_import(node) and name in set(_bound_names(node))]
    if branch_line is not None:
        found += [Shadow("yolo", test_line, f"parse_model tests `{name}` here, ahead of yolopatch's branch")
                  for test_line in _shadowing_tests(tree, name) if test_line < branch_line]
    return found


def _is_common_import(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models.common")


def _shadowing_tests(tree: ast.Module, name: str) -> Iterator[int]:
    """Lines of ``if``/``elif`` tests in parse_model that compare ``m`` with ``name`` by ``==``."""
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "parse_model"),
                    None)
    if function is None:
        return
    for node in ast.walk(function):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and any(
                isinstance(op, ast.Eq) for op in node.test.ops) and any(
                isinstance(part, ast.Name) and part.id == name
                for part in [node.test.left, *node.test.comparators]):
            yield node.lineno
