"""Lazy access to the optional diffusion dependencies, with an actionable ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'ex4d[diffusion]'"


def require(name: str, feature: str = "ex4d's diffusion stage") -> ModuleType:
    """Import and return module ``name`` (e.g. ``"diffusers"``); ImportError naming the extra if missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        top = name.split(".")[0]
        raise ImportError(
            f"{feature} needs the optional package {top!r}, which is not installed ({e}). "
            f"Install the diffusion extra: {INSTALL_HINT}"
        ) from e
