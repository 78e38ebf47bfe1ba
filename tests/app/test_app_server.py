"""The app's HTTP API over a real server: sessions, sandboxing, limits, uploads by content, queue, results."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

T, SIZE = 9, 64


def wait_done(client, job_id, timeout=180.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status, st = client.get(f"/api/jobs/{job_id}")
        assert status == 200, st
        if st["state"] in ("done", "error", "cancelled"):
            return st
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {st}")


def new_job(client) -> str:
    status, body = client.post("/api/jobs")
    assert status == 201, body
    return body["id"]


def example_request(**kw):
    return {"input": "example", "example_size": SIZE, "num_frames": T, "trajectory": "orbit",
            "trajectory_options": {"yaw": 20}, "fill": "classical", **kw}


def test_session_and_sandbox(new_client):
    a, b = new_client(), new_client()
    job = new_job(a)
    # another session, a malformed id, an unknown id: the same "no such job"
    for client, jid in ((b, job), (a, "../../etc"), (a, "x" * 22), (a, job[:-1] + ("A" if job[-1] != "A" else "B"))):
        status, body = client.get(f"/api/jobs/{jid}")
        assert status == 404, (jid, body)
        assert not isinstance(body, dict) or "no such job" in body["error"], (jid, body)
    # only the fixed list of output names is served; traversal and internal files are not
    for name in ("job.json", "..%2Fjob.json", "%2e%2e%2fjob.json", "out", "log.txt", "color.mp4"):
        status, _ = a.get(f"/api/jobs/{job}/files/{name}")
        assert status == 404, name
    # no session cookie: refused
    from urllib.request import Request, urlopen
    from urllib.error import HTTPError

    with pytest.raises(HTTPError) as e:
        urlopen(Request(a.url + "/api/jobs", data=b"", method="POST"))
    assert e.value.code == 403


def test_host_header_is_checked(app_server):
    """DNS rebinding: a request naming another host is refused."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(app_server[0])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/api/config", headers={"Host": "evil.example:80"})
    assert conn.getresponse().status == 400
    conn.close()


def test_upload_checks_content_not_name(new_client, example_files, tmp_path):
    c = new_client()
    job = new_job(c)
    status, body = c.put(f"/api/jobs/{job}/upload/video", b"this is text, not a video\n" * 10)
    assert status == 400 and "not a video" in body["error"]
    status, body = c.put(f"/api/jobs/{job}/upload/depth", example_files["video"].read_bytes())
    assert status == 400 and "neither .npz nor .npy" in body["error"]
    status, body = c.put(f"/api/jobs/{job}/upload/video", b"")
    assert status == 400
    status, body = c.put(f"/api/jobs/{job}/upload/config", b"x")
    assert status == 400 and "unknown upload kind" in body["error"]
    # a truncated mp4: right magic, broken content
    data = example_files["video"].read_bytes()
    status, body = c.put(f"/api/jobs/{job}/upload/video", data[:200])
    assert status == 400, body
    # the real files
    status, body = c.put(f"/api/jobs/{job}/upload/video", data)
    assert status == 200 and body["info"]["frames"] == T and body["info"]["width"] == SIZE, body
    status, body = c.put(f"/api/jobs/{job}/upload/depth", example_files["depth"].read_bytes())
    assert status == 200 and body["info"]["frames"] == T and body["info"]["format"] == "npz", body
    status, st = c.get(f"/api/jobs/{job}")
    assert st["video"]["container"] == "mp4" and st["depth"]["keys"] == ["depth", "kind"]


