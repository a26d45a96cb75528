"""``d2c_fast::ddim_step``: one DDIM update (Song et al. 2021, eq. 12), fp32 arithmetic.

    x0     = (x - s1a * eps) / sa
    x_next = sn * x0 + c2 * eps + c1 * noise        (noise term only when noise is given)

``coeffs`` = ``(sa, s1a, sn, c1, c2)`` of :func:`d2c_fast.diffusion.ddim_step_coeffs`, as a float32
tensor of 5 elements on x's device (the op; a CUDA graph can then replay other steps without a
host synchronisation) or 5 Python floats (:func:`ddim_step` / :func:`ddim_step_ref`).
The arithmetic order is that of :func:`d2c_fast.diffusion.ddim`, so the reference matches it
bit for bit on the same device.

Kernels: the Triton kernel ``d2c_fast.kernels.ddim_step`` for CUDA (when triton imports and CUDA
is available); :func:`ddim_step_ref` (CompositeExplicitAutograd) everywhere else.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._registry import SCHEMAS, register_op

from .group_norm_silu import import_kernel_module

__all__ = ["DDIM_STEP_SCHEMA", "ddim_step", "ddim_step_ref", "TRITON_REGISTERED"]

_NAME = "ddim_step"
#: The schema, from the operator list schemas.def.
DDIM_STEP_SCHEMA = SCHEMAS[_NAME]
_QUALNAME = f"d2c_fast::{_NAME}"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_inputs(x, eps, coeffs, noise) -> None:
    if x.dtype not in _DTYPES:
        raise RuntimeError(f"d2c_fast::ddim_step: x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.dim() > 4:
        raise RuntimeError(f"d2c_fast::ddim_step: x must have at most 4 dims, got {list(x.shape)}")
    for name, t in (("eps", eps), ("noise", noise)):
        if t is None:
            continue
        if t.shape != x.shape:
            raise RuntimeError(f"d2c_fast::ddim_step: {name} has shape {list(t.shape)} but x has "
                               f"{list(x.shape)}")
        if t.dtype not in _DTYPES:
            raise RuntimeError(f"d2c_fast::ddim_step: {name} must be a float tensor, got {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"d2c_fast::ddim_step: {name} is on {t.device} but x is on {x.device}")
    if isinstance(coeffs, torch.Tensor):
        if coeffs.numel() != 5 or coeffs.dtype != torch.float32:
            raise RuntimeError(f"d2c_fast::ddim_step: coeffs must be 5 float32 values (sa, s1a, sn, "
                               f"c1, c2), got shape {list(coeffs.shape)} {coeffs.dtype}")
        if coeffs.device != x.device:
            raise RuntimeError(f"d2c_fast::ddim_step: coeffs is on {coeffs.device} but x is on "
                               f"{x.device}")


def ddim_step_ref(x: torch.Tensor, eps: torch.Tensor, coeffs: torch.Tensor | Sequence[float],
                  noise: torch.Tensor | None = None, *, return_x0: bool = False):
    """Plain-PyTorch reference; returns ``x_next`` in x's dtype (and ``x0`` in float32 when
    ``return_x0``). ``coeffs``: 5 floats or a float32 tensor of 5 elements."""
    if isinstance(coeffs, torch.Tensor):
        _check_inputs(x, eps, coeffs, noise)
        sa, s1a, sn, c1, c2 = coeffs.reshape(5).unbind(0)  # 0-d tensors: no host read
    else:
        _check_inputs(x, eps, None, noise)
        sa, s1a, sn, c1, c2 = (float(c) for c in coeffs)
    e = eps.float()
    x0 = (x.float() - s1a * e) / sa
    x_next = sn * x0 + c2 * e
    if noise is not None:
        x_next = x_next + c1 * noise.float()
    x_next = x_next.to(x.dtype)
    return (x_next, x0) if return_x0 else x_next


# --- dispatcher registration -------------------------------------------------------------------

def _composite(x, eps, coeffs, noise=None):
    y = ddim_step_ref(x, eps, coeffs, noise)
    out = torch.empty_like(x)
    return out.copy_(y) if y.stride() != out.stride() else y


_lib = register_op(_NAME, _composite)


@torch.library.register_fake(_QUALNAME)
def _fake(x, eps, coeffs, noise=None):
    _check_inputs(x, eps, coeffs, noise)
    return torch.empty_like(x)


_TRITON_FN = None


def _register_triton() -> tuple[bool, str]:
    global _TRITON_FN
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    try:
        _TRITON_FN = import_kernel_module("ddim_step").ddim_step_triton
    except Exception as exc:
        return False, f"triton kernel not importable ({type(exc).__name__}: {exc})"

    def _cuda(x, eps, coeffs, noise=None):
        _check_inputs(x, eps, coeffs, noise)
        return _TRITON_FN(x, eps, coeffs, noise)

    _lib.impl(_NAME, _cuda, "CUDA")
    return True, "Triton kernel registered for CUDA"


#: ``(registered, reason)`` of the Triton CUDA registration.
TRITON_REGISTERED: tuple[bool, str] = _register_triton()


def ddim_step(x: torch.Tensor, eps: torch.Tensor, coeffs: torch.Tensor | Sequence[float],
              noise: torch.Tensor | None = None, *, out: torch.Tensor | None = None,
              impl: str = "fast") -> torch.Tensor:
    """``x_next`` of one DDIM step. ``impl="fast"``: on CUDA with Triton the kernel (tensor or
    float coefficients; ``out`` may be x for an in-place update), else the dispatcher op
    ``torch.ops.d2c_fast.ddim_step`` (float coefficients become a tensor on x's device);
    ``impl="ref"``: :func:`ddim_step_ref`."""
    if impl not in ("fast", "ref"):
        raise ValueError(f"ddim_step: impl must be 'fast' or 'ref', got {impl!r}")
    if impl == "fast" and _TRITON_FN is not None and x.is_cuda:
        _check_inputs(x, eps, coeffs if isinstance(coeffs, torch.Tensor) else None, noise)
        return _TRITON_FN(x, eps, coeffs, noise, out=out)
    if impl == "fast" and isinstance(coeffs, torch.Tensor):
        y = torch.ops.d2c_fast.ddim_step(x, eps, coeffs, noise)
    else:
        y = ddim_step_ref(x, eps, coeffs, noise)
    if out is None:
        return y
    return out.copy_(y)
