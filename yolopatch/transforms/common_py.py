"""Pure libcst transforms of a YOLOv5 ``models/common.py``: insert and remove template modules.

Every function takes source text and returns source text (or facts about it); nothing here does I/O.
Inserted statements carry markers (see ``markers``); everything else in the file stays byte for byte.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import libcst as cst

from yolopatch.transforms import markers
from yolopatch.transforms.markers import Marker

ImportSpec = Tuple[str, Optional[str]]  # ("torch.nn.functional", "F")

DEFINITIONS = (cst.ClassDef, cst.FunctionDef)


@dataclass(frozen=True)
class Template:
    """What one module inserts: its key, version, main class and source text."""

    key: str
    version: int
    class_name: str
    source: str


@dataclass(frozen=True)
class FoundModule:
    """A yolopatch insertion found in a common.py."""

    key: str
    class_name: str
    version: Optional[int]
    recorded_digest: Optional[str]
    actual_digest: str
    line: int

    @property
    def edited(self) -> bool:
        """True when the inserted code no longer matches what yolopatch inserted."""
        return self.recorded_digest != self.actual_digest


@dataclass(frozen=True)
class ForeignClass:
    """A top-level class that yolopatch did not insert (for example pasted from a blog post)."""

    name: str
    line: int


@lru_cache(maxsize=32)
def parse(source: str) -> cst.Module:
    """Parse once per distinct text: libcst modules are immutable, so sharing them is safe."""
    return cst.parse_module(source)


@lru_cache(maxsize=16)
def statement_lines(source: str) -> Tuple[int, ...]:
    """Line of each top-level statement of ``source`` (its own first line, after leading comments
    and decorators), in ``parse(source).body`` order.

    Read from Python's own ``ast`` of the same text: its top-level nodes are libcst's top-level
    statements in order (a ``a; b`` line is one libcst statement and several ast nodes), and ast
    numbers a decorated definition at its ``def``/``class`` line. Far cheaper than PositionProvider.
    """
    nodes = ast.parse(source).body
    lines = []
    index = 0
    for statement in parse(source).body:
        lines.append(nodes[index].lineno)
        index += len(statement.body) if isinstance(statement, cst.SimpleStatementLine) else 1
    return tuple(lines)


def template_statements(template: Template, newline: str = "\n") -> List[cst.BaseStatement]:
    """The template's top-level class and def statements (what gets inserted), unmarked."""
    module = parse(template.source.replace("\r\n", "\n").replace("\n", newline))
    return [statement for statement in module.body if isinstance(statement, DEFINITIONS)]


def template_imports(template: Template) -> List[ImportSpec]:
    """The imports a template needs, as (module, alias) pairs."""
    needed: List[ImportSpec] = []
    for statement in parse(template.source).body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import):
                for alias in small.names:
                    name = cst.helpers.get_full_name_for_node(alias.name)
                    asname = alias.asname.name.value if alias.asname else None  # type: ignore[union-attr]
                    needed.append((name, asname))
    return needed


def digest(statements: Sequence[cst.BaseStatement]) -> str:
    """A newline-independent hash of inserted code, markers and surrounding blank lines excluded."""
    bare = [markers.without_marker(statement).with_changes(leading_lines=()) for statement in statements]
    code = cst.Module(body=bare).code.replace("\r\n", "\n")
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:12]


@lru_cache(maxsize=64)
def template_digest(template: Template) -> str:
    return digest(template_statements(template))


def _marked(statements: List[cst.BaseStatement], template: Template, newline: str) -> List[cst.BaseStatement]:
    blank = cst.EmptyLine(indent=False, whitespace=cst.SimpleWhitespace(""), comment=None,
                          newline=cst.Newline())
    result = []
    for statement in statements:
        is_main = isinstance(statement, cst.ClassDef) and statement.name.value == template.class_name
        marker = Marker(template.key, template.version, template_digest(template)) if is_main else Marker(template.key)
        comments = [line for line in statement.leading_lines if line.comment is not None]
        marked = markers.with_marker(statement, marker).with_changes(leading_lines=[blank, blank, *comments])
        result.append(marked)
    return result


def find_modules(source: str) -> Dict[str, FoundModule]:
    """yolopatch insertions in ``source``, by module key."""
    return dict(_find_modules(source))


@lru_cache(maxsize=16)
def _find_modules(source: str) -> Tuple[Tuple[str, FoundModule], ...]:
    module = parse(source)
    lines = dict(zip(module.body, statement_lines(source)))
    grouped: Dict[str, List[cst.BaseStatement]] = {}
    for statement in module.body:
        marker = markers.marker_of(statement)
        if marker is not None and marker.key != markers.ADDED_IMPORT:
            grouped.setdefault(marker.key, []).append(statement)
    found = {}
    for key, statements in grouped.items():
        main = next((s for s in statements if (markers.marker_of(s) or Marker(key)).version is not None), statements[0])
        marker = markers.marker_of(main)
        assert marker is not None
        name = main.name.value if isinstance(main, DEFINITIONS) else key
        found[key] = FoundModule(key=key, class_name=name, version=marker.version, recorded_digest=marker.digest,
                                 actual_digest=digest(statements), line=lines[main])
    return tuple(found.items())


