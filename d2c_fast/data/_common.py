"""Shared pieces of :mod:`d2c_fast.data`."""
from __future__ import annotations

from d2c_fast.errors import D2CError

__all__ = ["DatasetError"]


class DatasetError(D2CError, ValueError):
    """A dataset cannot be built or indexed: a missing directory or annotation file, a
    malformed annotation line, an unknown split or attribute name. (Unreadable *image* files
    raise :class:`d2c_fast.errors.ImageError`.)"""
