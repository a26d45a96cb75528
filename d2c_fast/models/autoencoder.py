"""The D2C autoencoder: an NVAE-style hierarchical encoder/decoder with one latent group.

D2C keeps NVAE's towers but no per-group latent sampling: the encoder tower ends in
``enc0`` and ``enc_sampler`` (the latent, ``(B, num_latent_per_group, latent_dim, latent_dim)``),
and the decoder starts from ``dec0`` on that latent. Attribute names match the official
``encoder_q`` module so its state dict loads key for key.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import AutoencoderConfig, ConfigError, arch_cells
from .layers import CHANNEL_MULT, Cell, Conv2D


def quantize_input(x: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Official ``pre_process``: ``floor(x * 255 / 2**(8 - bits)) / (2**bits - 1)``."""
    if num_bits != 8:
        x = torch.floor(x * 255 / 2 ** (8 - num_bits))
        x = x / (2 ** num_bits - 1)
    return x


class AutoEncoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        if cfg.num_latent_scales == 1 and cfg.num_groups_per_scale == 1:
            raise ConfigError("autoencoder.num_latent_scales",
                              "the official 'vanilla VAE' layout (1 scale, 1 group) has no "
                              "working decoder; use more than one group")
        self.cfg = cfg
        self.arch = arch_cells(cfg.arch_instance)
        self.use_se = cfg.use_se
        self.num_bits = cfg.num_x_bits
        self.groups_per_scale = cfg.groups_per_scale()
        self.num_mix_output = 10
        self.bernoulli = cfg.dataset == "mnist"
        c_img = cfg.image_channels

        enc, dec = cfg.num_channels_enc, cfg.num_channels_dec
        self.stem = Conv2D(c_img, enc, 3, padding=1, bias=True)

        mult = 1
        self.pre_process = nn.ModuleList()
        for _ in range(cfg.num_preprocess_blocks):
            for c in range(cfg.num_preprocess_cells):
                if c == cfg.num_preprocess_cells - 1:
                    ci = int(enc * mult)
                    self.pre_process.append(Cell(ci, CHANNEL_MULT * ci, "down_pre",
                                                 self.arch["down_pre"], self.use_se))
                    mult *= CHANNEL_MULT
                else:
                    ci = int(enc * mult)
                    self.pre_process.append(Cell(ci, ci, "normal_pre", self.arch["normal_pre"],
                                                 self.use_se))

        self.enc_tower = nn.ModuleList()
        for s in range(cfg.num_latent_scales):
            for _ in range(self.groups_per_scale[s]):
                for _ in range(cfg.num_cell_per_cond_enc):
                    ci = int(enc * mult)
                    self.enc_tower.append(Cell(ci, ci, "normal_enc", self.arch["normal_enc"],
                                               self.use_se))
            if s < cfg.num_latent_scales - 1:
                ci = int(enc * mult)
                self.enc_tower.append(Cell(ci, CHANNEL_MULT * ci, "down_enc",
                                           self.arch["down_enc"], self.use_se))
                mult *= CHANNEL_MULT

        ce = int(enc * mult)
        self.enc0 = nn.Sequential(nn.ELU(), Conv2D(ce, ce, kernel_size=1, bias=True), nn.ELU())
        self.enc_sampler = Conv2D(ce, cfg.num_latent_per_group, kernel_size=3, padding=1,
                                  bias=True)
        self.dec0 = Conv2D(cfg.num_latent_per_group, int(dec * mult), kernel_size=3, padding=1,
                           bias=True)

        self.dec_tower = nn.ModuleList()
        L = cfg.num_latent_scales
        for s in range(L):
            ci = int(dec * mult)
            for g in range(self.groups_per_scale[L - s - 1]):
                if not (s == 0 and g == 0):
                    for _ in range(cfg.num_cell_per_cond_dec):
                        self.dec_tower.append(Cell(ci, ci, "normal_dec", self.arch["normal_dec"],
                                                   self.use_se))
            if s < L - 1:
                self.dec_tower.append(Cell(ci, int(ci / CHANNEL_MULT), "up_dec",
                                           self.arch["up_dec"], self.use_se))
                mult /= CHANNEL_MULT

        self.post_process = nn.ModuleList()
        for _ in range(cfg.num_postprocess_blocks):
            for c in range(cfg.num_postprocess_cells):
                ci = int(dec * mult)
                if c == 0:
                    self.post_process.append(Cell(ci, int(ci / CHANNEL_MULT), "up_post",
                                                  self.arch["up_post"], self.use_se))
                    mult /= CHANNEL_MULT
                else:
                    self.post_process.append(Cell(ci, ci, "normal_post",
                                                  self.arch["normal_post"], self.use_se))

        c_out = 1 if self.bernoulli else 10 * self.num_mix_output
        self.image_conditional = nn.Sequential(
            nn.ELU(), Conv2D(int(dec * mult), c_out, 3, padding=1, bias=True))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(B, C, H, W)`` -> latents ``(B, c, d, d)`` (raw, unstandardised)."""
        s = self.stem(2 * quantize_input(x, self.num_bits) - 1.0)
        for cell in self.pre_process:
            s = cell(s)
        for cell in self.enc_tower:
            s = cell(s)
        return self.enc_sampler(self.enc0(s))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> decoder output (mixture-of-logistics parameters, ``(B, 100, H, W)``)."""
        s = self.dec0(z)
        for cell in self.dec_tower:
            s = cell(s)
        for cell in self.post_process:
            s = cell(s)
        return self.image_conditional(s)

    def forward(self, x):
        return self.decode_logits(self.encode(x))
