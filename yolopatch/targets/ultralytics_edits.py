"""Pure libcst edits that register yolopatch modules in an Ultralytics tree (YOLOv8, YOLO11, ... 8.0 to 8.4).

Every function takes source text and returns source text (or facts about it); nothing here does I/O.
A module ``X`` (key ``x``) is wired in three files, each edit undone byte for byte:

1. ``ultralytics/nn/modules/yolopatch.py`` (``MODULE_FILE``), a file of yolopatch's own: created from
   ``MODULE_FILE_STUB`` on the first apply, the class inserted with ``common_py`` (marked), its name
   added to the file's ``__all__``; when ``is_stub`` says only the stub is left, the engine deletes it.
   Under ``ultralytics.nn.modules`` because 8.4's restricted checkpoint loader only rebuilds classes
   from ``ultralytics.nn.modules.<file>``; a file of its own so that no Ultralytics file but the two
   registries below is touched, and so a template named like a built-in (``CBAM`` in ``conv.py``)
   cannot shadow it inside Ultralytics' own module.
2. ``ultralytics/nn/modules/__init__.py`` (``MODULES_INIT``): one marked statement
   ``from .yolopatch import X  # yolopatch: x`` after the last top-level import, and ``"X"`` in ``__all__``.
3. ``ultralytics/nn/tasks.py`` (``TASKS``): ``X`` in ``from ultralytics.nn.modules import (...)``
   (parse_model resolves YAML names with ``globals()[m]``), and a marked parse_model branch before the
   final ``else: c2 = ch[f]``.

Names appended to a one-name-per-line list carry the marker on their own line
(``    "X",  # yolopatch: x``); on a single-line list there is no line of their own to mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import libcst as cst
import libcst.matchers as m

from yolopatch.transforms import common_py, if_chain, lossless, markers
from yolopatch.transforms.common_py import ImportSpec, Template
from yolopatch.transforms.markers import Marker

MODULE_FILE = "ultralytics/nn/modules/yolopatch.py"
MODULES_INIT = "ultralytics/nn/modules/__init__.py"
TASKS = "ultralytics/nn/tasks.py"
MODULES_PACKAGE = "ultralytics.nn.modules"  # what tasks.py imports the layer classes from
OWN_MODULE = ".yolopatch"  # how __init__.py imports MODULE_FILE

MODULE_FILE_STUB = (
    '"""Modules inserted by yolopatch (`yolopatch apply`); `yolopatch revert` deletes this file."""\n'
    "\n"
    "import torch\n"
    "import torch.nn as nn\n"
    "\n"
    "__all__ = []\n"
)

WIDTH = "width"  # YAML args start with a width that parse_model replaces: [-1, 1, X, [1024, *rest]]
NO_WIDTH = "no_width"  # YAML args carry no width: [-1, 1, X, [*rest]]
SHAPES = (WIDTH, NO_WIDTH)

_ANCHOR = "Conv"  # the channel container is the one listing Conv (not the nested repeat_modules one)

_Item = Union[cst.Element, cst.ImportAlias]
_Container = Union[cst.List, cst.Tuple, cst.Set]


class ParseModelNotFound(ValueError):
    """tasks.py has no recognisable parse_model channel branch."""


class ListNotFound(ValueError):
    """The import list or ``__all__`` to edit is not in the file."""


@dataclass(frozen=True)
class ChannelSet:
    """How parse_model spells the set of modules whose first YAML arg is a width."""

    kind: str  # "tuple" (8.0), "set" (8.1 to 8.3.0), "named" (late 8.3, 8.4: `m in base_modules`)
    name: Optional[str]  # the local variable for "named", else None
    members: Tuple[str, ...]


@lru_cache(maxsize=32)
def parse(source: str) -> cst.Module:
    """Parse once per distinct text (libcst modules are immutable); refuses text libcst cannot give back
    byte for byte (``lossless.NotLossless``)."""
    return lossless.parse(source)


# --- the module file ---------------------------------------------------------------------------------------


def insert_class(source: str, template: Template, replace_foreign: bool = False) -> str:
    """``template`` inserted in the module file ``source`` (start from ``MODULE_FILE_STUB``), named in its
    ``__all__``. Idempotent; a module already there is restored to the template's code."""
    inserted = common_py.insert(source, template, replace_foreign=replace_foreign)
    return add_all_name(inserted, template.class_name, template.key)


