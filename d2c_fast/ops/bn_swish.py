"""``d2c_fast::bn_swish``: inference BatchNorm (folded to per-channel scale/shift) + Swish.

    y = v * sigmoid(v),   v = x * scale[c] + shift[c],   c = dim 1 of x ((N, C, H, W) or (N, C))

This is what the encoder's ``res_bnswish`` cells run at inference. ``scale``/``shift`` come from
:func:`fold_bn`. Kernels:

* CPU: C++ (``csrc/cpu/bn_swish.cpp``) when ``d2c_fast._C`` is built;
* CUDA: ``csrc/cuda/bn_swish.cu`` when built against a CUDA torch;
* anything else / no library: :func:`bn_swish_ref`, registered as the CompositeExplicitAutograd
  implementation, so every device works.

A fake (meta) implementation makes the op traceable by ``torch.compile`` and an autograd formula
is registered, although the engine only runs it under ``torch.no_grad()``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import SCHEMAS, register_op

__all__ = ["BN_SWISH_SCHEMA", "bn_swish", "bn_swish_ref", "fold_bn"]

#: The schema, from the operator list schemas.def (which csrc/registration.cpp includes).
BN_SWISH_SCHEMA = SCHEMAS["bn_swish"]
_QUALNAME = "d2c_fast::bn_swish"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_inputs(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Same conditions (and wording) as the C++ kernel; raises RuntimeError like TORCH_CHECK."""
    if x.dim() not in (2, 4):
        raise RuntimeError(f"d2c_fast::bn_swish: x must be 4-D (N, C, H, W) or 2-D (N, C), got "
                           f"{x.dim()}-D tensor of shape {list(x.shape)}")
    if x.dtype not in _DTYPES:
        raise RuntimeError(f"d2c_fast::bn_swish: x must be float32, bfloat16 or float16, got {x.dtype}")
    C = x.shape[1]
    for name, t in (("scale", scale), ("shift", shift)):
        if t.dim() != 1:
            raise RuntimeError(f"d2c_fast::bn_swish: {name} must be 1-D of size C={C}, got shape "
                               f"{list(t.shape)}")
        if t.shape[0] != C:
            raise RuntimeError(f"d2c_fast::bn_swish: {name} has {t.shape[0]} channels but x has "
                               f"C={C} (dim 1 of shape {list(x.shape)})")
        if t.dtype != torch.float32:
            raise RuntimeError(f"d2c_fast::bn_swish: {name} must be float32, got {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"d2c_fast::bn_swish: {name} is on {t.device} but x is on {x.device}")


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.view((1, -1) + (1,) * (ndim - 2))


def bn_swish_ref(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Plain-PyTorch reference: computed in float32, returned in ``x.dtype``."""
    _check_inputs(x, scale, shift)
    v = x.float() * _channel_view(scale, x.dim()) + _channel_view(shift, x.dim())
    return F.silu(v).to(x.dtype)


def fold_bn(running_mean: torch.Tensor, running_var: torch.Tensor, weight: torch.Tensor | None,
            bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold inference BatchNorm into float32 ``(scale, shift)``:
    ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``.
    ``weight``/``bias`` may be None (``affine=False``). Computed in float64."""
    mean = running_mean.detach().double()
    var = running_var.detach().double()
    w = torch.ones_like(mean) if weight is None else weight.detach().double()
    b = torch.zeros_like(mean) if bias is None else bias.detach().double()
    scale = w / torch.sqrt(var + eps)
    shift = b - mean * scale
    return scale.float().contiguous(), shift.float().contiguous()


# --- dispatcher registration -------------------------------------------------------------------

def _bn_swish_composite(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    y = bn_swish_ref(x, scale, shift)
    out = torch.empty_like(x)  # same strides as the fake implementation and the C++ kernel
    if y.stride() != out.stride():
        return out.copy_(y)
    return y


register_op("bn_swish", _bn_swish_composite)


@torch.library.register_fake(_QUALNAME)
def _bn_swish_fake(x, scale, shift):
    _check_inputs(x, scale, shift)
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, scale, shift = inputs
    ctx.save_for_backward(x, scale, shift)


def _backward(ctx, grad):
    x, scale, shift = ctx.saved_tensors
    s, b = _channel_view(scale, x.dim()), _channel_view(shift, x.dim())
    xf = x.float()
    v = xf * s + b
    sig = torch.sigmoid(v)
    dv = grad.float() * sig * (1 + v * (1 - sig))
    dims = [d for d in range(x.dim()) if d != 1]
    gx = (dv * s).to(x.dtype) if ctx.needs_input_grad[0] else None
    gscale = (dv * xf).sum(dims) if ctx.needs_input_grad[1] else None
    gshift = dv.sum(dims) if ctx.needs_input_grad[2] else None
    return gx, gscale, gshift


torch.library.register_autograd(_QUALNAME, _backward, setup_context=_setup_context)


def bn_swish(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
             impl: str = "fast") -> torch.Tensor:
    """``swish(x * scale[c] + shift[c])``. ``impl="fast"`` dispatches ``torch.ops.d2c_fast.bn_swish``
    (compiled kernel where registered, reference elsewhere); ``impl="ref"`` runs
    :func:`bn_swish_ref` directly."""
    if impl == "fast":
        return torch.ops.d2c_fast.bn_swish(x, scale, shift)
    if impl == "ref":
        return bn_swish_ref(x, scale, shift)
    raise ValueError(f"bn_swish: impl must be 'fast' or 'ref', got {impl!r}")
