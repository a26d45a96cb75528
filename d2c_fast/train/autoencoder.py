"""Stage 1: the D2C autoencoder with the mixture-of-logistics reconstruction loss and MoCo-v2.

Facts taken from the official release (``train/train.py``, ``d2c/autoencoder/moco/builder.py``,
``train/train_cifar.sh``), re-implemented here:

* loss ``= mean_b(-sum_{pixels} log p(x_b)) / recon_loss_weight + InfoNCE`` with
  ``recon_loss_weight = 17500`` (an integer divisor, not a multiplier); the likelihood is the
  10-component discretised logistic mixture of the quantised input (``num_x_bits``).
* the reconstructed image is the *query view* (the augmented ``images[0]``), pre-processed
  (quantised) like the encoder input. ``recon_view="clean"`` is our option: the query is the
  un-augmented image (one encoder pass; only the key is augmented), which keeps the encoder's
  BatchNorm statistics on clean data.
* ``latent_noise`` (ours, default 0 = off): the decoder reconstructs from
  ``z + latent_noise * s * N(0, 1)``, ``s`` the batch's per-channel std of ``z`` (detached, so
  the encoder cannot outgrow the noise by scaling up). The prior's samples are never exact
  encodings; the idea is that a decoder trained on a neighbourhood of each latent renders
  them less brittly (on the built-in recipe it made samples worse: docs/quality/README.md). MoCo's
  query uses the clean ``z``.
* MoCo: key encoder = copy of the query encoder (+ head), updated before each step as
  ``k = m k + (1 - m) q`` over all parameters (BatchNorm buffers are its own); keys L2
  normalised; logits ``[q.k, q.queue] / T``, target 0; the queue (``dim x K``, initialised
  with normalised Gaussians) receives the keys of all ranks (``concat_all_gather``) after the
  step. The head (``mlp=True``): ``Linear(D, D) - ReLU - Linear(D, moco_dim)`` on the
  flattened latent (``D = c * d * d``), dropped at export.
* optimiser: AdamW, lr 1e-3, weight decay 1e-4 (``train_cifar.sh``); the official script
  accepts ``--cos`` but never applies a schedule; we offer cosine (default on) and optional
  gradient clipping (default off, as the official stage 1).

Deliberate differences: the official batch-shuffle across GPUs for the key encoder's
BatchNorm is not implemented (each rank's key batch uses its own BN statistics); the
official ``SyncBatchNorm`` is plain per-rank BatchNorm here (DDP broadcasts rank 0's running
statistics each step); the data-dependent ``Conv2D`` initialisation (``data_init``, used by
``res_elu`` cells only) is skipped.
"""
from __future__ import annotations

import copy
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.autoencoder import AutoEncoder, quantize_input
from ..models.mixture import log_prob
from .augment import augment
from .engine import (DataOrder, DistInfo, StageTrainer, autocast, concat_all_gather,
                     load_checkpoint, lr_at, make_adam, save_checkpoint, set_lr, step_generator,
                     step_seed)
from .config import TrainConfig