def remove_class(source: str, key: str, class_name: str, still_needed: Sequence[ImportSpec] = (),
                 template: Optional[Template] = None) -> str:
    """Module ``key`` (main class ``class_name``) taken out of the module file, with the imports it alone
    needed (``still_needed``: the imports of the modules that stay)."""
    return remove_all_name(common_py.remove(source, key, still_needed, template), class_name)


def is_stub(source: str) -> bool:
    """True when nothing but the stub is left: the engine deletes the file instead of writing it."""
    return source.replace("\r\n", "\n") == MODULE_FILE_STUB


# --- marked import statements (__init__.py) -----------------------------------------------------------------


def import_statement(module: str, name: str, key: str) -> str:
    return f"from {module} import {name}  {Marker(key).render()}\n"


def add_marked_import(source: str, module: str, name: str, key: str) -> str:
    """``from module import name  # yolopatch: key`` after the last top-level import (once per key and name)."""
    tree = parse(source)
    body = list(tree.body)
    if any(_is_marked_import(statement, key, name) for statement in body):
        return source
    statement = cst.parse_statement(import_statement(module, name, key), config=tree.config_for_parsing)
    index = max((i for i, s in enumerate(body) if _is_import(s)), default=-1) + 1
    body.insert(index, statement)
    return tree.with_changes(body=body).code


def remove_marked_import(source: str, key: str) -> str:
    """Every import statement carrying ``# yolopatch: key`` taken out."""
    tree = parse(source)
    body = [s for s in tree.body if not (_is_import(s) and _key_of(s) == key)]
    return source if len(body) == len(tree.body) else tree.with_changes(body=body).code


def _is_import(statement: cst.CSTNode) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(small, (cst.Import, cst.ImportFrom)) for small in statement.body)


def _key_of(statement: cst.CSTNode) -> Optional[str]:
    marker = markers.marker_of(statement)
    return marker.key if marker is not None else None


def _is_marked_import(statement: cst.CSTNode, key: str, name: str) -> bool:
    return _is_import(statement) and _key_of(statement) == key and name in _bound_names(statement)


# --- names in import lists and __all__ -------------------------------------------------------------------


def import_names(source: str, module: str) -> List[str]:
    """Names of the first top-level ``from module import ...`` (raises ListNotFound when absent)."""
    return [_alias_name(alias) for alias in _import_from(parse(source), module).names]  # type: ignore[union-attr]


def add_import_name(source: str, module: str, name: str, key: str) -> str:
    """``name`` appended to the first top-level ``from module import (...)``, in the list's own layout."""
    tree = parse(source)
    node = _import_from(tree, module)
    aliases = list(node.names)  # type: ignore[arg-type]
    if name in (_alias_name(alias) for alias in aliases):
        return source
    tail, in_comma = _import_tail(node)
    items, tail = _appended(_normalised(aliases, in_comma), tail, cst.ImportAlias(name=cst.Name(name)), key, False)
    return _replace_small(tree, node, _import_with(node, items, tail, in_comma)).code


def remove_import_name(source: str, module: str, name: str) -> str:
    """``name`` taken out of the first top-level ``from module import ...`` (undoes ``add_import_name``)."""
    tree = parse(source)
    node = _import_from(tree, module)
    aliases = list(node.names)  # type: ignore[arg-type]
    index = next((i for i, alias in enumerate(aliases) if _alias_name(alias) == name), None)
    if index is None:
        return source
    if len(aliases) == 1:
        raise ValueError(f"refusing to empty `from {module} import {name}`")
    tail, in_comma = _import_tail(node)
    items, tail = _dropped(_normalised(aliases, in_comma), tail, index)
    return _replace_small(tree, node, _import_with(node, items, tail, in_comma)).code


def all_names(source: str) -> Optional[List[str]]:
    """The strings of the top-level ``__all__`` list or tuple; None when the file has none."""
    found = _all_assignment(parse(source))
    return None if found is None else [_string(element) for element in found[1].elements]


def add_all_name(source: str, name: str, key: str) -> str:
    """``"name"`` appended to ``__all__`` (a list or parenthesised tuple), in its own layout and quotes."""
    tree = parse(source)
    found = _all_assignment(tree)
    if found is None:
        raise ListNotFound("no top-level __all__ = [...] or (...)")
    assign, container = found
    if name in (_string(element) for element in container.elements):
        return source
    quote = _quote(container.elements)
    new = cst.Element(value=cst.SimpleString(f"{quote}{name}{quote}"))
    items, tail = _appended(list(container.elements), _closer(container).whitespace_before, new, key,
                            isinstance(container, cst.Tuple))
    return _replace_small(tree, assign, assign.with_changes(value=_container_with(container, items, tail))).code


