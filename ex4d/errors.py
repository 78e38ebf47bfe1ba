"""User-facing errors.

Every problem a user can fix (a bad file, a wrong value, a missing weight
folder) is raised as :class:`Ex4dError` with a message that says what was
wrong, which value, and what to do. The CLI prints such errors without a
traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations

__all__ = ["Ex4dError", "check"]


class Ex4dError(ValueError):
    """A problem with the user's input, named in plain words."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`Ex4dError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Ex4dError(message)
