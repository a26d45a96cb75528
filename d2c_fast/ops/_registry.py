"""Dispatcher registration shared by every op file.

``csrc/registration.cpp`` (``TORCH_LIBRARY(d2c_fast, ...)``) owns the schemas when the compiled
library is loaded. Without it, each op file defines its schema from Python here, always through
a ``FRAGMENT`` library (several files add to one namespace; none may claim it with ``DEF``).
The reference implementation is registered as ``CompositeExplicitAutograd`` so that every
device works; compiled kernels registered for a dispatch key take priority.
"""
from __future__ import annotations

from typing import Callable

import torch

_LIBS: list[torch.library.Library] = []  # keep every registration alive


def schema_defined(qualname: str) -> bool:
    """True if ``qualname`` (``"d2c_fast::op"``) has a schema in the dispatcher."""
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False


def register_op(schema: str, composite: Callable) -> torch.library.Library:
    """Define ``schema`` in the ``d2c_fast`` namespace if the compiled library has not, and
    register ``composite`` (the reference, output strides as the kernels) for every device.
    Returns the library, for further registrations (e.g. a Triton kernel for CUDA)."""
    name = schema.split("(", 1)[0]
    lib = torch.library.Library("d2c_fast", "FRAGMENT")
    if not schema_defined(f"d2c_fast::{name}"):
        lib.define(schema, tags=(torch.Tag.pt2_compliant_tag,))
    lib.impl(name, composite, "CompositeExplicitAutograd")
    _LIBS.append(lib)
    return lib
