"""Pure libcst transforms of a YOLOv5 ``models/yolo.py``: register modules in ``parse_model``.

A registration is one marked branch in parse_model's ``if m in {...}: ... elif ...: ... else:`` chain,
inserted before the final ``else``::

    elif m is SOCA:  # yolopatch: soca
        c1 = ch[f]
        c2 = c1
        args = [c1, c2, *args[1:]]

and, on master (whose yolo.py imports an explicit list from models.common), the class name appended to
that import list. The chain is anchored on the ``if m in ...`` whose container holds ``Conv`` (or
``nn.Conv2d``), not on the nested ``if m in {BottleneckCSP, C3, ...}``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from yolopatch.transforms import if_chain, lists, lossless, markers
from yolopatch.transforms.markers import Marker

Container = Union[cst.List, cst.Tuple, cst.Set]

_ANCHORS = ("Conv", "nn.Conv2d")


class ParseModelNotFound(ValueError):
    """yolo.py has no recognisable parse_model channel chain."""


@dataclass(frozen=True)
class Registration:
    """A module name wired into parse_model."""

    name: str
    line: int
    key: Optional[str]  # the yolopatch key when the branch carries a marker, else None (hand-made)
    edited: bool = False
    registration: Optional[str] = None  # which branch shape a marked, unedited branch has


@dataclass(frozen=True)
class YoloPyFacts:
    """What yolo.py looks like: how the channel chain is spelled and how it imports common."""

    container: str  # "list" (v5.0-v6.1), "tuple" (v6.2), "set" (v7.0, master)
    explicit_common_imports: bool  # master: from models.common import (C3, ...)
    uses_ch_mul: bool  # master computes widths with make_divisible(..., ch_mul)
    parse_model_line: int


# The argument line of the branch, per registration kind (the catalogue's ``registration``):
# "width": YAML args [width, hp...], the nominal width replaced by the real input width;
# "no-width": YAML args [hp...] (parameter-free modules), the width put in front.
ARGUMENT_LINES = {
    "width": "args = [c1, c2, *args[1:]]",
    "no-width": "args = [c1, c2, *args]",
}


def branch_code(class_name: str, key: str, registration: str = "width") -> str:
    """The parse_model branch for one module (as an ``if``; it is placed as an ``elif``)."""
    return (
        f"if m is {class_name}:  {Marker(key).render()}\n"
        f"    c1 = ch[f]\n"
        f"    c2 = c1\n"
        f"    {ARGUMENT_LINES[registration]}\n"
    )


def _parse_model(module: cst.Module) -> cst.FunctionDef:
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == "parse_model":
            return statement
    raise ParseModelNotFound("no top-level parse_model function")


def _element_name(element: cst.BaseElement) -> str:
    return cst.helpers.get_full_name_for_node(element.value) or ""


def _container(node: cst.If) -> Container:
    return node.test.comparisons[0].comparator  # type: ignore[attr-defined,return-value]


def _channel_chain(function: cst.FunctionDef) -> cst.If:
    for candidate in if_chain.membership_ifs(function.body.body, if_chain.is_membership):
        names = {_element_name(element) for element in _container(candidate).elements}  # type: ignore[arg-type]
        if names & set(_ANCHORS):
            return candidate
    raise ParseModelNotFound("parse_model has no `if m in [...]` branch listing Conv")


@lru_cache(maxsize=32)
def parse(source: str) -> cst.Module:
    """Parse once per distinct text (libcst modules are immutable); raises ``lossless.NotLossless``
    where libcst would not give the text back byte for byte."""
    return lossless.parse(source)


def _replace_top_level(module: cst.Module, old: cst.CSTNode, new: cst.CSTNode) -> cst.Module:
    return module.with_changes(body=[new if statement is old else statement for statement in module.body])


def _replace_chain(module: cst.Module, head: cst.If, new_head: cst.If) -> cst.Module:
    """Swap the chain inside parse_model, visiting only that function (not the whole file)."""
    function = _parse_model(module)
    return _replace_top_level(module, function, function.deep_replace(head, new_head))


@lru_cache(maxsize=16)
def _located_spans(source: str) -> Tuple[cst.FunctionDef, Dict[cst.CSTNode, Tuple[int, int]]]:
    """parse_model (as a standalone copy) and the file lines (first, last) of each of its nodes.

    PositionProvider runs on parse_model alone (resolving the whole 1,000-line file is slow); the
    line of its ``def`` comes from Python's ``ast`` of the same text.
    """
    function = _parse_model(parse(source))
    def_line = next(node.lineno for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "parse_model")
    alone = function.with_changes(leading_lines=(), decorators=())
    positions = MetadataWrapper(cst.Module(body=[alone]), unsafe_skip_copy=True).resolve(PositionProvider)
    offset = def_line - positions[alone].start.line
    return alone, {node: (position.start.line + offset, position.end.line + offset)
                   for node, position in positions.items()}


def _located_function(source: str) -> Tuple[cst.FunctionDef, Dict[cst.CSTNode, int]]:
    """parse_model and the first file line of each of its nodes."""
    alone, spans = _located_spans(source)
    return alone, {node: span[0] for node, span in spans.items()}


def editable_ranges(source: str, replacing: Sequence[str] = ()) -> Tuple[Tuple[int, int], ...]:
    """The lines of yolo.py ``source`` that apply or revert may change: yolopatch's marked branches (header
    and body), the explicit ``from models.common import (...)`` statement, and with ``replacing``
    (``--replace``) the whole of parse_model (hand-made branches and list entries of those names go)."""
    function, spans = _located_spans(source)
    ranges = []
    for link in if_chain.chain(_channel_chain(function)):
        if markers.marker_of(link) is not None:
            ranges.append((spans[link][0], spans[link.body][1]))
    if replacing:
        ranges.append(spans[function])
    tree = ast.parse(source)
    for node in tree.body:
        if (isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models.common")
                and not any(alias.name == "*" for alias in node.names)):
            ranges.append((node.lineno, node.end_lineno or node.lineno))
    return tuple(ranges)


def _parse_model_line(source: str) -> int:
    alone, lines = _located_function(source)
    return lines[alone]


@lru_cache(maxsize=16)
def facts(source: str) -> YoloPyFacts:
    module = parse(source)
    function = _parse_model(module)
    container = _container(_channel_chain(function))
    kind = {cst.List: "list", cst.Tuple: "tuple", cst.Set: "set"}[type(container)]
    return YoloPyFacts(
        container=kind,
        explicit_common_imports=_common_import(module) is not None,
        uses_ch_mul=_uses_name(function, "ch_mul"),
        parse_model_line=_parse_model_line(source),
    )


class _NameFinder(cst.CSTVisitor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.found = False

    def visit_Name(self, node: cst.Name) -> bool:
        self.found = self.found or node.value == self.name
        return False


def _uses_name(function: cst.FunctionDef, name: str) -> bool:
    finder = _NameFinder(name)
    function.visit(finder)
    return finder.found


def registrations(source: str) -> List[Registration]:
    return list(_registrations(source))


@lru_cache(maxsize=16)
def _registrations(source: str) -> Tuple[Registration, ...]:
    """Every name parse_model wires by identity branch (``elif m is X``) or in a channel container."""
    function, positions = _located_function(source)
    head = _channel_chain(function)
    found: List[Registration] = []
    for link in if_chain.chain(head):
        line = positions[link]
        name = if_chain.identity_name(link)
        marker = markers.marker_of(link)
        if name is not None:
            shape = _branch_shape(link, name, marker.key) if marker is not None else None
            edited = marker is not None and shape is None
            found.append(Registration(name, line, marker.key if marker else None, edited, shape))
        elif if_chain.is_membership(link.test):
            found.extend(Registration(_element_name(element), positions[element], None)
                         for element in _container(link).elements)
    return tuple(found)


def _branch_shape(link: cst.If, name: str, key: str) -> Optional[str]:
    """The registration kind whose exact branch ``link`` is, or None when it was edited by hand."""
    bare = cst.Module(body=[link.with_changes(orelse=None, leading_lines=())]).code.replace("\r\n", "\n")
    for registration in ARGUMENT_LINES:
        if bare == cst.Module(body=[cst.parse_statement(branch_code(name, key, registration))]).code:
            return registration
    return None


def register(source: str, class_name: str, key: str, registration: str = "width") -> str:
    """Add the marked parse_model branch for ``class_name`` (and the master import name)."""
    return register_module(parse(source), class_name, key, registration).code


def register_module(module: cst.Module, class_name: str, key: str, registration: str = "width") -> cst.Module:
    """``register`` on a parsed module."""
    return register_modules(module, [(class_name, key, registration)])


def register_modules(module: cst.Module, wanted: Sequence[Tuple[str, str, str]]) -> cst.Module:
    """``register_module`` of each ``(class name, key, registration)`` in order, with parse_model's chain
    unrolled and re-linked once (the same bytes as one call per module, a tenth of the time)."""
    head = _channel_chain(_parse_model(module))
    links = if_chain.chain(head)
    tail = links[-1].orelse
    for class_name, key, registration in wanted:
        branch = cst.parse_statement(branch_code(class_name, key, registration), config=module.config_for_parsing)
        assert isinstance(branch, cst.If)
        position = next((i for i, link in enumerate(links) if _is_marked_for(link, key)), None)
        if position is None:
            links.append(branch)
        else:  # already there: restore yolopatch's exact branch (a no-op unless it was edited by hand)
            links[position] = branch.with_changes(leading_lines=links[position].leading_lines)
    new_head = if_chain.rebuild(links, tail)
    if cst.Module(body=[new_head]).code != cst.Module(body=[head]).code:
        module = _replace_chain(module, head, new_head)  # type: ignore[arg-type]
    for class_name, _key, _registration in wanted:
        module = _add_common_import_name(module, class_name)
    return module


def unregister(source: str, class_name: str, key: str) -> str:
    """Remove yolopatch's branch for ``key`` (and the master import name ``class_name``)."""
    return unregister_module(parse(source), class_name, key).code


