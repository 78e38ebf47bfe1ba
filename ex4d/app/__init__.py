"""The local web app (``ex4d app``) and the 4D viewer (``ex4d view``): thin layers over ex4d's library.

Modules (the web stack, Starlette + uvicorn, is imported only when a server is made, so
``import ex4d.app`` stays light and works without the ``app`` extra):

==============  ==================================================================
``export``      compact 4D scene export (per-frame depth, occlusion bits, JPEG) that the browser meshes on the GPU
``uploads``     limits, file-type checks by content, upload validation
``spec``        the browser's run request → a checked RunConfig (no paths from the browser)
``preview``     the input's scene and camera path before a run
``jobs``        sandboxed job folders, sessions, the FIFO queue, clean-up
``capacity``    what the server lends out, bounded: issued sessions, disk for jobs, upload slots
``redact``      no server paths in what the browser sees (messages, served JSON)
``worker``      one job in its own process, reporting progress
``server``      HTTP routes (Starlette), serving helpers
``cli``         ``register(subparsers)``: the ``app`` and ``view`` commands
==============  ==================================================================

The front-end (three.js) lives in ``web/`` and is built into ``ex4d/app/static/``
by ``scripts/setup_app.sh``.
"""

from .export import SceneData, decode_scene, encode_scene, export_run_scene, read_scene
from .uploads import AppLimits

__all__ = ["AppLimits", "SceneData", "encode_scene", "decode_scene", "read_scene", "export_run_scene",
           "create_app", "create_view_app", "JobStore", "start_server"]


def __getattr__(name):  # lazy: the web stack only when asked for
    if name in ("create_app", "create_view_app", "start_server"):
        from . import server

        return getattr(server, name)
    if name == "JobStore":
        from .jobs import JobStore

        return JobStore
    raise AttributeError(f"module 'ex4d.app' has no attribute {name!r}")
