"""GroupNorm (+ SiLU) in one Triton kernel, one program per (batch, group).

Fuses, for x of shape (N, C, H, W):

    v = x + add[n, c]                      (optional per-(batch, channel) bias, BEFORE the norm:
                                            the ResNet block's temb projection feeding norm2)
    u = (v - mean_g) * rstd_g * weight[c] + bias[c]      (GroupNorm, statistics in fp32)
    y = u * sigmoid(u)                     (SiLU; off with silu=False for the attention norm)

Layouts: any strides whose H and W merge into one axis (stride_h == W * stride_w), which covers
NCHW-contiguous and channels-last (NHWC) tensors and batch/channel slices of them; anything else is
copied to a contiguous tensor first. The output has x's memory format (``torch.empty_like``).
Triton specialises unit strides, so NCHW loads coalesce along H*W and NHWC loads along C.

Dtypes: x in float32 / float16 / bfloat16 (y has x's dtype); weight, bias and add in any float
dtype (read as fp32). All arithmetic in fp32.

Paths:
* a group of at most ``MAX_TILE_ELEMS`` padded elements (every ARCH-256 U-Net shape; the largest
  is 12 channels x 32x32) is held in registers: one read of x, one write of y;
* larger groups loop over H*W in chunks: chunk statistics merged with Chan's parallel formula
  (numerically stable, no E[x^2] - E[x]^2 cancellation), then a second read to normalise.

Limits: 4-D input only; C divisible by num_groups; at most 1024 channels per group; fp32
statistics, so a group must hold fewer than 2^24 elements for exact counts.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["group_norm_silu_triton", "MAX_TILE_ELEMS", "MAX_CHANNELS_PER_GROUP"]

#: Largest padded group (BLOCK_C * BLOCK_HW) handled in registers by one program.
MAX_TILE_ELEMS = 16384
#: Largest C // num_groups supported (one tile row per channel of the group).
MAX_CHANNELS_PER_GROUP = 1024


@triton.jit
def _group_norm_silu_fwd_kernel(
    x_ptr,       # (N, C, HW) input, element [n, c, s] at n*stride_x_n + c*stride_x_c + s*stride_x_s
    y_ptr,       # (N, C, HW) output, strides stride_y_*
    weight_ptr,  # (C,) GroupNorm gain
    bias_ptr,    # (C,) GroupNorm shift
    add_ptr,     # (N, C) bias added before the norm (unused unless HAS_ADD); stride_add_n may be 0
    C,           # channels
    HW,          # H * W
    CPG,         # channels per group, C // num_groups
    stride_x_n, stride_x_c, stride_x_s,
    stride_y_n, stride_y_c, stride_y_s,
    stride_add_n, stride_add_c,
    eps,
    HAS_ADD: tl.constexpr,
    APPLY_SILU: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr,   # >= CPG, power of two
    BLOCK_HW: tl.constexpr,  # power of two; >= HW when SINGLE_TILE
):
    pid = tl.program_id(0)
    groups = C // CPG
    n = (pid // groups).to(tl.int64)
    g = pid % groups

    offs_c = tl.arange(0, BLOCK_C)                 # (BLOCK_C,)   channel within the group
    offs_s = tl.arange(0, BLOCK_HW)                # (BLOCK_HW,)  spatial position
    mask_c = offs_c < CPG
    chan = g * CPG + offs_c                        # (BLOCK_C,)   absolute channel

    x_base = x_ptr + n * stride_x_n + chan[:, None] * stride_x_c      # (BLOCK_C, 1)
    y_base = y_ptr + n * stride_y_n + chan[:, None] * stride_y_c      # (BLOCK_C, 1)

    if HAS_ADD:
        add = tl.load(add_ptr + n * stride_add_n + chan * stride_add_c, mask=mask_c, other=0.0)
        add = add.to(tl.float32)[:, None]                             # (BLOCK_C, 1)
    else:
        add = tl.zeros((BLOCK_C, 1), dtype=tl.float32)
    w = tl.load(weight_ptr + chan, mask=mask_c, other=0.0).to(tl.float32)[:, None]
    b = tl.load(bias_ptr + chan, mask=mask_c, other=0.0).to(tl.float32)[:, None]

    count = CPG * HW * 1.0                         # fp32 (CPG or HW may be a constexpr 1)
    if SINGLE_TILE:
        mask = mask_c[:, None] & (offs_s[None, :] < HW)               # (BLOCK_C, BLOCK_HW)
        v = tl.load(x_base + offs_s[None, :] * stride_x_s, mask=mask, other=0.0).to(tl.float32)
        v = tl.where(mask, v + add, 0.0)
        mean = tl.sum(tl.sum(v, axis=1), axis=0) / count
        d = tl.where(mask, v - mean, 0.0)
        var = tl.sum(tl.sum(d * d, axis=1), axis=0) / count
        rstd = 1.0 / tl.sqrt(var + eps)
        u = d * rstd * w + b
        if APPLY_SILU:
            u = u / (1.0 + tl.exp(-u))
        tl.store(y_base + offs_s[None, :] * stride_y_s, u.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: per-chunk (count, mean, M2) merged into the running ones (Chan et al.).
        n_acc = 0.0
        mean = 0.0
        m2 = 0.0
        for s0 in range(0, HW, BLOCK_HW):
            s = s0 + offs_s
            mask = mask_c[:, None] & (s[None, :] < HW)
            v = tl.load(x_base + s[None, :] * stride_x_s, mask=mask, other=0.0).to(tl.float32)
            v = tl.where(mask, v + add, 0.0)
            n_chunk = tl.sum(tl.sum(mask.to(tl.float32), axis=1), axis=0)
            mean_chunk = tl.sum(tl.sum(v, axis=1), axis=0) / n_chunk
            d = tl.where(mask, v - mean_chunk, 0.0)
            m2_chunk = tl.sum(tl.sum(d * d, axis=1), axis=0)
            n_new = n_acc + n_chunk
            delta = mean_chunk - mean
            mean = mean + delta * (n_chunk / n_new)
            m2 = m2 + m2_chunk + delta * delta * (n_acc * n_chunk / n_new)
            n_acc = n_new
        rstd = 1.0 / tl.sqrt(m2 / count + eps)
        # Pass 2: normalise.
        for s0 in range(0, HW, BLOCK_HW):
            s = s0 + offs_s
            mask = mask_c[:, None] & (s[None, :] < HW)
            v = tl.load(x_base + s[None, :] * stride_x_s, mask=mask, other=0.0).to(tl.float32)
            u = (v + add - mean) * rstd * w + b
            if APPLY_SILU:
                u = u / (1.0 + tl.exp(-u))
            tl.store(y_base + s[None, :] * stride_y_s, u.to(y_ptr.dtype.element_ty), mask=mask)


def _merged_hw_strides(t: torch.Tensor):
    """``(stride_n, stride_c, stride_s)`` of t viewed as (N, C, H*W), or None if H, W do not merge."""
    _, _, H, W = t.shape
    sn, sc, sh, sw = t.stride()
    if W == 1:
        return sn, sc, sh
    if H == 1 or sh == W * sw:
        return sn, sc, sw
    return None


def _num_warps(tile_elems: int) -> int:
    if tile_elems <= 1024:
        return 4
    if tile_elems <= 4096:
        return 8
    return 16


def group_norm_silu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *,
                           add: torch.Tensor | None = None, eps: float = 1e-6,
                           num_groups: int = 32, silu: bool = True,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(group_norm(x + add[:, :, None, None]))`` with fp32 statistics.

    Args:
        x: ``(N, C, H, W)`` float32/float16/bfloat16, NCHW or channels-last.
        weight, bias: ``(C,)`` GroupNorm affine parameters (any float dtype).
        add: optional ``(N, C)`` (or ``(C,)`` / ``(1, C)``, broadcast over the batch) added to x
            before the statistics.
        eps: added to the group variance.
        num_groups: groups of ``C // num_groups`` consecutive channels.
        silu: apply SiLU after the affine (False: plain GroupNorm).
        out: optional output, same shape and dtype as x (default ``torch.empty_like(x)``).
    Returns:
        ``(N, C, H, W)`` in x's dtype and memory format.
    """
    if x.dim() != 4:
        raise ValueError(f"group_norm_silu_triton: x must be 4-D (N, C, H, W), got {tuple(x.shape)}")
    N, C, H, W = x.shape
    if C % num_groups != 0:
        raise ValueError(f"group_norm_silu_triton: C={C} not divisible by num_groups={num_groups}")
    cpg = C // num_groups
    if cpg > MAX_CHANNELS_PER_GROUP:
        raise ValueError(f"group_norm_silu_triton: {cpg} channels per group > {MAX_CHANNELS_PER_GROUP}")
    if weight.shape != (C,) or bias.shape != (C,):
        raise ValueError(f"group_norm_silu_triton: weight/bias must be ({C},), got "
                         f"{tuple(weight.shape)} / {tuple(bias.shape)}")
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError("group_norm_silu_triton: out must match x's shape and dtype")
    if x.numel() == 0:
        return out
    xs = _merged_hw_strides(x)
    if xs is None:
        x = x.contiguous()
        xs = _merged_hw_strides(x)
    dst = out
    if _merged_hw_strides(out) is None:  # e.g. empty_like of an H/W-transposed x
        dst = torch.empty_like(out, memory_format=torch.contiguous_format)
    ys = _merged_hw_strides(dst)
    weight = weight.contiguous()
    bias = bias.contiguous()
    if add is not None:
        if add.dim() == 1:
            add = add[None, :]
        if add.dim() != 2 or add.shape[1] != C or add.shape[0] not in (1, N):
            raise ValueError(f"group_norm_silu_triton: add must be ({N}, {C}) or ({C},), got "
                             f"{tuple(add.shape)}")
        add = add.expand(N, C)
        add_arg, add_strides = add, add.stride()
    else:
        add_arg, add_strides = x, (0, 0)

    HW = H * W
    BLOCK_C = triton.next_power_of_2(cpg)
    single = BLOCK_C * triton.next_power_of_2(HW) <= MAX_TILE_ELEMS
    if single:
        BLOCK_HW = triton.next_power_of_2(HW)
    else:
        BLOCK_HW = max(16, MAX_TILE_ELEMS // (4 * BLOCK_C))
    _group_norm_silu_fwd_kernel[(N * num_groups,)](
        x, dst, weight, bias, add_arg,
        C, HW, cpg,
        xs[0], xs[1], xs[2],
        ys[0], ys[1], ys[2],
        add_strides[0], add_strides[1],
        float(eps),
        HAS_ADD=add is not None, APPLY_SILU=bool(silu), SINGLE_TILE=single,
        BLOCK_C=BLOCK_C, BLOCK_HW=BLOCK_HW,
        num_warps=_num_warps(BLOCK_C * BLOCK_HW),
    )
    if dst is not out:
        out.copy_(dst)
    return out
