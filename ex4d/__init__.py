"""ex4d: camera-controllable 4D video from one monocular video.

Stages (one module each): ``io`` (video, depth and camera files) →
``cameras`` (conventions) → ``dwmesh`` (Depth Watertight Mesh) →
``render`` (z-buffered rasterizers) → ``trajectory`` → ``recon`` (the
whole recon stage) → ``fill`` / ``diffusion`` (completing the masked video).
"""

__version__ = "0.1.0"
