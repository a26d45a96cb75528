"""Tiny configs for tests and smoke runs (seconds on a CPU)."""
from __future__ import annotations

import copy

from ..checkpoint import save_native
from ..checkpoint.random_init import random_model


def tiny_model_dict(resolution: int = 16, latent_channels: int = 4) -> dict:
    """A very small model in the official layout: ``resolution`` -> latent
    ``(latent_channels, resolution / 4, resolution / 4)``."""
    return copy.deepcopy({
        "autoencoder": {
            "dataset": "synthetic", "arch_instance": "res_bnswish", "num_x_bits": 5,
            "num_latent_scales": 2, "num_groups_per_scale": 1,
            "num_latent_per_group": latent_channels, "num_channels_enc": 4,
            "num_preprocess_blocks": 1, "num_preprocess_cells": 1, "num_cell_per_cond_enc": 1,
            "num_channels_dec": 4, "num_postprocess_blocks": 1, "num_postprocess_cells": 1,
            "num_cell_per_cond_dec": 1, "use_se": True, "res_dist": True, "moco_dim": 8,
            "moco_k": 24, "moco_m": 0.9, "moco_t": 0.1, "latent_dim": resolution // 4,
            "resolution": resolution,
        },
        "diffusion": {
            "data": {"dataset": "latent", "image_size": resolution // 4,
                     "channels": latent_channels},
            "model": {"type": "simple", "in_channels": latent_channels,
                      "out_ch": latent_channels, "ch": 32, "ch_mult": [1], "num_res_blocks": 1,
                      "attn_resolutions": [], "dropout": 0.1, "ema_rate": 0.9,
                      "resamp_with_conv": True},
            "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                          "num_diffusion_timesteps": 1000},
            "optim": {"lr": 0.001, "grad_clip": 1.0},
        },
    })


def tiny_train_dict(resolution: int = 16, ae_steps: int = 4, diffusion_steps: int = 4,
                    n: int = 48, seed: int = 0) -> dict:
    return {
        "model": tiny_model_dict(resolution), "seed": seed,
        "data": {"kind": "synthetic", "n": n, "cache": False},
        "ae": {"steps": ae_steps, "batch_size": 8, "bn_recalib_batches": 1},
        "diffusion": {"steps": diffusion_steps, "batch_size": 16, "encode_batch_size": 32},
        "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0, "progress": False,
        "log_every": 1, "threads": 1, "keep_caches": True,
    }


def state_tensors(d, prefix: str = "") -> dict:
    """Every tensor of a nested state dict (model, optimiser state, EMA, lists of either), by
    dotted path: what a bitwise-resume test compares."""
    import torch
    out = {}
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, (dict, list, tuple)):
            out.update(state_tensors(v, f"{prefix}{k}."))
    return out


def save_tiny_model(path: str, resolution: int = 16, seed: int = 0):
    """A random tiny model (:func:`tiny_model_dict`, weights from ``seed``) saved as native
    ``.safetensors`` at ``path``; returns the ``LoadedModel``."""
    m = random_model(tiny_model_dict(resolution), seed=seed)
    save_native(path, m.config, m.autoencoder, m.unet, m.mean, m.std)
    return m
