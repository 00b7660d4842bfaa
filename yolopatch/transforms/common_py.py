"""Pure libcst transforms of a YOLOv5 ``models/common.py``: insert and remove template modules.

Every function takes source text and returns source text (or facts about it); nothing here does I/O.
Inserted statements carry markers (see ``markers``); everything else in the file stays byte for byte.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import libcst as cst

from yolopatch.transforms import lists, lossless, markers
from yolopatch.transforms.markers import Marker

if TYPE_CHECKING:
    from yolopatch import catalog

ImportSpec = Tuple[str, Optional[str]]  # ("torch.nn.functional", "F")

DEFINITIONS = (cst.ClassDef, cst.FunctionDef)


@dataclass(frozen=True)
class Template:
    """What one module inserts: its key, version, main class and source text."""

    key: str
    version: int
    class_name: str
    source: str
    known_digest: str = ""  # ``template_digest`` as the catalogue recorded it for exactly ``source``; "" unknown


@dataclass(frozen=True)
class FoundModule:
    """A yolopatch insertion found in a common.py."""

    key: str
    class_name: str
    version: Optional[int]
    recorded_digest: Optional[str]
    line: int
    statements: Tuple[cst.BaseStatement, ...] = field(default=(), repr=False, compare=False)

    @cached_property
    def actual_digest(self) -> str:
        """``digest`` of the inserted statements as they are now (computed on first use: a command about
        one module need not print the other twenty)."""
        return digest(self.statements)

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
    """Parse once per distinct text (libcst modules are immutable, so sharing them is safe); raises
    ``lossless.NotLossless`` where libcst would not give the text back byte for byte."""
    return lossless.parse(source)


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


@lru_cache(maxsize=16)
def statement_spans(source: str) -> Tuple[Tuple[int, int], ...]:
    """(first line, last line) of each top-level statement of ``source`` in ``parse(source).body`` order,
    decorators included, leading comments and blank lines not."""
    nodes = ast.parse(source).body
    spans = []
    index = 0
    for statement in parse(source).body:
        count = len(statement.body) if isinstance(statement, cst.SimpleStatementLine) else 1
        group = nodes[index:index + count]
        first = min([group[0].lineno, *(d.lineno for d in getattr(group[0], "decorator_list", ()))])
        spans.append((first, max(node.end_lineno or node.lineno for node in group)))
        index += count
    return tuple(spans)


class UnsupportedAll(ValueError):
    """common.py's ``__all__`` is not a literal list or tuple of strings that yolopatch can extend."""

    def __init__(self, line: int) -> None:
        super().__init__("__all__ is not a literal list or tuple of names")
        self.line = line


def _assigns_all(statement: cst.BaseStatement) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and any(
        isinstance(small, (cst.Assign, cst.AugAssign, cst.AnnAssign))
        and any(isinstance(target, cst.Name) and target.value == "__all__" for target in _targets(small))
        for small in statement.body)


def _targets(small: cst.BaseSmallStatement) -> List[cst.BaseExpression]:
    if isinstance(small, cst.Assign):
        return [target.target for target in small.targets]
    return [small.target] if isinstance(small, (cst.AugAssign, cst.AnnAssign)) else []


def _all_sequence(module: cst.Module) -> Optional[Tuple[int, cst.Assign]]:
    """(body index, assignment) of the ``__all__ = [...]`` to extend; None when the file has no ``__all__``.

    Raises UnsupportedAll for an ``__all__`` yolopatch cannot edit exactly (computed, augmented, several)."""
    found = [(index, statement) for index, statement in enumerate(module.body) if _assigns_all(statement)]
    if not found:
        return None
    index, statement = found[-1]
    small = statement.body[0] if len(statement.body) == 1 else None  # type: ignore[attr-defined]
    if (len(found) > 1 or not isinstance(small, cst.Assign) or not isinstance(small.value, (cst.List, cst.Tuple))
            or not all(isinstance(e.value, cst.SimpleString) for e in small.value.elements)
            or (isinstance(small.value, cst.Tuple) and not small.value.lpar)):
        raise UnsupportedAll(statement_lines(module.code)[found[-1][0]])
    return index, small