def unregister_module(module: cst.Module, class_name: str, key: str) -> cst.Module:
    """``unregister`` on a parsed module."""
    return unregister_modules(module, [(class_name, key)])


def unregister_modules(module: cst.Module, registered: Sequence[Tuple[str, str]]) -> cst.Module:
    """``unregister_module`` of each ``(class name, key)``, with parse_model's chain re-linked once."""
    keys = {key for _class_name, key in registered}
    head = _channel_chain(_parse_model(module))
    links = if_chain.chain(head)
    def dropping(link: cst.If) -> bool:
        return (markers.marker_of(link) or Marker("")).key in keys

    if any(dropping(link) for link in links):
        kept, tail = _without_links(links, links[-1].orelse, dropping)
        module = _replace_chain(module, head, if_chain.rebuild(kept, tail))  # type: ignore[arg-type]
    for class_name, _key in registered:
        module = _remove_common_import_name(module, class_name)
    return module


def _is_marked_for(link: cst.If, key: str) -> bool:
    return (markers.marker_of(link) or Marker("")).key == key


def _without_links(links: Sequence[cst.If], tail: Union[cst.If, cst.Else, None],
                   dropping: Callable[[cst.If], bool]) -> Tuple[List[cst.If], Union[cst.If, cst.Else, None]]:
    """``links`` without those ``dropping`` selects; the comment and blank lines above a dropped branch
    (never written by yolopatch) move onto the next branch that stays, or the ``else``."""
    kept: List[cst.If] = []
    carried: List[cst.EmptyLine] = []
    for link in links:
        if dropping(link):
            carried += list(link.leading_lines)
            continue
        if carried:
            link = link.with_changes(leading_lines=[*carried, *link.leading_lines])
            carried = []
        kept.append(link)
    if carried and tail is not None:
        tail = tail.with_changes(leading_lines=[*carried, *tail.leading_lines])
    return kept, tail


