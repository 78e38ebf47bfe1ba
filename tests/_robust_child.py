"""Child process for tests/test_cli_robustness.py: runs ex4d with an interrupt or a crash at a chosen point.

    python _robust_child.py interrupt RESULT.json OUT_BASE STAGE [STAGE …] -- EX4D ARGS (without --out)
        for each STAGE[@DELAY] (read, depth, render, fill, write, config): a run into OUT_BASE/I-STAGE that
        receives SIGINT DELAY s (default 0.05) after that stage starts (from a timer thread, so that it lands
        inside numba's kernels), then the same run again (resume); RESULT.json gets
        [{stage, dest, rc, err, temps, rc_again, err_again}, …].
    python _robust_child.py crash N -- EX4D ARGS (with --out)
        dies like ``kill -9`` (os._exit(137)) just before the N-th atomic rename, i.e. after its temp file
        has been written in full.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

_TEMP = ".tmp-"


def _interrupt_during(module, name: str, delay: float = 0.05):
    """Patch ``module.name`` so that SIGINT arrives ``delay`` s after it starts (or inside it, for quick ones)."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            result = original(*args, **kwargs)
            time.sleep(2 * delay)  # a quick stage: the signal lands right after it, before the next one
            return result
        finally:
            timer.cancel()

    setattr(module, name, wrapper)
    return lambda: setattr(module, name, original)


def _targets():
    import ex4d.fill
    import ex4d.io.video_write
    import ex4d.pipeline
    import ex4d.recon
    import ex4d.streaming

    # the stages stream chunk by chunk (ex4d.streaming): each target is called per chunk, the first call interrupted
    return {"read": (ex4d.streaming, "read_clip"), "depth": (ex4d.pipeline, "_depth_stage"),
            "render": (ex4d.recon, "render_novel_views"), "fill": (ex4d.fill, "reproject_and_inpaint"),
            "write": (ex4d.io.video_write.VideoWriter, "write"), "config": (ex4d.pipeline, "atomic_write_json")}


def _run(argv: list[str]) -> tuple[int, str]:
    from ex4d.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def _import_decoders() -> None:
    """Import PyAV in full before any run is interrupted.

    The runs and their resumes share this process, unlike a user's (each command is a new process). A SIGINT
    that lands while a library's module is first imported leaves it half-imported here: Python drops the
    module and the next import re-creates its types, which PyAV's compiled modules then refuse
    ("Cannot convert av.video.frame.VideoFrame to av.frame.Frame"). What is tested is ex4d's stages.
    """
    import av
    import av.codec.context  # noqa: F401
    import av.frame  # noqa: F401
    import av.video.frame  # noqa: F401


def interrupt(result: str, base: str, stages: list[str], argv: list[str]) -> None:
    _import_decoders()
    targets = _targets()
    out = []
    for i, spec in enumerate(stages):
        stage, _, delay = spec.partition("@")
        dest = str(Path(base) / f"{i}-{stage}")
        undo = _interrupt_during(*targets[stage], delay=float(delay or 0.05))
        try:
            rc, err = _run([*argv, "--out", dest])
        finally:
            undo()
        temps = sorted(str(p) for p in Path(dest).rglob(f"*{_TEMP}*")) if Path(dest).exists() else []
        rc2, err2 = _run([*argv, "--out", dest])
        out.append({"stage": stage, "dest": dest, "rc": rc, "err": err, "temps": temps, "rc_again": rc2,
                    "err_again": err2})
    Path(result).write_text(json.dumps(out))


def crash(n: int, argv: list[str]) -> None:
    replace = os.replace
    count = [0]

    def dying_replace(src, dst, *a, **k):
        if _TEMP in os.path.basename(os.fspath(src)):
            count[0] += 1
            if count[0] == n:
                os._exit(137)
        return replace(src, dst, *a, **k)

    os.replace = dying_replace
    from ex4d.cli import main

    sys.exit(main(argv))


if __name__ == "__main__":
    sep = sys.argv.index("--")
    head, argv = sys.argv[1:sep], sys.argv[sep + 1:]
    if head[0] == "interrupt":
        interrupt(head[1], head[2], head[3:], argv)
    else:
        crash(int(head[1]), argv)
