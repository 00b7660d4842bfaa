"""`yolopatch list`: the catalogue as a compact table, and with a tree, each module's state in it.

The default is one row per module that fits 100 columns (the long texts are in `yolopatch show KEY`
and `list --verbose`). Never imports torch or libcst: the state column is read from the markers
yolopatch leaves on the lines it inserts, with the standard library's tokenizer (``marker_states``);
`yolopatch status` and `check` also verify the inserted code itself (hand edits).
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from yolopatch import catalog, ui
from yolopatch.catalog import ModuleSpec
from yolopatch.errors import YolopatchError
from yolopatch.tree import Tree, locate

# The input width at which `list` shows parameter counts: yolov5s's P4 (the middle of the
# 128/256/512 widths the default placements meet; `show KEY` gives more widths).
TYPICAL_WIDTH = 256
SHOW_WIDTHS = (64, 128, 256, 512, 1024)

MARKER_PREFIX = "# yolopatch:"  # the marker format of yolopatch/transforms/markers.py
APPLIED, OUTDATED, PARTIAL, HAND_PASTED, NOT_APPLIED, UNREADABLE = (
    "applied", "outdated", "partial", "hand-pasted", "not applied", "unreadable")


# --------------------------------------------------------------------------------------------
# State from the markers (no libcst)


@dataclass(frozen=True)
class MarkerScan:
    """What the yolopatch markers and top-level class names of one Python file say."""

    versions: Mapping[str, Optional[int]]  # module key -> template version on its marked main class
    keys: Set[str]  # every module key with a marker in the file
    unmarked_classes: Set[str]  # top-level classes without a marker on their header line


def scan_markers(source: str) -> MarkerScan:
    """Markers (``# yolopatch: soca v1 sha256:...``) and unmarked top-level classes of ``source``.

    Uses ``tokenize`` (comments are tokens there; ``ast`` drops them): no libcst, no regex over
    Python. Raises ``tokenize.TokenError`` or ``SyntaxError`` for text that does not tokenize.
    """
    versions: Dict[str, Optional[int]] = {}
    keys: Set[str] = set()
    classes: Dict[int, str] = {}  # line -> top-level class defined on it
    marked_lines: Set[int] = set()
    depth, previous = 0, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NAME and depth == 0 and previous is not None \
                and previous.type == tokenize.NAME and previous.string == "class":
            classes[token.start[0]] = token.string
        elif token.type == tokenize.COMMENT and token.string.startswith(MARKER_PREFIX):
            words = token.string[len(MARKER_PREFIX):].split()
            if not words or words[:2] == ["added", "import"]:
                continue
            key, version = words[0], _version(words[1:])
            keys.add(key)
            marked_lines.add(token.start[0])
            if version is not None or key not in versions:
                versions[key] = version
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = token
    unmarked = {name for line, name in classes.items() if line not in marked_lines}
    return MarkerScan(versions, keys, unmarked)


def _version(words: Sequence[str]) -> Optional[int]:
    for word in words:
        if word.startswith("v") and word[1:].isascii() and word[1:].isdigit():
            return int(word[1:])
    return None


def marker_states(common: MarkerScan, yolo: MarkerScan, specs: Iterable[ModuleSpec]) -> Dict[str, str]:
    """Each module's state from the markers in models/common.py and models/yolo.py.

    applied: its main class (with a version) and its parse_model branch are marked; outdated: the
    marked version is not this yolopatch's; partial: only one of the two; hand-pasted: a class of
    its name without a marker; else not applied. A hand edit inside marked code is not seen here.
    """
    states = {}
    for spec in specs:
        version = common.versions.get(spec.key)
        has_class, registered = version is not None, spec.key in yolo.keys
        if has_class and registered:
            states[spec.key] = APPLIED if version == spec.version else OUTDATED
        elif has_class or registered or spec.key in common.keys:
            states[spec.key] = PARTIAL
        elif spec.class_name in common.unmarked_classes:
            states[spec.key] = HAND_PASTED
        else:
            states[spec.key] = NOT_APPLIED
    return states


def tree_states(tree: Tree, specs: Sequence[ModuleSpec]) -> Dict[str, str]:
    """``marker_states`` of the tree's files; every module ``unreadable`` when one does not tokenize."""
    try:
        scans = [scan_markers(path.read_bytes().decode("utf-8")) for path in (tree.common_py, tree.yolo_py)]
    except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError):
        return {spec.key: UNREADABLE for spec in specs}
    return marker_states(scans[0], scans[1], specs)


def find_tree(repo: Optional[Path]) -> Optional[Tree]:
    """The tree at ``repo`` (must be one), else the tree around the current directory, if any."""
    if repo is not None:
        return locate(repo)
    try:
        return locate(Path.cwd())
    except YolopatchError:
        return None  # not in a tree: the catalogue alone


# --------------------------------------------------------------------------------------------
# What is shown


def describe(spec: ModuleSpec, state: Optional[str] = None) -> Dict[str, Any]:
    """One module as the JSON of `list --json` and `show --json`."""
    entry: Dict[str, Any] = {
        "key": spec.key,
        "class": spec.class_name,
        "version": spec.version,
        "aliases": list(spec.aliases),
        "paper": spec.paper,
        "authors": spec.authors,
        "venue": spec.venue,
        "year": spec.year,
        "kind": spec.kind,
        "registration": spec.registration,
        "official_code": spec.official_code,
        "summary": spec.summary,
        "hyperparameters": spec.hyperparameters,
        "param_count": spec.param_count_formula,
        "params_at": {str(width): params_at(spec, width) for width in SHOW_WIDTHS},
        "placement": list(spec.placement),
        "constraints": list(spec.constraints),
    }
    if state is not None:
        entry["status"] = state
    return entry


def params_at(spec: ModuleSpec, width: int) -> Optional[int]:
    """Parameters at input width ``width`` with the default hyper-parameters (None: not buildable there)."""
    try:
        if not spec.accepts_width(width):
            return None
        return spec.param_count(width)
    except (ValueError, ZeroDivisionError, TypeError):
        return None


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


def print_table(specs: Sequence[ModuleSpec], states: Optional[Mapping[str, str]], tree: Optional[Tree]) -> None:
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
    if tree is not None:
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
        from yolopatch.commands.show import print_module

        for number, spec in enumerate(specs):
            if number:
                ui.stdout.print()
            print_module(spec, states[spec.key] if states else None)
        return 0
    print_table(specs, states, tree)
    return 0
