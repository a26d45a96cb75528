"""``d2c_fast::group_norm_silu``: GroupNorm (fp32 statistics) + SiLU, with an optional
per-(batch, channel) bias added before the norm.

    v = x + add[:, :, None, None]            (add optional: the ResNet block's temb projection)
    y = silu(group_norm(v, num_groups, weight, bias, eps))      (silu=False: plain GroupNorm)

This is every ``swish(norm(h))`` of the DDIM U-Net (``norm1``, ``norm2`` with the timestep bias
folded in, ``norm_out``) and, with ``silu=False``, the attention block's norm. Kernels:

* CUDA: the Triton kernel ``d2c_fast.kernels.group_norm_silu`` (registered only when triton
  imports and CUDA is available);
* everything else: :func:`group_norm_silu_ref`, the CompositeExplicitAutograd implementation.

The schema is defined from Python in a ``FRAGMENT`` library (the C++ ``TORCH_LIBRARY`` owns the
namespace and only defines ``bn_swish``). A fake kernel makes the op traceable. No autograd
formula: the engine runs it under ``torch.inference_mode()``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F

from ._registry import SCHEMAS, register_op

__all__ = ["GROUP_NORM_SILU_SCHEMA", "group_norm_silu", "group_norm_silu_ref", "TRITON_REGISTERED",
           "import_kernel_module"]

_NAME = "group_norm_silu"
#: The schema, from the operator list schemas.def.
GROUP_NORM_SILU_SCHEMA = SCHEMAS[_NAME]
_QUALNAME = f"d2c_fast::{_NAME}"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_inputs(x, weight, bias, add, eps, num_groups) -> None:
    if x.dim() != 4:
        raise RuntimeError(f"d2c_fast::group_norm_silu: x must be 4-D (N, C, H, W), got shape "
                           f"{list(x.shape)}")
    if x.dtype not in _DTYPES:
        raise RuntimeError(f"d2c_fast::group_norm_silu: x must be float32, bfloat16 or float16, "
                           f"got {x.dtype}")
    N, C = x.shape[0], x.shape[1]
    if num_groups < 1 or C % num_groups != 0:
        raise RuntimeError(f"d2c_fast::group_norm_silu: C={C} is not divisible by "
                           f"num_groups={num_groups}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t.dim() != 1 or t.shape[0] != C:
            raise RuntimeError(f"d2c_fast::group_norm_silu: {name} must be 1-D of size C={C}, got "
                               f"shape {list(t.shape)}")
        if not t.is_floating_point():
            raise RuntimeError(f"d2c_fast::group_norm_silu: {name} must be floating point")
        if t.device != x.device:
            raise RuntimeError(f"d2c_fast::group_norm_silu: {name} is on {t.device} but x is on "
                               f"{x.device}")
    if add is not None:
        ok = (add.dim() == 1 and add.shape[0] == C) or (
            add.dim() == 2 and add.shape[1] == C and add.shape[0] in (1, N))
        if not ok:
            raise RuntimeError(f"d2c_fast::group_norm_silu: add must be ({N}, {C}), (1, {C}) or "
                               f"({C},), got shape {list(add.shape)}")
        if add.device != x.device:
            raise RuntimeError(f"d2c_fast::group_norm_silu: add is on {add.device} but x is on "
                               f"{x.device}")
    if not eps >= 0:
        raise RuntimeError(f"d2c_fast::group_norm_silu: eps must be >= 0, got {eps}")


def group_norm_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        add: torch.Tensor | None = None, eps: float = 1e-6, num_groups: int = 32,
                        silu: bool = True) -> torch.Tensor:
    """Plain-PyTorch reference: everything in float32, returned in x's dtype (contiguous)."""
    _check_inputs(x, weight, bias, add, eps, num_groups)
    v = x.float()
    if add is not None:
        v = v + add.float().reshape(-1, x.shape[1])[:, :, None, None]
    y = F.group_norm(v, num_groups, weight.float(), bias.float(), eps)
    if silu:
        y = F.silu(y)
    return y.to(x.dtype)


def import_kernel_module(name: str):
    """``d2c_fast.kernels.<name>``. In an installed tree the top-level ``kernels/`` folder is
    mapped to ``d2c_fast.kernels`` by setup.py; in a bare checkout (e.g. a GPU box running from
    the repository root without ``pip install``) the package is registered here from
    ``<repo>/kernels``."""
    try:
        return importlib.import_module(f"d2c_fast.kernels.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("d2c_fast.kernels", f"d2c_fast.kernels.{name}"):
            raise
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "kernels")
    init = os.path.join(folder, "__init__.py")
    if "d2c_fast.kernels" not in sys.modules and os.path.isfile(init):
        spec = importlib.util.spec_from_file_location("d2c_fast.kernels", init,
                                                      submodule_search_locations=[folder])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["d2c_fast.kernels"] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module(f"d2c_fast.kernels.{name}")


# --- dispatcher registration -------------------------------------------------------------------

def _composite(x, weight, bias, add=None, eps=1e-6, num_groups=32, silu=True):
    y = group_norm_silu_ref(x, weight, bias, add, eps, num_groups, silu)
    out = torch.empty_like(x)  # x's memory format, as the fake and the Triton kernel
    return out.copy_(y) if y.stride() != out.stride() else y


_lib = register_op(_NAME, _composite)


@torch.library.register_fake(_QUALNAME)
def _fake(x, weight, bias, add=None, eps=1e-6, num_groups=32, silu=True):
    _check_inputs(x, weight, bias, add, eps, num_groups)
    return torch.empty_like(x)


def _register_triton() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    try:
        group_norm_silu_triton = import_kernel_module("group_norm_silu").group_norm_silu_triton
    except Exception as exc:  # triton missing or broken: the reference serves CUDA
        return False, f"triton kernel not importable ({type(exc).__name__}: {exc})"

    def _cuda(x, weight, bias, add=None, eps=1e-6, num_groups=32, silu=True):
        _check_inputs(x, weight, bias, add, eps, num_groups)
        return group_norm_silu_triton(x, weight, bias, add=add, eps=eps, num_groups=num_groups,
                                      silu=silu)

    _lib.impl(_NAME, _cuda, "CUDA")
    return True, "Triton kernel registered for CUDA"


#: ``(registered, reason)`` of the Triton CUDA registration.
TRITON_REGISTERED: tuple[bool, str] = _register_triton()


def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    add: torch.Tensor | None = None, *, eps: float = 1e-6, num_groups: int = 32,
                    silu: bool = True, impl: str = "fast") -> torch.Tensor:
    """``silu(group_norm(x + add))``. ``impl="fast"`` dispatches
    ``torch.ops.d2c_fast.group_norm_silu`` (Triton on CUDA, reference elsewhere);
    ``impl="ref"`` runs :func:`group_norm_silu_ref`."""
    if impl == "fast":
        return torch.ops.d2c_fast.group_norm_silu(x, weight, bias, add, eps, num_groups, silu)
    if impl == "ref":
        return group_norm_silu_ref(x, weight, bias, add, eps, num_groups, silu)
    raise ValueError(f"group_norm_silu: impl must be 'fast' or 'ref', got {impl!r}")
