"""Claiming a results folder: one writer at a time, and a swap that never loses a run.

A destination ``DIR/NAME`` is claimed (:func:`claim`, :func:`claim_new`) with an exclusive lock
on ``DIR/.NAME.byzmtl-lock``, taken without waiting: a second writer fails at once with a one-line
:class:`DestinationError`. The lock is ``fcntl.flock`` (Linux, macOS; on NFS Linux maps it onto
POSIX record locks), on Windows ``msvcrt.locking``: the operating system releases it when its
holder dies, even by SIGKILL, so a killed writer never leaves a destination stuck. The holder
unlinks the lock file on release; a claimer that locked a file its previous holder had just
unlinked sees that the path no longer names that file, and tries again. (On Windows an open file
cannot be unlinked: the lock file may stay, and is reused.)

Holding the claim, a writer assembles the new content in ``DIR/.NAME.byzmtl-staging-XXXXXXXX``
and :meth:`Destination.commit` puts it in place: by a rename where NAME does not exist, by one
atomic exchange of the two folders where it does (Linux ``renameat2(RENAME_EXCHANGE)``; readers
see the old folder or the new one, never neither), after which the old folder, now under the
staging name, is deleted. Where the exchange is unavailable (other systems; file systems without
it) the old folder is first renamed to ``DIR/.NAME.byzmtl-old-XXXXXXXX``: between that rename and
the next NAME is absent, and a writer killed there leaves the old run under that name, which the
next claim of NAME puts back.

Claiming NAME first clears what a killed writer of NAME left (staging folders, old copies; safe
since the lock is free only when that writer is dead); claiming a fresh name (:func:`claim_new`,
the default names) clears this for every destination of DIR whose lock is free.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from byzmtl.config import ConfigError

LOCK = "byzmtl-lock"
STAGING = "byzmtl-staging"
OLD = "byzmtl-old"
_RANDOM = "[a-z0-9_]{8}"  # what tempfile and secrets.token_hex(4) put in a name
_ANY_LEFTOVER = re.compile(
    rf"\.(?P<name>.+)\.(?:{STAGING}|{OLD})-{_RANDOM}|\.(?P<locked>.+)\.{LOCK}"
)
_TEMPORARY = re.compile(rf"\..+\.tmp-{_RANDOM}(\.[^.]+)?")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class DestinationError(ConfigError):
    """A results folder that cannot be written; the message starts with ``out:``."""


@dataclass(frozen=True)
class Kind:
    """A kind of results folder: its name in messages (``a run``), how to recognise one, and
    whether a writer continues one in place (``resumable``) rather than needing ``overwrite``."""

    what: str
    recognise: Callable[[Path], bool]
    resumable: bool = False


def check(out: Path, overwrite: bool, kind: Kind) -> Path:
    """The real path of the destination ``out`` once a writer of ``kind`` may write it; raise a
    one-line :class:`DestinationError` otherwise. Writes nothing.

    Refused: a file system root or mount point, a folder containing the current folder, a path
    under a file or in a folder this process cannot write, and a folder holding files unless it
    is of ``kind`` and ``overwrite`` is given (or ``kind`` is resumable)."""
    target = _check_path(out)
    if not target.is_dir():
        return target
    if os.path.ismount(target):
        raise DestinationError(f"out: {out} is a mount point; name a folder inside it")
    try:
        holds_files = any(target.iterdir())
    except OSError as error:
        raise DestinationError(f"out: cannot read {out}: {error.strerror}") from None
    if holds_files:
        if not kind.recognise(target):
            raise DestinationError(
                f"out: {out} holds files that are not {kind.what}"
                f" (--overwrite replaces only {kind.what})"
            )
        if not (overwrite or kind.resumable):
            raise DestinationError(
                f"out: {out} already holds {kind.what} (use --overwrite to replace it)"
            )
    return target


def _check_path(out: Path) -> Path:
    target = Path(os.path.realpath(out))
    if target.parent == target:
        raise DestinationError(f"out: {out} is a file system root")
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise DestinationError(f"out: {out} contains the current folder")
    existing = next(path for path in (target, *target.parents) if os.path.lexists(path))
    if not existing.is_dir():
        shown = out if existing == target else existing
        raise DestinationError(f"out: {shown} exists and is not a folder")
    folder = existing if existing != target else target.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DestinationError(f"out: cannot write in {folder}")
    return target


class Destination:
    """A claimed destination: this process alone writes it until :meth:`release` (a context
    manager releases it on exit). ``out`` is the path as given, ``target`` its real path."""

    def __init__(self, out: Path, target: Path, lock: _Lock, created: Sequence[Path] = ()) -> None:
        self.out = out
        self.target = target
        self._lock = lock
        self._created = list(created)  # folders the claim made, deepest first

    def staging(self) -> Path:
        """A new empty folder beside the destination, to assemble its next content in."""
        prefix = f".{self.target.name}.{STAGING}-"
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
        folder.chmod(0o777 & ~_umask())  # mkdtemp makes it readable by its owner only
        return folder

    def commit(self, staging: Path) -> None:
        """Put the folder ``staging`` in place of the destination (see the module docstring)."""
        if not os.path.lexists(self.target):
            os.rename(staging, self.target)
        elif exchange(staging, self.target):
            shutil.rmtree(staging)
        else:
            old = self.target.with_name(f".{self.target.name}.{OLD}-{secrets.token_hex(4)}")
            os.rename(self.target, old)
            try:
                os.rename(staging, self.target)
            except BaseException:
                os.rename(old, self.target)
                raise
            shutil.rmtree(old)

    def release(self) -> None:
        """Give the destination up. Where nothing was put in place, the folders the claim made
        for it (its missing parents) are removed too, if they are still empty: a run that
        fails leaves no trace."""
        self._lock.release()
        if not os.path.lexists(self.target):
            remove_empty(self._created)

    def __enter__(self) -> Destination:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def claim(out: Path, overwrite: bool, kind: Kind) -> Destination:
    """Claim the destination ``out`` for this process, after :func:`check`; raise a one-line
    :class:`DestinationError` where another process holds it."""
    target = check(out, overwrite, kind)
    lock_path = _lock_path(target)
    created = _make_folder(out, lock_path.parent)
    lock = _take(out, lock_path)
    if lock is None:
        remove_empty(created)
        holder = _holder(lock_path)
        raise DestinationError(f"out: {out} is being written by another byzmtl process{holder}")
    try:
        _clear_leftovers(target.parent, target.name)
        check(out, overwrite, kind)  # again: it may have changed before the lock was taken
    except BaseException:
        lock.release()
        remove_empty(created)
        raise
    return Destination(out, target, lock, created)


def claim_new(base: Path, kind: Kind) -> Destination:
    """Claim a destination that does not exist yet: ``base``, else ``base-2``, ``base-3``, ...
    (skipping names another process holds or has written), after clearing the leftovers of the
    destinations in its folder that nobody holds."""
    parent = _check_path(base).parent
    created = _make_folder(base, parent)
    _sweep(parent)
    number = 1
    while True:
        out = base if number == 1 else base.with_name(f"{base.name}-{number}")
        number += 1
        target = parent / out.name
        if os.path.lexists(target):
            continue
        lock = _take(out, _lock_path(target))
        if lock is None:
            continue
        if os.path.lexists(target):  # written and released while we looked
            lock.release()
            continue
        return Destination(out, target, lock, created)


def exchange(a: Path, b: Path) -> bool:
    """Swap the existing paths ``a`` and ``b`` in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False, having done nothing, where the system or file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28)
        return None
    path, where = ctypes.c_char_p, ctypes.c_int
    function.argtypes = [where, path, where, path, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def temporary_beside(path: Path) -> Path:
    """A new empty file ``.STEM.tmp-XXXXXXXX.SUFFIX`` beside ``path``, with the permissions a
    plain write would give (to be renamed onto ``path`` once written)."""
    prefix = f".{path.stem}.tmp-"
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    os.close(handle)
    os.chmod(name, 0o666 & ~_umask())  # mkstemp makes it readable by its owner only
    return Path(name)


def write_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary file beside it and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path) -> None:
    """Remove the files :func:`temporary_beside` made in ``folder`` (while holding its claim:
    their writer is dead)."""
    for entry in _entries(folder):
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{LOCK}")


