"""Stage 2: the DDIM latent prior.

As the official release (``train/save_latents.py``, ``d2c/diffusion/runners/diffusion.py``,
``functions/losses.py``, ``models/ema.py``), re-implemented:

* latents: the trained encoder in eval mode over the training set and its horizontal flips;
  per-channel ``mean`` / ``std`` over (N, H, W) (population std, ``np.std``), shape
  ``(1, C, 1, 1)``; the U-Net trains on ``(z - mean) / std``. ``diffusion.latent_norm =
  "position"`` (ours, off by default) takes them per latent position instead, over N only,
  ``(1, C, H, W)``: every position then has unit variance under the same noise schedule.
* loss ``sum_{c,h,w} (eps - model(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t))^2``, mean over
  the batch, ``abar`` the float32 cumulative product of ``1 - beta``; with our
  ``model.prediction = "v"`` the target is ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0``.
* antithetic timesteps: ``t ~ U{0..T-1}`` for ``n // 2 + 1`` items, then ``T - 1 - t``,
  truncated to ``n``.
* Adam (``optim``: lr, beta1, eps, weight decay, amsgrad), gradient-norm clipping at
  ``optim.grad_clip``, EMA of the parameters at ``model.ema_rate`` after every step; the
  exported U-Net carries the EMA weights (the official sampler's ``ema`` path).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..checkpoint import latent_norm_kind
from ..diffusion import beta_schedule
from ..errors import ConfigError
from ..models.unet import UNet
from .engine import (EMA, DataOrder, DistInfo, StageTrainer, autocast, barrier, copy_shadow,
                     load_checkpoint, lr_at, make_adam, save_checkpoint, set_lr, step_generator,
                     step_seed)
from .config import TrainConfig


@torch.no_grad()
def encode_latents(ae, images: torch.Tensor, batch_size: int = 128, flip: bool = True,
                   device="cpu", progress: bool = False) -> torch.Tensor:
    """Latents of uint8 ``images`` ``(N, C, R, R)`` (and, with ``flip``, of their mirror
    images, appended after them): ``(N or 2N, c, d, d)`` float32, encoder in eval mode."""
    was = ae.training
    ae.eval()
    out, flips = [], []
    rng = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm
        rng = tqdm(rng, desc="encode latents", dynamic_ncols=True)
    for s in rng:
        x = images[s:s + batch_size].to(device).float() / 255.0
        out.append(ae.encode(x).float().cpu())
        if flip:
            flips.append(ae.encode(torch.flip(x, dims=[-1])).float().cpu())
    ae.train(was)
    return torch.cat(out + flips)


def latent_stats(z: torch.Tensor, norm: str = "channel"):
    """Mean and population std in float64, returned as float32: ``norm="channel"`` over
    (N, H, W), ``(1, C, 1, 1)`` each (official); ``"position"`` over N, ``(1, C, H, W)`` each."""
    if norm not in ("channel", "position"):
        raise ValueError(f"norm must be 'channel' or 'position', got {norm!r}")
    dims = (0, 2, 3) if norm == "channel" else (0,)
    zd = z.double()
    mean = zd.mean(dim=dims, keepdim=True)
    std = zd.std(dim=dims, keepdim=True, unbiased=False)
    if not bool((std > 0).all()):
        raise ValueError(f"latent_stats: a latent {norm} is constant over the training set "
                         "(std 0), so it cannot be standardised")
    return mean.float(), std.float()


def antithetic_timesteps(n: int, T: int, g: torch.Generator, device="cpu") -> torch.Tensor:
    """Official antithetic sampling: ``t`` for ``n // 2 + 1`` items, then ``T - 1 - t``."""
    t = torch.randint(0, T, (n // 2 + 1,), generator=g, device=device)
    return torch.cat([t, T - 1 - t])[:n]


def logit_normal_timesteps(n: int, T: int, g: torch.Generator, mean: float, std: float,
                           device="cpu") -> torch.Tensor:
    """Timesteps whose fraction ``t / T`` is logit-normal (ours; the density of Esser et al.
    2024, section 3.1, on DDPM's discrete grid): ``t = floor(T sigmoid(mean + std z))``,
    antithetic like the official sampler, ``z`` for ``n // 2 + 1`` items, then ``-z``
    (each pair mirrored about ``mean`` in logit space). Puts the steps where the mid-noise
    decisions are made instead of spreading them evenly over [0, T)."""
    z = torch.randn(n // 2 + 1, generator=g, device=device)
    z = torch.cat([z, -z])[:n]
    return (torch.sigmoid(mean + std * z) * T).long().clamp_(0, T - 1)


def sample_timesteps(n: int, T: int, g: torch.Generator, st, device="cpu") -> torch.Tensor:
    """The training timesteps of a batch under ``st.t_sampling`` (a DiffusionStageConfig):
    ``"uniform"`` (official antithetic) or ``"logit_normal"`` (``st.t_logit`` = mean, std)."""
    if st.t_sampling == "uniform":
        return antithetic_timesteps(n, T, g, device)
    return logit_normal_timesteps(n, T, g, st.t_logit[0], st.t_logit[1], device)


def alphas_cumprod(sched) -> torch.Tensor:
    b = torch.from_numpy(beta_schedule(sched.beta_schedule, beta_start=sched.beta_start,
                                       beta_end=sched.beta_end,
                                       num_timesteps=sched.num_diffusion_timesteps)).float()
    return (1 - b).cumprod(dim=0)


def min_snr_weight(a: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al., 2023) for ``abar`` values ``a``: the x0-error
    weight ``min(SNR, gamma)``, ``SNR = a / (1 - a)``, expressed for the model's target: eps
    losses already weigh the x0 error by SNR, v losses by SNR + 1. Caps the low-noise steps,
    which otherwise dominate the loss (weight up to ~1e4), so more of the model goes to the
    mid-noise steps where coarse content (which attributes a face has) is decided."""
    snr = a / (1.0 - a)
    base = snr if prediction == "eps" else snr + 1.0
    return snr.clamp(max=gamma) / base


def noise_estimation_loss(model, x0, t, e, abar, prediction: str = "eps",
                          min_snr_gamma: float = 0.0) -> torch.Tensor:
    """``sum (target - model(x_t, t))^2`` per latent, mean over the batch; the target is ``e``
    (official) or, for ``prediction="v"``, ``v = sqrt(abar) e - sqrt(1 - abar) x0``. With
    ``min_snr_gamma > 0`` each latent's term is weighted by :func:`min_snr_weight` (ours;
    0 = off, the official loss)."""
    a = abar.index_select(0, t).view(-1, 1, 1, 1)
    x = x0 * a.sqrt() + e * (1.0 - a).sqrt()
    out = model(x, t.float()).float()
    target = e if prediction == "eps" else a.sqrt() * e - (1.0 - a).sqrt() * x0
    per = (target - out).square().sum(dim=(1, 2, 3))
    if min_snr_gamma > 0:
        per = per * min_snr_weight(a.flatten(), min_snr_gamma, prediction)
    return per.mean(dim=0)


class DiffusionTrainer(StageTrainer):
    stage = "diffusion"
    tc_section = "diffusion"

    def __init__(self, tc: TrainConfig, model_cfg, latents: torch.Tensor, out_dir: str,
                 info: DistInfo, max_seconds=None, guide: bool = False):
        """``guide``: train the autoguidance prior (``diffusion.guide.model`` of the model
        config) instead of the prior: the same loss, settings (``tc.diffusion``), batches,
        timesteps and noise; its own checkpoint ``ckpt-guide.pt`` and log."""
        if guide:
            if model_cfg.guide is None:
                raise ConfigError("diffusion.guide", "the model config has no guide prior")
            self.stage = "guide"
        super().__init__(tc, out_dir, info, tc.diffusion.steps, max_seconds)
        st = tc.diffusion
        raw = model_cfg.raw["diffusion"]
        ucfg = model_cfg.guide if guide else model_cfg.unet
        mraw = raw["guide"]["model"] if guide else raw["model"]
        self.st, self.model_cfg = st, model_cfg
        self.optim_cfg = raw["optim"]
        self.batch_size = st.batch_size or raw["training"]["batch_size"]
        self.lr = st.lr if st.lr is not None else self.optim_cfg["lr"]
        dev = info.device
        self.latents = latents  # standardised, on CPU
        self.abar = alphas_cumprod(model_cfg.schedule).to(dev)
        self.T = model_cfg.schedule.num_diffusion_timesteps
        torch.manual_seed(step_seed(tc.seed, "init", 2))
        self.unet = UNet(ucfg).to(dev)
        self.unet.train()
        torch.manual_seed(step_seed(tc.seed, "init", 3, info.rank))  # dropout, per rank
        self.ddp = self.unet
        if info.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.unet, device_ids=[dev.index] if dev.type == "cuda" else None)
        if st.compile and not guide:   # inductor; weights, optimizer and checkpoints stay
            self.ddp = torch.compile(self.ddp)   # the module's own. Not the guide: its few
            # minutes of training would go to compiling (measured: 150 of 156 s)
        o = self.optim_cfg
        if o["optimizer"] != "Adam":
            raise ValueError(f"diffusion.optim.optimizer {o['optimizer']!r}: only Adam "
                             "(the official runner's choice) is implemented")
        self.opt = make_adam(torch.optim.Adam, self.unet.parameters(), lr=self.lr,
                             weight_decay=o["weight_decay"], betas=(o["beta1"], 0.999),
                             amsgrad=o["amsgrad"], eps=o["eps"])
        self.ema = (EMA(self.unet, mraw["ema_rate"], warmup=st.ema_warmup) if mraw["ema"]
                    else None)
        self.order = DataOrder(latents.shape[0], self.batch_size, tc.seed, "diffusion",
                               info.rank, info.world)

    def train_step(self, step: int):
        dev = self.info.device
        x0 = self.latents[self.order.indices(step)].to(dev)
        n = x0.shape[0]
        g = step_generator(self.tc.seed, "diffusion", step, self.info.rank, device=dev)
        t = sample_timesteps(n, self.T, g, self.st, dev)
        e = torch.randn(x0.shape, generator=g, device=dev)
        lr = lr_at(step, self.budget.total(), self.lr, self.st.warmup_steps, self.st.cosine,
                   self.st.min_lr_ratio)
        set_lr(self.opt, lr)
        with autocast(dev, self.st.amp):
            loss = noise_estimation_loss(self.ddp, x0, t, e, self.abar,
                                         self.model_cfg.unet.prediction, self.st.min_snr_gamma)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.optim_cfg["grad_clip"])
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.unet)
        return {"loss": float(loss.detach()), "grad_norm": float(gn), "lr": lr}, n

    def state_dict(self) -> dict:
        sd = {"unet": self.unet.state_dict(), "optimizer": self.opt.state_dict()}
        if self.ema is not None:
            sd["ema"] = self.ema.state_dict()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.unet.load_state_dict(sd["unet"])
        self.opt.load_state_dict(sd["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(sd["ema"])

    def ema_unet(self) -> UNet:
        """A copy of the U-Net with the EMA weights (or the raw weights without EMA)."""
        import copy
        u = copy.deepcopy(self.unet)
        if self.ema is not None:
            self.ema.copy_to(u)
        return u.eval()


def load_ema_unet(ckpt_path: str, ucfg, require_done: bool = False) -> UNet:
    """The U-Net of a stage-2 (or guide) checkpoint with its EMA weights (the raw weights
    when the run had no EMA), eval mode, on the CPU: what :meth:`DiffusionTrainer.ema_unet`
    returns at that checkpoint, without building a trainer. ``require_done``: refuse a
    checkpoint whose stage has not finished."""
    if not os.path.exists(ckpt_path):
        raise FileNotFoundError(f"{ckpt_path} is missing")
    ck = load_checkpoint(ckpt_path)
    if require_done and not ck.get("done", False):
        raise FileNotFoundError(f"{ckpt_path} is unfinished (step {ck.get('step')}): the "
                                "stage must finish first")
    unet = UNet(ucfg)
    unet.load_state_dict(ck["state"]["unet"])
    if "ema" in ck["state"]:
        copy_shadow(ck["state"]["ema"]["shadow"], unet)
    return unet.eval()


def prepare_latents(out_dir: str, ae, images: torch.Tensor, st, info: DistInfo,
                    progress: bool = True):
    """Encode (rank 0, once: ``out_dir/latents.pt``), then every rank loads the file.
    -> (standardised latents, mean, std). ``st.latent_norm`` picks the standardisation; a
    ``latents.pt`` made with the other one keeps its latents and gets its statistics
    re-computed (rank 0, written back atomically)."""
    path = os.path.join(out_dir, "latents.pt")
    d = None
    if info.is_main:
        if not os.path.exists(path):
            z = encode_latents(ae, images, st.encode_batch_size, st.flip, info.device,
                               progress=progress)
            mean, std = latent_stats(z, st.latent_norm)
            d = {"latents": z, "mean": mean, "std": std}
            save_checkpoint(path, d)
        else:
            d = load_checkpoint(path)
            if latent_norm_kind(d["mean"]) != st.latent_norm:
                mean, std = latent_stats(d["latents"], st.latent_norm)
                d = {"latents": d["latents"], "mean": mean, "std": std}
                save_checkpoint(path, d)
    barrier(info)
    if d is None:   # the other ranks read what rank 0 wrote
        d = load_checkpoint(path)
    z, mean, std = d["latents"], d["mean"], d["std"]
    return ((z - mean) / std).contiguous(), mean, std
