"""Output folders a run writes into: checked, marked as ex4d's, locked, cleaned, undone on failure.

:class:`OutputFolder` is what :func:`ex4d.pipeline.run_pipeline` holds for the
whole run. Opening one, in this order:

1. **Location**: a file in the way, a path under a file, a folder that is not
   writable (read-only file system, permissions) are one-line
   :class:`~ex4d.errors.Ex4dError`\\ s before anything is created.
2. **Ownership**: a non-empty folder without ``.ex4d/`` holds someone else's
   files and is refused (``overwrite=True`` takes it anyway; foreign files are
   never deleted).
3. **Mark** (``mkdir .ex4d``) before the first write, so a crash at any later
   point (``kill -9`` included) leaves a folder the next run recognises and
   resumes.
4. **Lock**: ``flock`` on ``.ex4d/lock`` (holding the pid) for as long as the
   folder is open; a second run into the same folder stops at once with
   "folder busy (pid N)".
5. **Temp files** a killed run left (``.NAME.tmp-*``, see
   :mod:`ex4d.io.atomic`) are removed, now that no other run can be writing them.
6. **Parameters**: the run's record is compared with the one the folder holds
   (``.ex4d/run.json``, written here before any output, or an older
   ``config.json``); a different run is refused unless ``overwrite=True``.

:meth:`OutputFolder.remove_outputs` (used with ``--overwrite``) deletes every
ex4d output the new run will not rewrite. When the run fails before writing
any output, :meth:`OutputFolder.close` withdraws its record (so the next run
may have other parameters) and, unless it cached something in ``.ex4d/`` for
the next run to reuse, undoes the marking and removes the folders it created:
a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterable

from ..errors import Ex4dError, environment_error_message
from .atomic import atomic_write_json
from .json_input import read_json

__all__ = ["STATE_DIR", "LOCK_FILE", "RUN_RECORD", "OutputFolder", "check_output_location", "remove_temp_files",
           "TEMP_NAME", "run_folder_lock", "FolderBusy"]

STATE_DIR = ".ex4d"
LOCK_FILE = "lock"
RUN_RECORD = "run.json"
#: Names of the temporary files :func:`ex4d.io.atomic.atomic_path` makes (``.NAME.tmp-XXXX[.suffix]``).
TEMP_NAME = re.compile(r"^\..+\.tmp-[^/]+$")
_MARK_ONLY = {LOCK_FILE, RUN_RECORD}


def _env_error(label: str, path: Path, e: OSError) -> Ex4dError:
    text = environment_error_message(e) or (e.strerror or str(e))
    return Ex4dError(f"{label} {path}: cannot be used as the output folder ({text})")


def check_output_location(path: str | os.PathLike, label: str = "--out") -> None:
    """Raise :class:`Ex4dError` unless ``path`` is, or can be made as, a writable folder."""
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            raise Ex4dError(f"{label} {path} is a broken symbolic link; remove it or choose another folder")
        if path.exists():
            if not path.is_dir():
                raise Ex4dError(f"{label} {path} exists and is a file, not a folder; choose a folder "
                                "(it is created if missing)")
            base = path
        else:
            base = path.parent
            while not base.exists() and base != base.parent:
                base = base.parent
            if not base.is_dir():
                raise Ex4dError(f"{label} {path}: {base} is a file, so no folder can be made under it; "
                                "choose another location")
        if not os.access(base, os.W_OK | os.X_OK):
            why = "on a read-only file system" if _read_only(base) else "not writable (permission denied)"
            raise Ex4dError(f"{label} {path}: {base} is {why}; choose another location")
    except OSError as e:
        raise _env_error(label, path, e) from None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def remove_temp_files(folder: Path, subfolders: Iterable[str] = ()) -> list[Path]:
    """Delete atomic-write temp files (``.NAME.tmp-*``) in ``folder``, its ``.ex4d/`` (recursively) and ``subfolders``."""
    removed = []
    places = [folder, *(folder / s for s in subfolders)]
    state = folder / STATE_DIR
    if state.is_dir():
        places += [state, *(p for p in state.rglob("*") if p.is_dir() and not p.is_symlink())]
    for place in places:
        if not place.is_dir() or place.is_symlink():
            continue
        for p in place.iterdir():
            if TEMP_NAME.match(p.name) and (p.is_file() or p.is_symlink()):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


class FolderBusy(Ex4dError):
    """Another ex4d command holds the folder's lock (the web apps answer 409)."""


