"""The shipped built-in model (d2c_fast/assets/builtin.safetensors): loads by name, its prior
samples latents with the data's statistics (the first built-in model's U-Net could not, see
QUALITY.md), and its edit path runs. Quality itself is measured in QUALITY.md with the oracle."""
from __future__ import annotations

import torch

from d2c_fast import Sampler


def test_builtin_loads_with_the_fixed_unet_layout():
    s = Sampler("builtin")
    u = s.config.unet
    assert s.resolution == 32 and u.norm_groups == 8 and u.prediction == "v"


def test_builtin_prior_samples_standardised_latents_of_unit_scale():
    """Standardised sampled latents must look like the data (mean 0, std 1 per channel, and
    per-image channel means of the data's spread ~0.6); the broken prior gave std ~9.5."""
    torch.manual_seed(0)
    s = Sampler("builtin")
    z = s.sample_latents(32, steps=20, seed=0)
    x = (z - s.mean) / s.std
    std = x.std(dim=(0, 2, 3))
    assert ((std > 0.6) & (std < 1.4)).all(), std
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.4
    assert x.mean(dim=(2, 3)).std(dim=0).max() < 1.2


def test_builtin_fast_and_ref_agree_and_edit_runs():
    ref, fast = Sampler("builtin", impl="ref"), Sampler("builtin", impl="fast")
    z = ref.sample_latents(2, steps=10, seed=1)
    zf = fast.sample_latents(2, steps=10, seed=1)
    assert ((z - zf).norm() / z.norm()) < 1e-4
    imgs = fast.decode(z, mode="mode")
    out = fast.manipulate(imgs, torch.randn(fast.latent_shape), step=0.5, seed=0)
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
