"""``d2c_fast::dwconv_bias_swish``: depthwise k x k convolution + bias (+ Swish), fused.

    v[n, c] = bias[c] + conv2d(x[n, c], weight[c, 0], stride, padding, dilation)   (groups == C)
    y = v * sigmoid(v) if swish else v

This is the middle of every MBConv cell of the decoder (the BatchNorm after the depthwise conv is
folded into ``weight``/``bias``). ``x`` is ``(N, C, H, W)`` float32 or bfloat16 in any layout
(channels-last is the fast path), ``weight`` ``(C, 1, k, k)`` and ``bias`` ``(C,)`` float32,
zero padding. The output has the standard conv size and is channels-last exactly when
:func:`output_memory_format` says so (channels-last input -> channels-last output, NCHW -> NCHW).
Kernels:

* CPU: C++ (``csrc/cpu/dwconv.cpp``) when ``d2c_fast._C`` is built;
* anything else / no library: :func:`dwconv_bias_swish_ref`, registered as the
  CompositeExplicitAutograd implementation, so every device works.

A fake (meta) implementation makes the op traceable by ``torch.compile``. No autograd formula:
the op is inference-only (the engine runs under ``torch.no_grad()``).

``d2c_fast::up2_dwconv_bias_swish(x, weight, bias, swish)`` is the same op after a nearest x2
up-sampling of ``x`` (the decoder's up cells), with stride 1, dilation 1 and "same" padding
(odd ``k``): ``y`` is ``(N, C, 2H, 2W)``. The C++ kernel never materialises the up-sampled
tensor: per output parity the k x k conv over the up-sampled image is a (k//2 + 1)^2 conv over
``x`` with summed weights (9 taps per output instead of 25 for k = 5). Reference:
:func:`up2_dwconv_bias_swish_ref` (``F.interpolate`` then :func:`dwconv_bias_swish_ref`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import SCHEMAS, register_op

__all__ = ["DWCONV_BIAS_SWISH_SCHEMA", "UP2_DWCONV_BIAS_SWISH_SCHEMA", "dwconv_bias_swish",
           "dwconv_bias_swish_ref", "dwconv_output_size", "output_memory_format",
           "up2_dwconv_bias_swish", "up2_dwconv_bias_swish_ref"]

#: The schemas, from the operator list schemas.def (which csrc/registration.cpp includes).
DWCONV_BIAS_SWISH_SCHEMA = SCHEMAS["dwconv_bias_swish"]
UP2_DWCONV_BIAS_SWISH_SCHEMA = SCHEMAS["up2_dwconv_bias_swish"]
_QUALNAME = "d2c_fast::dwconv_bias_swish"
_OP = "d2c_fast::dwconv_bias_swish: "
_UP_QUALNAME = "d2c_fast::up2_dwconv_bias_swish"
_UP_OP = "d2c_fast::up2_dwconv_bias_swish: "
_DTYPES = (torch.float32, torch.bfloat16)


def dwconv_output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Standard convolution output length ``floor((size + 2p - d(k-1) - 1) / s) + 1``."""
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The output layout rule shared with the C++ kernel: channels-last iff ``x`` is
    channels-last contiguous and not NCHW contiguous, or (dense in neither) its channel stride is
    smaller than its W stride."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.channels_last if x.stride(1) < x.stride(3) else torch.contiguous_format


def _check_inputs(x, weight, bias, stride, padding, dilation, op=_OP) -> None:
    """Same conditions (and wording) as the C++ kernel; raises RuntimeError like TORCH_CHECK."""
    if x.dim() != 4:
        raise RuntimeError(f"{op}x must be 4-D (N, C, H, W), got {x.dim()}-D tensor of shape "
                           f"{list(x.shape)}")
    if x.dtype not in _DTYPES:
        raise RuntimeError(f"{op}x must be float32 or bfloat16, got {x.dtype}")
    C = x.shape[1]
    if not (weight.dim() == 4 and weight.shape[0] == C and weight.shape[1] == 1
            and weight.shape[2] == weight.shape[3] and weight.shape[2] >= 1):
        raise RuntimeError(f"{op}weight must be (C, 1, k, k) with C={C}, got shape "
                           f"{list(weight.shape)}")
    if weight.shape[2] > 63:
        raise RuntimeError(f"{op}kernel size k must be <= 63, got {weight.shape[2]}")
    if not (bias.dim() == 1 and bias.shape[0] == C):
        raise RuntimeError(f"{op}bias must be 1-D of size C={C}, got shape {list(bias.shape)}")
    if weight.dtype != torch.float32:
        raise RuntimeError(f"{op}weight must be float32, got {weight.dtype}")
    if bias.dtype != torch.float32:
        raise RuntimeError(f"{op}bias must be float32, got {bias.dtype}")
    if weight.device != x.device or bias.device != x.device:
        raise RuntimeError(f"{op}weight and bias must be on x's device {x.device}")
    if stride < 1:
        raise RuntimeError(f"{op}stride must be >= 1, got {stride}")
    if padding < 0:
        raise RuntimeError(f"{op}padding must be >= 0, got {padding}")
    if dilation < 1:
        raise RuntimeError(f"{op}dilation must be >= 1, got {dilation}")
    k = weight.shape[2]
    for size in x.shape[2:]:
        if size + 2 * padding - dilation * (k - 1) - 1 < 0:
            raise RuntimeError(f"{op}output size is too small: input {list(x.shape)}, k={k}, "
                               f"padding={padding}, dilation={dilation}")


