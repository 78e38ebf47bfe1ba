"""HTTP layer of ``ex4d app`` and ``ex4d view`` (Starlette + uvicorn), thin over :mod:`.jobs` and :mod:`.export`.

Pages come from the front-end bundle (``web/``, built by ``scripts/setup_app.sh``
into ``ex4d/app/static/``); everything else is a small JSON API. Errors the
user can fix come back as ``{"error": message}`` with a 4xx status and are
shown in the page as they are.

App API (all under the browser session's cookie; a job is visible to its session only)
-------------------------------------------------------------------------------------
=========================================  ===================================================
``GET  /api/config``                       presets, depth models, fills, limits
``POST /api/jobs``                         new job → ``{"id"}``
``PUT  /api/jobs/{id}/upload/{kind}``      raw body = the file (kind: video | depth)
``DELETE /api/jobs/{id}/upload/{kind}``    forget an upload
``POST /api/jobs/{id}/preview``            run request → input scene export URL + clip info
``POST /api/jobs/{id}/path``               run request → the camera path (OpenCV w2c, K)
``POST /api/jobs/{id}/run``                run request → queued (position)
``POST /api/jobs/{id}/cancel``             cancel a queued or running job
``GET  /api/jobs/{id}``                    state, queue position, progress, error, files
``GET  /api/jobs/{id}/files/{name}``       an output (fixed list of names)
``GET  /api/jobs/{id}/scene/input?key=``   the input's scene export (gzip)
``GET  /api/jobs/{id}/scene/run``          the run's scene export (gzip), for the 4D viewer
``GET  /api/jobs/{id}/download``           results.zip
=========================================  ===================================================
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from ..errors import Ex4dError
from ..io.outdir import FolderBusy, run_folder_lock
from .jobs import (SERVED_FILES, DiskFull, JobNotFound, JobStore, QueueFull, ServerBusy, UnknownSession,
                   valid_token)

__all__ = ["create_app", "create_view_app", "static_dir", "check_frontend", "ServerHandle", "start_server",
           "serve", "SESSION_COOKIE"]

SESSION_COOKIE = "ex4d_session"
_KEY_RE = re.compile(r"^[0-9a-f]{16}$")
_PREVIEW_SIZE = 256
MAX_JSON_BODY = 64 << 10  #: bytes of a JSON request body (a run request is well under 4 KB)
MAX_JSON_DEPTH = 8
_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class _Forbidden(Ex4dError):
    pass


class _TooLarge(Ex4dError):
    pass


_STATUS = ((JobNotFound, 404), (QueueFull, 429), (_Forbidden, 403), (UnknownSession, 403), (ServerBusy, 503),
           (DiskFull, 507), (_TooLarge, 413), (FolderBusy, 409))


def static_dir() -> Path:
    """Folder of the built front-end (``EX4D_APP_STATIC`` overrides it)."""
    return Path(os.environ.get("EX4D_APP_STATIC") or Path(__file__).with_name("static"))


def check_frontend() -> Path:
    """The built front-end folder, or Ex4dError saying how to build it."""
    d = static_dir()
    missing = [n for n in ("app.html", "view.html", "app.js", "view.js") if not (d / n).is_file()]
    if missing:
        raise Ex4dError(f"the web front-end is not built ({', '.join(missing)} missing in {d}); "
                        "run `bash scripts/setup_app.sh` (npm install + build) from the ex4d repository")
    return d


def _deps():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise Ex4dError(f"the web app needs the app extra ({e.name} is missing): pip install 'ex4d[app]' "
                        "or run `bash scripts/setup_app.sh`") from None


# ---------------------------------------------------------------------------------------------- helpers

def _error_response(exc: Exception, redact=str):
    """``{"error": message}`` with the status of the error's class (400 for any other Ex4dError)."""
    from starlette.responses import JSONResponse

    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
    message = " ".join(redact(str(exc)).split())  # one line, whatever the library wrote
    return JSONResponse({"error": message if len(message) <= 600 else message[:599] + "…"}, status_code=status)


