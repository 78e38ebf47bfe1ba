"""In a real headless Chromium: the 4D viewer's stereo modes against ex4d's own right-eye render, and the exported
4D asset (GLB) through three.js's glTF loader. Screenshots go to tests/app/artifacts/<test name>/."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

T, SIZE = 9, 64  # as the run_out fixture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def wait_ready(page, timeout=60_000):
    page.wait_for_selector("body[data-ready='1']", timeout=timeout)


def _b64_pixels(page, script, args, size):
    px = page.evaluate(script, args)
    W, H = size
    rgba = np.frombuffer(base64.b64decode(px), dtype=np.uint8).reshape(H, W, 4)
    return rgba[::-1, :, :3]  # top row first


_ENCODE = "let s = ''; for (let i = 0; i < p.data.length; i += 8192) s += String.fromCharCode(...p.data.subarray(i, i + 8192)); return btoa(s);"


def test_viewer_stereo_matches_the_right_eye_render(page, run_out, artifacts):
    import cv2

    from ex4d.app.server import create_view_app, start_server
    from ex4d.dwmesh import MeshConfig, build_dwmesh, default_far
    from ex4d.example import make_example
    from ex4d.io.stereo_video import anaglyph
    from ex4d.render import render_mesh
    from ex4d.render.numba_raster import quantize_rgb
    from ex4d.stereo import right_eye_cameras

    cams = json.loads((run_out / "cameras.json").read_text())
    K = np.array(cams["K"], dtype=np.float64)
    scene = make_example(T, SIZE, SIZE)
    far = default_far(scene.depth, MeshConfig().far_scale)
    ipd, conv = 0.15, 3.0
    script = """([w2c, K, t, ipd, conv, mode]) => {
        const v = window.ex4dViewer.view;
        v.setFree(false); v.fit(2 * %d, %d); v.setFrame(t); v.setCamera(w2c, K); v.setPath(null);
        v.setStereo(mode, ipd, conv);
        const p = v.pixels(); %s }""" % (SIZE, SIZE, _ENCODE)
    with start_server(create_view_app(run_out)) as server:
        page.goto(server.url + "/")
        wait_ready(page)
        assert page.is_visible("#stereo") and page.is_visible("#asset-box")
        default_ipd = float(page.input_value("#ipd"))
        assert default_ipd > 0
        for t in (2, T - 1):
            mesh = build_dwmesh(scene.frames[t], scene.depth[t], K, far=far)
            K_r, w2c_r = right_eye_cameras(K, np.array(cams["w2c"][t]), ipd, conv)
            refs = []
            for Kc, w2c in ((K, np.array(cams["w2c"][t])), (K_r, w2c_r)):
                r = render_mesh(mesh, Kc, w2c, SIZE, SIZE)
                rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
                quantize_rgb(r.color, rgb)
                refs.append((rgb, r.mask))
            got = _b64_pixels(page, script, [cams["w2c"][t], cams["K"], t, ipd, conv, "sbs"], (2 * SIZE, SIZE))
            cv2.imwrite(str(artifacts / f"sbs-frame{t}.png"), cv2.resize(got[..., ::-1], None, fx=4, fy=4,
                                                                          interpolation=cv2.INTER_NEAREST))
            for half, (ref, known) in zip((got[:, :SIZE], got[:, SIZE:]), refs):
                diff = np.abs(half.astype(int) - ref.astype(int)).max(-1)[known]
                assert known.mean() > 0.2
                assert np.median(diff) <= 8 and np.mean(diff > 48) < 0.04, (t, np.median(diff), np.mean(diff > 48))
            # the eyes differ (a real baseline), and the anaglyph is Dubois' of the two eyes
            assert np.abs(got[:, :SIZE].astype(int) - got[:, SIZE:].astype(int)).mean() > 3
            ana = _b64_pixels(page, script.replace("2 * %d" % SIZE, str(SIZE)),
                              [cams["w2c"][t], cams["K"], t, ipd, conv, "anaglyph"], (SIZE, SIZE))
            both = refs[0][1] & refs[1][1]
            ref_ana = anaglyph(refs[0][0][None], refs[1][0][None])[0]
            diff = np.abs(ana.astype(int) - ref_ana.astype(int)).max(-1)[both]
            assert np.median(diff) <= 10 and np.mean(diff > 48) < 0.05, (t, np.median(diff), np.mean(diff > 48))
        page.screenshot(path=str(artifacts / "viewer-stereo.png"))


def test_viewer_loads_the_exported_4d_asset(page, run_out, artifacts):
    """The GLB of `ex4d export` in three.js's GLTFLoader: every frame, its animation, cameras, vertex colours;
    through its output camera it shows the output video's frame."""
    import cv2

    from ex4d.app.server import create_view_app, start_server
    from ex4d.io.video import read_video

    output = read_video(run_out / "output.mp4", num_frames=None).frames
    with start_server(create_view_app(run_out)) as server:
        page.goto(server.url + "/view?glb=/api/run/scene.glb")
        wait_ready(page)
        info = page.evaluate("() => window.ex4dViewer.asset.info()")
        assert info["frames"] == T and info["animation"] == "play" and info["vertexColors"]
        assert info["cameras"] == ["output", "source"] and info["vertices"] > 0.7 * T * SIZE * SIZE
        page.screenshot(path=str(artifacts / "asset-free-view.png"))
        script = """([t]) => {
            const v = window.ex4dViewer.asset;
            v.fit(%d, %d); v.setThrough(true); v.setFrame(t);
            const p = v.pixels(); %s }""" % (SIZE, SIZE, _ENCODE)
        for t in (0, T // 2, T - 1):
            vis = page.evaluate("([t]) => { const v = window.ex4dViewer.asset; v.setFrame(t); return v.visibleFrames(); }", [t])
            assert vis == [t]  # the animation shows exactly frame t's mesh
            got = _b64_pixels(page, script, [t], (SIZE, SIZE)).astype(int)
            cv2.imwrite(str(artifacts / f"asset-frame{t}.png"),
                        cv2.resize(np.concatenate([got, output[t]], 1).astype(np.uint8)[..., ::-1], None, fx=4, fy=4,
                                   interpolation=cv2.INTER_NEAREST))
            covered = np.abs(got - np.array([12, 13, 16])).max(-1) > 6  # not the clear colour
            assert covered.mean() > 0.85, covered.mean()
            diff = np.abs(got - output[t].astype(int)).max(-1)[covered]
            # linear vertex colours shown as sRGB give back the video's pixels (H.264 and interpolation aside)
            assert np.median(diff) <= 8 and np.mean(diff > 48) < 0.05, (t, np.median(diff), np.mean(diff > 48))


def test_app_request_asks_for_stereo_and_serves_the_file():
    from ex4d.app.jobs import SERVED_FILES
    from ex4d.app.spec import build_run_config
    from ex4d.app.uploads import AppLimits
    from ex4d.errors import Ex4dError

    limits = AppLimits(max_frames=25, max_res=256)
    c = build_run_config({"input": "example", "num_frames": 9, "example_size": 64, "stereo": "sbs"}, {}, limits)
    assert c.stereo == "sbs" and c.stereo_options == {}
    assert build_run_config({"input": "example"}, {}, limits).stereo is None
    with pytest.raises(Ex4dError, match="stereo must be one of"):
        build_run_config({"input": "example", "stereo": "checkerboard"}, {}, limits)
    with pytest.raises(Ex4dError, match="needs a fill"):
        build_run_config({"input": "example", "stereo": "ou", "fill": "none"}, {}, limits)
    assert SERVED_FILES["stereo.mp4"] == "video/mp4"
