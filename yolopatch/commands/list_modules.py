"""`yolopatch list`: the catalogue as a compact table, and with a tree, each module's state in it.

The default is one row per module that fits 100 columns (the long texts are in `yolopatch show KEY`
and `list --verbose`). Never imports torch or libcst: the state column is read from the markers
yolopatch leaves on the lines it inserts, with the standard library's tokenizer (``marker_states``);
`yolopatch status` and `check` also verify the inserted code itself (hand edits).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from yolopatch import catalog, ui
from yolopatch.catalog import TYPICAL_WIDTH, ModuleSpec, describe, params_at
from yolopatch.targets.detect import SUPPORTED_LINE
from yolopatch.inventory import NOT_APPLIED, MarkedFiles, find_tree, tree_states

# --------------------------------------------------------------------------------------------
# What is shown


def compact_count(count: Optional[int]) -> str:
    """``66112`` -> ``66.1k``; ``8604960`` -> ``8.60M``; exact below 10,000."""
    if count is None:
        return "-"
    if count < 10_000:
        return f"{count:,}"
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def short_title(paper: str) -> str:
    """The name a paper goes by: its title up to the colon (``SeaFormer``, ``A^2-Nets``)."""
    head, colon, _ = paper.partition(":")
    return head.strip() if colon and head.strip() else paper


def paper_cell(spec: ModuleSpec, width: int) -> str:
    """``<title> <year>`` in at most ``width`` characters: the full title, else the name before its
    colon, else the first author's surname, else the title cut with an ellipsis; the year always stays."""
    year = f" {spec.year}"
    surname = spec.authors.split()[0].rstrip(",") if spec.authors.split() else spec.paper
    for title in (spec.paper, short_title(spec.paper), surname):
        if len(title) + len(year) <= width:
            return title + year
    room = max(width - len(year) - 1, 1)
    return spec.paper[:room].rstrip() + "…" + year


COLUMNS = ("key", "class", "paper", "kind", "placement", "params")
STATE_COLUMN = "state"
PAPER = COLUMNS.index("paper")
GAP = 2  # spaces between columns
MIN_PAPER = 8  # narrower than this (a terminal under ~100 columns in a tree), the paper column goes


def table_rows(specs: Sequence[ModuleSpec], states: Optional[Mapping[str, str]],
               width: int = 100) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the compact table; the paper column is cut (or left out) to fit ``width``."""
    header = list(COLUMNS) + ([STATE_COLUMN] if states is not None else [])
    rows = []
    for spec in specs:
        row = [spec.key, spec.class_name, "", spec.kind, ",".join(spec.placement) or "-",
               compact_count(params_at(spec, TYPICAL_WIDTH))]
        if states is not None:
            state = states.get(spec.key, NOT_APPLIED)
            row.append("-" if state == NOT_APPLIED else state)
        rows.append(row)
    others = sum(max(len(cell) for cell in column) for i, column in enumerate(zip(header, *rows)) if i != PAPER)
    room = width - others - GAP * (len(header) - 1)
    if room < MIN_PAPER:
        return header[:PAPER] + header[PAPER + 1:], [row[:PAPER] + row[PAPER + 1:] for row in rows]
    for spec, row in zip(specs, rows):
        row[PAPER] = paper_cell(spec, room)
    return header, rows


def print_table(specs: Sequence[ModuleSpec], states: Optional[Mapping[str, str]],
                tree: Optional[MarkedFiles]) -> None:
    from rich import box
    from rich.table import Table

    header, rows = table_rows(specs, states, ui.stdout.width)
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, GAP - 1, 0, 0),
                 header_style="bold")
    for name in header:
        # Only the class column may shrink further (a terminal too narrow even without the paper column).
        grid.add_column(name, no_wrap=name != "class", overflow="ellipsis",
                        justify="right" if name == "params" else "left")
    for row in rows:
        grid.add_row(*row)
    ui.stdout.print(grid)
    ui.stdout.print(f"{len(specs)} modules (params: at input width {TYPICAL_WIDTH}). "
                    "Details: yolopatch show KEY, or yolopatch list --verbose.", markup=False, soft_wrap=False)
    if tree is None:
        ui.stdout.print(f"Codebases: {SUPPORTED_LINE}.", markup=False, soft_wrap=False)
    else:
        ui.stdout.print(f"state: in {ui.display_path(tree.root)}, from yolopatch's markers; `yolopatch status` "
                        "also checks the code for hand edits.", markup=False, soft_wrap=False)


def list_modules(repo: Optional[Path] = None, as_json: bool = False, verbose: bool = False) -> int:
    specs = catalog.all_modules()
    tree = find_tree(repo)
    states = tree_states(tree, specs) if tree is not None else None
    if as_json:
        ui.print_json([describe(spec, states[spec.key] if states else None) for spec in specs])
        return 0
    if verbose:
        from yolopatch.module_card import print_module

        for number, spec in enumerate(specs):
            if number:
                ui.stdout.print()
            print_module(spec, states[spec.key] if states else None)
        return 0
    print_table(specs, states, tree)
    return 0