def _internal_error(request, exc: Exception):
    """A bug (the traceback goes to the server log): a short JSON answer without server details."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": "internal error of the ex4d app; see the server log (please report it)"},
                        status_code=500)


async def read_body(request, limit: int, what: str) -> bytes:
    """The request body, refused (413) as soon as it is declared or found to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_big = _TooLarge(f"{what} is larger than the {limit:,} bytes this app accepts")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in _stream(request):
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _stream(request):
    """``request.stream()``, with a client that went away mid-body as an Ex4dError (not a server error)."""
    from starlette.requests import ClientDisconnect

    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise Ex4dError("the request was interrupted before its body arrived") from None


def _security_headers(app, csp: str = _CSP):
    """Pure ASGI middleware adding nosniff, CSP and no-referrer headers to every response."""
    extra = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", csp.encode()),
             (b"referrer-policy", b"no-referrer")]

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        return await app(scope, receive, send_with_headers)

    return wrapped


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _middleware(host: str):
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    # DNS rebinding: a page on another site must not reach the local server under its own host name.
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if _loopback(host) else ["*"]
    return [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]


def _page(name: str):
    from starlette.responses import FileResponse, HTMLResponse

    try:
        return FileResponse(check_frontend() / name, media_type="text/html", headers={"Cache-Control": "no-cache"})
    except Ex4dError as e:
        return HTMLResponse(f"<h1>ex4d</h1><p>{e}</p>", status_code=503)


def _gzip_file(path: Path):
    from starlette.responses import FileResponse

    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Content-Encoding": "gzip", "Cache-Control": "no-cache"})


def _static_routes():
    from starlette.responses import Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def no_icon(request):
        return Response(status_code=204)

    return [Mount("/static", app=StaticFiles(directory=static_dir(), check_dir=False), name="static"),
            Route("/favicon.ico", no_icon)]


# ---------------------------------------------------------------------------------------------- app

