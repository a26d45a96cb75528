"""``d2c_fast::mbconv``: the body of a stride-1 MBConv cell (BatchNorms folded), fused.

    h = swish(conv1x1(x, w_expand) + b_expand)          C -> E channels
    d = swish(dwconv_kxk(h, w_dw) + b_dw)                "same" zero padding of h, odd k
    y = conv1x1(d, w_project) + b_project                E -> C2 channels

This is every non-up-sampling MBConv cell of the decoder (``res_mbconv`` and friends) before
its squeeze-excitation + residual tail (:mod:`d2c_fast.ops.se_residual`). ``x`` is
``(N, C, H, W)`` float32 or bfloat16, any layout (channels-last is the no-copy path); weights in
conv shapes, float32: ``w_expand (E, C, 1, 1)``, ``w_dw (E, 1, k, k)``, ``w_project
(C2, E, 1, 1)``, biases 1-D. The output follows
:func:`d2c_fast.ops.dwconv_bias_swish.output_memory_format`. Kernels:

* CPU: C++ (``csrc/cpu/mbconv.cpp``): each thread streams its rows through a ring of k
  expanded rows in cache, so the E-channel hidden tensor never goes to memory (GEMMs by
  PyTorch's exported oneDNN brgemm); float32 (bf16 is converted around it);
* anything else / no library: :func:`mbconv_ref`.

Fake kernel for ``torch.compile``; inference only (no autograd formula).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import SCHEMAS, register_op
from .dwconv_bias_swish import output_memory_format

__all__ = ["MBCONV_SCHEMA", "mbconv", "mbconv_ref"]

#: The schema, from the operator list schemas.def (which csrc/registration.cpp includes).
MBCONV_SCHEMA = SCHEMAS["mbconv"]
_QUALNAME = "d2c_fast::mbconv"
_OP = "d2c_fast::mbconv: "
_DTYPES = (torch.float32, torch.bfloat16)


def _check_inputs(x, we, be, wd, bd, wp, bp) -> None:
    """Same conditions (and wording) as the C++ kernel; raises RuntimeError like TORCH_CHECK."""
    if x.dim() != 4:
        raise RuntimeError(f"{_OP}x must be 4-D (N, C, H, W), got {x.dim()}-D tensor of shape "
                           f"{list(x.shape)}")
    if x.dtype not in _DTYPES:
        raise RuntimeError(f"{_OP}x must be float32 or bfloat16, got {x.dtype}")
    C = x.shape[1]
    if not (we.dim() == 4 and we.shape[1] == C and we.shape[2:] == (1, 1) and we.shape[0] >= 1):
        raise RuntimeError(f"{_OP}w_expand must be (E, C, 1, 1) with C={C}, got shape "
                           f"{list(we.shape)}")
    E = we.shape[0]
    if not (wd.dim() == 4 and wd.shape[0] == E and wd.shape[1] == 1 and wd.shape[2] == wd.shape[3]
            and wd.shape[2] % 2 == 1 and wd.shape[2] <= 63):
        raise RuntimeError(f"{_OP}w_dw must be (E, 1, k, k) with E={E} and odd k <= 63, got "
                           f"shape {list(wd.shape)}")
    if not (wp.dim() == 4 and wp.shape[1] == E and wp.shape[2:] == (1, 1) and wp.shape[0] >= 1):
        raise RuntimeError(f"{_OP}w_project must be (C2, E, 1, 1) with E={E}, got shape "
                           f"{list(wp.shape)}")
    C2 = wp.shape[0]
    for name, b, n in (("b_expand", be, E), ("b_dw", bd, E), ("b_project", bp, C2)):
        if not (b.dim() == 1 and b.shape[0] == n):
            raise RuntimeError(f"{_OP}{name} must be 1-D of size {'C2' if name == 'b_project' else 'E'}"
                               f"={n}, got shape {list(b.shape)}")
    for t in (we, be, wd, bd, wp, bp):
        if t.dtype != torch.float32:
            raise RuntimeError(f"{_OP}weights and biases must be float32, got {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"{_OP}weights and biases must be on x's device {x.device}, got "
                               f"{t.device}")


def mbconv_ref(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project) -> torch.Tensor:
    """Plain-PyTorch reference in float32, returned in ``x.dtype``."""
    _check_inputs(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project)
    if x.numel() == 0:
        return _empty_output(x, w_project)
    h = F.silu(F.conv2d(x.float(), w_expand, b_expand))
    k = w_dw.shape[2]
    d = F.silu(F.conv2d(h, w_dw, b_dw, padding=k // 2, groups=h.shape[1]))
    return F.conv2d(d, w_project, b_project).to(x.dtype)


def _empty_output(x, w_project) -> torch.Tensor:
    return x.new_empty((x.shape[0], w_project.shape[0], x.shape[2], x.shape[3])).contiguous(
        memory_format=output_memory_format(x))


def _composite(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project):
    y = mbconv_ref(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project)
    return _empty_output(x, w_project).copy_(y)


register_op("mbconv", _composite)


@torch.library.register_fake(_QUALNAME)
def _fake(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project):
    _check_inputs(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project)
    return _empty_output(x, w_project)


def mbconv(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project, *,
           impl: str = "fast") -> torch.Tensor:
    """The fused stride-1 MBConv body. ``impl="fast"``: ``torch.ops.d2c_fast.mbconv`` (the C++
    kernel on CPU, the reference elsewhere); ``impl="ref"``: :func:`mbconv_ref`."""
    if impl == "fast":
        return torch.ops.d2c_fast.mbconv(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project)
    if impl == "ref":
        return mbconv_ref(x, w_expand, b_expand, w_dw, b_dw, w_project, b_project)
    raise ValueError(f"mbconv: impl must be 'fast' or 'ref', got {impl!r}")