def _acquire_lock(path: Path, label: str, folder: Path, shared: bool) -> int | None:
    """``flock`` ``path`` without waiting: the open descriptor (close it to release), None where locks are missing.

    Exclusive (a run writing the folder) writes the pid into the file; shared (commands that only read the
    run, as ``ex4d export``) leaves it. Busy: Ex4dError naming the folder and the pid that holds it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _env_error(label, folder, e) from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise FolderBusy(f"{label} {folder}: folder busy (pid {pid}): another ex4d command is writing into it; wait "
                         f"for it to finish, or choose another {label}") from None
    except OSError:  # e.g. a file system without locks: run unlocked rather than not at all
        os.close(fd)
        return None
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike, label: str = "RUN", shared: bool = False):
    """Hold the lock of a finished run's folder while a command reads it (``shared``) or writes into it.

    ``ex4d stereo`` (writes its caches and ``stereo.mp4`` into the run) takes it exclusively, ``ex4d export``
    shared: neither reads a run that an ``ex4d run`` is rewriting, and two stereo commands on one run do not
    write the same caches; either finds the folder busy at once and says so. A folder without ``.ex4d/`` (not a
    run: the caller's own checks say so) is not locked.
    """
    state = Path(folder) / STATE_DIR
    fd = _acquire_lock(state / LOCK_FILE, label, Path(folder), shared) if state.is_dir() else None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class OutputFolder:
    """An output folder held (marked and locked) by this process; use as a context manager.

    Args:
        path: the folder (created with its parents if missing).
        record: JSON-able description of the run (``RunConfig.to_dict()``); a folder holding
            another record is refused unless ``overwrite``.
        overwrite: take a folder with foreign files or another run's record.
        ours: names of the files and folders an ex4d run writes at the top level (besides ``.ex4d``).
        label: how messages name the folder (the flag, e.g. ``--out``).
    """

    def __init__(self, path: str | os.PathLike, record: dict, *, overwrite: bool = False,
                 ours: Iterable[str] = (), label: str = "--out"):
        self.path = Path(path)
        self.record = record
        self.overwrite = overwrite
        self.ours = set(ours)
        self.label = label
        self.created: list[Path] = []      # folders made by this run, outermost first
        self._made_state = False
        self._lock_fd: int | None = None
        self.removed_temp: list[Path] = []

    # ------------------------------------------------------------------ opening
    def __enter__(self) -> "OutputFolder":
        try:
            self.open()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    def open(self) -> None:
        """Check, mark, lock, clean and claim the folder (see the module docstring); Ex4dError when it cannot be used."""
        out, label = self.path, self.label
        check_output_location(out, label)
        try:
            entries = {p.name for p in out.iterdir()} if out.is_dir() else set()
        except OSError as e:
            raise _env_error(label, out, e) from None
        if entries and STATE_DIR not in entries and not self.overwrite:
            raise Ex4dError(f"{label} {out} is not empty and holds no ex4d run; choose an empty or new folder, "
                            "or pass --overwrite (files that are not ex4d's are left as they are)")
        try:
            self._make_dirs()
        except OSError as e:
            raise _env_error(label, out, e) from None
        self._lock()
        self.removed_temp = remove_temp_files(out, sorted(self.ours))
        if not self.overwrite:
            old = self._previous_record()
            if old is not None:
                changed = _changed(old, self.record)
                if changed:
                    raise Ex4dError(f"{label} {out} holds a run with other parameters (changed: "
                                    f"{', '.join(changed)}); pass --overwrite to replace it (unchanged stages are "
                                    f"reused), or choose another {label}")
        atomic_write_json(self.state_dir / RUN_RECORD, self.record)

    def _make_dirs(self) -> None:
        missing = []
        p = self.path
        while not p.exists():
            missing.append(p)
            if p == p.parent:
                break
            p = p.parent
        for p in reversed(missing):
            p.mkdir()
            self.created.append(p)
        if not self.state_dir.is_dir():
            self.state_dir.mkdir()  # the mark: from here on the folder is recognisably ex4d's
            self._made_state = True

    def _lock(self) -> None:
        self._lock_fd = _acquire_lock(self.state_dir / LOCK_FILE, self.label, self.path, shared=False)

    def _previous_record(self) -> dict | None:
        for path, pick in ((self.state_dir / RUN_RECORD, lambda o: o),
                           (self.path / "config.json", lambda o: o.get("run") if isinstance(o, dict) else None)):
            if path.is_file():
                try:
                    rec = pick(read_json(path, "previous run record"))
                except Ex4dError:  # unreadable record of an earlier run: treat as another run
                    return {"unreadable": str(path)}
                return rec if isinstance(rec, dict) else {"unreadable": str(path)}
        return None

    # ------------------------------------------------------------------ overwrite
    def remove_outputs(self, keep: Iterable[str], state_keep: Iterable[str] = ()) -> list[str]:
        """Delete every ex4d output (of :attr:`ours`) not in ``keep``, and ``.ex4d/`` entries not in ``state_keep``.

        Returns the names removed. Foreign files are not touched; the lock and run record stay.
        """
        keep = set(keep)
        state_keep = set(state_keep) | _MARK_ONLY
        removed = []
        for name in sorted(self.ours - keep - {STATE_DIR}):
            p = self.path / name
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
            else:
                continue
            removed.append(name)
        if self.state_dir.is_dir():
            for p in sorted(self.state_dir.iterdir()):
                if p.name in state_keep:
                    continue
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(f"{STATE_DIR}/{p.name}")
        return removed

    # ------------------------------------------------------------------ closing
    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failure that wrote nothing, undo the marking and the folders this run made."""
        held = self._lock_fd is not None
        if failed and held:
            with contextlib.suppress(OSError):
                self._undo_if_empty()
        if held:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        elif failed and not self._made_state:
            # refused before marking (a busy folder, a location error): remove only folders we made
            for p in reversed(self.created):
                with contextlib.suppress(OSError):
                    p.rmdir()

    def _undo_if_empty(self) -> None:
        state = self.state_dir
        others = [p.name for p in self.path.iterdir() if p.name != STATE_DIR]
        marks = {p.name for p in state.iterdir()} if state.is_dir() else set()
        if others:
            return  # outputs were written: keep them and the record, the next run resumes
        # no output: the run does not claim the folder (the next run may have other parameters) ...
        (state / RUN_RECORD).unlink(missing_ok=True)
        if not marks <= _MARK_ONLY:
            return  # ... but its caches (e.g. a depth model's result) stay for the next run to reuse
        if self._made_state:
            (state / LOCK_FILE).unlink(missing_ok=True)
            state.rmdir()
            for p in reversed(self.created):
                p.rmdir()