def create_app(store: JobStore, host: str = "127.0.0.1"):
    """The ``ex4d app`` ASGI application over ``store`` (call ``store.start()`` to run jobs)."""
    _deps()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    from ..trajectory import PRESETS
    from .preview import path_preview, prepare_preview

    def session_of(request: Request) -> str:
        s = request.cookies.get(SESSION_COOKIE)
        if not valid_token(s):
            raise _Forbidden("no session cookie: reload the page (cookies must be enabled for this site)")
        if not store.known_session(s):
            raise UnknownSession("this session is unknown to the server (it restarted, or the session expired): "
                                 "reload the page")
        return s

    def job_of(request: Request):
        return store.get(request.path_params["job"], session_of(request))

    async def request_json(request: Request) -> dict:
        from ..io.json_input import parse_json

        data = await read_body(request, MAX_JSON_BODY, "the request body")
        body = parse_json(data, "the request body", max_bytes=MAX_JSON_BODY, max_depth=MAX_JSON_DEPTH)
        if not isinstance(body, dict):
            raise Ex4dError("the request body must be a JSON object")
        return body

    async def index(request: Request):
        resp = _page("app.html")
        if not store.known_session(request.cookies.get(SESSION_COOKIE)):
            resp.set_cookie(SESSION_COOKIE, store.issue_session(), httponly=True, samesite="strict", path="/")
        return resp

    async def view_page(request: Request):
        return _page("view.html")

    async def config(request: Request):
        models = store.models
        return JSONResponse({
            "presets": PRESETS, "fills": models.fills(),
            "depth_models": sorted(models.depth_weights), "limits": store.limits.to_dict()})

    async def create(request: Request):
        job = store.create(session_of(request))
        return JSONResponse({"id": job.id}, status_code=201)

    async def upload(request: Request):
        job = job_of(request)
        kind = request.path_params["kind"]
        tmp = store.upload_path(job, kind)
        limit = store.limits.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge(f"the file is larger than this app's limit of {store.limits.max_upload_mb:g} MB")
        with store.uploads.hold(job.id):  # bounded: uploads at once (memory of the checks), one per job
            store.disk.check(int(declared) if declared is not None and declared.isdigit() else 0)
            room = store.disk.left()
            size = 0
            try:
                with open(tmp, "wb") as f:
                    async for chunk in _stream(request):
                        size += len(chunk)
                        if size > limit:
                            raise _TooLarge(f"the file is larger than this app's limit of "
                                            f"{store.limits.max_upload_mb:g} MB")
                        if size > room:
                            raise DiskFull("the server's job storage is full; try again once older jobs have "
                                           "expired")
                        f.write(chunk)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if size == 0:
                tmp.unlink(missing_ok=True)
                raise Ex4dError("the upload is empty")
            try:
                info = await run_in_threadpool(store.accept_upload, job, kind, tmp)
            finally:
                store.disk.invalidate()
        return JSONResponse({"kind": kind, "info": info})

    async def remove_upload(request: Request):
        job = job_of(request)
        store.remove_upload(job, request.path_params["kind"])
        return JSONResponse({"ok": True})

    def _preview(job, req):
        config = store.run_config(job, req)
        with store.job_lock(job):
            return prepare_preview(config, job.dir / "preview", max_size=_PREVIEW_SIZE)

    async def preview(request: Request):
        job = job_of(request)
        res = await run_in_threadpool(_preview, job, await request_json(request))
        return JSONResponse({"scene": f"/api/jobs/{job.id}/scene/input?key={res['key']}", "info": res["info"]})

    def _path(job, req):
        config = store.run_config(job, req)
        with store.job_lock(job):
            return path_preview(config, job.dir / "preview")

    async def path(request: Request):
        job = job_of(request)
        return JSONResponse(await run_in_threadpool(_path, job, await request_json(request)))

    async def run(request: Request):
        job = job_of(request)
        position = await run_in_threadpool(store.submit, job, await request_json(request))
        return JSONResponse({"state": "queued", "position": position}, status_code=202)

    async def cancel(request: Request):
        job = job_of(request)
        await run_in_threadpool(store.cancel, job)
        return JSONResponse(store.status(job))

    async def status(request: Request):
        return JSONResponse(store.status(job_of(request)), headers={"Cache-Control": "no-store"})

    async def file(request: Request):
        job = job_of(request)
        name = request.path_params["name"]
        path = store.file(job, name)
        if SERVED_FILES[name] == "application/json":  # may name files: relative to the job, never server paths
            return JSONResponse(await run_in_threadpool(store.served_json, job, name),
                                headers={"Cache-Control": "no-cache"})
        return FileResponse(path, media_type=SERVED_FILES[name], headers={"Cache-Control": "no-cache"})

    async def scene(request: Request):
        job = job_of(request)
        which = request.path_params["which"]
        if which == "input":
            key = request.query_params.get("key", "")
            p = job.dir / "preview" / f"{key}-{_PREVIEW_SIZE}.bin.gz"
            if not _KEY_RE.match(key) or not p.is_file():
                raise JobNotFound("no such preview; load it again")
            return _gzip_file(p)
        if which == "run":
            if job.state != "done":
                raise Ex4dError("the job has not finished")
            from .export import export_run_scene

            def make():
                with store.job_lock(job):
                    return export_run_scene(job.dir / "out", max_size=store.limits.max_res)

            return _gzip_file(await run_in_threadpool(make))
        raise JobNotFound("no such scene")

    async def download(request: Request):
        job = job_of(request)
        path = await run_in_threadpool(store.results_zip, job)
        return FileResponse(path, media_type="application/zip", filename=f"ex4d-{job.id[:8]}.zip")

    routes = [
        Route("/", index), Route("/view", view_page), Route("/api/config", config),
        Route("/api/jobs", create, methods=["POST"]),
        Route("/api/jobs/{job}", status),
        Route("/api/jobs/{job}/upload/{kind}", upload, methods=["PUT"]),
        Route("/api/jobs/{job}/upload/{kind}", remove_upload, methods=["DELETE"]),
        Route("/api/jobs/{job}/preview", preview, methods=["POST"]),
        Route("/api/jobs/{job}/path", path, methods=["POST"]),
        Route("/api/jobs/{job}/run", run, methods=["POST"]),
        Route("/api/jobs/{job}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job}/files/{name}", file),
        Route("/api/jobs/{job}/scene/{which}", scene),
        Route("/api/jobs/{job}/download", download),
        *_static_routes(),
    ]
    handlers = {Ex4dError: lambda request, exc: _error_response(exc, store.redact), Exception: _internal_error}
    app = Starlette(routes=routes, middleware=_middleware(host), exception_handlers=handlers)
    return _security_headers(app)


