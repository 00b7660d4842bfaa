"""parse_model's ``if m in {...}: ... elif m is X: ... else:`` chain, for every codebase's transforms.

Pure libcst helpers shared by YOLOv5's ``yolo_py`` and Ultralytics' ``ultralytics_edits``: find the
``if m in <container>`` tests (a plain walk: matchers' findall over parse_model costs more than the
whole edit), unroll a chain into its links, re-link them, and read an identity branch's name.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence, Union

import libcst as cst
import libcst.matchers as m

IDENTITY = m.Comparison(left=m.Name("m"), comparisons=[m.ComparisonTarget(operator=m.Is())])


def membership_ifs(statements: Iterable[cst.CSTNode], test: m.BaseMatcherNode) -> Iterator[cst.If]:
    """Every ``if`` in ``statements`` whose test matches ``test``, outermost first."""
    for statement in statements:
        if isinstance(statement, cst.If):
            if m.matches(statement.test, test):
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
    if m.matches(link.test, IDENTITY):
        return cst.helpers.get_full_name_for_node(link.test.comparisons[0].comparator)  # type: ignore[attr-defined]
    return None
