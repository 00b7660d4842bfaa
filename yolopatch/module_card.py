"""One module in full, for people: what `yolopatch show KEY` and `list --verbose` print (no torch, no libcst)."""

from __future__ import annotations

from typing import List, Optional, Tuple

from rich.markup import escape

from yolopatch import ui
from yolopatch.catalog import SHOW_WIDTHS, ModuleSpec, params_at


def yaml_row(spec: ModuleSpec) -> str:
    """The model-YAML row that uses the module at width 1024 with its default hyper-parameters."""
    args = ["1024"] if spec.registration == "width" else []
    return f"[-1, 1, {spec.class_name}, [{', '.join(args)}]]"


def fields(spec: ModuleSpec, state: Optional[str]) -> List[Tuple[str, str]]:
    """(label, text) pairs, in the order shown."""
    params = ", ".join(f"{width}: {'-' if count is None else f'{count:,}'}"
                       for width, count in ((width, params_at(spec, width)) for width in SHOW_WIDTHS))
    hyper = ", ".join(f"{name}={value!r}" for name, value in spec.hyperparameters.items()) or "none"
    rows = [
        ("class", spec.class_name + (f" (also: {', '.join(spec.aliases)})" if spec.aliases else "")),
        ("paper", spec.citation),
        ("official code", f"https://github.com/{spec.official_code}" if spec.official_code else "none published"),
        ("kind", spec.kind),
        ("what it does", spec.summary),
        ("default placement", ", ".join(spec.placement) or "-"),
        ("YAML row", f"{yaml_row(spec)}  (args after the width: {hyper})" if spec.registration == "width"
         else f"{yaml_row(spec)}  (no width: args are the hyper-parameters, {hyper})"),
        ("parameters", spec.param_count_formula),
        ("at input width c", params),
    ]
    if spec.requires:
        rows.append(("requires", spec.requires))
    rows += [("constraint", text) for text in spec.constraints]
    if state is not None:
        rows.append(("in this tree", state))
    rows.append(("apply", f"yolopatch apply {spec.key}"))
    return rows


def print_module(spec: ModuleSpec, state: Optional[str] = None) -> None:
    from rich.table import Table

    ui.stdout.print(f"[bold]{escape(spec.key)}[/bold]: {escape(spec.class_name)} v{spec.version}")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, text in fields(spec, state):
        grid.add_row(escape(label), escape(text))
    ui.stdout.print(grid)
