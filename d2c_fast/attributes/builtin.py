"""The built-in model's attributes: fitted attribute files shipped beside the built-in model
(``d2c_fast/assets/attributes/<name>.safetensors``), reachable by name wherever an attribute
is taken (``Sampler.manipulate(img, "blond_hair")``, ``d2c-fast edit builtin face.png --attr
blond_hair``).

They are fitted by ``python scripts/fit_builtin_attributes.py`` (100 labelled faces per
attribute, 50 with and 50 without, from the built-in dataset's ``val`` split: what a user of
the few-shot setting has). A name is looked up only when no file of that name exists, so a
file always wins.
"""
from __future__ import annotations

import os
import re

ATTRIBUTE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "assets", "attributes")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

__all__ = ["ATTRIBUTE_DIR", "builtin_attribute_names", "builtin_attribute_path",
           "looks_like_name"]


def builtin_attribute_names() -> tuple:
    """Names of the shipped built-in attributes (sorted; empty when none are shipped)."""
    if not os.path.isdir(ATTRIBUTE_DIR):
        return ()
    return tuple(sorted(f[:-len(".safetensors")] for f in os.listdir(ATTRIBUTE_DIR)
                        if f.endswith(".safetensors")))


def looks_like_name(spec: str) -> bool:
    """True for a bare name (no folder, no ``.safetensors``/``.ckpt`` suffix)."""
    return bool(_NAME.fullmatch(spec)) and not spec.endswith((".safetensors", ".ckpt", ".pt"))


def builtin_attribute_path(name: str) -> str | None:
    """The shipped file of built-in attribute ``name``, or ``None``."""
    if not looks_like_name(name) or name not in builtin_attribute_names():
        return None
    return os.path.join(ATTRIBUTE_DIR, f"{name}.safetensors")