def drop_foreign(source: str, class_name: str) -> str:
    """Remove hand-made registrations of ``class_name``: unmarked ``elif m is X`` branches and
    container entries (the ``--replace`` case: the blog posts add their class to the Conv list)."""
    return drop_foreign_module(parse(source), class_name).code


def drop_foreign_module(module: cst.Module, class_name: str) -> cst.Module:
    """``drop_foreign`` on a parsed module."""
    function = _parse_model(module)
    head = _channel_chain(function)
    links = if_chain.chain(head)
    kept, tail = _without_links(
        links, links[-1].orelse,
        lambda link: if_chain.identity_name(link) == class_name and markers.marker_of(link) is None)
    module = _replace_chain(module, head, if_chain.rebuild(kept, tail))  # type: ignore[arg-type]
    function = _parse_model(module)
    cleaned = function.visit(_DropFromMemberships(class_name))
    return _replace_top_level(module, function, cleaned)


class _DropFromMemberships(cst.CSTTransformer):
    """Take a name out of every ``m in [...]`` test (the blog posts also add theirs to the nested
    ``if m in [BottleneckCSP, C3, ...]`` repeat list)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def leave_If(self, original: cst.If, updated: cst.If) -> cst.If:
        return _without_element(updated, self.name) if if_chain.is_membership(updated.test) else updated


def _without_element(link: cst.If, name: str) -> cst.If:
    container = _container(link)
    elements = list(container.elements)
    index = next((i for i, element in enumerate(elements) if _element_name(element) == name), None)
    if index is None:
        return link
    elements = lists.drop_at(elements, index)
    comparison = link.test.comparisons[0].with_changes(  # type: ignore[attr-defined]
        comparator=container.with_changes(elements=elements))
    return link.with_changes(test=link.test.with_changes(comparisons=[comparison]))


def _common_import(module: cst.Module) -> Optional[cst.ImportFrom]:
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if (isinstance(small, cst.ImportFrom) and small.module is not None
                    and not isinstance(small.names, cst.ImportStar)
                    and (cst.helpers.get_full_name_for_node(small.module) or "").endswith("models.common")):
                return small
    return None


def common_import_names(source: str) -> Optional[List[str]]:
    """Names of master's explicit ``from models.common import (...)``; None for a star import."""
    node = _common_import(parse(source))
    if node is None:
        return None
    return [cst.helpers.get_full_name_for_node(alias.name) or "" for alias in node.names]  # type: ignore[union-attr]


