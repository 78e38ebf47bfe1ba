"""Jobs of the web app: one sandboxed folder each, a FIFO queue, one worker process at a time.

Layout of the work root (``ex4d app --workdir``, mode 0700)::

    ROOT/<job id>/job.json        owner session, state, upload info (server-side only)
    ROOT/<job id>/input/          video.<container>, depth.<npz|npy> (fixed names, never the user's)
    ROOT/<job id>/preview/        scene exports and frame-0 depth of the input
    ROOT/<job id>/run.json        the RunConfig the worker runs
    ROOT/<job id>/status.json     the worker's progress
    ROOT/<job id>/out/            the run's outputs (ex4d.pipeline)
    ROOT/<job id>/results.zip     the download

Job ids are 128-bit random tokens and every job belongs to the browser
session that created it (a token this server issued and remembers, see
:mod:`.capacity`): a request for a malformed id, an unknown one or someone
else's gets the same "no such job". File names that can be served are a fixed
list. Jobs run one after another in a worker process (:func:`worker_command`:
in the job's folder, importing the server's own ex4d), so several users' jobs
queue instead of competing for the CPU/GPU; the number of job folders, the
queue, the disk they use and the uploads at once are bounded for the whole
server; finished jobs older than ``keep_hours`` are deleted.
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Ex4dError, check
from .capacity import (DiskBudget, DiskFull, QueueFull, ServerBusy, SessionRegistry, UnknownSession, UploadSlots,
                       new_token)
from .spec import ServerModels, build_run_config
from .uploads import AppLimits, check_depth_file, check_video_file, sniff_depth, sniff_video
from .worker import OUT_DIR, RUN_FILE, read_status

__all__ = ["Job", "JobStore", "JobNotFound", "QueueFull", "ServerBusy", "DiskFull", "UnknownSession", "SERVED_FILES",
           "new_token", "valid_token", "worker_command"]  # the capacity errors are re-exported from .capacity

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
#: Output files the app serves (name → media type); nothing else of a job folder is reachable.
SERVED_FILES = {"color.mp4": "video/mp4", "mask.mp4": "video/mp4", "output.mp4": "video/mp4",
                "preview.mp4": "video/mp4", "cameras.json": "application/json",
                "cameras_ex4d.npz": "application/octet-stream", "config.json": "application/json",
                "stereo.mp4": "video/mp4", "stereo.json": "application/json"}
_ZIP_SKIP = {".ex4d"}
FINAL_STATES = ("done", "error", "cancelled")


class JobNotFound(Ex4dError):
    """No job with this id belongs to this session."""


_BOOTSTRAP = (
    "import importlib.util, os, sys\n"
    "root, job = sys.argv[1], sys.argv[2]\n"
    "spec = importlib.util.find_spec('ex4d')\n"
    "found = spec and spec.origin and os.path.dirname(os.path.dirname(os.path.realpath(spec.origin)))\n"
    "if found != root:\n"
    "    sys.path.insert(0, root)\n"
    "from ex4d.app.worker import main\n"
    "sys.exit(main([job]))\n")


def worker_command(python: str, job_dir: Path) -> list[str]:
    """The command that runs one job: ``python -c BOOTSTRAP PACKAGE_ROOT JOB_DIR``.

    The worker must import the same ex4d as the server, never an ``ex4d/`` folder
    that happens to sit in the directory the server was started from: ``python -m``
    would put that directory first on ``sys.path``. So the worker runs with its
    job folder as working directory (which holds only fixed names) and
    ``PYTHONSAFEPATH=1``, and the bootstrap puts the folder of the server's own
    ex4d package first on ``sys.path`` when the interpreter would find another
    one (or none) by itself.
    """
    import ex4d

    return [python, "-c", _BOOTSTRAP, os.path.realpath(Path(ex4d.__file__).parents[1]), str(job_dir)]


def valid_token(value) -> bool:
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


@dataclass
class Job:
    """One job's server-side record (``job.json``)."""

    id: str
    session: str
    dir: Path
    created: float
    state: str = "created"              #: created | queued | running | done | error | cancelled
    error: str | None = None
    video: dict | None = None           #: {"path", "info"} of the uploaded video
    depth: dict | None = None           #: {"path", "info"} of the uploaded depth file
    request: dict | None = None         #: the last run request
    started: float | None = None
    finished: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def save(self) -> None:
        from ..io.atomic import atomic_write_json

        atomic_write_json(self.dir / "job.json", {
            "id": self.id, "session": self.session, "created": self.created, "state": self.state,
            "error": self.error, "video": self.video, "depth": self.depth, "request": self.request,
            "started": self.started, "finished": self.finished})

    def input_paths(self) -> dict:
        return {"video": self.video["path"] if self.video else None,
                "video_info": self.video["info"] if self.video else None,
                "depth": self.depth["path"] if self.depth else None}


