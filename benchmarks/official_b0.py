"""B0-official: the public D2C release's own modules as the baseline, for the same-run CPU
comparison (``cpu_compare.py --official-src DIR``).

The official code is NOT part of this repository (its NVAE-derived parts are under a
non-commercial licence): point ``--official-src`` at a checkout of github.com/jiamings/d2c
(the directory that contains the ``d2c`` package). We import, from it, the autoencoder
(``d2c/autoencoder/model_ae_moco.py``) and the latent U-Net (``d2c/diffusion/models/
diffusion.py``), load them with the same random weights as the other candidates (the state
dicts match key for key), and drive them with d2c_fast's sampler loop (DDIM, latent
standardisation, mixture sampling: the official formulas, and a negligible share of the time).

CPU shims, applied by monkeypatching after import (the release targets multi-GPU training):
``SyncBatchNorm`` -> ``torch.nn.BatchNorm2d`` (what it computes on one process), the forward of
``SyncBatchNormSwish`` -> eval-mode ``F.batch_norm`` + the release's own ``swish`` function, a
stub ``tensorboardX`` module if it is not installed, and ``init_done = True`` on the ELU
convolutions (else their data-dependent init would overwrite the loaded weights, see
docs/DESIGN.md). Entry points as in the release: ``model(pre_process(x, bits),
get_latent=True, reshape=False)`` -> latents, ``model(z, from_latent=True)`` -> logits.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import types

import torch
import torch.nn.functional as F


def _ns(d):
    n = argparse.Namespace()
    for k, v in d.items():
        setattr(n, k, _ns(v) if isinstance(v, dict) else v)
    return n


def _import_official(src: str):
    if src not in sys.path:
        sys.path.insert(0, src)
    if "tensorboardX" not in sys.modules:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            stub = types.ModuleType("tensorboardX")
            stub.SummaryWriter = type("SummaryWriter", (), {})
            sys.modules["tensorboardX"] = stub
    ae_mod = importlib.import_module("d2c.autoencoder.model_ae_moco")
    utils = importlib.import_module("d2c.autoencoder.utils")
    ibn = importlib.import_module("d2c.autoencoder.thirdparty.inplaced_sync_batchnorm")
    ops = importlib.import_module("d2c.autoencoder.neural_operations")
    diff = importlib.import_module("d2c.diffusion.models.diffusion")

    def sbn_swish_forward(self, x):
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         False, 0.0, self.eps)
        return ibn.swish.apply(y)

    class BatchNormShim(torch.nn.Module):
        def __init__(self, *a, **k):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(*a, **k)

        def forward(self, x):
            return self.bn(x)

    ibn.SyncBatchNormSwish.forward = sbn_swish_forward
    ops.SyncBatchNorm = BatchNormShim
    return ae_mod, utils, diff


class OfficialAutoEncoder(torch.nn.Module):
    """The release's AutoEncoder behind d2c_fast's ``encode`` / ``decode_logits`` interface."""

    def __init__(self, off, utils, num_bits: int, bernoulli: bool):
        super().__init__()
        self.off, self._pre, self.num_bits, self.bernoulli = off, utils.pre_process, num_bits, bernoulli

    def encode(self, x):
        return self.off(self._pre(x, self.num_bits), get_latent=True, reshape=False)

    def decode_logits(self, z):
        return self.off(z, from_latent=True)


def official_sampler(model, src: str):
    """A ``d2c_fast.Sampler`` (impl="ref", fp32, CPU) whose autoencoder and U-Net are the
    official modules, loaded with ``model``'s weights (a ``LoadedModel``)."""
    from d2c_fast import Sampler
    ae_mod, utils, diff = _import_official(src)
    raw = model.config.raw
    ae_cfg = dict(raw["autoencoder"])
    off = ae_mod.AutoEncoder(_ns(ae_cfg), None, utils.get_arch_cells(ae_cfg["arch_instance"]))
    missing, unexpected = off.load_state_dict(model.autoencoder.state_dict(), strict=False)
    bad = [k for k in missing if not (k.startswith("encoder_k") or k.startswith("fc.")
                                      or k in ("queue", "queue_ptr"))]
    if bad or unexpected:
        raise RuntimeError(f"official autoencoder: missing {bad[:5]}, unexpected {unexpected[:5]}")
    for m in off.modules():
        if hasattr(m, "init_done"):
            m.init_done = True
    off.eval()
    unet = diff.Model(_ns(raw["diffusion"]))
    unet.load_state_dict(model.unet.state_dict(), strict=True)
    unet.eval()
    s = Sampler(model, impl="ref")
    s.autoencoder = OfficialAutoEncoder(off, utils, model.config.autoencoder.num_x_bits,
                                        s.bernoulli)
    s.unet_model = unet
    return s