def _make_folder(out: Path, folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the folders made, deepest first."""
    missing = [path for path in (folder, *folder.parents) if not os.path.lexists(path)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        remove_empty(missing)
        raise DestinationError(f"out: cannot create {out.parent}: {error.strerror}") from None
    return missing


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) while it is empty; stop at the first that is
    not (another process may be using it)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


def _take(out: Path, lock_path: Path) -> _Lock | None:
    try:
        return _Lock.take(lock_path)
    except OSError as error:
        raise DestinationError(f"out: cannot lock {lock_path}: {error.strerror}") from None


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _clear_leftovers(parent: Path, name: str) -> None:
    """Remove the staging folders and old copies of ``parent/name`` (holding its lock), first
    putting an old copy back where the destination is missing."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:{STAGING}|{OLD})-{_RANDOM}")
    leftovers = sorted(entry for entry in _entries(parent) if pattern.fullmatch(entry.name))
    target = parent / name
    old = [entry for entry in leftovers if f".{OLD}-" in entry.name]
    if old and not os.path.lexists(target):
        os.rename(old[0], target)
        leftovers.remove(old[0])
    for entry in leftovers:
        shutil.rmtree(entry, ignore_errors=True)


def _sweep(parent: Path) -> None:
    """Clear the leftovers (and stale lock files) of every destination in ``parent`` whose
    lock is free."""
    names = set()
    for entry in _entries(parent):
        match = _ANY_LEFTOVER.fullmatch(entry.name)
        if match:
            names.add(match["name"] or match["locked"])
    for name in sorted(names):
        try:
            lock = _Lock.take(parent / f".{name}.{LOCK}")
            if lock is not None:
                try:
                    _clear_leftovers(parent, name)
                finally:
                    lock.release()
        except OSError:
            continue  # best effort: the claim of that name clears it too


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


class _Lock:
    """An exclusive lock on a lock file, held through an open descriptor."""

    def __init__(self, path: Path, handle: int) -> None:
        self.path = path
        self.handle = handle

    @classmethod
    def take(cls, path: Path) -> _Lock | None:
        """The lock on ``path`` (created if absent), or None where another process holds it."""
        while True:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(handle):
                os.close(handle)
                return None
            try:
                same = os.path.samestat(os.fstat(handle), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(handle, 0)
                os.write(handle, f"{os.getpid()}\n".encode())
                return cls(path, handle)
            os.close(handle)  # its holder unlinked it before we locked it: lock the new one

    def release(self) -> None:
        _unlock_and_remove(self.handle, self.path)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: int) -> bool:
        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)  # byte 0: the descriptor is at offset 0
        except OSError:
            return False
        return True

    def _unlock_and_remove(handle: int, path: Path) -> None:
        os.lseek(handle, 0, os.SEEK_SET)
        msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)
        os.close(handle)
        with contextlib.suppress(OSError):  # another process has it open: it is reused
            path.unlink()

else:
    import fcntl

    def _try_lock(handle: int) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock_and_remove(handle: int, path: Path) -> None:
        path.unlink(missing_ok=True)  # still locked: a claimer holding the old file retries
        os.close(handle)
