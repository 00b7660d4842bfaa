"""`yolopatch revert` (alias `unpatch`): take yolopatch's modules out again, byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from yolopatch import catalog
from yolopatch.changes import FileChange
from yolopatch.commands.apply import finish
from yolopatch.commands.variant import generated_variants
from yolopatch.errors import YolopatchError
from yolopatch.state import EDITED, Sources, imports_needed_by, module_states
from yolopatch.transforms import common_py, yolo_py
from yolopatch.tree import locate


def revert(repo: Path, names: Sequence[str], *, dry_run: bool = False, force: bool = False) -> int:
    tree = locate(repo)
    sources = Sources.read(tree)
    states = module_states(sources)
    variants = generated_variants(tree)
    if names:
        keys = [spec.key for spec in catalog.resolve(list(names))]
    else:
        keys = [key for key, state in states.items() if state.present or any(key in v.keys for v in variants)]
    for key in keys:
        state = states[key]
        if state.status == EDITED and not force:
            path, line = state.edited_location(tree)
            raise YolopatchError(
                f"yolopatch's {state.spec.class_name} was edited by hand; revert would throw the edits away",
                path=path, line=line, hint=f"keep a copy of your edits and run `yolopatch revert {key} --force`")
    remaining = [key for key, state in states.items() if state.inserted is not None and key not in keys]
    common, yolo = common_py.parse(sources.common), yolo_py.parse(sources.yolo)
    for key in keys:
        common = common_py.remove_module(common, key, still_needed=imports_needed_by(remaining))
        yolo = yolo_py.unregister_module(yolo, states[key].spec.class_name, key)
    changes: List[FileChange] = [
        FileChange(tree.common_py, sources.common, common.code),
        FileChange(tree.yolo_py, sources.yolo, yolo.code),
    ]
    for variant in variants:
        if not set(variant.keys) & set(keys):
            continue
        if variant.edited and not force:
            raise YolopatchError("generated variant was edited by hand", path=variant.path, line=1,
                                 hint="keep a copy, then run `yolopatch revert --force` (or delete it yourself)")
        changes.append(FileChange(variant.path, variant.text, None))
    what = ", ".join(keys) if keys else "yolopatch"
    return finish(tree, changes, dry_run, what=what, verb="reverted")
