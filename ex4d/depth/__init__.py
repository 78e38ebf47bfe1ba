"""Depth from the video itself: monocular video depth backends.

>>> from ex4d.depth import estimate_depth
>>> res = estimate_depth(frames, model="depth-anything-v2", weights="/models/Depth-Anything-V2-Small-hf")
>>> res.depth   # [T, H, W] float32 z-depth > 0 at the frames' size

Backends (one module each; torch, diffusers and transformers are imported only
when a model is loaded, so ``import ex4d.depth`` stays light):

===========================  ===========================================  ==========================
``model``                    what                                         output → depth
===========================  ===========================================  ==========================
``depthcrafter``             :mod:`.depthcrafter`, the EX-4D original's    normalised disparity,
                             (diffusers SVD UNet, windowed)               kind ``depthcrafter``
``depth-anything-v2``        :mod:`.depth_anything` (transformers),       relative: disparity;
                             per frame + :mod:`.align` for consistency    metric: depth
``video-depth-anything``     not supported (see :mod:`.weights`): run it  load its npz with
                             yourself                                     ``--depth``
===========================  ===========================================  ==========================

Disparity becomes depth only in :func:`ex4d.io.depth.to_depth`. Weight folder
layouts and where to get them: :mod:`.weights`. Pure helpers: :mod:`.windows`
(window spans and blending), :mod:`.align` (per-frame scale/shift alignment).
"""

from .common import DEPTH_MODELS, DepthResult
from .estimate import MODEL_OPTIONS, depth_params, estimate_depth, load_depth_model
from .stream import estimate_depth_chunks

__all__ = ["DEPTH_MODELS", "DepthResult", "MODEL_OPTIONS", "depth_params", "estimate_depth", "estimate_depth_chunks",
           "load_depth_model"]
