"""Optimisation-based inversion: the "projector" baseline of GAN editing (Image2StyleGAN-style),
used to compare the speed of D2C's amortised encoder with per-image optimisation.

For each image, Adam optimises a latent through the (frozen) decoder for ``steps`` iterations
(default 1000, learning rate 0.05 on the *standardised* latent, so the scale is the same for
every model), starting from the latent prior's mean (``mod(z) = 0``; ``init="encoder"`` starts
from the encoder's latent instead, which is no longer a pure projector). Loss:

* ``"nll"`` (default): the decoder's negative log-likelihood of the image per pixel and
  channel, ``-log p(x | z)`` under the discretised mixture of logistics (Bernoulli for
  binary models): the decoder's own objective;
* ``"mse"``: mean squared error of the deterministic decode (the mixture's mode is not
  differentiable almost everywhere, so the mixture *mean* of the most probable component is
  replaced by the probability-weighted mean of the component means).

The projector needs gradients through the decoder, so it runs on a ``Sampler(...,
impl="ref")`` (the reference modules: plain PyTorch, autograd everywhere); the fast plan's fused
CPU ops are inference-only (no backward), and a fast sampler is refused. This is also what an
optimisation-based editor gets in practice: fused inference kernels do not help it.

Images are optimised jointly (the loss is a sum over images, so each latent sees only its own
gradient); for the speed comparison run batch 1.
"""
from __future__ import annotations

import time

import torch

from .edit import apply_delta, edit_delta
from .models import mixture


def _mixture_mean(logits: torch.Tensor) -> torch.Tensor:
    """Differentiable image ``(B, 3, H, W)`` from mixture logits: the weighted mean of the
    components' (coefficient-coupled) means, in [0, 1]."""
    logit_probs, means, _, coeffs = mixture.split_logits(logits)
    w = torch.softmax(logit_probs, dim=1).unsqueeze(1)       # (B, 1, K, H, W)
    m0 = means[:, 0]
    m1 = means[:, 1] + coeffs[:, 0] * m0
    m2 = means[:, 2] + coeffs[:, 1] * m0 + coeffs[:, 2] * m1
    m = torch.stack([m0, m1, m2], dim=1)                     # (B, 3, K, H, W) in [-1, 1]
    return ((m * w).sum(2).clamp(-1, 1) + 1) / 2


def project(sampler, images, *, steps: int = 1000, lr: float = 0.05, loss: str = "nll",
            init: str = "prior", resize: bool = False, progress: bool = False,
            callback=None) -> tuple[torch.Tensor, dict]:
    """Invert ``images`` by optimisation. Returns ``(z, info)``: raw latents ``(B, C, H, W)``
    and ``{"losses": [per-step loss], "seconds", "steps", "seconds_per_step"}``."""
    if getattr(sampler, "impl", "ref") != "ref":
        raise ValueError("the projector backpropagates through the decoder: give it a "
                         "Sampler(..., impl='ref') (the fast plan's fused ops are "
                         "inference-only)")
    if loss not in ("nll", "mse"):
        raise ValueError(f"loss must be 'nll' or 'mse', got {loss!r}")
    if init not in ("prior", "encoder"):
        raise ValueError(f"init must be 'prior' or 'encoder', got {init!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    x = sampler.load_images(images, resize=resize)
    B = x.shape[0]
    if init == "encoder":
        x0 = sampler.standardise(sampler.encode(x))
    else:
        x0 = torch.zeros(B, *sampler.latent_shape, device=sampler.device)
    v = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    ae = sampler.autoencoder
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="project", leave=False)
    t = time.perf_counter()
    with torch.enable_grad():
        for i in range(steps):
            logits = ae.decode_logits(sampler.unstandardise(v).to(sampler.dtype)).float()
            if sampler.bernoulli:
                if loss == "nll":
                    lo = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits, x, reduction="none").flatten(1).mean(1)
                else:
                    lo = (torch.sigmoid(logits) - x).square().flatten(1).mean(1)
            elif loss == "nll":
                lo = -mixture.log_prob(logits, x, num_bits=sampler.num_bits).flatten(1).mean(1) / 3
            else:
                lo = (_mixture_mean(logits) - x).square().flatten(1).mean(1)
            total = lo.sum()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(total.detach()) / B)
            if callback is not None:
                callback(i, losses[-1])
            if bar is not None:
                bar.update(1)
    dt = time.perf_counter() - t
    if bar is not None:
        bar.close()
    z = sampler.unstandardise(v.detach())
    return z, {"losses": losses, "seconds": dt, "steps": steps, "seconds_per_step": dt / steps,
               "loss": loss, "init": init}


def project_and_edit(sampler, images, attr, *, steps: int = 1000, strength=None, step=None,
                     method: str = "nvae", **kw):
    """The optimisation-based editing baseline: :func:`project`, then an edit of the
    projected latent (``nvae`` by default: the edit itself, no diffusion), then decode."""
    z, info = project(sampler, images, steps=steps, **kw)
    with torch.inference_mode():
        delta = edit_delta(sampler, attr, step=step, strength=strength)
        zp = apply_delta(sampler, z, delta, method=method,
                         eps=torch.randn_like(z) if method == "d2c" else None)
        return sampler.decode(zp, mode="mode"), info


__all__ = ["project", "project_and_edit"]
