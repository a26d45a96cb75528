"""``FastUNet``: an inference U-Net derived from the reference one (which is left as is), for
the GPU path.

- convolutions in the compute dtype (bf16 by default), activations channels-last;
- every ``swish(GroupNorm(h))`` is one ``d2c_fast::group_norm_silu`` call (Triton on CUDA), the
  attention norm the same op with ``silu=False``;
- the ResNet block's ``conv1(h) + temb_proj(swish(temb))`` feeding ``norm2`` becomes a bias-free
  ``conv1`` plus a per-channel bias added inside the norm kernel; the biases of all blocks
  (``temb_proj`` and ``conv1.bias``) come out of ONE fp32 GEMM per timestep
  (:meth:`FastUNet.step_bias`);
- attention: q, k, v as one 1x1 convolution, ``scaled_dot_product_attention``, and the output
  read back as a channels-last view (no transposes).

Every op acts per image, so an image does not depend on the rest of the batch (up to the
library's choice of convolution algorithm for each batch size).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.group_norm_silu import group_norm_silu
from .unet import AttnBlock, ResnetBlock, UNet, timestep_embedding

__all__ = ["FastUNet", "build_gpu_unet"]


class _Float32(nn.Module):
    """fp32 tensors that follow device moves but never dtype casts (GroupNorm parameters, the
    timestep MLP): ``FastUNet.to(torch.bfloat16)`` casts the convolutions only."""

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t.detach().float().clone())

    def _apply(self, fn, recurse=True):
        for name, t in self._buffers.items():
            if t is not None:
                self._buffers[name] = t.to(fn(torch.zeros(1, device=t.device)).device)
        return self


def _conv(src: nn.Conv2d, *, bias: bool = True, dtype=None) -> nn.Conv2d:
    out = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, src.stride, src.padding,
                    src.dilation, src.groups, bias=bias and src.bias is not None)
    with torch.no_grad():
        out.weight.copy_(src.weight.detach())
        if out.bias is not None:
            out.bias.copy_(src.bias.detach())
    out.requires_grad_(False)
    return out.to(dtype) if dtype is not None else out


class _FastResBlock(nn.Module):
    def __init__(self, blk: ResnetBlock, offset: int):
        super().__init__()
        self.offset, self.cout = offset, blk.out_channels
        self.gn = _Float32(n1w=blk.norm1.weight, n1b=blk.norm1.bias,
                           n2w=blk.norm2.weight, n2b=blk.norm2.bias)
        self.eps1, self.eps2 = blk.norm1.eps, blk.norm2.eps
        self.groups = blk.norm1.num_groups
        self.conv1 = _conv(blk.conv1, bias=False)   # its bias moves into the norm2 bias
        self.conv2 = _conv(blk.conv2)
        self.nin_shortcut = _conv(blk.nin_shortcut) if blk.in_channels != blk.out_channels else None

    def forward(self, x: torch.Tensor, bias_all: torch.Tensor) -> torch.Tensor:
        g = self.gn
        h = self.conv1(group_norm_silu(x, g.n1w, g.n1b, eps=self.eps1, num_groups=self.groups))
        h = group_norm_silu(h, g.n2w, g.n2b, bias_all[:, self.offset:self.offset + self.cout],
                            eps=self.eps2, num_groups=self.groups)
        h = self.conv2(h)   # dropout: identity at inference
        return h.add_(self.nin_shortcut(x) if self.nin_shortcut is not None else x)


class _FastAttn(nn.Module):
    def __init__(self, blk: AttnBlock):
        super().__init__()
        C = blk.q.in_channels
        self.gn = _Float32(w=blk.norm.weight, b=blk.norm.bias)
        self.eps, self.groups = blk.norm.eps, blk.norm.num_groups
        self.qkv = nn.Conv2d(C, 3 * C, 1)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([blk.q.weight, blk.k.weight, blk.v.weight]))
            self.qkv.bias.copy_(torch.cat([blk.q.bias, blk.k.bias, blk.v.bias]))
        self.qkv.requires_grad_(False)
        self.proj_out = _conv(blk.proj_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = group_norm_silu(x, self.gn.w, self.gn.b, eps=self.eps, num_groups=self.groups,
                            silu=False)
        qkv = self.qkv(h)                                            # (B, 3C, H, W)
        B, C3, H, W = qkv.shape
        C = C3 // 3
        t = qkv.permute(0, 2, 3, 1).reshape(B, H * W, 3, C)         # a view when channels-last
        q, k, v = (t[:, None, :, i] for i in range(3))              # (B, 1, HW, C)
        o = F.scaled_dot_product_attention(q, k, v)                 # scale C**-0.5, as the ref
        o = o.reshape(B, H, W, C).permute(0, 3, 1, 2)               # channels-last view
        return self.proj_out(o).add_(x)


class _Resample(nn.Module):
    def __init__(self, mod: nn.Module, up: bool):
        super().__init__()
        self.up = up
        self.conv = _conv(mod.conv) if mod.with_conv else None

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            return self.conv(x) if self.conv is not None else x
        if self.conv is not None:
            return self.conv(F.pad(x, (0, 1, 0, 1)))   # asymmetric padding, as the reference
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class FastUNet(nn.Module):
    """Inference U-Net with the reference's maths (see the module docstring).

    ``forward(x, t)`` matches ``UNet.forward`` (``x``: ``(B, C, d, d)``, ``t``: ``(B,)``) and
    returns eps in the compute dtype (channels-last when ``channels_last``). In a sampling loop
    pass ``step_bias=`` (a ``(B, total)`` or ``(1, total)`` row of :meth:`step_bias`) instead
    of ``t``.
    """

    def __init__(self, unet: UNet, *, dtype: torch.dtype = torch.bfloat16,
                 channels_last: bool = True):
        super().__init__()
        self.ch, self.resolution = unet.ch, unet.resolution
        self.num_resolutions, self.num_res_blocks = unet.num_resolutions, unet.num_res_blocks
        self.channels_last = channels_last

        blocks: list[ResnetBlock] = []
        for i in range(unet.num_resolutions):
            blocks += list(unet.down[i].block)
        blocks += [unet.mid.block_1, unet.mid.block_2]
        for i in range(unet.num_resolutions):
            blocks += list(unet.up[i].block)
        offsets, off = {}, 0
        for b in blocks:
            offsets[id(b)] = off
            off += b.out_channels
        self.bias_width = off
        d0, d1 = unet.temb.dense
        # One GEMM gives every block's norm2 bias: temb_proj(swish(temb)) + conv1.bias.
        self.temb = _Float32(
            w0=d0.weight, b0=d0.bias, w1=d1.weight, b1=d1.bias,
            proj_w=torch.cat([b.temb_proj.weight.detach() for b in blocks]),
            proj_b=torch.cat([b.temb_proj.bias.detach() + b.conv1.bias.detach() for b in blocks]))

        def fast_block(b):
            return _FastResBlock(b, offsets[id(b)])

        self.conv_in = _conv(unet.conv_in)
        self.down = nn.ModuleList()
        for i in range(unet.num_resolutions):
            m = nn.Module()
            m.block = nn.ModuleList(fast_block(b) for b in unet.down[i].block)
            m.attn = nn.ModuleList(_FastAttn(a) for a in unet.down[i].attn)
            if i != unet.num_resolutions - 1:
                m.downsample = _Resample(unet.down[i].downsample, up=False)
            self.down.append(m)
        self.mid = nn.Module()
        self.mid.block_1 = fast_block(unet.mid.block_1)
        self.mid.attn_1 = _FastAttn(unet.mid.attn_1)
        self.mid.block_2 = fast_block(unet.mid.block_2)
        self.up = nn.ModuleList()
        for i in range(unet.num_resolutions):
            m = nn.Module()
            m.block = nn.ModuleList(fast_block(b) for b in unet.up[i].block)
            m.attn = nn.ModuleList(_FastAttn(a) for a in unet.up[i].attn)
            if i != 0:
                m.upsample = _Resample(unet.up[i].upsample, up=True)
            self.up.append(m)
        self.norm_out = _Float32(w=unet.norm_out.weight, b=unet.norm_out.bias)
        self.norm_out_eps, self.norm_out_groups = unet.norm_out.eps, unet.norm_out.num_groups
        self.conv_out = _conv(unet.conv_out)
        self.eval()
        self.requires_grad_(False)
        self.to(dtype)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def step_bias(self, t: torch.Tensor) -> torch.Tensor:
        """fp32 ``(len(t), bias_width)``: for each timestep, every ResNet block's pre-norm2 bias
        (``temb_proj(swish(temb(t))) + conv1.bias``), blocks concatenated in forward order."""
        e = self.temb
        emb = timestep_embedding(t.float(), self.ch)
        h = F.linear(emb, e.w0, e.b0)
        h = F.linear(h * torch.sigmoid(h), e.w1, e.b1)
        return F.linear(h * torch.sigmoid(h), e.proj_w, e.proj_b)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, *,
                step_bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            raise ValueError(f"U-Net expects {self.resolution}x{self.resolution} latents, "
                             f"got {tuple(x.shape[2:])}")
        if step_bias is None:
            if t is None:
                raise ValueError("give t= or step_bias=")
            step_bias = self.step_bias(t)
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        h = x.to(dtype=self.dtype, memory_format=mf)
        hs = [self.conv_in(h)]
        for i in range(self.num_resolutions):
            d = self.down[i]
            for j in range(self.num_res_blocks):
                h = d.block[j](hs[-1], step_bias)
                if len(d.attn) > 0:
                    h = d.attn[j](h)
                hs.append(h)
            if i != self.num_resolutions - 1:
                hs.append(d.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], step_bias)), step_bias)
        for i in reversed(range(self.num_resolutions)):
            u = self.up[i]
            for j in range(self.num_res_blocks + 1):
                h = u.block[j](torch.cat([h, hs.pop()], dim=1), step_bias)
                if len(u.attn) > 0:
                    h = u.attn[j](h)
            if i != 0:
                h = u.upsample(h)
        h = group_norm_silu(h, self.norm_out.w, self.norm_out.b, eps=self.norm_out_eps,
                            num_groups=self.norm_out_groups)
        return self.conv_out(h)


def build_gpu_unet(unet: UNet, *, dtype: torch.dtype = torch.bfloat16, device="cuda",
                   channels_last: bool = True) -> FastUNet:
    """A :class:`FastUNet` of ``unet`` (left untouched) on ``device``."""
    return FastUNet(unet, dtype=dtype, channels_last=channels_last).to(device)
