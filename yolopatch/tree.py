"""Find and describe a YOLOv5 tree: its layout, files and version."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from yolopatch.errors import YolopatchError

CHECKOUT = "checkout"  # <root>/models/yolo.py, imports `from models...` (a git clone of ultralytics/yolov5)
PACKAGE = "package"  # <root>/yolov5/models/yolo.py, imports `from yolov5.models...` (the PyPI package)


@dataclass(frozen=True)
class Tree:
    """A located YOLOv5 tree."""

    root: Path
    layout: str

    codebase = "yolov5"

    @property
    def package_dir(self) -> Path:
        """The folder that holds models/ and utils/ (the import root's package, or the root itself)."""
        return self.root / "yolov5" if self.layout == PACKAGE else self.root

    @property
    def models_dir(self) -> Path:
        return self.package_dir / "models"

    @property
    def common_py(self) -> Path:
        return self.models_dir / "common.py"

    @property
    def yolo_py(self) -> Path:
        return self.models_dir / "yolo.py"

    @property
    def state_dir(self) -> Path:
        """``.yolopatch`` in the tree's root: journals of runs in progress, records of ``--replace``,
        the list of variants written outside models/. Removed whenever it is empty."""
        return self.root / ".yolopatch"

    @property
    def import_root(self) -> Path:
        """The folder to put on sys.path so that the tree's own imports resolve."""
        return self.root

    @property
    def models_module(self) -> str:
        """Dotted name of the models package, as the tree's own code imports it."""
        return "yolov5.models" if self.layout == PACKAGE else "models"

    def writable_folders(self) -> List[Path]:
        """The folders yolopatch writes files into (where its temporary and backup files may be left)."""
        return sorted({self.models_dir, self.common_py.parent, self.yolo_py.parent, self.models_dir / "hub"})

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def version(self) -> Optional[str]:
        """The release this tree comes from, when it says so (package metadata or a git tag)."""
        return _package_version(self) if self.layout == PACKAGE else git_version(self.root)


def _is_models_dir(path: Path) -> bool:
    return (path / "models" / "yolo.py").is_file() and (path / "models" / "common.py").is_file()


def _candidates(start: Path) -> Iterator[Path]:
    current = start.resolve()
    yield current
    yield from current.parents


def yolov5_tree_at(folder: Path) -> Optional[Tree]:
    """The YOLOv5 tree rooted at ``folder`` (checkout or package layout), or None."""
    nested = folder / "yolov5"
    if _is_models_dir(nested) and (nested / "__init__.py").is_file() and _imports_package(nested):
        return Tree(folder, PACKAGE)
    if _is_models_dir(folder):
        # Inside a package layout, <root>/yolov5 itself also looks like a checkout: prefer the package.
        if folder.name == "yolov5" and (folder / "__init__.py").is_file() and _imports_package(folder):
            return Tree(folder.parent, PACKAGE)
        return Tree(folder, CHECKOUT)
    return None


def start_folders(start: Path) -> Iterator[Path]:
    """``start`` (or its folder) and every folder above it; refuses a path that does not exist."""
    if not start.exists():
        raise YolopatchError("no such directory", path=start, hint="pass --repo PATH to a YOLO checkout")
    yield from _candidates(start if start.is_dir() else start.parent)


def not_a_tree(start: Path, codebases: str = "YOLOv5") -> YolopatchError:
    folder = start.resolve() if start.is_dir() else start.resolve().parent
    return YolopatchError(f"not inside a {codebases} tree: neither {folder} nor a folder above it holds one",
                          hint="pass --repo PATH to a checkout, or run `yolopatch clone`")


def locate(start: Path) -> Tree:
    """The YOLOv5 tree at ``start`` or in one of its parents (like git finds its repository). A YOLOv7 or
    YOLOv9 tree is refused; an Ultralytics tree too, for the commands that support only YOLOv5 so far."""
    from yolopatch.targets.detect import refuse_unsupported, ultralytics_package

    for folder in start_folders(start):
        if ultralytics_package(folder) is not None:
            raise YolopatchError("this is an Ultralytics tree; this command supports YOLOv5 trees only so far",
                                 path=folder, hint="apply, revert, status and list support Ultralytics trees")
        refuse_unsupported(folder)
        tree = yolov5_tree_at(folder)
        if tree is not None:
            return tree
    raise not_a_tree(start)


def _imports_package(folder: Path) -> bool:
    try:
        text = (folder / "models" / "yolo.py").read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yolov5.") for node in ast.walk(tree)
    )


def _package_version(tree: Tree) -> Optional[str]:
    return init_version(tree.package_dir / "__init__.py")


def init_version(init: Path) -> Optional[str]:
    """The ``__version__ = "..."`` a package's ``__init__.py`` assigns, read with ``ast`` (nothing imported)."""
    try:
        module = ast.parse(init.read_bytes().decode("utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in module.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
                and isinstance(node.value, ast.Constant)):
            return str(node.value.value)
    return None


def git_version(root: Path) -> Optional[str]:
    """``git describe --tags`` of a checkout, via GitPython; None when it is no git repository."""
    try:
        import git  # GitPython: imported here, it costs time on every command that does not need it
    except ImportError:
        return None
    try:
        repository = git.Repo(root, search_parent_directories=False)
        return repository.git.describe("--tags", "--always")
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, ValueError):
        return None