def remove_all_name(source: str, name: str) -> str:
    """``"name"`` taken out of ``__all__`` (undoes ``add_all_name``); unchanged when absent."""
    tree = parse(source)
    found = _all_assignment(tree)
    if found is None:
        return source
    assign, container = found
    index = next((i for i, e in enumerate(container.elements) if _string(e) == name), None)
    if index is None:
        return source
    items, tail = _dropped(list(container.elements), _closer(container).whitespace_before, index)
    return _replace_small(tree, assign, assign.with_changes(value=_container_with(container, items, tail))).code


def _alias_name(alias: cst.ImportAlias) -> str:
    return cst.helpers.get_full_name_for_node(alias.name) or ""


def _import_from(tree: cst.Module, module: str) -> cst.ImportFrom:
    for statement in tree.body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if (isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar)
                        and _import_module_name(small) == module):
                    return small
    raise ListNotFound(f"no top-level `from {module} import ...`")


def _import_module_name(node: cst.ImportFrom) -> str:
    dots = "".join(dot.value for dot in node.relative)
    return dots + (cst.helpers.get_full_name_for_node(node.module) or "" if node.module is not None else "")


def _all_assignment(tree: cst.Module) -> Optional[Tuple[cst.Assign, Union[cst.List, cst.Tuple]]]:
    for statement in tree.body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if (m.matches(small, m.Assign(targets=[m.AssignTarget(target=m.Name("__all__"))]))
                        and isinstance(small.value, (cst.List, cst.Tuple))  # type: ignore[attr-defined]
                        and (isinstance(small.value, cst.List) or small.value.rpar)):  # type: ignore[attr-defined]
                    return small, small.value  # type: ignore[return-value]
    return None


def _string(element: cst.BaseElement) -> str:
    value = element.value
    evaluated = value.evaluated_value if isinstance(value, cst.SimpleString) else None
    return evaluated if isinstance(evaluated, str) else ""


def _quote(elements: Sequence[cst.BaseElement]) -> str:
    for element in elements:
        if isinstance(element.value, cst.SimpleString):
            return element.value.quote
    return '"'


def _closer(container: Union[cst.List, cst.Tuple]) -> Union[cst.RightSquareBracket, cst.RightParen]:
    return container.rbracket if isinstance(container, cst.List) else container.rpar[-1]


def _container_with(container: Union[cst.List, cst.Tuple], items: List[_Item],
                    tail: cst.BaseParenthesizableWhitespace) -> Union[cst.List, cst.Tuple]:
    closer = _closer(container).with_changes(whitespace_before=tail)
    if isinstance(container, cst.List):
        return container.with_changes(elements=items, rbracket=closer)
    return container.with_changes(elements=items, rpar=[*container.rpar[:-1], closer])


def _import_tail(node: cst.ImportFrom) -> Tuple[cst.BaseParenthesizableWhitespace, bool]:
    """The whitespace before an import list's ``)``, and whether it lives in the last name's comma (a
    parenthesised list with a trailing comma) rather than in the ``)``."""
    last = node.names[-1]  # type: ignore[index]
    if isinstance(last.comma, cst.Comma) and node.rpar is not None:
        return last.comma.whitespace_after, True
    return (node.rpar.whitespace_before if node.rpar is not None else cst.SimpleWhitespace("")), False


def _normalised(aliases: List[cst.ImportAlias], in_comma: bool) -> List[_Item]:
    """The aliases with the tail lifted out of the last comma (so lists and imports edit alike)."""
    if not in_comma:
        return list(aliases)
    last = aliases[-1]
    comma = last.comma.with_changes(whitespace_after=cst.SimpleWhitespace(""))  # type: ignore[union-attr]
    return [*aliases[:-1], last.with_changes(comma=comma)]


def _import_with(node: cst.ImportFrom, items: List[_Item], tail: cst.BaseParenthesizableWhitespace,
                 in_comma: bool) -> cst.ImportFrom:
    if in_comma:
        last = items[-1]
        items = [*items[:-1], last.with_changes(comma=last.comma.with_changes(whitespace_after=tail))]
        return node.with_changes(names=items)
    if node.rpar is None:
        return node.with_changes(names=items)
    return node.with_changes(names=items, rpar=node.rpar.with_changes(whitespace_before=tail))