class JobStore:
    """All jobs of one server, their queue and the worker thread that runs them."""

    def __init__(self, root: str | os.PathLike, limits: AppLimits | None = None, models: ServerModels | None = None,
                 python: str | None = None):
        root = Path(root)
        try:
            if not root.exists():
                root.mkdir(parents=True, mode=0o700)  # job folders are private to this user
        except OSError as e:
            raise Ex4dError(f"cannot create the work folder {root} ({e.strerror or e}); choose another --workdir") \
                from None
        check(root.is_dir(), f"--workdir {root} is not a folder")
        check(os.access(root, os.W_OK | os.X_OK), f"--workdir {root} is not writable; choose another --workdir")
        self.root = root.resolve()  # workers run in their job folder: every path they get is absolute
        self.limits = limits or AppLimits()
        self.models = models or ServerModels()
        self.python = python or sys.executable
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._running: str | None = None
        self._job_locks: dict[str, threading.Lock] = {}
        self._thread: threading.Thread | None = None
        self.sessions = SessionRegistry(self.limits.max_sessions)
        self.uploads = UploadSlots(self.limits.max_concurrent_uploads)
        self.disk = DiskBudget(self.root, self.limits.max_disk_bytes, self.limits.min_free_bytes)
        self.cleanup()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._work, name="ex4d-app-worker", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker thread, terminating a running job."""
        with self._lock:
            self._stop = True
            running = self._jobs.get(self._running) if self._running else None
            self._wake.notify_all()
        if running is not None and running.proc is not None:
            _terminate(running.proc)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ sessions
    def issue_session(self) -> str:
        """A new session token that this server remembers (the only kind it accepts); see :mod:`.capacity`."""
        with self._lock:
            busy = {j.session for j in self._jobs.values() if j.state in ("queued", "running")}
            token, forgotten = self.sessions.issue(busy, {j.session for j in self._jobs.values()})
            for old in forgotten:  # their jobs can no longer be reached
                for job in [j for j in self._jobs.values() if j.session == old]:
                    self._delete(job)
            return token

    def known_session(self, token) -> bool:
        """True if ``token`` was issued by :meth:`issue_session` and not forgotten since (and marks it as seen)."""
        return valid_token(token) and self.sessions.known(token)

    # ------------------------------------------------------------------ access
    def create(self, session: str) -> Job:
        """A new empty job owned by ``session`` (a token from :meth:`issue_session`)."""
        if not self.known_session(session):
            raise UnknownSession("this session was not issued by this server (it may have restarted); reload the "
                                 "page")
        self.cleanup()
        self.disk.check()
        with self._lock:
            mine = sorted((j for j in self._jobs.values() if j.session == session), key=lambda j: j.created)
            while len(mine) >= self.limits.max_jobs_per_session:
                old = next((j for j in mine if j.state in FINAL_STATES + ("created",)), None)
                check(old is not None, f"you have {len(mine)} jobs queued or running; wait for one to finish")
                self._delete(old)
                mine.remove(old)
            if len(self._jobs) >= self.limits.max_jobs:
                # Make room from jobs that never ran and sat idle for 10 minutes (never from results).
                stale = sorted((j for j in self._jobs.values() if j.state == "created"
                                and time.time() - j.created > 600), key=lambda j: j.created)
                for old in stale[: len(self._jobs) - self.limits.max_jobs + 1]:
                    self._delete(old)
            if len(self._jobs) >= self.limits.max_jobs:
                raise ServerBusy(f"this server holds {len(self._jobs)} jobs, the most it keeps; try again later")
            job_id = new_token()
            d = self.root / job_id
            d.mkdir(mode=0o700)
            job = Job(id=job_id, session=session, dir=d, created=time.time())
            job.save()
            self._jobs[job_id] = job
            self._job_locks[job_id] = threading.Lock()
            return job

    def get(self, job_id, session) -> Job:
        """The job ``job_id`` if it belongs to ``session``, else :class:`JobNotFound` (same error for every case)."""
        with self._lock:
            job = self._jobs.get(job_id) if valid_token(job_id) else None
            if job is None or not valid_token(session) or not secrets.compare_digest(job.session, session):
                raise JobNotFound("no such job (it may have expired); start a new one")
            return job

    def redact(self, text: str, job: Job | None = None) -> str:
        """``text`` as the browser may see it: no server paths (see :mod:`ex4d.app.redact`)."""
        from .redact import redact_text

        return redact_text(text, job.dir if job is not None else None, self.root, self._hidden_paths())

    def _hidden_paths(self) -> list[str]:
        m = self.models
        return [p for p in (m.wan, m.adapter, *m.depth_weights.values()) if p]

    def served_json(self, job: Job, name: str = "config.json"):
        """The job's ``out/NAME`` (a JSON output) with every path relative to the job folder (or reduced to its name)."""
        from ..io.json_input import read_json
        from .redact import redact_json

        value = read_json(job.dir / OUT_DIR / name, name, max_bytes=64 << 20)
        return redact_json(value, job.dir, self.root, self._hidden_paths())

    def job_lock(self, job: Job) -> threading.Lock:
        return self._job_locks[job.id]

    def file(self, job: Job, name: str) -> Path:
        """Path of an output file from the fixed list, or JobNotFound."""
        if name not in SERVED_FILES:
            raise JobNotFound(f"no file {name!r} here")
        path = job.dir / OUT_DIR / name
        if not path.is_file():
            raise JobNotFound(f"{name} is not there (yet)")
        return path

    # ------------------------------------------------------------------ uploads
    def upload_path(self, job: Job, kind: str) -> Path:
        """Temporary file an upload of ``kind`` (video | depth) is streamed into."""
        check(kind in ("video", "depth"), f"unknown upload kind {kind!r}; expected video or depth")
        check(job.state in ("created",) + FINAL_STATES, "this job is queued or running; wait or cancel it first")
        d = job.dir / "input"
        d.mkdir(exist_ok=True)
        return d / f".upload-{kind}"

    def accept_upload(self, job: Job, kind: str, tmp: Path) -> dict:
        """Check an uploaded file by content, move it to its fixed name and record it; returns its info."""
        try:
            with open(tmp, "rb") as f:
                head = f.read(64)
            if kind == "video":
                container = sniff_video(head)
                check(container is not None, "the uploaded file is not a video this app accepts (mp4, mov, webm, "
                                             "mkv, avi or gif, recognised by content, not by name)")
                dest = tmp.with_name(f"video.{container}")
                os.replace(tmp, dest)
                info = check_video_file(dest, self.limits)
            else:
                fmt = sniff_depth(head)
                check(fmt is not None, "the uploaded depth file is neither .npz nor .npy (recognised by content)")
                dest = tmp.with_name(f"depth.{fmt}")
                os.replace(tmp, dest)
                info = check_depth_file(dest, self.limits)
        except Ex4dError:
            for p in tmp.parent.glob(f"{kind}.*"):
                p.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
            with self._lock:
                setattr(job, kind, None)
                job.save()
            raise
        for p in dest.parent.glob(f"{kind}.*"):
            if p != dest:
                p.unlink()
        with self._lock:
            setattr(job, kind, {"path": str(dest), "info": info})
            job.save()
        return info

    def remove_upload(self, job: Job, kind: str) -> None:
        check(kind in ("video", "depth"), f"unknown upload kind {kind!r}")
        for p in (job.dir / "input").glob(f"{kind}.*"):
            p.unlink()
        with self._lock:
            setattr(job, kind, None)
            job.save()

    # ------------------------------------------------------------------ runs
    def run_config(self, job: Job, request: dict):
        """The checked RunConfig for ``request`` on this job's inputs."""
        return build_run_config(request, job.input_paths(), self.limits, self.models)

    def submit(self, job: Job, request: dict) -> int:
        """Queue a run of ``request``; returns its position (1 = next). Raises QueueFull or Ex4dError."""
        config = self.run_config(job, request)
        self.disk.check()
        with self._lock:
            check(job.state not in ("queued", "running"), "this job is already queued or running")
            waiting = len(self._queue)
            if waiting >= self.limits.max_queue:
                raise QueueFull(f"{waiting} jobs are waiting, the most this server queues; try again in a while")
            from ..io.atomic import atomic_write_json

            atomic_write_json(job.dir / RUN_FILE, {"config": json.loads(json.dumps(config.to_dict(), default=str))})
            (job.dir / "status.json").unlink(missing_ok=True)
            (job.dir / "results.zip").unlink(missing_ok=True)
            job.state, job.error, job.request, job.started, job.finished = "queued", None, request, None, None
            job.save()
            self._queue.append(job.id)
            self._wake.notify_all()
            return len(self._queue)

    def cancel(self, job: Job) -> None:
        with self._lock:
            if job.state == "queued":
                self._queue.remove(job.id)
                job.state, job.finished = "cancelled", time.time()
                job.save()
                return
            proc = job.proc if job.state == "running" else None
        if proc is not None:
            job.error = "cancelled"
            _terminate(proc)

    def status(self, job: Job) -> dict:
        """What the browser polls: state, queue position, progress, error, available files."""
        with self._lock:
            out = {"id": job.id, "state": job.state, "error": self.redact(job.error, job) if job.error else None,
                   "created": job.created,
                   "started": job.started, "finished": job.finished,
                   "video": job.video["info"] if job.video else None,
                   "depth": job.depth["info"] if job.depth else None}
            if job.state == "queued":
                out["position"] = list(self._queue).index(job.id) + 1
        if job.state in ("running", "done", "error"):
            st = read_status(job.dir)
            out["progress"] = {k: st.get(k) for k in ("stage", "done", "total")}
            if job.state == "done":
                out["summary"] = st.get("summary")
                out["message"] = self.redact(str(st.get("message") or ""), job)
        out["files"] = sorted(n for n in SERVED_FILES if (job.dir / OUT_DIR / n).is_file()) \
            if job.state == "done" else []
        return out

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stop:
                    if not self._wake.wait(timeout=600):
                        self.cleanup()  # idle for 10 minutes: a good moment to drop expired jobs
                if self._stop:
                    return
                job = self._jobs.get(self._queue.popleft())
                if job is None:
                    continue
                job.state, job.started = "running", time.time()
                self._running = job.id
                log = open(job.dir / "log.txt", "ab")
                env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}
                job.proc = subprocess.Popen(worker_command(self.python, job.dir), cwd=job.dir, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
                job.save()
            rc = job.proc.wait()
            log.close()
            st = read_status(job.dir)
            with self._lock:
                self._running = None
                job.proc = None
                job.finished = time.time()
                if job.error == "cancelled":
                    job.state = "cancelled"
                elif rc == 0 and st.get("state") == "done":
                    job.state = "done"
                else:
                    job.state = "error"
                    job.error = st.get("message") or f"the job's worker stopped unexpectedly (exit code {rc}); " \
                                                      "see log.txt in its folder"
                job.save()

    # ------------------------------------------------------------------ results
    def results_zip(self, job: Job) -> Path:
        """``results.zip`` of the job's outputs (made once; mp4s stored, the rest deflated; no caches)."""
        check(job.state == "done", "the job has no results yet")
        path = job.dir / "results.zip"
        if path.is_file():
            return path
        from ..io.atomic import atomic_path

        out = job.dir / OUT_DIR
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as z:
            for p in sorted(out.rglob("*")):
                rel = p.relative_to(out)
                if len(rel.parts) == 1 and SERVED_FILES.get(rel.name) == "application/json":  # as served
                    z.writestr(f"ex4d-{job.id[:8]}/{rel}", json.dumps(self.served_json(job, rel.name), indent=2)
                               + "\n", compress_type=zipfile.ZIP_DEFLATED)
                elif p.is_file() and not p.is_symlink() and rel.parts[0] not in _ZIP_SKIP:
                    kind = zipfile.ZIP_STORED if p.suffix == ".mp4" else zipfile.ZIP_DEFLATED
                    z.write(p, f"ex4d-{job.id[:8]}/{rel}", compress_type=kind)
        return path

    # ------------------------------------------------------------------ clean-up
    def _delete(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self._job_locks.pop(job.id, None)
        shutil.rmtree(job.dir, ignore_errors=True)

    def cleanup(self, now: float | None = None) -> int:
        """Delete jobs (and leftover folders) idle for longer than ``keep_hours``; returns how many."""
        now = time.time() if now is None else now
        keep = self.limits.keep_hours * 3600
        removed = 0
        with self._lock:
            for job in list(self._jobs.values()):
                last = job.finished or job.created
                if job.state not in ("queued", "running") and now - last > keep:
                    self._delete(job)
                    removed += 1
            for d in self.root.iterdir():
                if d.is_dir() and valid_token(d.name) and d.name not in self._jobs and (d / "job.json").is_file():
                    try:
                        age = now - d.stat().st_mtime
                    except OSError:
                        continue
                    if age > keep:
                        shutil.rmtree(d, ignore_errors=True)
                        removed += 1
        return removed


def _terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the worker's process group, then SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