def dwconv_bias_swish_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          stride: int = 1, padding: int = 0, dilation: int = 1,
                          swish: bool = True) -> torch.Tensor:
    """Plain-PyTorch reference: ``F.conv2d(groups=C)`` + bias (+ SiLU) in float32, returned in
    ``x.dtype`` (layout: whatever F.conv2d returns)."""
    _check_inputs(x, weight, bias, stride, padding, dilation)
    if x.numel() == 0:  # F.conv2d refuses groups=0; the result is simply empty
        return _empty_output(x, weight, stride, padding, dilation)
    v = F.conv2d(x.float(), weight, bias, stride=stride, padding=padding, dilation=dilation,
                 groups=x.shape[1])
    if swish:
        v = F.silu(v)
    return v.to(x.dtype)


# --- dispatcher registration -------------------------------------------------------------------

def _empty_output(x, weight, stride, padding, dilation) -> torch.Tensor:
    k = weight.shape[2]
    ho = dwconv_output_size(x.shape[2], k, stride, padding, dilation)
    wo = dwconv_output_size(x.shape[3], k, stride, padding, dilation)
    return x.new_empty((x.shape[0], x.shape[1], ho, wo)).contiguous(
        memory_format=output_memory_format(x))


def _composite(x, weight, bias, stride, padding, dilation, swish):
    y = dwconv_bias_swish_ref(x, weight, bias, stride, padding, dilation, swish)
    out = _empty_output(x, weight, stride, padding, dilation)  # strides of the C++ kernel
    return out.copy_(y)


register_op("dwconv_bias_swish", _composite)


@torch.library.register_fake(_QUALNAME)
def _fake(x, weight, bias, stride, padding, dilation, swish):
    _check_inputs(x, weight, bias, stride, padding, dilation)
    return _empty_output(x, weight, stride, padding, dilation)


def dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      stride: int = 1, padding: int | None = None, dilation: int = 1,
                      swish: bool = True, *, impl: str = "fast") -> torch.Tensor:
    """Depthwise conv + bias (+ Swish). ``padding=None`` means "same" for stride 1:
    ``dilation * (k - 1) // 2``. ``impl="fast"`` dispatches ``torch.ops.d2c_fast.dwconv_bias_swish``
    (compiled kernel where registered, reference elsewhere); ``impl="ref"`` runs
    :func:`dwconv_bias_swish_ref` directly."""
    if padding is None:
        padding = dilation * (weight.shape[-1] - 1) // 2
    if impl == "fast":
        return torch.ops.d2c_fast.dwconv_bias_swish(x, weight, bias, stride, padding, dilation, swish)
    if impl == "ref":
        return dwconv_bias_swish_ref(x, weight, bias, stride, padding, dilation, swish)
    raise ValueError(f"dwconv_bias_swish: impl must be 'fast' or 'ref', got {impl!r}")


# --- nearest x2 up-sampling + dwconv ------------------------------------------------------------

def _check_up2_inputs(x, weight, bias) -> None:
    k = weight.shape[2] if weight.dim() == 4 else 1
    _check_inputs(x, weight, bias, 1, (k - 1) // 2, 1, op=_UP_OP)
    if k % 2 != 1:
        raise RuntimeError(f"{_UP_OP}kernel size k must be odd ('same' padding), got {k}")


def up2_dwconv_bias_swish_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                              swish: bool = True) -> torch.Tensor:
    """Plain-PyTorch reference: nearest x2 ``F.interpolate``, then
    :func:`dwconv_bias_swish_ref` with stride 1 and "same" padding."""
    _check_up2_inputs(x, weight, bias)
    if x.numel() == 0:
        return _up2_empty_output(x)
    u = F.interpolate(x, scale_factor=2.0, mode="nearest")
    return dwconv_bias_swish_ref(u, weight, bias, 1, (weight.shape[2] - 1) // 2, 1, swish)


def _up2_empty_output(x) -> torch.Tensor:
    return x.new_empty((x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3])).contiguous(
        memory_format=output_memory_format(x))


def _up2_composite(x, weight, bias, swish):
    y = up2_dwconv_bias_swish_ref(x, weight, bias, swish)
    return _up2_empty_output(x).copy_(y)


register_op("up2_dwconv_bias_swish", _up2_composite)


@torch.library.register_fake(_UP_QUALNAME)
def _up2_fake(x, weight, bias, swish):
    _check_up2_inputs(x, weight, bias)
    return _up2_empty_output(x)


def up2_dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          swish: bool = True, *, impl: str = "fast") -> torch.Tensor:
    """Nearest x2 up-sampling, then depthwise conv ("same" padding, odd k) + bias (+ Swish).
    ``impl="fast"``: ``torch.ops.d2c_fast.up2_dwconv_bias_swish`` (the C++ kernel on CPU, the
    reference elsewhere); ``impl="ref"``: :func:`up2_dwconv_bias_swish_ref`."""
    if impl == "fast":
        return torch.ops.d2c_fast.up2_dwconv_bias_swish(x, weight, bias, swish)
    if impl == "ref":
        return up2_dwconv_bias_swish_ref(x, weight, bias, swish)
    raise ValueError(f"up2_dwconv_bias_swish: impl must be 'fast' or 'ref', got {impl!r}")
