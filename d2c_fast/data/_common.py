"""Shared pieces of :mod:`d2c_fast.data`."""
from __future__ import annotations

import operator

from d2c_fast.errors import D2CError

__all__ = ["DatasetError", "check_index"]


class DatasetError(D2CError, ValueError):
    """A dataset cannot be built or indexed: a missing directory or annotation file, a
    malformed annotation line, an unknown split or attribute name. (Unreadable *image* files
    raise :class:`d2c_fast.errors.ImageError`.)"""


def check_index(i, n: int, what: str = "dataset") -> int:
    """``i`` as a Python int in ``[0, n)``, negative indices counting from the end (Python's
    rule). Integer types of any kind (int, numpy and 0-d torch integers) are accepted; bools,
    floats and strings raise ``TypeError``, out-of-range indices ``IndexError``."""
    if isinstance(i, bool):
        raise TypeError(f"{what} indices must be ints, got bool")
    try:
        i = operator.index(i)
    except TypeError:
        raise TypeError(f"{what} indices must be ints, got {type(i).__name__}") from None
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise IndexError(f"index {i} out of range for a {what} of {n} images")
    return j
