"""User-facing errors.

Every problem a user can fix (a bad file, a wrong value, a missing weight
folder) is raised as :class:`Ex4dError` with a message that says what was
wrong, which value, and what to do. The CLI prints such errors without a
traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations

__all__ = ["Ex4dError", "Ex4dWarning", "check", "warn", "collect_warnings", "report_error",
           "environment_error_message", "BUG_REPORT"]


class Ex4dError(ValueError):
    """A problem with the user's input, named in plain words."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`Ex4dError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Ex4dError(message)


#: What an internal error (a bug) asks of the user, after its traceback.
BUG_REPORT = ("this is a bug in ex4d, not a problem with your input: please report it with the command you ran "
              "and the traceback above (ex4d issue tracker)")

# OSError numbers that describe the user's environment (disk, permissions, paths), not a bug.
_ENVIRONMENT_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "ENAMETOOLONG",
                       "EFBIG", "EMFILE", "ENFILE", "ELOOP", "EEXIST", "ENOTEMPTY", "EBUSY", "ETXTBSY", "EIO"}
_HINTS = {"ENOSPC": "free some disk space or choose another output location",
          "EDQUOT": "free some space (disk quota) or choose another output location",
          "EROFS": "the file system is read-only: choose another output location",
          "EACCES": "check the permissions, or choose another location",
          "EPERM": "check the permissions, or choose another location",
          "ENOTDIR": "a part of the path is a file, not a folder",
          "EISDIR": "a folder is in the way of a file"}


def environment_error_message(e: OSError) -> str | None:
    """One line for an OSError the environment caused (no space, read-only, permissions, a file in the way), else None."""
    import errno

    name = errno.errorcode.get(e.errno or -1)
    if name not in _ENVIRONMENT_ERRNOS:
        return None
    where = " → ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    text = e.strerror or name
    hint = _HINTS.get(name)
    return f"{text}{': ' + where if where else ''}{'; ' + hint if hint else ''}"


def report_error(exc: BaseException, prog: str, resume_hint: bool = False) -> int:
    """Print how a command ended on ``exc`` (to stderr) and return its exit status.

    * :class:`Ex4dError` and environment ``OSError`` (no space, read-only, …): one line
      ``PROG: error: …``, status 2 (continuation lines of a long message are indented, never
      a second ``error:``).
    * ImportError whose message says what to pip install: the same, status 2.
    * Ctrl-C (:func:`ex4d.interrupt.is_interrupt`, including numba's ``SystemError`` form): one
      line, status 130.
    * ``SystemExit`` passes through; ``MemoryError``: one line, status 2.
    * anything else is a bug: its traceback, then one line asking to report it, status 1.
    """
    import sys
    import traceback

    from .interrupt import is_interrupt

    if isinstance(exc, SystemExit):
        raise exc
    if is_interrupt(exc):
        tail = "; finished stages are kept, re-run the same command to resume" if resume_hint else ""
        print(f"\n{prog}: interrupted{tail}", file=sys.stderr)
        return 130
    message = None
    if isinstance(exc, Ex4dError):
        message = str(exc)
    elif isinstance(exc, ImportError) and "pip install" in str(exc):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = environment_error_message(exc)
    elif isinstance(exc, MemoryError):
        message = ("out of memory; use fewer or smaller frames (--num-frames, --max-res) or a machine with more "
                   "memory")
    if message is not None:
        first, *rest = message.strip().splitlines() or [""]
        print(f"{prog}: error: {first}", file=sys.stderr)
        for line in rest:
            print(f"    {line}", file=sys.stderr)
        return 2
    traceback.print_exception(exc)
    print(f"{prog}: internal error ({type(exc).__name__}): {BUG_REPORT}", file=sys.stderr)
    return 1


class Ex4dWarning(UserWarning):
    """Something about the input that is probably wrong but not certainly (implausible depth, ~0 % known pixels)."""


def warn(message: str) -> None:
    """Emit ``message`` as an :class:`Ex4dWarning` (the CLI prints it; a run records it in config.json)."""
    import warnings

    warnings.warn(message, Ex4dWarning, stacklevel=2)


def collect_warnings(echo=None):
    """Context manager yielding a list that receives every :class:`Ex4dWarning` message raised inside it.

    Each message is also passed to ``echo`` at once (default: printed to stderr as ``ex4d: warning: …``);
    other warnings are shown as usual.
    """
    import contextlib
    import sys
    import warnings

    @contextlib.contextmanager
    def _collect():
        messages: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("always", Ex4dWarning)
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if not issubclass(category, Ex4dWarning):
                    return shown(message, category, filename, lineno, file, line)
                text = " ".join(str(message).split())
                if text in messages:  # the same finding twice (e.g. a file read by two stages): once
                    return
                messages.append(text)
                if echo is None:
                    print(f"ex4d: warning: {text}", file=sys.stderr)
                else:
                    echo(text)

            warnings.showwarning = show
            yield messages

    return _collect()
