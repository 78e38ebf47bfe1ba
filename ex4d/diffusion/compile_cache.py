"""torch.compile's work kept across processes: ``--compile`` pays compilation once per machine, not per run.

PyTorch caches compiled graphs on disk by itself (Inductor's FX graph cache and the AOTAutograd
cache, on by default in torch ≥ 2.5, keyed by the graph, the input shapes, dtypes, devices and the
torch/Triton versions), but in ``/tmp/torchinductor_$USER``, which many machines clear at boot and
containers lose. With ``--compile`` ex4d points both, and Triton's kernel cache, at a folder that
stays:

==============================  ===========================================================
what                            where
==============================  ===========================================================
Inductor FX graphs, AOTAutograd ``$EX4D_COMPILE_CACHE`` (default ``<ex4d cache>/torch-compile``,
                                i.e. ``~/.cache/ex4d/torch-compile``)
Triton kernels                  ``…/torch-compile/triton``
==============================  ===========================================================

A ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR`` set by the user wins; ``EX4D_COMPILE_CACHE=0``
leaves PyTorch's defaults alone. ``ex4d warmup`` fills the cache for one shape ahead of time.
What stays per process: Dynamo's tracing of the block (a few seconds) and loading the cached
kernels. The key includes the token count (frames × height × width) and the CFG batch (``--cfg 1``
runs batch 1), so each such combination compiles once.
"""

from __future__ import annotations

import os
from pathlib import Path

from .prompt_cache import cache_dir

__all__ = ["compile_cache_dir", "enable_compile_cache", "COMPILE_CACHE_ENV"]

COMPILE_CACHE_ENV = "EX4D_COMPILE_CACHE"


def compile_cache_dir() -> Path | None:
    """The persistent compile cache folder (None when ``EX4D_COMPILE_CACHE=0``)."""
    value = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    if value.lower() in ("0", "off", "false", "no"):
        return None
    return Path(value).expanduser() if value else cache_dir() / "torch-compile"


def enable_compile_cache() -> dict[str, str]:
    """Point Inductor's and Triton's caches at :func:`compile_cache_dir` and make sure both caches are on.

    Returns what it set (``{}`` when switched off). Environment variables are set too, so compile
    worker processes and child processes use the same folders. Call before the first compilation.
    """
    folder = compile_cache_dir()
    if folder is None:
        return {}
    settings = {"TORCHINDUCTOR_CACHE_DIR": str(folder), "TRITON_CACHE_DIR": str(folder / "triton"),
                "TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
    applied = {}
    for key, value in settings.items():
        if key not in os.environ:
            os.environ[key] = value
        applied[key] = os.environ[key]
    Path(applied["TORCHINDUCTOR_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    try:  # the config objects read their env at import: set them too when already imported
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # an older torch without these caches: nothing to switch on
        pass
    return applied
