"""Fixtures of the web app tests: the tiny example on disk, a finished run, servers, a headless Chromium.

Browser tests skip (with the reason) when the app extra, the built front-end
or Debian's chromium is missing; ``bash scripts/setup_app.sh`` installs all three.
Screenshots go to ``tests/app/artifacts/`` (or ``$EX4D_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import http.cookiejar
import importlib.util
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("EX4D_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-unsafe-swiftshader"]
ARTIFACTS = Path(os.environ.get("EX4D_TEST_ARTIFACTS") or Path(__file__).with_name("artifacts"))
T, SIZE = 9, 64  # tiny: a job runs in seconds on 2 cores


def need_web_stack():
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the app extra is not installed ({', '.join(missing)} missing): bash scripts/setup_app.sh")


def need_browser():
    need_web_stack()
    from ex4d.app.server import static_dir

    if not (static_dir() / "view.js").is_file():
        pytest.skip(f"the front-end is not built ({static_dir()} has no view.js): bash scripts/setup_app.sh")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright (Python) is not installed: bash scripts/setup_app.sh")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium'): bash scripts/setup_app.sh")


@pytest.fixture(scope="session")
def example_files(tmp_path_factory) -> dict:
    """`ex4d example`'s input.mp4 and depth.npz (9 frames, 64×64, exact z-depth)."""
    from ex4d.cli import main

    d = tmp_path_factory.mktemp("example")
    assert main(["example", "--out", str(d), "--num-frames", str(T), "--size", str(SIZE)]) == 0
    return {"dir": d, "video": d / "input.mp4", "depth": d / "depth.npz"}


@pytest.fixture(scope="session")
def run_out(tmp_path_factory) -> Path:
    """A finished `ex4d run` of the tiny example along an orbit (yaw 30°, pitch 10°)."""
    from ex4d.pipeline import RunConfig, run_pipeline

    out = tmp_path_factory.mktemp("run") / "out"
    run_pipeline(RunConfig(example=True, example_size=SIZE, num_frames=T, trajectory="orbit",
                           trajectory_options={"yaw": 30.0, "pitch": 10.0}), out, progress=False)
    return out


@pytest.fixture
def artifacts(request) -> Path:
    """Folder for this test's screenshots and downloads."""
    d = ARTIFACTS / request.node.name.replace("/", "_")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


@pytest.fixture
def app_server(tmp_path):
    """(url, store) of an `ex4d app` server on a free loopback port with tiny limits; stopped afterwards."""
    need_web_stack()
    from ex4d.app.jobs import JobStore
    from ex4d.app.server import create_app, start_server
    from ex4d.app.uploads import AppLimits

    store = JobStore(tmp_path / "jobs", AppLimits(max_frames=T, max_res=128, max_upload_mb=5, max_queue=3))
    store.start()
    handle = start_server(create_app(store))
    yield handle.url, store
    handle.stop()
    store.stop()


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by Playwright (one per test session)."""
    need_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="ex4d-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1360, "height": 900},
                                                   accept_downloads=True)
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    """A fresh page; console errors and page errors are collected in ``page.ex4d_errors``."""
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    pg.ex4d_errors = errors
    yield pg
    pg.close()


class Client:
    """A tiny HTTP client with a cookie jar (stdlib only): ``c.get/post/put(path) → (status, body)``."""

    def __init__(self, url: str):
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method: str, path: str, data: bytes | dict | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if isinstance(data, dict):
            data = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=60) as r:
                body, status, hdrs = r.read(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            body, status, hdrs = e.read(), e.code, dict(e.headers)
        ctype = hdrs.get("content-type", "")
        return status, (json.loads(body) if ctype.startswith("application/json") else body)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, data=None, **kw):
        return self.request("POST", path, data if data is not None else b"", **kw)

    def put(self, path, data, **kw):
        return self.request("PUT", path, data, **kw)

    def session(self) -> "Client":
        """Open the page once, which hands out the session cookie."""
        status, _ = self.get("/")
        assert status == 200
        return self


@pytest.fixture
def new_client(app_server):
    """Factory of clients of ``app_server``, each its own browser session."""
    url, _ = app_server
    return lambda: Client(url).session()
