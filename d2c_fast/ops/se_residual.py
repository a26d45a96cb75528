"""``d2c_fast::se_residual``: squeeze-excitation + scaled residual, fused.

    g[n, :] = sigmoid(w2 @ relu(w1 @ mean_hw(s[n]) + b1) + b2)
    out     = skip + alpha * s * g[:, :, None, None]

This is the tail of every MBConv cell of the decoder (``skip + 0.1 * s`` after the official SE:
Linear(C, max(C // 16, 4)), ReLU, Linear, Sigmoid). ``s`` and ``skip`` are ``(N, C, H, W)`` of the
same shape and dtype (float32 or bfloat16), any layout; ``w1`` ``(Ch, C)``, ``b1`` ``(Ch,)``,
``w2`` ``(C, Ch)``, ``b2`` ``(C,)`` float32. The output has ``s``'s memory format (the rule of
:func:`d2c_fast.ops.dwconv_bias_swish.output_memory_format`). Kernels:

* CPU: C++ (``csrc/cpu/se_residual.cpp``) when ``d2c_fast._C`` is built;
* anything else / no library: :func:`se_residual_ref` (CompositeExplicitAutograd).

A fake (meta) implementation makes the op traceable by ``torch.compile``; no autograd formula
(inference only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import SCHEMAS, register_op

from .dwconv_bias_swish import output_memory_format

__all__ = ["SE_RESIDUAL_SCHEMA", "se_residual", "se_residual_ref"]

#: The schema, from the operator list schemas.def (which csrc/registration.cpp includes).
SE_RESIDUAL_SCHEMA = SCHEMAS["se_residual"]
_QUALNAME = "d2c_fast::se_residual"
_OP = "d2c_fast::se_residual: "
_DTYPES = (torch.float32, torch.bfloat16)


def _check_inputs(s, skip, w1, b1, w2, b2) -> None:
    """Same conditions (and wording) as the C++ kernel; raises RuntimeError like TORCH_CHECK."""
    if s.dim() != 4:
        raise RuntimeError(f"{_OP}s must be 4-D (N, C, H, W), got {s.dim()}-D tensor of shape "
                           f"{list(s.shape)}")
    if s.dtype not in _DTYPES:
        raise RuntimeError(f"{_OP}s must be float32 or bfloat16, got {s.dtype}")
    if skip.shape != s.shape:
        raise RuntimeError(f"{_OP}skip must have s's shape {list(s.shape)}, got {list(skip.shape)}")
    if skip.dtype != s.dtype:
        raise RuntimeError(f"{_OP}skip must have s's dtype {s.dtype}, got {skip.dtype}")
    C = s.shape[1]
    if not (w1.dim() == 2 and w1.shape[1] == C and w1.shape[0] >= 1):
        raise RuntimeError(f"{_OP}w1 must be (Ch, C) with C={C}, got shape {list(w1.shape)}")
    Ch = w1.shape[0]
    if not (b1.dim() == 1 and b1.shape[0] == Ch):
        raise RuntimeError(f"{_OP}b1 must be 1-D of size Ch={Ch}, got shape {list(b1.shape)}")
    if not (w2.dim() == 2 and w2.shape[0] == C and w2.shape[1] == Ch):
        raise RuntimeError(f"{_OP}w2 must be (C, Ch) = ({C}, {Ch}), got shape {list(w2.shape)}")
    if not (b2.dim() == 1 and b2.shape[0] == C):
        raise RuntimeError(f"{_OP}b2 must be 1-D of size C={C}, got shape {list(b2.shape)}")
    for t in (w1, b1, w2, b2):
        if t.dtype != torch.float32:
            raise RuntimeError(f"{_OP}w1, b1, w2, b2 must be float32, got {t.dtype}")
        if t.device != s.device:
            raise RuntimeError(f"{_OP}w1, b1, w2, b2 must be on s's device {s.device}, got {t.device}")
    if skip.device != s.device:
        raise RuntimeError(f"{_OP}skip must be on s's device {s.device}")


def se_residual_ref(s: torch.Tensor, skip: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                    w2: torch.Tensor, b2: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Plain-PyTorch reference in float32, returned in ``s.dtype`` (layout: what eager gives)."""
    _check_inputs(s, skip, w1, b1, w2, b2)
    sf = s.float()
    gate = torch.sigmoid(F.linear(torch.relu(F.linear(sf.mean((2, 3)), w1, b1)), w2, b2))
    return (skip.float() + alpha * sf * gate[:, :, None, None]).to(s.dtype)


# --- dispatcher registration -------------------------------------------------------------------

def _empty_output(s: torch.Tensor) -> torch.Tensor:
    return torch.empty(s.shape, dtype=s.dtype, device=s.device,
                       memory_format=output_memory_format(s))


def _composite(s, skip, w1, b1, w2, b2, alpha):
    return _empty_output(s).copy_(se_residual_ref(s, skip, w1, b1, w2, b2, alpha))


register_op("se_residual", _composite)


@torch.library.register_fake(_QUALNAME)
def _fake(s, skip, w1, b1, w2, b2, alpha):
    _check_inputs(s, skip, w1, b1, w2, b2)
    return _empty_output(s)


def se_residual(s: torch.Tensor, skip: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                w2: torch.Tensor, b2: torch.Tensor, alpha: float = 0.1, *,
                impl: str = "fast") -> torch.Tensor:
    """``skip + alpha * s * SE(s)``. ``impl="fast"`` dispatches ``torch.ops.d2c_fast.se_residual``
    (compiled kernel where registered, reference elsewhere); ``impl="ref"`` runs
    :func:`se_residual_ref` directly."""
    if impl == "fast":
        return torch.ops.d2c_fast.se_residual(s, skip, w1, b1, w2, b2, float(alpha))
    if impl == "ref":
        return se_residual_ref(s, skip, w1, b1, w2, b2, alpha)
    raise ValueError(f"se_residual: impl must be 'fast' or 'ref', got {impl!r}")