def _marker_line(key: str, newline: cst.Newline) -> cst.TrailingWhitespace:
    return cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(Marker(key).render()),
                                  newline=newline)


def _plain(whitespace: cst.BaseParenthesizableWhitespace) -> cst.BaseParenthesizableWhitespace:
    if isinstance(whitespace, cst.ParenthesizedWhitespace):
        return whitespace.with_changes(first_line=cst.TrailingWhitespace(newline=whitespace.first_line.newline),
                                       empty_lines=())
    return whitespace


def _appended(items: List[_Item], tail: cst.BaseParenthesizableWhitespace, new: _Item, key: str,
              is_tuple: bool) -> Tuple[List[_Item], cst.BaseParenthesizableWhitespace]:
    """``items`` + ``new`` in the run's own layout, and the new tail; ``_dropped`` undoes it exactly.

    One name per line: the old last name takes the between-names line break (keeping its own comment),
    the new one takes the old last comma and the closing line break, with the marker as its comment.
    One line: the old last name takes the between-names comma, the new one the old last comma.
    """
    if not items:
        return [new.with_changes(comma=cst.Comma() if is_tuple else cst.MaybeSentinel.DEFAULT)], tail
    last = items[-1]
    before = last.comma.whitespace_before if isinstance(last.comma, cst.Comma) else cst.SimpleWhitespace("")
    if isinstance(tail, cst.ParenthesizedWhitespace):
        between = _between(items, tail)
        broken = cst.ParenthesizedWhitespace(first_line=tail.first_line, empty_lines=(), indent=between.indent,
                                             last_line=between.last_line)
        items = [*items[:-1], last.with_changes(comma=cst.Comma(whitespace_before=before, whitespace_after=broken)),
                 new.with_changes(comma=last.comma)]
        return items, tail.with_changes(first_line=_marker_line(key, tail.first_line.newline))
    previous = items[-2].comma if len(items) > 1 else cst.MaybeSentinel.DEFAULT
    pattern = (previous.with_changes(whitespace_after=_plain(previous.whitespace_after))
               if isinstance(previous, cst.Comma) else cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return [*items[:-1], last.with_changes(comma=pattern), new.with_changes(comma=last.comma)], tail


def _between(items: List[_Item], tail: cst.ParenthesizedWhitespace) -> cst.ParenthesizedWhitespace:
    """The line break between two names (from the last pair; the closing one re-indented for one name)."""
    if len(items) > 1 and isinstance(items[-2].comma, cst.Comma):
        after = items[-2].comma.whitespace_after
        if isinstance(after, cst.ParenthesizedWhitespace):
            return after
    return tail.with_changes(last_line=cst.SimpleWhitespace("    "))


def _dropped(items: List[_Item], tail: cst.BaseParenthesizableWhitespace,
             index: int) -> Tuple[List[_Item], cst.BaseParenthesizableWhitespace]:
    """``items`` without ``items[index]``; the last one's comma and closing break go to the one before it."""
    if index == len(items) - 1 and index > 0:
        removed, previous = items[index], items[index - 1]
        after = previous.comma.whitespace_after if isinstance(previous.comma, cst.Comma) else None
        if isinstance(tail, cst.ParenthesizedWhitespace) and isinstance(after, cst.ParenthesizedWhitespace):
            tail = tail.with_changes(first_line=after.first_line)
        return [*items[:index - 1], previous.with_changes(comma=removed.comma)], tail
    return [*items[:index], *items[index + 1:]], tail


def _replace_small(tree: cst.Module, old: cst.BaseSmallStatement, new: cst.BaseSmallStatement) -> cst.Module:
    body = []
    for statement in tree.body:
        if isinstance(statement, cst.SimpleStatementLine) and any(small is old for small in statement.body):
            statement = statement.with_changes(body=[new if small is old else small for small in statement.body])
        body.append(statement)
    return tree.with_changes(body=body)


# --- parse_model ---------------------------------------------------------------------------------------------


def branch_code(class_name: str, key: str, shape: str = WIDTH) -> str:
    """parse_model's branch for one module (an ``if``; it is placed as an ``elif``).

    ``WIDTH``: ``[-1, 1, X, [1024, *rest]]`` builds ``X(c1, c1, *rest)`` at every scale (the width is a
    placeholder: the module keeps its input width). ``NO_WIDTH``: ``[-1, 1, X, [*rest]]`` builds
    ``X(c1, c1, *rest)``.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown branch shape {shape!r}; expected one of {SHAPES}")
    rest = "*args[1:]" if shape == WIDTH else "*args"
    return (
        f"if m is {class_name}:  {Marker(key).render()}\n"
        f"    c1 = ch[f]\n"
        f"    c2 = c1\n"
        f"    args = [c1, c2, {rest}]\n"
    )


def channel_set(source: str) -> ChannelSet:
    """How parse_model spells its channel set (raises ParseModelNotFound)."""
    function = _parse_model(parse(source))
    head = _channel_chain(function)
    comparator = head.test.comparisons[0].comparator  # type: ignore[attr-defined]
    if isinstance(comparator, cst.Name):
        container = _named_container(function, comparator.value)
        assert container is not None
        return ChannelSet("named", comparator.value, _members(container))
    kind = "tuple" if isinstance(comparator, cst.Tuple) else "set" if isinstance(comparator, cst.Set) else "list"
    return ChannelSet(kind, None, _members(comparator))


def registered(source: str) -> Dict[str, str]:
    """yolopatch's parse_model branches: key -> class name."""
    found = {}
    for link in if_chain.chain(_channel_chain(_parse_model(parse(source)))):
        key, name = _key_of(link), if_chain.identity_name(link)
        if key is not None and name is not None:
            found[key] = name
    return found


def register(source: str, class_name: str, key: str, shape: str = WIDTH) -> str:
    """The marked branch for ``class_name`` added before parse_model's final ``else`` (idempotent: a
    branch already there for ``key`` is restored to yolopatch's exact code)."""
    tree = parse(source)
    function = _parse_model(tree)
    head = _channel_chain(function)
    links = if_chain.chain(head)
    branch = cst.parse_statement(branch_code(class_name, key, shape), config=tree.config_for_parsing)
    assert isinstance(branch, cst.If)
    position = next((i for i, link in enumerate(links) if _key_of(link) == key), None)
    if position is None:
        new_head = if_chain.rebuild(links, branch.with_changes(orelse=links[-1].orelse))
    else:
        restored = branch.with_changes(leading_lines=links[position].leading_lines)
        new_head = if_chain.rebuild([*links[:position], restored, *links[position + 1:]], links[-1].orelse)
    if cst.Module(body=[new_head]).code == cst.Module(body=[head]).code:
        return source
    return _with_function(tree, function, function.deep_replace(head, new_head)).code


def unregister(source: str, key: str) -> str:
    """yolopatch's branch for ``key`` taken out of parse_model (undoes ``register``)."""
    tree = parse(source)
    function = _parse_model(tree)
    head = _channel_chain(function)
    links = if_chain.chain(head)
    kept = [link for link in links if _key_of(link) != key]
    if len(kept) == len(links):
        return source
    return _with_function(tree, function, function.deep_replace(head, if_chain.rebuild(kept, links[-1].orelse))).code


def _parse_model(tree: cst.Module) -> cst.FunctionDef:
    for statement in tree.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == "parse_model":
            return statement
    raise ParseModelNotFound("tasks.py has no top-level parse_model function")


def _with_function(tree: cst.Module, old: cst.FunctionDef, new: cst.CSTNode) -> cst.Module:
    return tree.with_changes(body=[new if statement is old else statement for statement in tree.body])


_MEMBERSHIP = m.Comparison(
    left=m.Name("m"),
    comparisons=[m.ComparisonTarget(operator=m.In(), comparator=m.List() | m.Tuple() | m.Set() | m.Name())],
)


def _members(container: _Container) -> Tuple[str, ...]:
    return tuple(cst.helpers.get_full_name_for_node(e.value) or "" for e in container.elements)


def _named_container(function: cst.FunctionDef, name: str) -> Optional[_Container]:
    """The set literal behind ``name = frozenset({...})`` (or ``= {...}``) at parse_model's top level."""
    for statement in function.body.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if m.matches(small, m.Assign(targets=[m.AssignTarget(target=m.Name(name))])):
                value = small.value  # type: ignore[attr-defined]
                if m.matches(value, m.Call(func=m.Name("frozenset") | m.Name("set"))) and value.args:
                    value = value.args[0].value
                if isinstance(value, (cst.List, cst.Tuple, cst.Set)):
                    return value
    return None


def _channel_chain(function: cst.FunctionDef) -> cst.If:
    for candidate in if_chain.membership_ifs(function.body.body, _MEMBERSHIP):
        comparator = candidate.test.comparisons[0].comparator  # type: ignore[attr-defined]
        container = _named_container(function, comparator.value) if isinstance(comparator, cst.Name) else comparator
        if container is not None and _ANCHOR in _members(container):
            return candidate
    raise ParseModelNotFound("parse_model has no `if m in {...}` (or `m in base_modules`) listing Conv")


# --- names the tree already uses --------------------------------------------------------------------------


def taken_names(init_source: str, tasks_source: str) -> FrozenSet[str]:
    """Names a new module must not take: everything ``nn/modules/__init__.py`` imports or lists in
    ``__all__`` (``CBAM``, ``ChannelAttention``, ``SpatialAttention`` since 8.0) and every top-level name
    ``nn/tasks.py`` binds (its ``globals()`` resolve YAML module names). yolopatch's own marked import
    statements and marked names do not count; a name appended to a single-line list cannot be told
    from upstream's, so the engine leaves out the names of the modules it has applied itself."""
    return exported_names(init_source) | resolvable_names(tasks_source)


def exported_names(init_source: str) -> FrozenSet[str]:
    """What ``nn/modules/__init__.py`` imports or lists in ``__all__``, yolopatch's own marked names left out."""
    init = parse(init_source)
    taken = set(_top_level_names(init)) | {name for name in (all_names(init_source) or ()) if name}
    return frozenset(taken - _marked_names(init))


def resolvable_names(tasks_source: str) -> FrozenSet[str]:
    """Top-level names of ``nn/tasks.py`` (what a YAML may name), yolopatch's own marked names left out.
    ``CBAM`` is exported but not here: the built-in cannot be named in a YAML."""
    tasks = parse(tasks_source)
    return frozenset(set(_top_level_names(tasks)) - _marked_names(tasks))


def clashes(names: Iterable[str], init_source: str, tasks_source: str) -> List[str]:
    """The ``names`` (class names of modules to apply) the tree already defines, in order."""
    taken = taken_names(init_source, tasks_source)
    return [name for name in names if name in taken]


def _top_level_names(tree: cst.Module) -> Iterator[str]:
    for statement in tree.body:
        if isinstance(statement, (cst.ClassDef, cst.FunctionDef)):
            yield statement.name.value
        elif isinstance(statement, cst.SimpleStatementLine):
            yield from _bound_names(statement)
        elif isinstance(statement, cst.Try):  # try: import thop / except ImportError: thop = None
            for inner in statement.body.body:
                if isinstance(inner, cst.SimpleStatementLine):
                    yield from _bound_names(inner)


def _bound_names(statement: cst.SimpleStatementLine) -> Iterator[str]:
    for small in statement.body:
        if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
            for alias in small.names:
                yield alias.asname.name.value if alias.asname else _alias_name(alias)  # type: ignore[union-attr]
        elif isinstance(small, cst.Import):
            for alias in small.names:
                yield (alias.asname.name.value if alias.asname  # type: ignore[union-attr]
                       else _alias_name(alias).split(".")[0])
        elif isinstance(small, (cst.Assign, cst.AnnAssign)):
            targets = small.targets if isinstance(small, cst.Assign) else [small]
            for target in targets:
                if isinstance(target.target, cst.Name):
                    yield target.target.value


def _marked_names(tree: cst.Module) -> Set[str]:
    """Names yolopatch put in: marked import statements, and list items whose line carries a marker."""
    found: Set[str] = set()
    for statement in tree.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        if _is_import(statement) and _key_of(statement) is not None:
            found.update(_bound_names(statement))
            continue
        for small in statement.body:
            found.update(_marked_items(small))
    return found


def _marked_items(small: cst.BaseSmallStatement) -> Iterator[str]:
    """Items of an import list or ``__all__`` whose own line ends in a yolopatch marker (the marker of
    the last item lives in the closing line break; of the others, in their comma)."""
    if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
        tail, in_comma = _import_tail(small)
        items: List[_Item] = _normalised(list(small.names), in_comma)
        names = [_alias_name(alias) for alias in small.names]
    elif isinstance(small, cst.Assign) and isinstance(small.value, (cst.List, cst.Tuple)) and (
            isinstance(small.value, cst.List) or small.value.rpar):
        items, tail = list(small.value.elements), _closer(small.value).whitespace_before
        names = [_string(element) for element in small.value.elements]
    else:
        return
    for index, item in enumerate(items):
        after = tail if index == len(items) - 1 else getattr(item.comma, "whitespace_after", None)
        if isinstance(after, cst.ParenthesizedWhitespace) and markers.parse(after.first_line.comment) is not None:
            yield names[index]
