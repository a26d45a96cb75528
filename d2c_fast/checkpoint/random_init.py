"""Random-weight models for tests and benchmarks (speed does not depend on training).

Everything that is an identity at initialisation is randomised too (BatchNorm statistics and
affine parameters, weight-norm gains, the latent standardisation), so a random model exercises
every term of the computation.
"""
from __future__ import annotations

import os

import torch

from ..config import load_config
from ..models.autoencoder import AutoEncoder
from ..models.unet import UNet
from .load import LoadedModel

__all__ = ["random_model", "arch256_config_path"]


def random_model(config, seed: int = 0) -> LoadedModel:
    """A :class:`~d2c_fast.checkpoint.LoadedModel` with random weights for ``config``
    (path, dict or ``ModelConfig``); deterministic in ``seed`` on one machine. (Across CPUs
    the weight-norm gains can differ in their last bit: they start from ``log`` of the
    weights' norms, which torch computes with its math library's vector ``log``.)"""
    cfg = load_config(config)
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        ae, unet = AutoEncoder(cfg.autoencoder), UNet(cfg.unet)
    finally:
        torch.random.set_rng_state(torch_state)
    with torch.no_grad():
        for name, t in list(ae.state_dict().items()) + list(unet.state_dict().items()):
            if not t.is_floating_point() or name.endswith("weight_normalized"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("log_weight_norm"):
                t.add_(0.1 * torch.randn(t.shape, generator=g))
            elif t.dim() == 1 and ("norm" in name or "bn" in name):  # BN / GroupNorm gains
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
    c = cfg.latent_shape[0]
    mean = 0.1 * torch.randn(1, c, 1, 1, generator=g)
    std = 0.8 + 0.4 * torch.rand(1, c, 1, 1, generator=g)
    ae.eval()
    unet.eval()
    for p in list(ae.parameters()) + list(unet.parameters()):
        p.requires_grad_(False)
    return LoadedModel(cfg, ae, unet, mean, std, source=f"random(seed={seed})")


def arch256_config_path() -> str:
    """The path of the bundled ARCH-256 config (``d2c_fast/configs/arch256.json``), the
    architecture the benchmarks time."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "arch256.json")
