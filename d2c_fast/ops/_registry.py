"""The operator list and the dispatcher registration shared by every op file.

``schemas.def`` (next to this file) is the one list of the ``d2c_fast`` operators and their
schemas. ``csrc/registration.cpp`` includes it in ``TORCH_LIBRARY(d2c_fast, ...)``, so the
compiled library owns the schemas of the ``D2C_OP`` lines when it is loaded; this module parses
it into :data:`SCHEMAS`. Each op file registers its reference with :func:`register_op`, which
defines the schema from Python when the compiled library has not (every ``D2C_PYTHON_OP``, and
every op when ``d2c_fast._C`` is not loaded), always through a ``FRAGMENT`` library (several
files add to one namespace; none may claim it with ``DEF``). The reference implementation is
registered as ``CompositeExplicitAutograd`` so that every device works; compiled kernels
registered for a dispatch key take priority.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

__all__ = ["SCHEMAS", "SCHEMA_FILE", "parse_schemas", "register_op", "schema_defined"]

#: The operator list, shipped with the package and included by csrc/registration.cpp.
SCHEMA_FILE = Path(__file__).with_name("schemas.def")

_ENTRY = re.compile(r'(?:D2C_OP|D2C_PYTHON_OP)\("(([A-Za-z_]\w*)\([^"]*)"\)')


def parse_schemas(text: str, source: str = "schemas.def") -> dict[str, str]:
    """``{op name: schema}`` of the ``D2C_OP("...")`` / ``D2C_PYTHON_OP("...")`` lines of
    ``text``, in file order. Blank lines and ``//`` comments are skipped; any other line, or a
    name listed twice, raises ``ValueError`` naming ``source`` and the line."""
    schemas: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        m = _ENTRY.fullmatch(line)
        if m is None:
            raise ValueError(f"{source}:{lineno}: expected D2C_OP(\"<schema>\") or "
                             f"D2C_PYTHON_OP(\"<schema>\") on one line, got {line!r}")
        schema, name = m.groups()
        if name in schemas:
            raise ValueError(f"{source}:{lineno}: operator {name!r} is listed twice")
        schemas[name] = schema
    return schemas


#: ``{op name: schema}`` of every operator in the ``d2c_fast`` namespace, in schemas.def order.
SCHEMAS: dict[str, str] = parse_schemas(SCHEMA_FILE.read_text(encoding="utf-8"), str(SCHEMA_FILE))

_LIBS: list[torch.library.Library] = []  # keep every registration alive


def schema_defined(qualname: str) -> bool:
    """True if ``qualname`` (``"d2c_fast::op"``) has a schema in the dispatcher."""
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False


def register_op(name: str, composite: Callable) -> torch.library.Library:
    """Define the schema of ``d2c_fast::<name>`` (from :data:`SCHEMAS`) if the compiled library
    has not, and register ``composite`` (the reference, output strides as the kernels) for
    every device. Returns the library, for further registrations (e.g. a Triton kernel for
    CUDA)."""
    lib = torch.library.Library("d2c_fast", "FRAGMENT")
    if not schema_defined(f"d2c_fast::{name}"):
        lib.define(SCHEMAS[name], tags=(torch.Tag.pt2_compliant_tag,))
    lib.impl(name, composite, "CompositeExplicitAutograd")
    _LIBS.append(lib)
    return lib
