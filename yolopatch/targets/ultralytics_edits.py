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

Each edit comes twice: a batch function on a parsed module (``insert_classes``, ``add_marked_imports``,
``add_import_names``, ``add_all_names``, ``register_all`` and their removal counterparts), which a plan
chains so that every file is parsed and printed once however many modules it wires (tasks.py takes
~0.2 s to parse), and a one-module function on text (``insert_class``, ``register``, ...), a thin
wrapper that parses, runs the batch function with one item and prints. Both give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import libcst as cst

from yolopatch.transforms import common_py, if_chain, markers
from yolopatch.transforms.common_py import ImportSpec, Template
from yolopatch.transforms.markers import Marker

MODULE_FILE = "ultralytics/nn/modules/yolopatch.py"
MODULES_INIT = "ultralytics/nn/modules/__init__.py"
TASKS = "ultralytics/nn/tasks.py"
MODULES_PACKAGE = "ultralytics.nn.modules"  # what tasks.py imports the layer classes from
OWN_MODULE = ".yolopatch"  # how __init__.py imports MODULE_FILE

# The stub imports what the zoo's templates import, so that inserting them adds no import statement: adding
# one needs libcst's codemod package, whose import alone is an eighth of the 1.5 s an `apply` may take.
# A template needing another import still gets it added, marked, and removed with the last module needing it.
MODULE_FILE_STUB = (
    '"""Modules inserted by yolopatch (`yolopatch apply`); `yolopatch revert` deletes this file."""\n'
    "\n"
    "import math\n"
    "\n"
    "import torch\n"
    "import torch.nn as nn\n"
    "import torch.nn.functional as F\n"
    "\n"
    "__all__ = []\n"
)
# The stub of earlier yolopatch builds: module files they created still start with it.
FIRST_MODULE_FILE_STUB = (
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
Named = Tuple[str, str]  # (name, key): a name yolopatch adds, and the key of the module it belongs to
Branch = Tuple[str, str, str]  # (class name, key, shape) of a parse_model branch


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


def parse(source: str) -> cst.Module:
    """Parse once per distinct text (libcst modules are immutable); refuses text libcst cannot give back
    byte for byte (``lossless.NotLossless``). One cache with ``common_py.parse``: the module file is
    read by both, and tasks.py, parsed for the state, is reused by the plan."""
    return common_py.parse(source)


def text(tree: cst.Module, source: str) -> str:
    """``tree`` printed; ``source`` itself when ``tree`` is still ``parse(source)`` (no edit changed it)."""
    return source if tree is parse(source) else tree.code


def _edited(source: str, edit: Callable[[cst.Module], cst.Module]) -> str:
    """``edit`` run on ``source``'s module, as text (``source`` itself when ``edit`` changed nothing)."""
    return text(edit(parse(source)), source)


# --- the module file ---------------------------------------------------------------------------------------


def insert_classes(tree: cst.Module, templates: Sequence[Template], replace_foreign: bool = False) -> cst.Module:
    """Each of ``templates`` inserted in the module file (start from ``MODULE_FILE_STUB``) and named in its
    ``__all__``, in order. Idempotent; a module already there is restored to its template's code."""
    for template in templates:
        tree = common_py.insert_module(tree, template, replace_foreign=replace_foreign)
        tree = add_all_names(tree, [(template.class_name, template.key)])
    return tree


def remove_classes(tree: cst.Module, removed: Sequence[Tuple[str, str, Optional[Template]]],
                   still_needed: Sequence[ImportSpec] = ()) -> cst.Module:
    """Modules ``(key, main class name, template)`` taken out of the module file, in order, with the
    imports they alone needed (``still_needed``: the imports of the modules that stay)."""
    for key, class_name, template in removed:
        tree = remove_all_names(common_py.remove_module(tree, key, still_needed, template), [class_name])
    return tree


def insert_class(source: str, template: Template, replace_foreign: bool = False) -> str:
    """``insert_classes`` of one template, on text."""
    return insert_classes(parse(source), [template], replace_foreign).code


def remove_class(source: str, key: str, class_name: str, still_needed: Sequence[ImportSpec] = (),
                 template: Optional[Template] = None) -> str:
    """``remove_classes`` of one module, on text."""
    return remove_classes(parse(source), [(key, class_name, template)], still_needed).code


def is_stub(source: str) -> bool:
    """True when nothing but the stub is left: the engine deletes the file instead of writing it."""
    return source.replace("\r\n", "\n") in (MODULE_FILE_STUB, FIRST_MODULE_FILE_STUB)


# --- marked import statements (__init__.py) -----------------------------------------------------------------


def import_statement(module: str, name: str, key: str) -> str:
    return f"from {module} import {name}  {Marker(key).render()}\n"


def add_marked_imports(tree: cst.Module, module: str, names: Sequence[Named]) -> cst.Module:
    """``from module import name  # yolopatch: key`` for each ``(name, key)``, in order, after the last
    top-level import (once per key and name)."""
    body = list(tree.body)
    for name, key in names:
        if any(_is_marked_import(statement, key, name) for statement in body):
            continue
        statement = cst.parse_statement(import_statement(module, name, key), config=tree.config_for_parsing)
        body.insert(max((i for i, s in enumerate(body) if _is_import(s)), default=-1) + 1, statement)
    return tree if len(body) == len(tree.body) else tree.with_changes(body=body)


def remove_marked_imports(tree: cst.Module, keys: Iterable[str]) -> cst.Module:
    """Every import statement carrying ``# yolopatch: key`` for one of ``keys`` taken out."""
    wanted = set(keys)
    body = [s for s in tree.body if not (_is_import(s) and _key_of(s) in wanted)]
    return tree if len(body) == len(tree.body) else tree.with_changes(body=body)


def add_marked_import(source: str, module: str, name: str, key: str) -> str:
    """``add_marked_imports`` of one name, on text."""
    return _edited(source, lambda tree: add_marked_imports(tree, module, [(name, key)]))


def remove_marked_import(source: str, key: str) -> str:
    """``remove_marked_imports`` of one key, on text."""
    return _edited(source, lambda tree: remove_marked_imports(tree, [key]))


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


def add_import_names(tree: cst.Module, module: str, names: Sequence[Named]) -> cst.Module:
    """Each ``name`` not imported yet appended, in order, to the first top-level ``from module import (...)``,
    in the list's own layout (raises ListNotFound when there is none and ``names`` is not empty)."""
    if not names:
        return tree
    node = _import_from(tree, module)
    tail, in_comma = _import_tail(node)
    items = _normalised(list(node.names), in_comma)  # type: ignore[arg-type]
    for name, key in names:
        if name not in (_alias_name(item) for item in items):  # type: ignore[arg-type]
            items, tail = _appended(items, tail, cst.ImportAlias(name=cst.Name(name)), key, False)
    if len(items) == len(node.names):  # type: ignore[arg-type]
        return tree
    return _replace_small(tree, node, _import_with(node, items, tail, in_comma))


def remove_import_names(tree: cst.Module, module: str, names: Sequence[str]) -> cst.Module:
    """``names`` taken out of the first top-level ``from module import ...``, in order (undoes
    ``add_import_names``; refuses to empty the list)."""
    if not names:
        return tree
    node = _import_from(tree, module)
    tail, in_comma = _import_tail(node)
    items = _normalised(list(node.names), in_comma)  # type: ignore[arg-type]
    for name in names:
        index = next((i for i, item in enumerate(items) if _alias_name(item) == name), None)  # type: ignore[arg-type]
        if index is None:
            continue
        if len(items) == 1:
            raise ValueError(f"refusing to empty `from {module} import {name}`")
        items, tail = _dropped(items, tail, index)
    if len(items) == len(node.names):  # type: ignore[arg-type]
        return tree
    return _replace_small(tree, node, _import_with(node, items, tail, in_comma))


def add_import_name(source: str, module: str, name: str, key: str) -> str:
    """``add_import_names`` of one name, on text."""
    return _edited(source, lambda tree: add_import_names(tree, module, [(name, key)]))


def remove_import_name(source: str, module: str, name: str) -> str:
    """``remove_import_names`` of one name, on text."""
    return _edited(source, lambda tree: remove_import_names(tree, module, [name]))


def all_names(source: str) -> Optional[List[str]]:
    """The strings of the top-level ``__all__`` list or tuple; None when the file has none."""
    found = _all_assignment(parse(source))
    return None if found is None else [_string(element) for element in found[1].elements]


def add_all_names(tree: cst.Module, names: Sequence[Named]) -> cst.Module:
    """Each ``"name"`` not listed yet appended, in order, to ``__all__`` (a list or parenthesised tuple), in
    its own layout and quotes (raises ListNotFound when there is none and ``names`` is not empty)."""
    if not names:
        return tree
    found = _all_assignment(tree)
    if found is None:
        raise ListNotFound("no top-level __all__ = [...] or (...)")
    assign, container = found
    items: List[_Item] = list(container.elements)
    tail = _closer(container).whitespace_before
    for name, key in names:
        if name in (_string(item) for item in items):  # type: ignore[arg-type]
            continue
        quote = _quote(items)  # type: ignore[arg-type]
        new = cst.Element(value=cst.SimpleString(f"{quote}{name}{quote}"))
        items, tail = _appended(items, tail, new, key, isinstance(container, cst.Tuple))
    if len(items) == len(container.elements):
        return tree
    return _replace_small(tree, assign, assign.with_changes(value=_container_with(container, items, tail)))


def remove_all_names(tree: cst.Module, names: Sequence[str]) -> cst.Module:
    """``names`` taken out of ``__all__``, in order (undoes ``add_all_names``); absent ones are skipped."""
    found = _all_assignment(tree) if names else None
    if found is None:
        return tree
    assign, container = found
    items: List[_Item] = list(container.elements)
    tail = _closer(container).whitespace_before
    for name in names:
        index = next((i for i, item in enumerate(items) if _string(item) == name), None)  # type: ignore[arg-type]
        if index is not None:
            items, tail = _dropped(items, tail, index)
    if len(items) == len(container.elements):
        return tree
    return _replace_small(tree, assign, assign.with_changes(value=_container_with(container, items, tail)))


def add_all_name(source: str, name: str, key: str) -> str:
    """``add_all_names`` of one name, on text."""
    return _edited(source, lambda tree: add_all_names(tree, [(name, key)]))


def remove_all_name(source: str, name: str) -> str:
    """``remove_all_names`` of one name, on text."""
    return _edited(source, lambda tree: remove_all_names(tree, [name]))


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
                if (_assigns(small, "__all__") and isinstance(small.value, (cst.List, cst.Tuple))
                        and (isinstance(small.value, cst.List) or small.value.rpar)):
                    return small, small.value
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


def register_all(tree: cst.Module, branches: Sequence[Branch]) -> cst.Module:
    """The marked branch of each ``(class_name, key, shape)`` added, in order, before parse_model's final
    ``else`` (idempotent: a branch already there for ``key`` is restored to yolopatch's exact code)."""
    if not branches:
        return tree
    function = _parse_model(tree)
    head = _channel_chain(function)
    links = if_chain.chain(head)
    changed = False
    for class_name, key, shape in branches:
        branch = cst.parse_statement(branch_code(class_name, key, shape), config=tree.config_for_parsing)
        assert isinstance(branch, cst.If)
        position = next((i for i, link in enumerate(links) if _key_of(link) == key), None)
        if position is None:
            links.append(branch)
            changed = True
            continue
        restored = branch.with_changes(leading_lines=links[position].leading_lines)
        changed = changed or _link_code(restored) != _link_code(links[position])
        links[position] = restored
    if not changed:
        return tree
    return _with_chain(tree, function, head, links)


def unregister_all(tree: cst.Module, keys: Iterable[str]) -> cst.Module:
    """yolopatch's branches for ``keys`` taken out of parse_model (undoes ``register_all``)."""
    wanted = set(keys)
    if not wanted:
        return tree
    function = _parse_model(tree)
    head = _channel_chain(function)
    links = if_chain.chain(head)
    kept = [link for link in links if _key_of(link) not in wanted]
    return tree if len(kept) == len(links) else _with_chain(tree, function, head, kept)


def register(source: str, class_name: str, key: str, shape: str = WIDTH) -> str:
    """``register_all`` of one branch, on text."""
    return _edited(source, lambda tree: register_all(tree, [(class_name, key, shape)]))


def unregister(source: str, key: str) -> str:
    """``unregister_all`` of one key, on text."""
    return _edited(source, lambda tree: unregister_all(tree, [key]))


def _link_code(link: cst.If) -> str:
    """One link of the chain printed on its own (its ``elif``/``else`` successors left out)."""
    return cst.Module(body=[link.with_changes(orelse=None)]).code


def _with_chain(tree: cst.Module, function: cst.FunctionDef, head: cst.If, links: Sequence[cst.If]) -> cst.Module:
    """``tree`` with parse_model's chain at ``head`` re-linked from ``links`` (ending in the old final else)."""
    new_head = if_chain.rebuild(links, if_chain.chain(head)[-1].orelse)
    return _with_function(tree, function, function.deep_replace(head, new_head))


def _parse_model(tree: cst.Module) -> cst.FunctionDef:
    for statement in tree.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == "parse_model":
            return statement
    raise ParseModelNotFound("tasks.py has no top-level parse_model function")


def _with_function(tree: cst.Module, old: cst.FunctionDef, new: cst.CSTNode) -> cst.Module:
    return tree.with_changes(body=[new if statement is old else statement for statement in tree.body])


def _is_channel_test(test: cst.BaseExpression) -> bool:
    """``m in <literal>`` (8.0 to 8.3.0) or ``m in base_modules`` (late 8.3, 8.4)."""
    return if_chain.is_membership(test, (*if_chain.LITERAL_CONTAINERS, cst.Name))


def _assigns(small: cst.BaseSmallStatement, name: str) -> bool:
    """``name = ...`` with a single target."""
    return isinstance(small, cst.Assign) and len(small.targets) == 1 and if_chain.is_name(small.targets[0].target, name)


def _members(container: _Container) -> Tuple[str, ...]:
    return tuple(cst.helpers.get_full_name_for_node(e.value) or "" for e in container.elements)


def _named_container(function: cst.FunctionDef, name: str) -> Optional[_Container]:
    """The set literal behind ``name = frozenset({...})`` (or ``= {...}``) at parse_model's top level."""
    for statement in function.body.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if _assigns(small, name):
                value = small.value  # type: ignore[attr-defined]
                if (isinstance(value, cst.Call) and isinstance(value.func, cst.Name)
                        and value.func.value in ("frozenset", "set") and value.args):
                    value = value.args[0].value
                if isinstance(value, (cst.List, cst.Tuple, cst.Set)):
                    return value
    return None


def _channel_chain(function: cst.FunctionDef) -> cst.If:
    for candidate in if_chain.membership_ifs(function.body.body, _is_channel_test):
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


@lru_cache(maxsize=8)
def exported_names(init_source: str) -> FrozenSet[str]:
    """What ``nn/modules/__init__.py`` imports or lists in ``__all__``, yolopatch's own marked names left out."""
    init = parse(init_source)
    taken = set(_top_level_names(init)) | {name for name in (all_names(init_source) or ()) if name}
    return frozenset(taken - _marked_names(init))


@lru_cache(maxsize=8)
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
