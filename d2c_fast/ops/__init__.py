"""Operators of d2c_fast: compiled kernels when available, PyTorch reference otherwise.

Importing this package tries to load the compiled library ``d2c_fast._C`` (built by
``pip install -e . --no-build-isolation``). Loading it registers the C++/CUDA kernels with the
PyTorch dispatcher under ``torch.ops.d2c_fast``. If it cannot be loaded (not built, built against
another torch, ...), ONE ``RuntimeWarning`` is emitted here and every operator still works: the
schemas are then defined from Python and the reference implementation serves every device.

Which kernel actually runs is decided by what is registered with the dispatcher, not by whether
the import worked: see :func:`backend_info` and :func:`has_compiled_kernel`.

Environment:
    D2C_FAST_DISABLE_EXT=1   do not load ``d2c_fast._C`` (to exercise the reference fallback).
"""
from __future__ import annotations

import os
import warnings

import torch

from ._registry import SCHEMAS

__all__ = [
    "OPS", "backend_info", "has_compiled_kernel", "extension_status",
    "bn_swish", "bn_swish_ref", "fold_bn", "BN_SWISH_SCHEMA",
    "group_norm_silu", "group_norm_silu_ref", "GROUP_NORM_SILU_SCHEMA",
    "ddim_step", "ddim_step_ref", "DDIM_STEP_SCHEMA",
    "dwconv_bias_swish", "dwconv_bias_swish_ref", "DWCONV_BIAS_SWISH_SCHEMA",
    "up2_dwconv_bias_swish", "up2_dwconv_bias_swish_ref", "UP2_DWCONV_BIAS_SWISH_SCHEMA",
    "se_residual", "se_residual_ref", "SE_RESIDUAL_SCHEMA",
    "mbconv", "mbconv_ref", "MBCONV_SCHEMA",
]

#: Operator names in the ``d2c_fast`` namespace, in the order of the operator list schemas.def.
OPS: tuple[str, ...] = tuple(SCHEMAS)

_BUILD_HINT = "build it with `pip install -e . --no-build-isolation` from the repository root"


def _load_extension() -> tuple[bool, str]:
    if os.environ.get("D2C_FAST_DISABLE_EXT", "").strip() not in ("", "0"):
        return False, "disabled by D2C_FAST_DISABLE_EXT"
    try:
        from .. import _C  # noqa: F401  (registers the kernels with the dispatcher)
    except (ImportError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"loaded {getattr(_C, '__file__', 'd2c_fast._C')}"


_EXT_LOADED, _EXT_REASON = _load_extension()
if not _EXT_LOADED:
    warnings.warn(
        f"d2c_fast: compiled operator library d2c_fast._C not loaded ({_EXT_REASON}); "
        f"the PyTorch reference kernels are used instead (slower). To get the fast kernels, "
        f"{_BUILD_HINT}.",
        RuntimeWarning,
        stacklevel=2,
    )

# Imported after the extension so that Python only defines schemas the library did not.
from .bn_swish import BN_SWISH_SCHEMA, bn_swish, bn_swish_ref, fold_bn  # noqa: E402
from .dwconv_bias_swish import (  # noqa: E402
    DWCONV_BIAS_SWISH_SCHEMA, UP2_DWCONV_BIAS_SWISH_SCHEMA, dwconv_bias_swish,
    dwconv_bias_swish_ref, up2_dwconv_bias_swish, up2_dwconv_bias_swish_ref)
from .se_residual import SE_RESIDUAL_SCHEMA, se_residual, se_residual_ref  # noqa: E402
from .mbconv import MBCONV_SCHEMA, mbconv, mbconv_ref  # noqa: E402
# Triton-backed ops: schemas from Python (FRAGMENT), Triton kernels for CUDA when available.
from . import ddim_step as _ddim_step_mod  # noqa: E402
from . import group_norm_silu as _gns_mod  # noqa: E402
from .ddim_step import DDIM_STEP_SCHEMA, ddim_step, ddim_step_ref  # noqa: E402
from .group_norm_silu import GROUP_NORM_SILU_SCHEMA, group_norm_silu, group_norm_silu_ref  # noqa: E402

#: Ops served by Triton on CUDA: name -> (registered, reason) of the CUDA registration.
_TRITON_OPS: dict[str, tuple[bool, str]] = {
    "group_norm_silu": _gns_mod.TRITON_REGISTERED,
    "ddim_step": _ddim_step_mod.TRITON_REGISTERED,
}

_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
_KERNEL_NAMES = {"cpu": "cpp-cpu", "cuda": "cuda"}


def extension_status() -> tuple[bool, str]:
    """``(loaded, reason)`` of the attempt to import ``d2c_fast._C``."""
    return _EXT_LOADED, _EXT_REASON


def _device_type(device) -> str:
    return torch.device(device).type if not isinstance(device, torch.device) else device.type


def has_compiled_kernel(op_name: str, device_type) -> bool:
    """True if a C++/CUDA kernel of ``d2c_fast::<op_name>`` is registered for ``device_type``
    (``"cpu"``, ``"cuda"``, a ``torch.device`` or ``"cuda:0"``). The Python reference
    (CompositeExplicitAutograd) does not count."""
    key = _DISPATCH_KEYS.get(_device_type(device_type))
    if key is None:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"d2c_fast::{op_name}", key))
    except RuntimeError:  # operator unknown to the dispatcher
        return False


def backend_info(device="cpu") -> dict[str, dict]:
    """Map each operator to ``{"kernel": "cpp-cpu" | "cuda" | "triton" | "ref", "reason": str}``
    for ``device``, according to the kernels registered with the dispatcher ("triton": a Triton
    kernel registered for CUDA by ``group_norm_silu.py`` / ``ddim_step.py``)."""
    dtype = _device_type(device)
    info: dict[str, dict] = {}
    for name in OPS:
        if name in _TRITON_OPS:
            registered, why = _TRITON_OPS[name]
            if dtype == "cuda" and registered:
                info[name] = {"kernel": "triton", "reason": why}
            elif dtype == "cuda":
                info[name] = {"kernel": "ref", "reason": f"no Triton kernel: {why}"}
            else:
                info[name] = {"kernel": "ref",
                              "reason": f"the Triton kernel serves CUDA only (device type {dtype!r})"}
            continue
        if has_compiled_kernel(name, dtype):
            info[name] = {"kernel": _KERNEL_NAMES[dtype],
                          "reason": f"compiled kernel registered for {_DISPATCH_KEYS[dtype]}"}
        elif not _EXT_LOADED:
            info[name] = {"kernel": "ref",
                          "reason": f"d2c_fast._C not loaded ({_EXT_REASON}); {_BUILD_HINT}"}
        elif dtype in _DISPATCH_KEYS:
            info[name] = {"kernel": "ref",
                          "reason": f"d2c_fast._C has no {_DISPATCH_KEYS[dtype]} kernel for "
                                    f"d2c_fast::{name} (built without it)"}
        else:
            info[name] = {"kernel": "ref", "reason": f"no compiled kernels for device type {dtype!r}"}
    return info