def find_foreign_classes(source: str, names: Sequence[str]) -> List[ForeignClass]:
    """Top-level definitions named in ``names`` that carry no yolopatch marker."""
    module = parse(source)
    lines = dict(zip(module.body, statement_lines(source)))
    return [
        ForeignClass(statement.name.value, lines[statement])
        for statement in module.body
        if isinstance(statement, DEFINITIONS)
        and statement.name.value in names
        and markers.marker_of(statement) is None
    ]


def _is_marked_for(statement: cst.BaseStatement, key: str) -> bool:
    marker = markers.marker_of(statement)
    return marker is not None and marker.key == key


def _insertion_index(body: Sequence[cst.BaseStatement]) -> int:
    last = max((i for i, statement in enumerate(body) if isinstance(statement, DEFINITIONS)), default=len(body) - 1)
    return last + 1


def _drop_names(body: Sequence[cst.BaseStatement], names: Sequence[str]) -> List[cst.BaseStatement]:
    """``body`` without unmarked top-level definitions named ``names`` (the ``--replace`` case)."""
    return [
        statement for statement in body
        if not (isinstance(statement, DEFINITIONS) and statement.name.value in names
                and markers.marker_of(statement) is None)
    ]


def insert(source: str, template: Template, replace_foreign: bool = False) -> str:
    """Insert (or update in place) ``template`` in common.py ``source``; add the imports it lacks.

    New code goes after the last top-level definition. A module already present is replaced where it
    stands. ``replace_foreign`` drops unmarked same-named definitions (hand-pasted blog versions).
    """
    return insert_module(parse(source), template, replace_foreign).code


def insert_module(module: cst.Module, template: Template, replace_foreign: bool = False,
                  with_imports: bool = True) -> cst.Module:
    """``insert`` on a parsed module (to chain several modules without re-parsing).

    ``with_imports=False`` leaves the imports to one ``add_imports`` call for several templates.
    """
    statements = _marked(template_statements(template, module.default_newline), template, module.default_newline)
    names = [s.name.value for s in statements if isinstance(s, DEFINITIONS)]
    body = list(module.body)
    if replace_foreign:
        body = _drop_names(body, names)
    existing = [i for i, statement in enumerate(body) if _is_marked_for(statement, template.key)]
    if existing:
        first = existing[0]
        statements[0] = statements[0].with_changes(leading_lines=body[first].leading_lines)
        body = [s for i, s in enumerate(body) if i not in existing]
        index = first
    else:
        index = _insertion_index(body)
    body[index:index] = statements
    updated = module.with_changes(body=body)
    return add_imports(updated, template_imports(template)) if with_imports else updated


def add_imports(module: cst.Module, needed: Sequence[ImportSpec]) -> cst.Module:
    """Add the imports ``module`` lacks with AddImportsVisitor, marking each new statement.

    The visitor only reads and edits the top-level imports, so it runs on the statements up to the
    last top-level import (visiting a whole 1,000-line common.py costs seconds); the rest is re-attached.
    """
    if not needed:
        return module
    from libcst.codemod import CodemodContext  # the codemod machinery costs ~0.3 s to import
    from libcst.codemod.visitors import AddImportsVisitor

    split = max((i for i, statement in enumerate(module.body) if _is_import(statement)), default=-1) + 1
    head = module.with_changes(body=module.body[:split], footer=())
    context = CodemodContext()
    for name, asname in needed:
        AddImportsVisitor.add_needed_import(context, name, asname=asname)
    before = {head.code_for_node(statement) for statement in head.body}
    updated = AddImportsVisitor(context).transform_module(head)
    marked = [
        statement
        if not _is_import(statement) or updated.code_for_node(statement) in before
        else markers.with_marker(statement, Marker(markers.ADDED_IMPORT))
        for statement in updated.body
    ]
    return module.with_changes(header=updated.header, body=[*marked, *module.body[split:]])


def _is_import(statement: cst.BaseStatement) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(small, (cst.Import, cst.ImportFrom)) for small in statement.body
    )


def remove(source: str, key: str, still_needed: Sequence[ImportSpec] = ()) -> str:
    """Take module ``key`` out of ``source``, and the imports yolopatch added that nothing still needs."""
    return remove_module(parse(source), key, still_needed).code


def remove_module(module: cst.Module, key: str, still_needed: Sequence[ImportSpec] = ()) -> cst.Module:
    """``remove`` on a parsed module."""
    body = [statement for statement in module.body if not _is_marked_for(statement, key)]
    body = [statement for statement in body if not _is_unneeded_added_import(module, statement, still_needed)]
    return module.with_changes(body=body)


def _is_unneeded_added_import(module: cst.Module, statement: cst.BaseStatement,
                              still_needed: Sequence[ImportSpec]) -> bool:
    if not _is_marked_for(statement, markers.ADDED_IMPORT):
        return False
    provided = {
        (cst.helpers.get_full_name_for_node(alias.name), alias.asname.name.value if alias.asname else None)
        for small in statement.body if isinstance(small, cst.Import)  # type: ignore[attr-defined]
        for alias in small.names
    }
    return not provided & set(still_needed)
