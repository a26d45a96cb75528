"""The runtime: a loaded model's networks with public engine methods (:mod:`.core`) and the
CUDA-graph executor of the DDIM loop (:mod:`.cuda`)."""
from __future__ import annotations

from .core import BUILTIN_PATH, IMPLS, Runtime, check_device, open_model

__all__ = ["Runtime", "IMPLS", "BUILTIN_PATH", "check_device", "open_model"]
