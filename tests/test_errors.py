"""How a command ends (ex4d.errors.report_error) and Ctrl-C held back inside numba (ex4d.interrupt)."""

from __future__ import annotations

import errno
import os
import signal
import threading

import pytest

from ex4d.errors import Ex4dError, report_error
from ex4d.interrupt import DEFER_IN, is_interrupt, sigint_deferred_in_native


def _numba_style_systemerror() -> SystemError:
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise SystemError("CPUDispatcher(<function _bin>) returned a result with an exception set") from e
    except SystemError as e:
        return e


def test_is_interrupt():
    assert is_interrupt(KeyboardInterrupt())
    assert is_interrupt(_numba_style_systemerror())
    assert not is_interrupt(SystemError("x")) and not is_interrupt(ValueError()) and not is_interrupt(None)


@pytest.mark.parametrize("exc, rc, words", [
    (Ex4dError("bad value 3\n  what to do"), 2, "error: bad value 3"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/o.mp4"), 2, "error: No space left on device: /x/o.mp4"),
    (OSError(errno.EROFS, "Read-only file system", "/ro"), 2, "read-only"),
    (ImportError("needs the app extra: pip install 'ex4d[app]'"), 2, "pip install"),
    (MemoryError(), 2, "out of memory"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (_numba_style_systemerror(), 130, "interrupted"),
    (ZeroDivisionError("bug"), 1, "internal error (ZeroDivisionError)"),
    (FileNotFoundError(errno.ENOENT, "No such file", "/internal"), 1, "internal error"),
])
def test_report_error(exc, rc, words, capsys):
    try:
        raise exc  # as raised in a command: with its traceback
    except BaseException as e:  # noqa: BLE001
        exc = e
    assert report_error(exc, "ex4d run") == rc
    err = capsys.readouterr().err
    assert words in err
    assert ("Traceback" in err) == (rc == 1)
    assert sum("error:" in ln for ln in err.splitlines()) == (1 if rc == 2 else 0)
    if rc == 1:
        assert "report" in err.strip().splitlines()[-1]


def test_system_exit_passes_through():
    with pytest.raises(SystemExit):
        report_error(SystemExit(0), "ex4d")


def test_ctrl_c_in_plain_python_raises_at_once():
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred_in_native():
            signal.raise_signal(signal.SIGINT)
            for _ in range(10_000_000):
                pass
            pytest.fail("the interrupt did not arrive")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_inside_numba_code_is_raised_after_it_returns():
    """A function whose code lives in numba's package stands in for numba's callbacks: the interrupt must not be
    raised inside it, but as soon as it has returned."""
    import importlib.util

    spec = importlib.util.find_spec(DEFER_IN[0])
    fake = os.path.join(spec.submodule_search_locations[0], "_ex4d_test_callback.py")
    scope: dict = {}
    exec(compile("def callback(done):\n"
                 "    import signal\n"
                 "    signal.raise_signal(signal.SIGINT)\n"
                 "    for _ in range(300_000):\n"
                 "        pass\n"
                 "    done.set()\n", fake, "exec"), scope)
    done = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred_in_native():
            scope["callback"](done)
            assert done.is_set()  # the callback ran to its end
            for _ in range(100_000_000):
                pass
            pytest.fail("the held-back interrupt never arrived")
    assert done.is_set()
