"""File changes as data: a diff to show, or a set written all-or-nothing.

Every command computes its ``FileChange`` list from pure transforms first and only then touches the
disk, through ``write_all``, which guarantees, for every write:

- nothing of the user's is lost: each old line outside the ranges a change declares editable must
  still be in the new text, in order (checked before anything is written);
- all or nothing: new contents are staged in temporary files (names unique per process) beside their
  targets, the originals are copied aside, and a journal listing them is written before the first
  target is touched. A failure, Ctrl-C, SIGTERM or SIGHUP rolls every swapped target back; after a
  ``kill -9`` the next command finds the journal (``recover``) and rolls the interrupted run back;
- the file stays what it was: mode bits, owner, a UTF-8 byte-order mark, hard links (written in
  place) and symbolic links (written through, the link kept) are preserved; a read-only file is
  refused, not overwritten.

Trees are locked (``tree_lock``): a second yolopatch command on the same tree waits a few seconds, then
refuses with one line.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from yolopatch.errors import YolopatchError

TEMP_SUFFIX = ".yolopatch-tmp"
BACKUP_SUFFIX = ".yolopatch-bak"
JOURNAL_PREFIX = "journal-"
STATE_DIR = ".yolopatch"  # in the tree's root: journals of runs in progress, records of --replace
BOM = "\ufeff"
LOCK_TIMEOUT_ENV = "YOLOPATCH_LOCK_TIMEOUT"

LineRange = Tuple[int, int]  # 1-based, inclusive

# Indirection so tests can inject a failure between two writes.
_replace: Callable[[Path, Path], None] = os.replace


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while files were being swapped: handled like Ctrl-C (rolled back)."""


@dataclass(frozen=True)
class FileChange:
    """``old`` -> ``new`` text of one file; ``old`` None creates it, ``new`` None deletes it.

    ``editable``: the 1-based line ranges of ``old`` that the change may alter or remove (what
    yolopatch itself inserted, or what the user asked it to replace); every other line of ``old``
    must survive. ``owned``: the whole file is yolopatch's (a generated variant, a state record).
    """

    path: Path
    old: Optional[str]
    new: Optional[str]
    editable: Tuple[LineRange, ...] = ()
    owned: bool = False

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self, root: Optional[Path] = None) -> str:
        """Unified diff of the change, with paths relative to ``root``."""
        name = str(self.path.relative_to(root)) if root else str(self.path)
        old_lines = (self.old or "").splitlines(keepends=True)
        new_lines = (self.new or "").splitlines(keepends=True)
        before = f"a/{name}" if self.old is not None else "/dev/null"
        after = f"b/{name}" if self.new is not None else "/dev/null"
        lines = difflib.unified_diff(old_lines, new_lines, before, after)
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)

    def first_lost_line(self) -> Optional[int]:
        """The first line of ``old`` outside ``editable`` that ``new`` no longer has (in order); None if none."""
        if self.owned or self.old is None or self.new is None:
            return None
        return first_lost_line(self.old, self.new, self.editable)


def first_lost_line(old: str, new: str, editable: Sequence[LineRange] = ()) -> Optional[int]:
    """Whether the lines of ``old`` outside ``editable`` are a subsequence of ``new``'s lines.

    Returns the 1-based number of the first ``old`` line that cannot be matched, or None. Greedy
    matching is exact for the subsequence question.
    """
    new_lines = new.splitlines(keepends=True)
    position = 0
    for number, line in enumerate(old.splitlines(keepends=True), start=1):
        if any(start <= number <= end for start, end in editable):
            continue
        while position < len(new_lines) and _bare(new_lines[position]) != _bare(line):
            position += 1
        if position == len(new_lines):
            return number
        position += 1
    return None


def _bare(line: str) -> str:
    """A line without its line ending: the last line of a file may gain one when code is appended."""
    return line.rstrip("\r\n")