def test_upload_limits(new_client, app_server, tmp_path):
    c = new_client()
    job = new_job(c)
    _, store = app_server
    # declared too big: refused before the body is read
    import http.client
    import json as _json
    from urllib.parse import urlparse

    u = urlparse(c.url)
    cookie = "; ".join(f"{k.name}={k.value}" for k in c.jar)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("PUT", f"/api/jobs/{job}/upload/video")
    conn.putheader("Cookie", cookie)
    conn.putheader("Content-Length", str(store.limits.max_upload_bytes + 1))
    conn.endheaders()
    conn.send(b"\x00\x00\x00\x18ftypmp42")
    resp = conn.getresponse()
    assert resp.status == 413 and "limit of 5 MB" in _json.loads(resp.read())["error"]
    conn.close()
    # streamed without a length: counted while it arrives
    def chunks():
        yield b"\x00\x00\x00\x18ftypmp42"
        for _ in range(6):
            yield b"\x00" * (1 << 20)

    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("PUT", f"/api/jobs/{job}/upload/video", body=chunks(), headers={"Cookie": cookie},
                     encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server may close before the last chunk: also a refusal
    conn.close()
    assert not list((store.root / job / "input").glob("video*")) and not list((store.root / job / "input").glob(".up*"))
    # a zip bomb disguised as depth: refused from the archive's directory, before numpy reads it
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("depth.npy", b"\x00" * (3 << 30) if False else b"")
        info = zipfile.ZipInfo("huge.npy")
        z.writestr(info, np.zeros(1 << 20, dtype=np.uint8).tobytes())
    raw = bytearray(buf.getvalue())
    # patch the declared uncompressed size of huge.npy in the central directory to 4 GB
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    status, body = c.put(f"/api/jobs/{job}/upload/depth", bytes(raw))
    assert status == 400 and ("unpacks to" in body["error"] or "not a valid .npz" in body["error"]), body
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("evil.py", b"print('hi')")
    status, body = c.put(f"/api/jobs/{job}/upload/depth", buf.getvalue())
    assert status == 400 and "non-array members" in body["error"]
    # object arrays (pickles) are never loaded
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    status, body = c.put(f"/api/jobs/{job}/upload/depth", buf.getvalue())
    assert status == 400, body


def test_video_duration_limit(app_server, example_files, tmp_path):
    from ex4d.app.uploads import AppLimits, check_video_file
    from ex4d.errors import Ex4dError

    with pytest.raises(Ex4dError, match=r"lasts 0\.4 s; this app takes at most 0\.1 s"):
        check_video_file(example_files["video"], AppLimits(max_duration_s=0.1))


def test_run_request_is_checked(new_client):
    c = new_client()
    job = new_job(c)
    bad = [
        ({"input": "example", "trajectory": "/etc/passwd.json"}, "must be a preset"),
        ({"input": "example", "trajectory": "orbit", "trajectory_options": {"spec": "x"}}, "does not take option"),
        ({"input": "example", "num_frames": 500}, "num_frames must be in [1, 9]"),
        ({"input": "example", "fill": "ex4d"}, "fill must be one of classical, none"),
        ({"input": "upload"}, "upload a video first"),
        ({"input": "example", "video": "/etc/hosts"}, "unknown request field"),
        ({"input": "example", "trajectory": "orbit", "trajectory_options": {"ease": "../x"}}, "unexpected text"),
    ]
    for req, msg in bad:
        status, body = c.post(f"/api/jobs/{job}/run", req)
        assert status == 400 and msg in body["error"], (req, body)


def test_preview_and_path(new_client):
    from ex4d.app.export import decode_scene
    from ex4d.trajectory import relative_angles

    c = new_client()
    job = new_job(c)
    req = example_request(trajectory_options={"yaw": 35, "pitch": -10})
    status, pv = c.post(f"/api/jobs/{job}/preview", req)
    assert status == 200, pv
    assert pv["info"]["num_frames"] == T and pv["info"]["width"] == SIZE
    status, data = c.get(pv["scene"])
    assert status == 200
    scene = decode_scene(data)  # urllib does not undo Content-Encoding: the raw gzip stream arrives
    assert scene.depth.shape == (T, SIZE, SIZE)
    status, path = c.post(f"/api/jobs/{job}/path", req)
    assert status == 200, path
    yaw, pitch = relative_angles(np.array(path["w2c"]))
    assert abs(yaw[-1] - 35) < 1e-6 and abs(pitch[-1] + 10) < 1e-6 and abs(yaw[0]) < 1e-9
    status, body = c.post(f"/api/jobs/{job}/path", {**req, "trajectory": "keyframes",
                                                    "trajectory_options": {"keyframes": [{"t": 0.5, "yaw": 120}]}})
    assert status == 400 and "[−90, 90]" in body["error"]


def test_jobs_queue_and_results(new_client):
    """Two sessions submit at once: the jobs run one after the other, each sees only its own results."""
    a, b = new_client(), new_client()
    ja, jb = new_job(a), new_job(b)
    status, ra = a.post(f"/api/jobs/{ja}/run", example_request())
    assert status == 202 and ra["position"] == 1
    status, rb = b.post(f"/api/jobs/{jb}/run", example_request(trajectory="swing"))
    assert status == 202 and rb["position"] in (1, 2)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240:
        sa, sb = a.get(f"/api/jobs/{ja}")[1], b.get(f"/api/jobs/{jb}")[1]
        if sb["state"] == "queued":
            assert sb["position"] == 1
        if sa["state"] in ("done", "error") and sb["state"] in ("done", "error"):
            break
        time.sleep(0.1)
    assert sa["state"] == "done", sa
    assert sb["state"] == "done", sb
    first, second = sorted((sa, sb), key=lambda s: s["started"])
    assert second["started"] >= first["finished"]  # one after the other, never both at once
    assert {"output.mp4", "color.mp4", "mask.mp4", "preview.mp4", "cameras.json", "config.json"} <= set(sa["files"])
    assert sa["progress"]["total"] >= 1
    status, cams = a.get(f"/api/jobs/{ja}/files/cameras.json")
    assert status == 200 and len(cams["w2c"]) == T
    assert b.get(f"/api/jobs/{ja}/files/cameras.json")[0] == 404
    status, data = a.get(f"/api/jobs/{ja}/download")
    assert status == 200
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert any(n.endswith("/output.mp4") for n in names) and not any("/.ex4d/" in n for n in names)
    status, data = a.get(f"/api/jobs/{ja}/scene/run")
    assert status == 200 and data[:2] == b"\x1f\x8b"


def test_error_is_reported(new_client, example_files):
    """A user error inside the run (depth that does not match the video) comes back as the job's message."""
    c = new_client()
    job = new_job(c)
    c.put(f"/api/jobs/{job}/upload/video", example_files["video"].read_bytes())
    buf = io.BytesIO()
    np.savez(buf, depth=-np.ones((T, 8, 8), np.float32))
    assert c.put(f"/api/jobs/{job}/upload/depth", buf.getvalue())[0] == 200
    status, _ = c.post(f"/api/jobs/{job}/run", {"input": "upload", "num_frames": T, "depth_kind": "depth",
                                                 "depth": "file", "trajectory": "static"})
    assert status == 202
    st = wait_done(c, job)
    assert st["state"] == "error" and "depth" in st["error"] and "internal error" not in st["error"], st


def test_cancel_and_queue_full(new_client, app_server):
    _, store = app_server
    c = new_client()
    jobs = [new_job(c) for _ in range(5)]
    results = [c.post(f"/api/jobs/{j}/run", example_request())[0] for j in jobs]
    assert results[:4] == [202] * 4 and results[4] == 429  # one running + max_queue=3 waiting
    for j in jobs[:4]:
        c.post(f"/api/jobs/{j}/cancel")
    states = [wait_done(c, j)["state"] for j in jobs[:4]]
    assert states.count("cancelled") >= 3, states


def test_cleanup_removes_old_jobs(app_server, tmp_path):
    from ex4d.app.jobs import new_token

    _, store = app_server
    session = store.issue_session()
    job = store.create(session)
    stray = store.root / new_token()  # a job folder left by an earlier server
    stray.mkdir()
    (stray / "job.json").write_text("{}")
    foreign = store.root / new_token()  # not ours: never touched
    foreign.mkdir()
    assert store.cleanup() == 0 and job.dir.is_dir()
    assert store.cleanup(now=time.time() + store.limits.keep_hours * 3600 + 60) == 2
    assert not job.dir.exists() and not stray.exists() and foreign.is_dir()