def _all_names(assign: cst.Assign) -> List[str]:
    return [e.value.evaluated_value for e in assign.value.elements]  # type: ignore[attr-defined]


def add_to_all(module: cst.Module, name: str, source: str) -> cst.Module:
    """``name`` appended to common.py's literal ``__all__`` (if it has one and lacks the name)."""
    located = _all_sequence(module) if "__all__" in source else None
    if located is None:
        return module
    index, assign = located
    if name in _all_names(assign):
        return module
    elements = list(assign.value.elements)  # type: ignore[attr-defined]
    quote = elements[-1].value.quote if elements else '"'
    new = cst.Element(value=cst.SimpleString(f"{quote}{name}{quote}"))
    return _with_all_elements(module, index, assign, lists.append(elements, new))


def remove_from_all(module: cst.Module, name: str, source: str) -> cst.Module:
    """``name`` taken out of common.py's literal ``__all__`` again."""
    located = _all_sequence(module) if "__all__" in source else None
    if located is None:
        return module
    index, assign = located
    names = _all_names(assign)
    if name not in names:
        return module
    elements = lists.drop_at(list(assign.value.elements), names.index(name))  # type: ignore[attr-defined]
    return _with_all_elements(module, index, assign, elements)


def _with_all_elements(module: cst.Module, index: int, assign: cst.Assign, elements: list) -> cst.Module:
    statement = module.body[index]
    updated = statement.with_changes(body=[assign.with_changes(value=assign.value.with_changes(elements=elements))])
    return module.with_changes(body=[*module.body[:index], updated, *module.body[index + 1:]])


def editable_ranges(source: str, replacing: Sequence[str] = (),
                    template_comments: Sequence[str] = ()) -> Tuple[Tuple[int, int], ...]:
    """The lines of common.py ``source`` that apply or revert may change: yolopatch's own marked statements
    with the blank lines (and ``template_comments``) apply put above them, ``__all__`` (where the class
    names are listed), and unmarked definitions named in ``replacing`` (``--replace``). A comment the
    user wrote above inserted code is not editable: revert keeps it."""
    ranges = []
    for statement, (first, last) in zip(parse(source).body, statement_spans(source)):
        if markers.marker_of(statement) is not None:
            ranges.append((first, last))
            ranges += _inserted_leading_lines(statement, first, template_comments)
        elif _assigns_all(statement) or (isinstance(statement, DEFINITIONS) and statement.name.value in replacing):
            ranges.append((first, last))
    return tuple(ranges)


def _inserted_leading_lines(statement: cst.BaseStatement, first: int,
                            template_comments: Sequence[str]) -> List[Tuple[int, int]]:
    """The lines above ``statement`` (its leading lines, ending at line ``first - 1``) that apply may have
    put there: blank lines and the templates' own comments, not a comment of the user's."""
    leading = list(statement.leading_lines)
    top = first - len(leading)
    return [(top + offset, top + offset) for offset, line in enumerate(leading)
            if line.comment is None or line.comment.value in template_comments]


def template_of(spec: catalog.ModuleSpec) -> Template:
    """The template of a catalogue module (anything with its key, version, class name and source)."""
    return Template(key=spec.key, version=spec.version, class_name=spec.class_name, source=spec.source,
                    known_digest=spec.template_digest)


def template_statements(template: Template, newline: str = "\n") -> List[cst.BaseStatement]:
    """The template's top-level class and def statements (what gets inserted), unmarked."""
    module = _template_module(template.source.replace("\r\n", "\n").replace("\n", newline))
    return [statement for statement in module.body if isinstance(statement, DEFINITIONS)]


@lru_cache(maxsize=64)
def _template_module(source: str) -> cst.Module:
    """A template parsed without ``lossless.parse``'s print-back check, which guards users' files: the
    templates are yolopatch's own, and a test prints each back. The check is a quarter of parsing all 21."""
    return cst.parse_module(source)


