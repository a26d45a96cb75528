"""The d2c_fast exception family.

Every error d2c_fast raises on purpose derives from :class:`D2CError`, so callers can catch
one type. Each subclass also derives from the closest builtin (``ValueError`` or ``OSError``)
so generic handlers keep working.
"""
from __future__ import annotations


class D2CError(Exception):
    """Base class of every d2c_fast error."""


class CheckpointError(D2CError, ValueError):
    """A checkpoint cannot be used. The message names the file and the cause: missing or
    unexpected keys, shape or dtype, NaN/Inf, truncated, not a checkpoint, unsafe pickle."""

    def __init__(self, path, cause: str):
        self.path = str(path) if path is not None else None
        self.cause = cause
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{cause}")


class ImageError(D2CError, ValueError):
    """An input image cannot be used (wrong type, size, range, not an image, too large)."""


class ConfigError(D2CError, ValueError):
    """A model config is invalid. The message names the offending field."""

    def __init__(self, field: str, cause: str):
        self.field, self.cause = field, cause
        super().__init__(f"config field '{field}': {cause}")


class BudgetError(D2CError, ValueError):
    """A training time budget that cannot cover the run's fixed costs (data, latents, export)
    and its minimum steps; the message gives the estimate and the smallest budget that works."""


class AttributeFileError(D2CError, ValueError):
    """An attribute (boundary / classifier) file cannot be used with this model."""
