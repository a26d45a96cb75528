"""d2c_fast: a fast engine for D2C models (Sinha, Song, Meng, Ermon, NeurIPS 2021).

    import d2c_fast
    s = d2c_fast.Sampler("model.ckpt", config="config.yml")      # or "model.safetensors"
    z = s.encode(images)                                         # (B, C, d, d) raw latents
    edited = s.manipulate(images, d2c_fast.Attribute.load("blond.ckpt"), step=1.5, seed=0)

See README.md and docs/ for the API, the CLI and the benchmarks.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import errors
from .errors import AttributeFileError, CheckpointError, ConfigError, D2CError, ImageError
# Loads the compiled library d2c_fast._C (one RuntimeWarning, and the reference kernels, when
# it is missing) so that every op is registered before any model runs.
from .ops import backend_info


def __getattr__(name):
    # Lazy imports keep `import d2c_fast` light (no model code until it is used).
    if name == "Sampler":
        from .sampler import Sampler
        return Sampler
    if name == "Attribute":
        from .attributes import Attribute
        return Attribute
    if name == "load_config":
        from .config import load_config
        return load_config
    raise AttributeError(f"module 'd2c_fast' has no attribute {name!r}")


__all__ = ["Sampler", "Attribute", "backend_info", "load_config", "errors", "D2CError",
           "CheckpointError", "ImageError", "ConfigError", "AttributeFileError", "__version__"]