def _add_common_import_name(module: cst.Module, name: str) -> cst.Module:
    node = _common_import(module)
    if node is None:
        return module
    aliases = list(node.names)  # type: ignore[arg-type]
    if any(cst.helpers.get_full_name_for_node(alias.name) == name for alias in aliases):
        return module
    updated = node.with_changes(names=lists.append(aliases, cst.ImportAlias(name=cst.Name(name))))
    return _replace_import(module, node, updated)


def _remove_common_import_name(module: cst.Module, name: str) -> cst.Module:
    node = _common_import(module)
    if node is None:
        return module
    aliases = list(node.names)  # type: ignore[arg-type]
    index = next((i for i, alias in enumerate(aliases) if cst.helpers.get_full_name_for_node(alias.name) == name), None)
    if index is None:
        return module
    return _replace_import(module, node, node.with_changes(names=lists.drop_at(aliases, index)))


def _replace_import(module: cst.Module, old: cst.ImportFrom, new: cst.ImportFrom) -> cst.Module:
    for statement in module.body:
        if isinstance(statement, cst.SimpleStatementLine) and any(small is old for small in statement.body):
            body = [new if small is old else small for small in statement.body]
            return _replace_top_level(module, statement, statement.with_changes(body=body))
    return module


def registered_keys(source: str) -> Dict[str, Registration]:
    """yolopatch's own registrations, by key."""
    return {r.key: r for r in registrations(source) if r.key is not None}


def foreign_registrations(source: str, names: Sequence[str]) -> List[Registration]:
    """Hand-made registrations of any of ``names``."""
    return [r for r in registrations(source) if r.key is None and r.name in names]


def position_of_parse_model(source: str) -> Tuple[int, str]:
    """(line, container kind) of the channel chain, for messages."""
    found = facts(source)
    return found.parse_model_line, found.container
