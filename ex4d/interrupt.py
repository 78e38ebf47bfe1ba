"""Ctrl-C that always ends in a clean ``KeyboardInterrupt``, never inside compiled code.

Python raises ``KeyboardInterrupt`` at the next bytecode of the main thread,
wherever that is. Inside a numba ``parallel=True`` kernel that can be a
Python helper numba calls back into (``numba.core.serialize._numba_unpickle``);
the exception then surfaces as ``SystemError: CPUDispatcher(...) returned a
result with an exception set`` (or worse, a crash), not as an interrupt.

:func:`sigint_deferred_in_native` installs a SIGINT handler for the duration
of a command that behaves like Python's own, except when the signal lands
while numba's (or llvmlite's) Python code is on the stack — a callback from
compiled code, or numba compiling: it then only records the request, and a
small helper thread re-delivers the signal (``_thread.interrupt_main``) every
few milliseconds until the main thread is back in ordinary Python code, where
it is raised as a plain ``KeyboardInterrupt``. Stages need no checkpoints of their own, and a
kernel is never left half-way with an exception set. :func:`is_interrupt`
also recognises the ``SystemError`` form, as a second line of defence.

Outputs stay whole because every write is atomic (:mod:`ex4d.io.atomic`).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
import time
from typing import Iterator

__all__ = ["sigint_deferred_in_native", "is_interrupt", "DEFER_IN"]

#: Packages whose Python frames can be called back from compiled code; SIGINT is never raised inside them.
DEFER_IN = ("numba", "llvmlite")

_RETRY_S = 0.005


def _package_dirs() -> tuple[str, ...]:
    import importlib.util

    dirs = []
    for name in DEFER_IN:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += [os.path.join(os.path.realpath(p), "") for p in spec.submodule_search_locations]
    return tuple(dirs)


def _in_native_code(frame, dirs: tuple[str, ...]) -> bool:
    """True when a frame of the stack belongs to a package that compiled code calls back into (or compiles in)."""
    while frame is not None and dirs:
        if os.path.realpath(frame.f_code.co_filename).startswith(dirs):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def sigint_deferred_in_native() -> Iterator[None]:
    """Within the block, Ctrl-C raises ``KeyboardInterrupt`` in the main thread, but never inside numba's code.

    A no-op outside the main thread or when SIGINT is ignored (e.g. a background job of a shell).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or previous is None:
        yield
        return
    dirs = _package_dirs()
    pending = threading.Event()     # a Ctrl-C waits to be raised
    done = threading.Event()        # the block has ended
    acked = threading.Event()       # the handler has seen the last re-delivery
    state = {"outstanding": False, "in_handler": False}

    def redeliver() -> None:
        # one re-delivery at a time, until the handler finds the main thread outside native code
        while pending.is_set() and not done.is_set():
            acked.clear()
            state["outstanding"] = True
            _thread.interrupt_main(signal.SIGINT)
            acked.wait()
            done.wait(_RETRY_S)

    def handler(signum, frame):
        redelivery = state["outstanding"]
        if redelivery:
            state["outstanding"] = False
            acked.set()
        if state["in_handler"] or (redelivery and (done.is_set() or not pending.is_set())):
            return  # nested in our own handler (the thread retries), or stale
        if _in_native_code(frame, dirs):
            if not pending.is_set():
                pending.set()
                state["in_handler"] = True
                try:
                    state["thread"] = threading.Thread(target=redeliver, name="ex4d-sigint", daemon=True)
                    state["thread"].start()
                finally:
                    state["in_handler"] = False
            return
        pending.clear()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        done.set()
        pending.clear()
        thread = state.get("thread")
        deadline = time.monotonic() + 1.0
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            for _ in range(1000):  # bytecodes, so that a re-delivery on its way reaches our handler (which drops it)
                pass
            thread.join(0.001)
        signal.signal(signal.SIGINT, previous)
        acked.set()


def is_interrupt(exc: BaseException | None) -> bool:
    """True for ``KeyboardInterrupt``, or an exception raised because of one (numba's ``SystemError``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
