"""Quality measures used to judge a trained model: reconstruction PSNR, a latent linear
probe (logistic regression, trained with L-BFGS in float64), the binomial interval that
goes with a rate measured on a few samples, and the relative error by which the tests and
benchmarks compare an implementation with its reference."""
from __future__ import annotations

import math

import torch

from ..attributes import fit_lr
from ..models.mixture import mode


def rel_error(a, b) -> float:
    """``||a - b|| / ||b||`` (Frobenius norms over all elements) in float64 on the CPU;
    ``a`` and ``b``: tensors or anything ``torch.as_tensor`` takes, of one shape, on any
    device. ``b`` is the reference (inf when it is all zeros and ``a`` is not)."""
    a = torch.as_tensor(a).detach().to("cpu", torch.float64)
    b = torch.as_tensor(b).detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    num, den = float((a - b).norm()), float(b.norm())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] ``(B, C, H, W)``."""
    mse = (a.double() - b.double()).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-20))


@torch.no_grad()
def reconstruct(sampler_or_ae, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Deterministic reconstructions (``mixture.mode``) of images in [0, 1]."""
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size]
        if hasattr(sampler_or_ae, "decode") and hasattr(sampler_or_ae, "latent_shape"):
            z = sampler_or_ae.encode(x)
            out.append(sampler_or_ae.decode(z, mode="mode").cpu())
        else:
            ae = sampler_or_ae
            out.append(mode(ae.decode_logits(ae.encode(x))).cpu())
    return torch.cat(out)


def reconstruction_psnr(sampler_or_ae, images: torch.Tensor, batch_size: int = 128) -> float:
    """Mean per-image PSNR (dB) of deterministic reconstructions."""
    return float(psnr(reconstruct(sampler_or_ae, images, batch_size), images).mean())


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, iters: int = 200):
    """Binary logistic regression on standardised features; -> (w, b, mean, std). Minimises
    ``mean BCE + l2 |w|^2`` with the attribute fit's solver (:func:`d2c_fast.attributes.fit_lr`,
    uniform weights; its penalty is ``l2 / 2 |w|^2``, hence ``2 l2``)."""
    x = x.double().flatten(1)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mean) / std
    y = y.double().flatten()
    with torch.inference_mode(False):
        w, b = fit_lr(xs.clone(), y.clone(), 2.0 * l2, torch.ones_like(y), iters=iters)
    return w, torch.tensor(b, dtype=torch.float64), mean, std


def linear_probe(train_x, train_y, test_x, test_y, l2: float = 1e-2) -> float:
    """Held-out accuracy of a logistic-regression probe (one binary attribute)."""
    w, b, mean, std = fit_logistic(train_x, train_y, l2)
    z = ((test_x.double().flatten(1) - mean) / std) @ w + b
    return float(((z > 0).double() == test_y.double()).double().mean())


def probe_l2_select(train_x, train_y, test_x, test_y, grid=(1e-3, 1e-2, 1e-1, 1.0)):
    """Probe accuracy with L2 picked by 5-fold cross-validation on the training part only."""
    n = train_x.shape[0]
    folds = torch.arange(n) % 5
    best, best_l2 = -1.0, grid[0]
    for l2 in grid:
        accs = []
        for f in range(5):
            tr, va = folds != f, folds == f
            if train_y[tr].min() == train_y[tr].max():
                continue
            accs.append(linear_probe(train_x[tr], train_y[tr], train_x[va], train_y[va], l2))
        acc = sum(accs) / max(1, len(accs))
        if acc > best:
            best, best_l2 = acc, l2
    return linear_probe(train_x, train_y, test_x, test_y, best_l2), best_l2


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (95% for ``z = 1.96``): the
    ``p0`` with ``|k / n - p0| <= z sqrt(p0 (1 - p0) / n)``. Stays inside [0, 1] and is
    sensible at ``k = 0`` or ``k = n``, unlike ``p +- z SE``."""
    if n <= 0:
        return (0.0, 1.0)
    p, z2 = k / n, z * z
    den = 1.0 + z2 / n
    mid = (p + z2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


__all__ = ["psnr", "reconstruct", "reconstruction_psnr", "fit_logistic", "linear_probe",
           "probe_l2_select", "wilson_interval"]