def read_text(path: Path) -> str:
    """Read a source file as UTF-8 with its newlines untouched (CRLF stays CRLF); a byte-order mark is
    dropped here and written back by ``write_all``."""
    try:
        data = path.read_bytes()
    except IsADirectoryError as error:
        raise YolopatchError("is a directory, not a file", path=path, hint="rename or remove it") from error
    except OSError as error:
        raise YolopatchError(f"cannot read: {error.strerror}", path=path, hint=_hint_for(error)) from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YolopatchError(f"not valid UTF-8 ({error.reason} at byte {error.start})", path=path,
                             hint="save the file as UTF-8 and run again") from error
    return text[1:] if text.startswith(BOM) else text


def _has_bom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(3) == BOM.encode("utf-8")
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Locking


@contextlib.contextmanager
def tree_lock(root: Path, timeout: Optional[float] = None) -> Iterator[None]:
    """Hold the tree's lock: an exclusive ``flock`` on its root directory (released by the kernel when the
    process dies, so a killed run never leaves a stale lock, and no lock file is left in the tree)."""
    import fcntl  # POSIX only; imported here so that the module loads everywhere

    wait = float(os.environ.get(LOCK_TIMEOUT_ENV, "5")) if timeout is None else timeout
    descriptor = os.open(root, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise YolopatchError("tree busy: another yolopatch command is changing it", path=root,
                                         hint="wait for it to finish, then run again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


# ----------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class _Step:
    """One target of a write: where the bytes go and the files staged for it."""

    change: FileChange
    target: Path  # the real file (a symbolic link resolved)
    temp: Optional[Path]
    backup: Optional[Path]
    in_place: bool  # hard-linked: overwrite the same inode instead of renaming over it


def write_all(changes: Sequence[FileChange], state_dir: Optional[Path] = None) -> List[Path]:
    """Write every real change or none of them; returns the paths written.

    ``state_dir`` (the tree's ``.yolopatch``) receives the journal while the files are swapped.
    """
    pending = [change for change in changes if change.changed]
    if not pending:
        return []
    for change in pending:
        _check_unchanged(change)
        _check_nothing_lost(change)
        _check_writable(change)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    steps: List[_Step] = []
    swapped: List[_Step] = []
    journal: Optional[Path] = None
    current: Optional[FileChange] = None  # the file being staged or swapped when something fails
    with _signals_as_interrupts():
        try:
            for current in pending:
                steps.append(_stage(current, token))
            current = None
            journal = _write_journal(state_dir, token, steps)
            for step in steps:
                current = step.change
                swapped.append(step)  # before the swap: a signal may arrive right after the rename
                _swap(step)
        except BaseException as error:
            _roll_back(steps, swapped)
            _remove_journal(journal, state_dir)
            if isinstance(error, OSError):
                raise _os_error(error, current) from error
            raise
    _remove_journal(journal, state_dir)  # first: the run is complete once its journal is gone
    for step in steps:
        _unlink_quietly(step.temp)
        _unlink_quietly(step.backup)
    if state_dir is not None:
        with contextlib.suppress(OSError):  # a deleted registry's backup kept it from going with the journal
            state_dir.rmdir()
    return [change.path for change in pending]


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """While files are swapped, SIGTERM and SIGHUP raise ``Interrupted`` (so the rollback runs)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    previous: Dict[int, object] = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            previous[number] = signal.signal(number, interrupt)
        except ValueError:  # not the main thread: signals cannot be handled here
            pass
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]


def _staged_name(path: Path, token: str, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{token}{suffix}")


def _stage(change: FileChange, token: str) -> _Step:
    path = change.path
    target = path.resolve() if path.is_symlink() and change.new is not None else path
    exists = os.path.lexists(target)
    backup = _staged_name(target, token, BACKUP_SUFFIX) if exists else None
    temp = _staged_name(target, token, TEMP_SUFFIX) if change.new is not None else None
    in_place = exists and change.new is not None and os.stat(target).st_nlink > 1
    try:
        if backup is not None:
            if os.path.islink(target):
                os.symlink(os.readlink(target), backup)
            else:
                shutil.copy2(target, backup)
        if temp is not None and change.new is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            data = ((BOM if exists and _has_bom(target) else "") + change.new).encode("utf-8")
            _write_new_file(temp, data, reference=target if exists else None)
    except BaseException:
        _unlink_quietly(temp)
        _unlink_quietly(backup)
        raise
    return _Step(change, target, temp, backup, in_place)


def _write_new_file(path: Path, data: bytes, reference: Optional[Path]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _unlink_quietly(path)
        raise
    if reference is not None:
        info = os.stat(reference)
        os.chmod(path, stat.S_IMODE(info.st_mode))
        with contextlib.suppress(OSError):  # only root may give a file away; keep the mode regardless
            os.chown(path, info.st_uid, info.st_gid)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap(step: _Step) -> None:
    if step.change.new is None:
        step.change.path.unlink()
    elif step.in_place:
        _overwrite_in_place(step.target, step.temp)  # type: ignore[arg-type]
    else:
        _replace(step.temp, step.target)  # type: ignore[arg-type]


def _overwrite_in_place(target: Path, source: Path) -> None:
    """Copy ``source``'s bytes into ``target``'s own inode, so that every hard link sees them."""
    with source.open("rb") as reader, target.open("r+b") as writer:
        writer.truncate(0)
        shutil.copyfileobj(reader, writer)
        writer.flush()
        os.fsync(writer.fileno())


def _roll_back(steps: Sequence[_Step], swapped: Sequence[_Step]) -> None:
    for step in reversed(swapped):
        _restore(step.change.path, step.target, step.backup, step.in_place)
    for step in steps:
        _unlink_quietly(step.temp)
        _unlink_quietly(step.backup)


def _restore(path: Path, target: Path, backup: Optional[Path], in_place: bool) -> None:
    """Put ``target`` back as it was before the run (from ``backup``; removed when it was created)."""
    if backup is None:
        _unlink_quietly(target)
    elif in_place:
        _overwrite_in_place(target, backup)
    else:
        os.replace(backup, target if not os.path.islink(backup) else path)


def _unlink_quietly(path: Optional[Path]) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ----------------------------------------------------------------------------------------------
# Checks before writing


def _check_unchanged(change: FileChange) -> None:
    """Refuse when the file changed on disk since it was read (another editor, another run)."""
    exists = os.path.lexists(change.path)
    if change.old is None and exists:
        raise YolopatchError("file appeared while yolopatch was working", path=change.path, hint="run again")
    if change.old is not None and (not exists or read_text(change.path) != change.old):
        raise YolopatchError("file changed while yolopatch was working", path=change.path, hint="run again")


def _check_nothing_lost(change: FileChange) -> None:
    lost = change.first_lost_line()
    if lost is not None:
        raise YolopatchError(
            "refusing to write: the result would lose a line yolopatch did not write", path=change.path, line=lost,
            hint="nothing was changed; please report this file to the yolopatch authors")


def _check_writable(change: FileChange) -> None:
    path = change.path
    if change.new is None or not path.exists():
        return
    mode = os.stat(path).st_mode
    if not mode & stat.S_IWUSR:
        raise YolopatchError("file is read-only; yolopatch does not overwrite it", path=path,
                             hint=f"make it writable (chmod u+w {path}) and run again")


def _os_error(error: OSError, change: Optional[FileChange]) -> YolopatchError:
    """The OS failure as one line about the user's file (not the temporary name)."""
    path = change.path if change is not None else (Path(error.filename) if error.filename else None)
    what = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted (immutable file?)"}
    reason = what.get(error.errno or 0, error.strerror or str(error))
    return YolopatchError(f"cannot write: {reason}; nothing was changed", path=path, hint=_hint_for(error))


def _hint_for(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space and run again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the file's and its folder's permissions and attributes (lsattr), then run again"
    return "fix the cause and run again"


# ----------------------------------------------------------------------------------------------
# The journal: what a run is swapping, so that a killed run can be rolled back by the next one


def _write_journal(state_dir: Optional[Path], token: str, steps: Sequence[_Step]) -> Optional[Path]:
    if state_dir is None:
        return None
    state_dir.mkdir(exist_ok=True)
    entries = [
        {
            "path": str(step.change.path), "target": str(step.target),
            "temp": str(step.temp) if step.temp else None, "backup": str(step.backup) if step.backup else None,
            "in_place": step.in_place,
            "new_sha256": _sha(step.change.new) if step.change.new is not None else None,
        }
        for step in steps
    ]
    journal = state_dir / f"{JOURNAL_PREFIX}{token}.json"
    staging = state_dir / f".{journal.name}{TEMP_SUFFIX}"
    _write_new_file(staging, json.dumps({"pid": os.getpid(), "files": entries}, indent=1).encode("utf-8"), None)
    os.replace(staging, journal)
    return journal


def _remove_journal(journal: Optional[Path], state_dir: Optional[Path]) -> None:
    _unlink_quietly(journal)
    if state_dir is not None:
        with contextlib.suppress(OSError):  # only when empty: records of --replace stay
            state_dir.rmdir()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pending_journals(state_dir: Path) -> List[Path]:
    """Journals of interrupted runs (a run in progress holds the tree lock; call this under it)."""
    if not state_dir.is_dir():
        return []
    return sorted(state_dir.glob(f"{JOURNAL_PREFIX}*.json"))


def recover(state_dir: Path) -> List[Path]:
    """Roll back every interrupted run journaled in ``state_dir``; returns the files restored.

    Must run under the tree lock. A target still holding the interrupted run's backup is restored from
    it; a file the run created is removed only if it holds exactly what the run wrote.
    """
    restored: List[Path] = []
    for journal in pending_journals(state_dir):
        try:
            entries = json.loads(journal.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError) as error:
            raise YolopatchError(f"unreadable journal of an interrupted run ({error})", path=journal,
                                 hint="restore the files it lists by hand (see the .yolopatch-bak copies), "
                                      "then delete it") from error
        for entry in reversed(entries):
            restored += _recover_entry(entry)
        journal.unlink()
    with contextlib.suppress(OSError):
        state_dir.rmdir()
    return restored


def _recover_entry(entry: Dict[str, object]) -> List[Path]:
    path, target = Path(str(entry["path"])), Path(str(entry["target"]))
    backup = Path(str(entry["backup"])) if entry.get("backup") else None
    temp = Path(str(entry["temp"])) if entry.get("temp") else None
    restored: List[Path] = []
    if backup is not None and os.path.lexists(backup):
        _restore(path, target, backup, bool(entry.get("in_place")))
        restored.append(path)
    elif backup is None and target.is_file() and entry.get("new_sha256") == _sha(read_text(target)):
        target.unlink()
        restored.append(path)
    _unlink_quietly(temp)
    _unlink_quietly(backup)
    return restored


def leftovers(folders: Sequence[Path]) -> List[Path]:
    """Temporary and backup files of yolopatch runs in ``folders`` (killed runs, older versions)."""
    found: List[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += [path for path in folder.iterdir() if path.name.endswith((TEMP_SUFFIX, BACKUP_SUFFIX))]
    return sorted(found)


def is_stale_leftover(path: Path) -> bool:
    """A leftover of this yolopatch's naming (``.<name>.<pid>-<token><suffix>``): never swapped in
    unless a journal lists it, so safe to delete once the journals are recovered. Older versions'
    ``<name>.yolopatch-bak`` may be the only copy of a file: those are reported, never deleted."""
    return path.name.startswith(".")


def clean_leftovers(folders: Sequence[Path]) -> List[Path]:
    """Delete the stale leftovers in ``folders`` (call under the tree lock, after ``recover``)."""
    removed = [path for path in leftovers(folders) if is_stale_leftover(path)]
    for path in removed:
        _unlink_quietly(path)
    return removed
