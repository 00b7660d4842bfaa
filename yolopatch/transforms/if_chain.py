"""parse_model's ``if m in {...}: ... elif m is X: ... else:`` chain, for every codebase's transforms.

Pure libcst helpers shared by YOLOv5's ``yolo_py`` and Ultralytics' ``ultralytics_edits``: find the
``if m in <container>`` tests (a plain walk: matchers' findall over parse_model costs more than the
whole edit), unroll a chain into its links, re-link them, and read an identity branch's name.

The tests are recognised with isinstance predicates, not ``libcst.matchers``: importing the matchers costs
0.18 s, an eighth of the 1.5 s a whole ``apply`` may take (benchmarks/cli.py).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Type, Union

import libcst as cst

LITERAL_CONTAINERS: Tuple[Type[cst.BaseExpression], ...] = (cst.List, cst.Tuple, cst.Set)


def is_name(node: Optional[cst.CSTNode], value: str) -> bool:
    return isinstance(node, cst.Name) and node.value == value


def _only_comparison(test: cst.BaseExpression) -> Optional[cst.ComparisonTarget]:
    """The one ``m <op> X`` of ``test``; None for anything else (other left side, chained comparisons)."""
    if isinstance(test, cst.Comparison) and is_name(test.left, "m") and len(test.comparisons) == 1:
        return test.comparisons[0]
    return None


def is_membership(test: cst.BaseExpression, containers: Tuple[Type[cst.BaseExpression], ...] = LITERAL_CONTAINERS
                  ) -> bool:
    """``m in <container>``, the container one of ``containers`` (a list, tuple or set literal by default)."""
    comparison = _only_comparison(test)
    return (comparison is not None and isinstance(comparison.operator, cst.In)
            and isinstance(comparison.comparator, containers))


def is_identity(test: cst.BaseExpression) -> bool:
    """``m is X``."""
    comparison = _only_comparison(test)
    return comparison is not None and isinstance(comparison.operator, cst.Is)


def membership_ifs(statements: Iterable[cst.CSTNode], test: Callable[[cst.BaseExpression], bool]
                    ) -> Iterator[cst.If]:
    """Every ``if`` in ``statements`` whose test ``test`` accepts, outermost first."""
    for statement in statements:
        if isinstance(statement, cst.If):
            if test(statement.test):
                yield statement
            yield from membership_ifs(statement.body.body, test)
            if isinstance(statement.orelse, cst.If):
                yield from membership_ifs([statement.orelse], test)
            elif isinstance(statement.orelse, cst.Else):
                yield from membership_ifs(statement.orelse.body.body, test)
        elif isinstance(statement, (cst.For, cst.While, cst.With, cst.Try)):
            yield from membership_ifs(statement.body.body, test)


def chain(node: cst.If) -> List[cst.If]:
    """The ``if`` and each ``elif`` of the chain starting at ``node``."""
    links = [node]
    while isinstance(links[-1].orelse, cst.If):
        links.append(links[-1].orelse)
    return links


def rebuild(links: Sequence[cst.If], tail: Union[cst.If, cst.Else, None]) -> Union[cst.If, cst.Else, None]:
    """Re-link ``links`` as an if/elif chain ending in ``tail``."""
    result = tail
    for link in reversed(links):
        result = link.with_changes(orelse=result)
    return result


def identity_name(link: cst.If) -> Optional[str]:
    """``X`` of an ``elif m is X:`` link; None for any other test."""
    if is_identity(link.test):
        return cst.helpers.get_full_name_for_node(link.test.comparisons[0].comparator)  # type: ignore[attr-defined]
    return None
