"""The DDIM latent U-Net ("simple" type of the official DDIM / D2C release).

Parameter names match the official state dict (``temb.dense.*``, ``down.{i}.block.{j}``,
``down.{i}.attn.{j}``, ``mid.block_1``, ``up.{i}.upsample.conv`` ...). ``attention`` selects
the reference bmm/softmax path or ``scaled_dot_product_attention`` (same maths).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import UNetConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps ``(B,)`` -> ``(B, dim)`` (DDPM / tensor2tensor)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device)
                     * -(math.log(10000) / (half - 1)))
    arg = t.float()[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def swish(x):
    return x * torch.sigmoid(x)


def group_norm(C: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=C, eps=1e-6, affine=True)


class Upsample(nn.Module):
    def __init__(self, C, with_conv):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(C, C, 3, 1, 1)

    def forward(self, x):
        if torch.compiler.is_compiling():
            # the same values by indexing: inductor (torch 2.13, CPU) returned zero gradients
            # through F.interpolate's nearest upsampling in this U-Net's compiled backward
            # under bf16 autocast, so nothing below the first upsampling learnt
            # (tests/test_train_compile.py); eager keeps the official op
            b, c, h, w = x.shape
            x = x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    def __init__(self, C, with_conv):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(C, C, 3, 2, 0)

    def forward(self, x):
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as the official code
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    def __init__(self, Cin, Cout, temb_ch, dropout, groups=32):
        super().__init__()
        self.in_channels, self.out_channels = Cin, Cout
        self.norm1 = group_norm(Cin, groups)
        self.conv1 = nn.Conv2d(Cin, Cout, 3, 1, 1)
        self.temb_proj = nn.Linear(temb_ch, Cout)
        self.norm2 = group_norm(Cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(Cout, Cout, 3, 1, 1)
        if Cin != Cout:
            self.nin_shortcut = nn.Conv2d(Cin, Cout, 1, 1, 0)

    def forward(self, x, temb):
        h = self.conv1(swish(self.norm1(x)))
        h = h + self.temb_proj(swish(temb))[:, :, None, None]
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, C, groups=32):
        super().__init__()
        self.norm = group_norm(C, groups)
        self.q = nn.Conv2d(C, C, 1)
        self.k = nn.Conv2d(C, C, 1)
        self.v = nn.Conv2d(C, C, 1)
        self.proj_out = nn.Conv2d(C, C, 1)
        self.use_sdpa = False

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        if self.use_sdpa:
            # (b, 1, hw, c) single-head attention; same maths as below.
            qs = q.reshape(b, 1, c, hh * ww).transpose(2, 3)
            ks = k.reshape(b, 1, c, hh * ww).transpose(2, 3)
            vs = v.reshape(b, 1, c, hh * ww).transpose(2, 3)
            o = F.scaled_dot_product_attention(qs, ks, vs)
            o = o.transpose(2, 3).reshape(b, c, hh, ww)
        else:
            qm = q.reshape(b, c, hh * ww).permute(0, 2, 1)           # b, hw, c
            w = torch.bmm(qm, k.reshape(b, c, hh * ww)) * (int(c) ** (-0.5))
            w = torch.softmax(w, dim=2)                             # b, hw_q, hw_k
            o = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(o)


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, ch_mult = cfg.ch, tuple(cfg.ch_mult)
        g = cfg.norm_groups
        self.ch = ch
        self.temb_ch = ch * 4
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = cfg.num_res_blocks
        self.resolution = cfg.resolution
        if cfg.type == "bayesian":
            self.logvar = nn.Parameter(torch.zeros(cfg.num_timesteps))

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch),
                                         nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, 1, 1)

        res = cfg.resolution
        in_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        for i in range(self.num_resolutions):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            b_in, b_out = ch * in_mult[i], ch * ch_mult[i]
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(b_in, b_out, self.temb_ch, cfg.dropout, g))
                b_in = b_out
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(b_in, g))
            down = nn.Module()
            down.block, down.attn = blocks, attns
            if i != self.num_resolutions - 1:
                down.downsample = Downsample(b_in, cfg.resamp_with_conv)
                res //= 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(b_in, b_in, self.temb_ch, cfg.dropout, g)
        self.mid.attn_1 = AttnBlock(b_in, g)
        self.mid.block_2 = ResnetBlock(b_in, b_in, self.temb_ch, cfg.dropout, g)

        ups = []
        for i in reversed(range(self.num_resolutions)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            b_out = ch * ch_mult[i]
            skip_in = ch * ch_mult[i]
            for j in range(cfg.num_res_blocks + 1):
                if j == cfg.num_res_blocks:
                    skip_in = ch * in_mult[i]
                blocks.append(ResnetBlock(b_in + skip_in, b_out, self.temb_ch, cfg.dropout, g))
                b_in = b_out
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(b_in, g))
            up = nn.Module()
            up.block, up.attn = blocks, attns
            if i != 0:
                up.upsample = Upsample(b_in, cfg.resamp_with_conv)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)

        self.norm_out = group_norm(b_in, g)
        self.conv_out = nn.Conv2d(b_in, cfg.out_ch, 3, 1, 1)

    def set_attention(self, use_sdpa: bool) -> None:
        for m in self.modules():
            if isinstance(m, AttnBlock):
                m.use_sdpa = use_sdpa

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, d, d)`` standardised noisy latent; ``t``: ``(B,)`` float timesteps."""
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            raise ValueError(f"U-Net expects {self.resolution}x{self.resolution} latents, "
                             f"got {tuple(x.shape[2:])}")
        emb = timestep_embedding(t, self.ch).to(self.temb.dense[0].weight.dtype)
        temb = self.temb.dense[1](swish(self.temb.dense[0](emb)))
        hs = [self.conv_in(x)]
        for i in range(self.num_resolutions):
            for j in range(self.num_res_blocks):
                h = self.down[i].block[j](hs[-1], temb)
                if len(self.down[i].attn) > 0:
                    h = self.down[i].attn[j](h)
                hs.append(h)
            if i != self.num_resolutions - 1:
                hs.append(self.down[i].downsample(hs[-1]))
        h = hs[-1]
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, temb)), temb)
        for i in reversed(range(self.num_resolutions)):
            for j in range(self.num_res_blocks + 1):
                h = self.up[i].block[j](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[i].attn) > 0:
                    h = self.up[i].attn[j](h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