def template_imports(template: Template) -> List[ImportSpec]:
    """The imports a template needs, as (module, alias) pairs: its top-level ``import`` statements.

    Read with Python's ``ast`` (a tenth of libcst's parse): revert asks it of every module that stays."""
    return list(_template_imports(template.source))


@lru_cache(maxsize=64)
def _template_imports(source: str) -> Tuple[ImportSpec, ...]:
    return tuple((alias.name, alias.asname) for statement in ast.parse(source).body
                 if isinstance(statement, ast.Import) for alias in statement.names)


def digest(statements: Sequence[cst.BaseStatement]) -> str:
    """A newline-independent hash of inserted code, markers and surrounding blank lines excluded."""
    bare = [markers.without_marker(statement).with_changes(leading_lines=()) for statement in statements]
    code = cst.Module(body=bare).code.replace("\r\n", "\n")
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:12]


@lru_cache(maxsize=64)
def template_digest(template: Template) -> str:
    """``digest`` of the template's statements; the catalogue's recorded value when it has one (computing
    the 21 digests means parsing and printing every template: a third of a one-module revert)."""
    return template.known_digest or digest(template_statements(template))


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
                                 line=lines[main], statements=tuple(statements))
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
    present = _top_level_imports(module)
    missing = list(dict.fromkeys(spec for spec in needed if spec not in present))
    if not missing:
        return module
    from libcst.codemod import CodemodContext  # the codemod machinery costs ~0.3 s to import
    from libcst.codemod.visitors import AddImportsVisitor

    split = max((i for i, statement in enumerate(module.body) if _is_import(statement)), default=-1) + 1
    head = module.with_changes(body=module.body[:split], footer=())
    context = CodemodContext()
    for name, asname in missing:
        AddImportsVisitor.add_needed_import(context, name, asname=asname)
    updated = AddImportsVisitor(context).transform_module(head)
    return module.with_changes(header=updated.header, body=[*_mark_new(head, updated), *module.body[split:]])


def _top_level_imports(module: cst.Module) -> set:
    """(module, alias) of every plain top-level ``import`` (wherever it stands in the file)."""
    return {spec for statement in module.body if _is_import(statement) for spec in _provided_imports(statement)}


def _mark_new(head: cst.Module, updated: cst.Module) -> List[cst.BaseStatement]:
    """``updated``'s statements, the import statements the visitor inserted into ``head`` marked (told
    apart by position, so an inserted duplicate of an existing line is marked too)."""
    old = [head.code_for_node(statement) for statement in head.body]
    new = [updated.code_for_node(statement) for statement in updated.body]
    inserted = set()
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "insert":  # a changed existing statement stays unmarked (the post-condition guards it)
            inserted.update(range(j1, j2))
    return [markers.with_marker(statement, Marker(markers.ADDED_IMPORT))
            if index in inserted and _is_import(statement) and markers.marker_of(statement) is None else statement
            for index, statement in enumerate(updated.body)]


def _is_import(statement: cst.BaseStatement) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(small, (cst.Import, cst.ImportFrom)) for small in statement.body
    )


def remove(source: str, key: str, still_needed: Sequence[ImportSpec] = (),
           template: Optional[Template] = None) -> str:
    """Take module ``key`` out of ``source``, and the imports yolopatch added that nothing still needs."""
    return remove_module(parse(source), key, still_needed, template).code


def remove_module(module: cst.Module, key: str, still_needed: Sequence[ImportSpec] = (),
                  template: Optional[Template] = None) -> cst.Module:
    """``remove`` on a parsed module.

    Only what apply inserted goes: the marked statements, the two blank lines put before each and the
    template's own comments. Anything the user wrote above an inserted statement (a comment, more blank
    lines) moves onto the next statement that stays. ``template`` tells the template's own comments.
    """
    expected = _expected_leading_comments(template) if template is not None else {}
    used = _names_used_outside_yolopatch(module) if _has_added_imports(module) else frozenset()
    body: List[cst.BaseStatement] = []
    carried: List[cst.EmptyLine] = []
    for statement in module.body:
        removing = _is_marked_for(statement, key) or _is_unneeded_added_import(statement, still_needed, used)
        if removing:
            carried += _user_leading_lines(statement, expected.get(_definition_name(statement), ()))
            continue
        if carried:
            statement = statement.with_changes(leading_lines=[*carried, *statement.leading_lines])
            carried = []
        body.append(statement)
    footer = [*carried, *module.footer]
    return module.with_changes(body=body, footer=footer)


