"""A warm generation worker (``ex4d serve``): the models loaded once, jobs taken over local HTTP, one at a time.

Start it (it prints ``ready`` and, with ``--ready-file``, writes ``{"url": ...}`` once the models are loaded)::

    ex4d serve --wan /models/Wan2.1-I2V-14B-480P-Diffusers --adapter /models/EX-4D/ex4d.ckpt --compile --port 8765

and send it jobs, from the command line (``ex4d generate --server http://127.0.0.1:8765 --color … --mask …
--out …``), from Python (:class:`ServeClient`), or with any HTTP client:

=====================  ========================================================================
request                answer (JSON)
=====================  ========================================================================
``GET  /health``       ``{"ok": true, "state": "ready", "queued": 0, "running": null, "models": …}``
``POST /jobs``         a job (:mod:`ex4d.diffusion.jobs`) → 202 ``{"id", "state": "queued", "position"}``;
                       400 ``{"error"}`` for a bad job, 503 when the queue is full
``GET  /jobs/ID``      ``{"id", "state": "queued"|"running"|"done"|"error", "message", "result", …}``;
                       ``result`` is the record written next to the output (timings included)
``GET  /jobs``         the last 200 jobs
``DELETE /jobs/ID``    cancel a queued job (409 once it runs)
``POST /shutdown``     finish the running job, then stop
=====================  ========================================================================

Jobs run in submission order on one GPU worker thread; a failing job (bad input, out of memory) is
reported and the worker takes the next one. The server binds 127.0.0.1 by default: a job names files
that the server reads and writes with its user's rights, so it refuses other addresses unless
``--allow-remote``. Bodies are at most 1 MiB of plain JSON objects; the queue holds at most 1000 jobs;
jobs live in memory (a restarted server has none).

For the web app (or any program) that keeps one GPU worker across jobs: start ``ex4d serve`` once and
call :meth:`ServeClient.generate` (files) or :meth:`ServeClient.generate_arrays` (numpy arrays) per job.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import Ex4dError, check
from .config import GenerateConfig
from .jobs import Job, check_output_path, parse_job, run_job, write_record

__all__ = ["GenerateService", "Listener", "serve", "ServeClient", "MAX_BODY_BYTES", "MAX_QUEUE"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024**2
MAX_QUEUE = 1000
_KEEP = 200
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class GenerateService:
    """Jobs for one loaded :class:`~ex4d.diffusion.pipeline.Ex4dGenerator`, run in order by one worker thread.

    Args:
        generator: the loaded models.
        base: per-job defaults (the server's sampling flags); jobs override the per-job fields.
        record: fields added to every job's record (weights, flags).
    """

    def __init__(self, generator, base: GenerateConfig, record: dict | None = None, max_queue: int = MAX_QUEUE) -> None:
        self.generator = generator
        self.base = base
        self.record = dict(record or {})
        self.jobs: dict[str, dict] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self.running: str | None = None
        self.done = 0
        self._num_threads = _torch_threads()  # the creating thread's: OpenMP counts threads per thread
        self._worker = threading.Thread(target=self._work, name="ex4d-serve-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ jobs

    def submit(self, obj) -> dict:
        """Check and queue one job (a JSON object); returns its record. Ex4dError for a bad job or a full queue."""
        check(not self._stop.is_set(), "the server is shutting down")
        job = parse_job(obj, self.base, where="job")
        check_output_path(job.out, job.overwrite, [job.color, job.mask, job.inputs], "out")
        with self._lock:
            busy = {str(r["job"].out.resolve()) for r in self.jobs.values() if r["state"] in ("queued", "running")}
            check(str(job.out.resolve()) not in busy, f"out {job.out} is already the output of a queued job")
            jid = f"{next(self._ids):06d}"
            rec = {"id": jid, "state": "queued", "message": "", "submitted": time.time(), "job": job, "result": None}
            try:
                self._queue.put_nowait(jid)
            except queue.Full:
                raise Ex4dError(f"the queue is full ({self._queue.maxsize} jobs); try again later") from None
            self.jobs[jid] = rec
            self._trim()
            return self._public(rec, position=self._queue.qsize())

    def status(self, jid: str) -> dict | None:
        with self._lock:
            rec = self.jobs.get(jid)
            return None if rec is None else self._public(rec)

    def list(self) -> list[dict]:
        with self._lock:
            return [self._public(r) for r in self.jobs.values()]

    def cancel(self, jid: str) -> dict | None:
        """Cancel a queued job (its record says ``cancelled``); a running or finished one is left as it is."""
        with self._lock:
            rec = self.jobs.get(jid)
            if rec is not None and rec["state"] == "queued":
                rec["state"], rec["message"] = "cancelled", "cancelled before it ran"
            return None if rec is None else self._public(rec)

    def health(self) -> dict:
        gen = self.generator
        with self._lock:
            queued = sum(r["state"] == "queued" for r in self.jobs.values())
        return {"ok": True, "state": "stopping" if self._stop.is_set() else "ready", "queued": queued,
                "running": self.running, "done": self.done, "models": self.record.get("models", {}),
                "load_timings_s": gen.load_timings, "pid": os.getpid()}

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; the running job finishes (queued ones are cancelled)."""
        self._stop.set()
        self._queue.put(None)
        if wait:
            self._worker.join()

    # ------------------------------------------------------------------ internals

    def _public(self, rec: dict, **extra) -> dict:
        out = {k: v for k, v in rec.items() if k != "job"}
        out["job"] = rec["job"].to_json()
        out.update(extra)
        return out

    def _trim(self) -> None:
        finished = [k for k, r in self.jobs.items() if r["state"] in ("done", "error", "cancelled")]
        for k in finished[: max(0, len(self.jobs) - _KEEP)]:
            del self.jobs[k]

    def _work(self) -> None:
        if self._num_threads is not None:  # the same CPU numbers as a run in the main thread
            import torch

            torch.set_num_threads(self._num_threads)
        while True:
            jid = self._queue.get()
            if jid is None or self._stop.is_set():
                with self._lock:
                    for r in self.jobs.values():
                        if r["state"] == "queued":
                            r["state"], r["message"] = "cancelled", "the server stopped"
                return
            with self._lock:
                rec = self.jobs.get(jid)
                if rec is None or rec["state"] != "queued":
                    continue
                rec["state"], rec["started"] = "running", time.time()
                self.running = jid
            job: Job = rec["job"]
            state, message, result = "done", "", None
            try:
                t = time.perf_counter()
                result = run_job(self.generator, job, self.base, self.record)
                result["timings_s"]["job"] = round(time.perf_counter() - t, 3)
                write_record(job, result)
                message = f"wrote {job.out}"
            except Ex4dError as e:
                state, message = "error", str(e)
            except Exception as e:  # noqa: BLE001 - one job's failure (e.g. out of GPU memory) must not stop the worker
                state, message = "error", f"internal error: {type(e).__name__}: {e} (please report it)"
                log.error("job %s failed:\n%s", jid, traceback.format_exc())
                _free_gpu_memory()
            with self._lock:
                rec.update(state=state, message=message, result=result, finished=time.time())
                self.running = None
                self.done += 1


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


def _free_gpu_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort after a failed job
        pass


# --------------------------------------------------------------------------- HTTP


class Listener:
    """The HTTP side: bound at once (a busy port fails before any model loads), serving from a thread.

    Until :meth:`start` hands it the :class:`GenerateService`, ``/health`` answers ``{"state": "loading"}``
    and jobs are refused with 503. :meth:`wait` returns after ``POST /shutdown`` (or raises on Ctrl-C,
    after the running job finished).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False) -> None:
        check(allow_remote or host in _LOOPBACK,
              f"--host {host} would let other machines make this server read and write files as you; use "
              f"127.0.0.1, or pass --allow-remote on a network you trust")
        self.service: GenerateService | None = None
        self._stopped = threading.Event()
        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), _handler(self))
        except OSError as e:
            raise Ex4dError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.httpd.daemon_threads = True
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="ex4d-serve-http", daemon=True)
        self._thread.start()

    def start(self, service: GenerateService, ready_file: str | os.PathLike | None = None, on_ready=None) -> None:
        """Take jobs for ``service`` from now on; write ``ready_file`` ({"url", "pid"}) and call ``on_ready(url)``."""
        self.service = service
        if ready_file is not None:
            from ..io.atomic import atomic_write_json

            atomic_write_json(ready_file, {"url": self.url, "pid": os.getpid()})
        if on_ready is not None:
            on_ready(self.url)

    def stop(self) -> None:
        """Finish the running job, cancel the queued ones, stop serving."""
        if self.service is not None:
            self.service.shutdown(wait=True)
        self._stopped.set()

    def wait(self) -> None:
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("\nex4d serve: stopping after the running job", file=sys.stderr, flush=True)
            self.stop()
            raise

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(service: GenerateService, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
          ready_file: str | os.PathLike | None = None, on_ready=None) -> None:
    """Serve ``service`` over HTTP until ``POST /shutdown`` or Ctrl-C (the running job finishes first)."""
    listener = Listener(host, port, allow_remote)
    try:
        listener.start(service, ready_file, on_ready)
        listener.wait()
    finally:
        listener.close()


def _handler(listener: "Listener"):
    class Handler(BaseHTTPRequestHandler):
        server_version = "ex4d-serve"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # requests go to the debug log, not to stderr
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, code: int, obj) -> None:
            body = (json.dumps(obj, default=str) + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self):
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise Ex4dError("Content-Length must be a number") from None
            check(0 < n <= MAX_BODY_BYTES, f"the body must be a JSON object of 1..{MAX_BODY_BYTES} bytes, got {n}")
            raw = self.rfile.read(n)
            try:
                return json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise Ex4dError(f"the body is not valid JSON ({e})") from None

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            service = listener.service
            try:
                if method == "GET" and path == "/health":
                    return self._send(200, service.health() if service is not None
                                      else {"ok": True, "state": "loading", "pid": os.getpid()})
                if service is None and path.startswith("/jobs"):
                    return self._send(503, {"error": "the models are still loading; retry when /health says ready"})
                if method == "GET" and path == "/jobs":
                    return self._send(200, {"jobs": service.list()})
                if path.startswith("/jobs/") and method in ("GET", "DELETE"):
                    jid = path[len("/jobs/"):]
                    rec = service.status(jid) if method == "GET" else service.cancel(jid)
                    if rec is None:
                        return self._send(404, {"error": f"no job {jid!r}"})
                    if method == "DELETE" and rec["state"] != "cancelled":
                        return self._send(409, {"error": f"job {jid} is {rec['state']}", **rec})
                    return self._send(200, rec)
                if method == "POST" and path == "/jobs":
                    try:
                        return self._send(202, service.submit(self._body()))
                    except Ex4dError as e:
                        code = 503 if "queue is full" in str(e) or "shutting down" in str(e) else 400
                        return self._send(code, {"error": str(e)})
                if method == "POST" and path == "/shutdown":
                    self._send(200, {"ok": True, "state": "stopping"})
                    threading.Thread(target=listener.stop, daemon=True).start()
                    return None
                return self._send(404, {"error": f"no route {method} {path}; see `ex4d serve --help`"})
            except Ex4dError as e:
                return self._send(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - answer, log, keep serving
                log.error("request %s %s failed:\n%s", method, path, traceback.format_exc())
                return self._send(500, {"error": f"internal error: {type(e).__name__} (please report it)"})

        def do_GET(self):  # noqa: N802
            self._route("GET")

        def do_POST(self):  # noqa: N802
            self._route("POST")

        def do_DELETE(self):  # noqa: N802
            self._route("DELETE")

    return Handler


# --------------------------------------------------------------------------- client


class ServeClient:
    """Python client of ``ex4d serve`` (stdlib only). Errors reported by the server are :class:`Ex4dError`."""

    def __init__(self, url: str = "http://127.0.0.1:8765", timeout: float = 30.0) -> None:
        check(url.startswith(("http://", "https://")), f"server URL must start with http://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, obj=None) -> dict:
        data = None if obj is None else json.dumps(obj).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", str(e))
            except ValueError:
                msg = str(e)
            raise Ex4dError(f"ex4d serve at {self.url}: {msg}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Ex4dError(f"cannot reach ex4d serve at {self.url} ({reason}); start it with `ex4d serve ...`") from None

    def health(self) -> dict:
        return self._call("GET", "/health")

    def submit(self, job: dict) -> str:
        """Queue ``job`` (see :mod:`ex4d.diffusion.jobs`); returns its id."""
        return self._call("POST", "/jobs", job)["id"]

    def status(self, jid: str) -> dict:
        return self._call("GET", f"/jobs/{jid}")

    def cancel(self, jid: str) -> dict:
        return self._call("DELETE", f"/jobs/{jid}")

    def shutdown(self) -> dict:
        return self._call("POST", "/shutdown", {})

    def wait(self, jid: str, timeout: float | None = None, poll: float = 0.2) -> dict:
        """The job's record once it is done; Ex4dError with the server's message if it failed."""
        t0 = time.monotonic()
        while True:
            rec = self.status(jid)
            if rec["state"] == "done":
                return rec
            if rec["state"] in ("error", "cancelled"):
                raise Ex4dError(f"job {jid}: {rec['message']}")
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise Ex4dError(f"job {jid} is still {rec['state']} after {timeout:.0f} s")
            time.sleep(poll)

    def generate(self, color: str | os.PathLike, mask: str | os.PathLike, out: str | os.PathLike,
                 overwrite: bool = False, timeout: float | None = None, **options) -> dict:
        """Run one job (video files; ``options``: per-job GenerateConfig fields) and wait for it."""
        job = {"color": str(Path(color).resolve()), "mask": str(Path(mask).resolve()), "out": str(Path(out).resolve()),
               "options": options, "overwrite": overwrite}
        return self.wait(self.submit(job), timeout=timeout)

    def generate_arrays(self, color, mask, fps: float = 16.0, timeout: float | None = None, **options):
        """Completed video [T, H, W, 3] uint8 for ``color`` [T, H, W, 3] uint8 and ``mask`` [T, H, W] bool.

        The arrays travel through a temporary ``.npz`` (the server runs on this machine).
        """
        import numpy as np

        with tempfile.TemporaryDirectory(prefix="ex4d-serve-") as tmp:
            np.savez(Path(tmp) / "inputs.npz", color=color, mask=mask, fps=np.float64(fps))
            self.wait(self.submit({"inputs": str(Path(tmp) / "inputs.npz"), "out": str(Path(tmp) / "out.npz"),
                                   "options": options}), timeout=timeout)
            with np.load(Path(tmp) / "out.npz") as z:
                return z["video"]


def print_ready(url: str, load_s: float) -> None:
    print(f"ex4d serve: ready on {url} (models loaded in {load_s:.1f} s); send jobs with "
          f"`ex4d generate --server {url} --color ... --mask ... --out ...`", flush=True)
    sys.stdout.flush()
