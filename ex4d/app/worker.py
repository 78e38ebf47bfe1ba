"""One job in its own process, started by the server with :func:`~ex4d.app.jobs.worker_command` (by hand:
``python -m ex4d.app.worker JOB_DIR``).

Reads ``JOB_DIR/run.json`` (``{"config": RunConfig dict}``), runs
:func:`ex4d.pipeline.run_pipeline` into ``JOB_DIR/out`` and keeps
``JOB_DIR/status.json`` up to date for the server::

    {"state": "running" | "done" | "error", "stage": "render", "done": 3, "total": 9,
     "message": "...", "summary": {...}, "updated": unix time}

Live progress comes from the library's own progress bars: every stage
creates a ``tqdm.auto.tqdm``, which this process (and only this one) replaces
with a bar that reports to status.json. A separate process keeps a crash or
a cancel (SIGTERM) from touching the server, and frees all memory after each job.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

__all__ = ["main", "STATUS_FILE", "RUN_FILE", "OUT_DIR", "read_status"]

STATUS_FILE = "status.json"
RUN_FILE = "run.json"
OUT_DIR = "out"


def read_status(job_dir: Path) -> dict:
    """The worker's last status (``{}`` if none yet or unreadable mid-write)."""
    try:
        return json.loads((Path(job_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class _Reporter:
    def __init__(self, job_dir: Path):
        self.path = job_dir / STATUS_FILE
        self.state = {"state": "running", "stage": "starting", "done": 0, "total": 0, "message": ""}
        self._last = 0.0

    def update(self, force: bool = False, **kw) -> None:
        from ..io.atomic import atomic_write_json

        self.state.update(kw)
        now = time.monotonic()
        if force or now - self._last > 0.2:
            self._last = now
            atomic_write_json(self.path, {**self.state, "updated": time.time()})


def _install_progress(reporter: _Reporter) -> None:
    """Make every ``tqdm.auto.tqdm`` the library creates report to ``reporter``."""
    import tqdm.auto
    from tqdm import tqdm as _tqdm

    class ReportingBar(_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = sys.stderr
            super().__init__(*args, **kwargs)
            reporter.update(force=True, stage=self.desc or "working", done=0, total=int(self.total or 0))

        def update(self, n=1):
            out = super().update(n)
            reporter.update(stage=self.desc or "working", done=int(self.n), total=int(self.total or 0))
            return out

    tqdm.auto.tqdm = ReportingBar


def run_job(job_dir: Path) -> int:
    """Run the job in ``job_dir``; returns 0 (done), 2 (user error) or 1 (internal error)."""
    from ..errors import Ex4dError
    from ..pipeline import RunConfig, run_pipeline
    from .redact import redact_text

    reporter = _Reporter(job_dir)
    reporter.update(force=True)
    _install_progress(reporter)
    try:
        from ..io.json_input import read_json

        spec = read_json(job_dir / RUN_FILE, RUN_FILE)
        config = RunConfig.from_dict(spec["config"])
        reporter.update(force=True, stage="reading input")
        summary = run_pipeline(config, job_dir / OUT_DIR, overwrite=True, fill=True, progress=True)
    except Ex4dError as e:
        reporter.update(force=True, state="error", message=redact_text(str(e), job_dir))
        return 2
    except Exception as e:  # noqa: BLE001 - reported to the user, traceback kept in the job log
        traceback.print_exc()
        reporter.update(force=True, state="error", message=redact_text(
            f"internal error ({type(e).__name__}: {e}); see log.txt of the job on the server", job_dir))
        return 1
    total = sum(v for v in summary.timings.values() if isinstance(v, float))
    message = (f"{summary.num_frames} frames {summary.width}×{summary.height}, {100 * summary.known_fraction:.1f}% of "
               f"the novel-view pixels known, {total:.1f} s")  # no server paths in what the browser sees
    reporter.update(force=True, state="done", stage="done", message=message,
                    summary={"num_frames": summary.num_frames, "width": summary.width, "height": summary.height,
                             "known_fraction": summary.known_fraction, "timings": summary.timings})
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ex4d.app.worker JOB_DIR", file=sys.stderr)
        return 2
    return run_job(Path(argv[0]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
