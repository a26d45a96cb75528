"""One DDIM update (Song et al. 2021, eq. 12) in one Triton kernel.

Fuses, elementwise in fp32:

    x0     = (x - s1a * eps) / sa
    x_next = sn * x0 + c2 * eps + c1 * noise          (noise term only when noise is given)

with ``(sa, s1a, sn, c1, c2) = (sqrt(abar_t), sqrt(1 - abar_t), sqrt(abar_next), c1, c2)`` from
``d2c_fast.diffusion.ddim_step_coeffs``. The coefficients come either as five Python floats or as
a float32 device tensor of 5 elements (a row of a per-step table), so a CUDA graph of the whole
loop can be replayed with another schedule without any host-device synchronisation.

Layouts: when x, eps, noise and the outputs share strides and are dense (e.g. all NCHW or all
channels-last) the kernel walks memory linearly; otherwise it maps a logical NCHW index through
each tensor's own strides (tensors of up to 4 dims). ``out`` may be ``x`` itself (in place).

Dtypes: x, eps, noise in float32 / float16 / bfloat16 (typically fp32 x and bf16 eps from the
U-Net); arithmetic in fp32; x_next (and x0) in the output's dtype (default x's dtype).

Limits: coefficient tensor must hold 5 contiguous float32 values on x's device.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

__all__ = ["ddim_step_triton"]


@triton.jit
def _ddim_step_kernel(
    x_ptr,       # (N, C, H, W) current latent x_t
    eps_ptr,     # (N, C, H, W) predicted noise
    noise_ptr,   # (N, C, H, W) step noise (unused unless HAS_NOISE)
    coeffs_ptr,  # (5,) float32 [sa, s1a, sn, c1, c2] (unused unless COEFFS_ON_DEVICE)
    out_ptr,     # (N, C, H, W) x_next
    x0_ptr,      # (N, C, H, W) predicted x0 (unused unless WRITE_X0)
    sa, s1a, sn, c1, c2,   # scalar coefficients (used unless COEFFS_ON_DEVICE)
    numel,
    C, H, W,     # logical sizes, for the strided path
    stride_x_n, stride_x_c, stride_x_h, stride_x_w,
    stride_eps_n, stride_eps_c, stride_eps_h, stride_eps_w,
    stride_noise_n, stride_noise_c, stride_noise_h, stride_noise_w,
    stride_out_n, stride_out_c, stride_out_h, stride_out_w,
    stride_x0_n, stride_x0_c, stride_x0_h, stride_x0_w,
    HAS_NOISE: tl.constexpr,
    WRITE_X0: tl.constexpr,
    COEFFS_ON_DEVICE: tl.constexpr,
    FLAT: tl.constexpr,      # every tensor dense with identical strides: offset == index
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)        # (BLOCK,) logical / linear index
    mask = idx < numel
    if FLAT:
        off_x = idx
        off_eps = idx
        off_noise = idx
        off_out = idx
        off_x0 = idx
    else:
        w = idx % W
        h = (idx // W) % H
        c = (idx // (W * H)) % C
        n = idx // (W * H * C)
        off_x = n * stride_x_n + c * stride_x_c + h * stride_x_h + w * stride_x_w
        off_eps = n * stride_eps_n + c * stride_eps_c + h * stride_eps_h + w * stride_eps_w
        off_noise = n * stride_noise_n + c * stride_noise_c + h * stride_noise_h + w * stride_noise_w
        off_out = n * stride_out_n + c * stride_out_c + h * stride_out_h + w * stride_out_w
        off_x0 = n * stride_x0_n + c * stride_x0_c + h * stride_x0_h + w * stride_x0_w

    if COEFFS_ON_DEVICE:
        k_sa = tl.load(coeffs_ptr + 0)
        k_s1a = tl.load(coeffs_ptr + 1)
        k_sn = tl.load(coeffs_ptr + 2)
        k_c1 = tl.load(coeffs_ptr + 3)
        k_c2 = tl.load(coeffs_ptr + 4)
    else:
        k_sa = sa
        k_s1a = s1a
        k_sn = sn
        k_c1 = c1
        k_c2 = c2

    x = tl.load(x_ptr + off_x, mask=mask, other=0.0).to(tl.float32)
    e = tl.load(eps_ptr + off_eps, mask=mask, other=0.0).to(tl.float32)
    x0 = (x - k_s1a * e) / k_sa
    x_next = k_sn * x0 + k_c2 * e
    if HAS_NOISE:
        z = tl.load(noise_ptr + off_noise, mask=mask, other=0.0).to(tl.float32)
        x_next = x_next + k_c1 * z
    if WRITE_X0:
        tl.store(x0_ptr + off_x0, x0.to(x0_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + off_out, x_next.to(out_ptr.dtype.element_ty), mask=mask)


_BLOCK = 1024


def _strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of t as a 4-D (N, C, H, W) tensor (missing leading dims get stride 0)."""
    s = tuple(t.stride())
    return (0,) * (4 - len(s)) + s


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def ddim_step_triton(x: torch.Tensor, eps: torch.Tensor,
                     coeffs: torch.Tensor | Sequence[float], noise: torch.Tensor | None = None, *,
                     out: torch.Tensor | None = None,
                     x0_out: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step; returns ``x_next`` (written to ``out`` when given, which may be ``x``).

    Args:
        x: ``x_t``, up to 4 dims (normally ``(N, C, H, W)`` float32).
        eps: the noise prediction, same shape as x (any float dtype, e.g. bf16).
        coeffs: ``(sa, s1a, sn, c1, c2)`` as 5 floats, or a float32 tensor of 5 elements on
            x's device (read by the kernel, no host synchronisation).
        noise: optional step noise, same shape as x (scaled by c1).
        out: optional x_next buffer (default: ``torch.empty_like(x)``).
        x0_out: optional buffer that receives the predicted x0.
    """
    if x.dim() > 4:
        raise ValueError(f"ddim_step_triton: at most 4 dims, got {tuple(x.shape)}")
    for name, t in (("eps", eps), ("noise", noise), ("out", out), ("x0_out", x0_out)):
        if t is not None and t.shape != x.shape:
            raise ValueError(f"ddim_step_triton: {name} has shape {tuple(t.shape)}, x has {tuple(x.shape)}")
    if out is None:
        out = torch.empty_like(x)
    on_device = isinstance(coeffs, torch.Tensor)
    if on_device:
        if coeffs.numel() != 5 or coeffs.dtype != torch.float32 or coeffs.device != x.device:
            raise ValueError("ddim_step_triton: coeffs tensor must be 5 float32 values on x's device, got "
                             f"{tuple(coeffs.shape)} {coeffs.dtype} on {coeffs.device}")
        coeffs = coeffs.reshape(5)
        if coeffs.stride(0) != 1:
            coeffs = coeffs.contiguous()
        scalars = (1.0, 0.0, 1.0, 0.0, 0.0)
        coeffs_arg = coeffs
    else:
        scalars = tuple(float(c) for c in coeffs)
        if len(scalars) != 5:
            raise ValueError(f"ddim_step_triton: need 5 coefficients, got {len(scalars)}")
        coeffs_arg = x
    numel = x.numel()
    if numel == 0:
        return out
    tensors = [t for t in (x, eps, noise, out, x0_out) if t is not None]
    flat = all(_dense(t) for t in tensors) and all(t.stride() == x.stride() for t in tensors)
    shape4 = (1,) * (4 - x.dim()) + tuple(x.shape)
    noise_arg = noise if noise is not None else x
    x0_arg = x0_out if x0_out is not None else out
    grid = (triton.cdiv(numel, _BLOCK),)
    _ddim_step_kernel[grid](
        x, eps, noise_arg, coeffs_arg, out, x0_arg,
        *scalars,
        numel, shape4[1], shape4[2], shape4[3],
        *_strides4(x), *_strides4(eps), *_strides4(noise_arg), *_strides4(out), *_strides4(x0_arg),
        HAS_NOISE=noise is not None, WRITE_X0=x0_out is not None,
        COEFFS_ON_DEVICE=on_device, FLAT=flat, BLOCK=_BLOCK, num_warps=4,
    )
    return out