def _has_added_imports(module: cst.Module) -> bool:
    return any(_is_marked_for(statement, markers.ADDED_IMPORT) for statement in module.body)


def _definition_name(statement: cst.BaseStatement) -> Optional[str]:
    return statement.name.value if isinstance(statement, DEFINITIONS) else None


def _expected_leading_comments(template: Template) -> Dict[Optional[str], Tuple[str, ...]]:
    """The comment lines a template puts above each of its definitions, by definition name."""
    return {
        _definition_name(statement): tuple(
            line.comment.value for line in statement.leading_lines if line.comment is not None)
        for statement in template_statements(template)
    }


def _user_leading_lines(statement: cst.BaseStatement, template_comments: Sequence[str]) -> List[cst.EmptyLine]:
    """The leading lines of an inserted statement that apply did not put there."""
    lines = list(statement.leading_lines)
    comments = [line.comment.value for line in lines[-len(template_comments):] if line.comment] \
        if template_comments else []
    if template_comments and tuple(comments) == tuple(template_comments):
        lines = lines[:-len(template_comments)]
    blanks_to_drop = 2 if _is_definition(statement) else 0  # _marked puts two blank lines before each
    kept = []
    for line in lines:
        if blanks_to_drop and line.comment is None and not line.whitespace.value:
            blanks_to_drop -= 1
            continue
        kept.append(line)
    return kept


def _is_definition(statement: cst.BaseStatement) -> bool:
    return isinstance(statement, DEFINITIONS)


def _names_used_outside_yolopatch(module: cst.Module) -> frozenset:
    """Every name loaded by a top-level statement that carries no yolopatch marker (a static check)."""
    used = set()
    for statement in module.body:
        if markers.marker_of(statement) is None and not _is_import(statement):
            tree = ast.parse(module.code_for_node(statement.with_changes(leading_lines=())))
            used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return frozenset(used)


def _is_unneeded_added_import(statement: cst.BaseStatement, still_needed: Sequence[ImportSpec],
                              used: frozenset = frozenset()) -> bool:
    """An import yolopatch added that no remaining module needs and no user code uses."""
    if not _is_marked_for(statement, markers.ADDED_IMPORT):
        return False
    provided = _provided_imports(statement)
    if provided & set(still_needed):
        return False
    return not {bound for _, bound in _bound_names(provided)} & used


def _provided_imports(statement: cst.BaseStatement) -> set:
    return {
        (cst.helpers.get_full_name_for_node(alias.name), alias.asname.name.value if alias.asname else None)
        for small in statement.body if isinstance(small, cst.Import)  # type: ignore[attr-defined]
        for alias in small.names
    }


def _bound_names(provided: set) -> List[Tuple[str, str]]:
    """(import, the name it binds): ``import torch.nn.functional as F`` binds F, ``import math`` math."""
    return [(name, asname or name.split(".")[0]) for name, asname in provided]


def kept_imports(source: str, key: str, still_needed: Sequence[ImportSpec] = ()) -> List[Tuple[str, int]]:
    """Imports yolopatch added that ``remove`` keeps because code outside yolopatch's uses them:
    (import text, line)."""
    module = parse(source)
    used = _names_used_outside_yolopatch(module)
    lines = dict(zip(module.body, statement_lines(source)))
    kept = []
    for statement in module.body:
        if (_is_unneeded_added_import(statement, still_needed)
                and not _is_unneeded_added_import(statement, still_needed, used)):
            text = module.code_for_node(markers.without_marker(statement).with_changes(leading_lines=())).strip()
            kept.append((text, lines[statement]))
    return kept
