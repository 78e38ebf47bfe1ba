"""Fill backends: complete the masked novel-view video.

``classical`` (no weights, preview quality) lives here; ``ex4d`` (the EX-4D
diffusion adapter on Wan2.1-I2V) lives in :mod:`ex4d.diffusion`.
"""

from .classical import ClassicalFillConfig, classical_fill, reproject_and_inpaint, smooth_inpainted, smoothing_margin

FILL_BACKENDS = ("classical", "ex4d", "none")

__all__ = ["FILL_BACKENDS", "ClassicalFillConfig", "classical_fill", "reproject_and_inpaint", "smooth_inpainted",
           "smoothing_margin"]