# ---------------------------------------------------------------------------------------------- viewer

def create_view_app(out: str | os.PathLike, max_size: int = 512, host: str = "127.0.0.1"):
    """The ``ex4d view OUT`` ASGI application: the 4D viewer of one finished run folder."""
    _deps()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, JSONResponse, RedirectResponse
    from starlette.routing import Route

    from .export import export_run_scene

    out = Path(out)
    lock = threading.Lock()

    async def index(request):
        asset = "&asset=/api/run/scene.glb" if (out / "output.mp4").is_file() else ""
        return RedirectResponse(f"/view?scene=/api/run/scene&cameras=/api/run/cameras.json{asset}", status_code=307)

    async def view_page(request):
        return _page("view.html")

    async def scene(request):
        def make():  # read under the run folder's shared lock: not while an `ex4d run` rewrites it
            with lock, run_folder_lock(out, "the run", shared=True):
                return export_run_scene(out, max_size=max_size)

        return _gzip_file(await run_in_threadpool(make))

    async def cameras(request):
        p = out / "cameras.json"
        if not p.is_file():
            raise JobNotFound(f"{out} has no cameras.json")
        return FileResponse(p, media_type="application/json", headers={"Cache-Control": "no-cache"})

    async def info(request):
        return JSONResponse({"out": out.name})

    async def asset(request):
        def make():  # the run's 4D asset (ex4d export's GLB), made once and reused while the output is older
            from ..run_scene import read_run, run_export

            path = out / ".ex4d" / "view" / "scene.glb"
            newest = max(p.stat().st_mtime for p in (out / "output.mp4", out / "config.json") if p.is_file())
            with lock, run_folder_lock(out, "the run", shared=True):
                if not (path.is_file() and path.stat().st_mtime >= newest):
                    run_export(read_run(out), "glb", path, progress=False)
            return path

        if not (out / "output.mp4").is_file():
            raise JobNotFound(f"{out} has no output.mp4: the 4D asset is the filled output lifted into 3D")
        return FileResponse(await run_in_threadpool(make), media_type="model/gltf-binary",
                            headers={"Cache-Control": "no-cache"})

    routes = [Route("/", index), Route("/view", view_page), Route("/api/run/scene", scene),
              Route("/api/run/cameras.json", cameras), Route("/api/run/info", info),
              Route("/api/run/scene.glb", asset), *_static_routes()]
    handlers = {Ex4dError: lambda request, exc: _error_response(exc)}
    return _security_headers(Starlette(routes=routes, middleware=_middleware(host), exception_handlers=handlers))


# ---------------------------------------------------------------------------------------------- serving

class ServerHandle:
    """A uvicorn server running in a background thread (tests, embedding): ``.url``, ``.stop()``."""

    def __init__(self, server, thread: threading.Thread, url: str):
        self._server, self._thread, self.url = server, thread, url

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _bind(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise Ex4dError(f"cannot listen on {host}:{port} ({e.strerror}); check --host, or choose another --port") \
            from None
    sock.listen(64)
    return sock


def _uvicorn(app, host: str):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, log_level="warning", access_log=False,
                                         timeout_graceful_shutdown=2, lifespan="off"))


def _url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def start_server(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0) -> ServerHandle:
    """Serve ``app`` from a background thread on ``host:port`` (0 = a free port); returns once it listens."""
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    server = _uvicorn(app, host)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ex4d-http", daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > timeout:
            raise Ex4dError(f"the web server did not start on {host}:{port}")
        time.sleep(0.02)
    return ServerHandle(server, thread, _url(host, port))


def serve(app, host: str = "127.0.0.1", port: int = 7860, open_browser: bool = True, path: str = "/",
          label: str = "ex4d") -> None:
    """Serve ``app`` in the foreground until Ctrl-C, printing (and opening) its URL."""
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1]) + path
    print(f"{label}: serving on {url}  (Ctrl-C to stop)", flush=True)
    if not _loopback(host):
        print(f"{label}: warning: listening on {host}, reachable from other machines; there is no login",
              flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    _uvicorn(app, host).run(sockets=[sock])
