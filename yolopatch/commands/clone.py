"""`yolopatch clone`: get a YOLOv5 tree, from GitHub or from the package index.

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

Everything is built in a staging folder next to DEST and renamed into place at the end, so a failed or
interrupted clone leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import urlsplit

from yolopatch import ui
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.tree import Tree, locate

DEFAULT_URL = "https://github.com/ultralytics/yolov5.git"
URL_ENV = "YOLOPATCH_YOLOV5_URL"
FIND_LINKS_ENV = "YOLOPATCH_PIP_FIND_LINKS"
LATEST_TAG = "v7.0"
SOURCES = ("auto", "git", "pypi")
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


def clone(dest: Path, ref: str = LATEST_TAG, source: str = "auto", url: Optional[str] = None) -> int:
    """Put a YOLOv5 tree at ``dest`` (release ``ref``) from ``source``; 0 when DEST holds one afterwards."""
    if source not in SOURCES:
        raise UsageError(f"unknown source {source!r}", hint=f"choose from {', '.join(SOURCES)}")
    ref = normalise_ref(ref)
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


def _describe(tree: Tree) -> str:
    version = tree.version()
    return f"{tree.layout} layout" + (f", version {version}" if version else "")


def _check_destination(dest: Path) -> Optional[Tree]:
    """The YOLOv5 tree already at ``dest``, None when DEST is absent or empty; refuse anything else."""
    if not dest.exists() and not dest.is_symlink():
        return None
    if not dest.is_dir():
        raise YolopatchError("exists and is not a directory; nothing touched", path=dest,
                             hint="choose another destination")
    tree = tree_at(dest)
    if tree is not None:
        return tree
    if any(dest.iterdir()):
        raise YolopatchError("exists, is not empty and is not a YOLOv5 tree; nothing touched", path=dest,
                             hint="choose another destination or empty it")
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
    import git

    timeout = LS_REMOTE_TIMEOUT_S if timeout is None else timeout
    try:
        listed = git.Git().execute(["git", "ls-remote", url, ref], kill_after_timeout=timeout,
                                   env=_git_environment())
    except git.GitCommandError as error:
        if _killed(error):
            return f"git ls-remote got no answer within {timeout:g} s"
        return _git_reason([], error)
    if not str(listed).strip():
        return f"no branch or tag {ref!r} there"
    return None


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


def _commit_all(root: Path, message: str) -> None:
    """git init + add everything + one commit by a fixed local author (no user config needed)."""
    import git

    repository = git.Repo.init(root)
    exclude = root / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a", encoding="utf-8") as handle:
        handle.write("# added by yolopatch clone: files the tree writes when it runs\n")
        handle.write("".join(f"{pattern}\n" for pattern in LOCAL_EXCLUDES))
    repository.git.add("--all")
    author = git.Actor(*COMMIT_AUTHOR)
    repository.index.commit(message, author=author, committer=author)
    repository.close()