class MoCoAE(nn.Module):
    """Query autoencoder + head, momentum key encoder + head, and the negatives queue."""

    def __init__(self, cfg, mlp: bool = True, mlp_hidden=None, queue_seed: int = 0):
        super().__init__()
        a = cfg.autoencoder
        self.num_bits = a.num_x_bits
        self.m, self.T, self.K = a.moco_m, a.moco_t, a.moco_k
        self.encoder_q = AutoEncoder(a)
        d = a.num_latent_per_group * a.latent_dim * a.latent_dim
        if mlp:
            h = mlp_hidden or d
            self.fc_q = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, a.moco_dim))
        else:
            self.fc_q = nn.Linear(d, a.moco_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.fc_k = copy.deepcopy(self.fc_q)
        for p in list(self.encoder_k.parameters()) + list(self.fc_k.parameters()):
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(queue_seed)
        self.register_buffer("queue", F.normalize(torch.randn(a.moco_dim, a.moco_k, generator=g),
                                                  dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def query_params(self):
        return list(self.encoder_q.parameters()) + list(self.fc_q.parameters())

    def key_params(self):
        return list(self.encoder_k.parameters()) + list(self.fc_k.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``param_k = m * param_k + (1 - m) * param_q`` (official order and formula)."""
        ks, qs = self.key_params(), [p.detach() for p in self.query_params()]
        torch._foreach_mul_(ks, self.m)     # multi-tensor ops: one dispatch per list
        torch._foreach_add_(ks, qs, alpha=1.0 - self.m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (all ranks' keys, ``(n, dim)``) at the pointer, wrapping around."""
        n = keys.shape[0]
        ptr = int(self.queue_ptr[0])
        idx = (torch.arange(n, device=keys.device) + ptr) % self.K
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % self.K

    def forward(self, x_q, x_k, noise_scale: float = 0.0, noise_gen=None):
        """-> per-image reconstruction NLL ``(B,)`` of ``x_q``, logits ``(B, 1 + K)``, keys.
        ``noise_scale > 0``: unit Gaussian noise (drawn from ``noise_gen``, float32) times
        ``noise_scale`` times the batch's per-channel latent std is added to the decoder's
        input."""
        z = self.encoder_q.encode(x_q)
        zd = z
        if noise_scale > 0:
            sd = z.detach().float().std(dim=(0, 2, 3), keepdim=True)
            noise = torch.randn(z.shape, generator=noise_gen, device=z.device)
            zd = z + (noise_scale * sd * noise).to(z.dtype)
        rec = self.encoder_q.decode_logits(zd)
        q = self.fc_q(z.flatten(1))
        with torch.no_grad():
            k = self.fc_k(self.encoder_k.encode(x_k).flatten(1))
        # the likelihood and the contrastive logits in fp32 also under bf16 autocast
        with torch.autocast(x_q.device.type, enabled=False):
            target = quantize_input(x_q, self.num_bits)
            nll = -log_prob(rec.float(), target, self.num_bits).sum(dim=(1, 2))
            q = F.normalize(q.float(), dim=1)
            k = F.normalize(k.float(), dim=1)
            l_pos = (q * k).sum(dim=1, keepdim=True)
            l_neg = q @ self.queue.clone().detach()
            logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        return nll, logits, k


def make_optimizer(params, st) -> torch.optim.Optimizer:
    b = tuple(st.betas)
    if st.optimizer == "adamw":
        return make_adam(torch.optim.AdamW, params, lr=st.lr, betas=b,
                         weight_decay=st.weight_decay)
    if st.optimizer == "adam":
        return make_adam(torch.optim.Adam, params, lr=st.lr, betas=b,
                         weight_decay=st.weight_decay)
    if st.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=st.lr, betas=b, weight_decay=st.weight_decay)
    return torch.optim.SGD(params, lr=st.lr, momentum=0.9, weight_decay=st.weight_decay)


@torch.no_grad()
def recalibrate_bn(ae: AutoEncoder, batches) -> None:
    """Re-estimate every BatchNorm's running statistics as the plain average over
    ``batches`` (clean images, weights fixed): ``momentum=None`` accumulates exactly."""
    bns = [m for m in ae.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    was = ae.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    ae.train()
    for x in batches:
        ae.decode_logits(ae.encode(x))
    for m, (mom, _) in zip(bns, saved):
        m.momentum = mom
    ae.train(was)


class AETrainer(StageTrainer):
    stage = "ae"

    def __init__(self, tc: TrainConfig, model_cfg, images: torch.Tensor, out_dir: str,
                 info: DistInfo, max_seconds=None):
        super().__init__(tc, out_dir, info, tc.ae.steps, max_seconds)
        st = tc.ae
        self.st, self.model_cfg, self.images = st, model_cfg, images
        dev = info.device
        torch.manual_seed(step_seed(tc.seed, "init", 0))
        self.model = MoCoAE(model_cfg, mlp=st.mlp, mlp_hidden=st.mlp_hidden,
                            queue_seed=step_seed(tc.seed, "queue", 0)).to(dev)
        self.model.train()
        # per-rank global RNG (dropout-free here, but anything else drawing from it)
        torch.manual_seed(step_seed(tc.seed, "init", 1, info.rank))
        self.ddp = self.model
        if info.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.opt = make_optimizer(self.model.query_params(), st)
        self.order = DataOrder(images.shape[0], st.batch_size, tc.seed, "ae", info.rank,
                               info.world)

    def views(self, step: int, x: torch.Tensor):
        g = step_generator(self.tc.seed, "ae", step, self.info.rank, device=x.device)
        xk = augment(x, self.st.augment, g)
        xq = augment(x, self.st.augment, g) if self.st.recon_view == "query" else x
        return xq, xk

    def batch(self, step: int) -> torch.Tensor:
        idx = self.order.indices(step)
        return self.images[idx].to(self.info.device).float().div_(255.0)

    def train_step(self, step: int):
        st = self.st
        x = self.batch(step)
        xq, xk = self.views(step, x)
        lr = lr_at(step, self.budget.total(), st.lr, st.warmup_steps, st.cosine, st.min_lr_ratio)
        set_lr(self.opt, lr)
        self.model.momentum_update()
        g = None
        if st.latent_noise > 0:
            g = step_generator(self.tc.seed, "ae-latent-noise", step, self.info.rank,
                               device=x.device)
        with autocast(x.device, st.amp):
            nll, logits, k = self.ddp(xq, xk, st.latent_noise, g)
        recon = nll.mean()
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        nce = F.cross_entropy(logits, target)
        loss = recon / st.recon_loss_weight + st.moco_weight * nce
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if st.grad_clip and st.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.query_params(), st.grad_clip)
        self.opt.step()
        self.model.enqueue(concat_all_gather(k.detach(), self.info))
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == 0).float().mean()
        npix = x.shape[1] * x.shape[2] * x.shape[3]
        return ({"loss": float(loss.detach()), "nll_bpd": float(recon.detach()) / (npix * 0.6931471805599453),
                 "nce": float(nce.detach()), "acc1": float(acc), "lr": lr}, x.shape[0])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["model"])
        self.opt.load_state_dict(sd["optimizer"])

    def finish(self) -> None:
        """BN recalibration on clean images (optional), then the query autoencoder's weights
        to ``autoencoder.pt`` (rank 0)."""
        ae = self.model.encoder_q
        nb = self.st.bn_recalib_batches
        if nb > 0:
            # identical on every rank: the first nb global batches of a fixed order
            order = DataOrder(self.images.shape[0], self.st.batch_size, self.tc.seed, "ae")
            xs = (self.images[order.indices(10 ** 6 + i)].to(self.info.device).float() / 255
                  for i in range(nb))
            recalibrate_bn(ae, xs)
        if self.info.is_main:
            save_checkpoint(os.path.join(self.out_dir, "autoencoder.pt"),
                            {"autoencoder": ae.state_dict()})


def load_trained_autoencoder(out_dir: str, model_cfg, device="cpu") -> AutoEncoder:
    """The stage-1 result (``out_dir/autoencoder.pt``), eval mode."""
    ae = AutoEncoder(model_cfg.autoencoder)
    ae.load_state_dict(load_checkpoint(os.path.join(out_dir, "autoencoder.pt"))["autoencoder"])
    return ae.to(device).eval()
