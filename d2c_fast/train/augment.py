"""MoCo-v2 augmentations on batches of tensors (no PIL, no torchvision), every draw from an
explicit generator so a step's views are a function of its seed.

Per image, as torchvision's ``RandomResizedCrop -> RandomApply(ColorJitter) ->
RandomGrayscale -> RandomHorizontalFlip`` (the official celeba_64 pipeline): crop and flip are
one bilinear ``grid_sample``; the jitter factors are applied in the fixed order brightness,
contrast, saturation, hue (torchvision shuffles the order per call; a deliberate
simplification).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _u(g, n, lo, hi, device):
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def crop_params(n: int, size: int, scale, ratio, g: torch.Generator, device="cpu",
                tries: int = 10):
    """Random-resized-crop boxes as fractions of the image: (w, h, cx, cy), each ``(n,)``.
    torchvision's sampling: area ~ U(scale), log aspect ~ U(log ratio), up to ``tries``
    draws per image, then the whole image (a centre crop clipped to ``ratio``)."""
    w = torch.ones(n, device=device)
    h = torch.ones(n, device=device)
    found = torch.zeros(n, dtype=torch.bool, device=device)
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(tries):
        area = _u(g, n, scale[0], scale[1], device)
        ar = torch.exp(_u(g, n, lr0, lr1, device))
        ww = torch.sqrt(area * ar)
        hh = torch.sqrt(area / ar)
        ok = (ww <= 1) & (hh <= 1) & ~found
        w = torch.where(ok, ww, w)
        h = torch.where(ok, hh, h)
        found |= ok
    # fallback for images without a valid draw: the whole (square) image
    w = torch.where(found, w, torch.ones_like(w))
    h = torch.where(found, h, torch.ones_like(h))
    # top-left uniform over valid positions (continuous)
    x0 = torch.rand(n, generator=g, device=device) * (1 - w)
    y0 = torch.rand(n, generator=g, device=device) * (1 - h)
    return w, h, x0 + w / 2, y0 + h / 2


def _rgb_to_gray(x):
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _rgb_to_hsv(x):
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return h, s, v


def _hsv_to_rgb(h, s, v):
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i.unsqueeze(1))
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i.unsqueeze(1))
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i.unsqueeze(1))
    return torch.cat([r, g, b], dim=1)


def color_jitter(x, brightness, contrast, saturation, hue, g, mask):
    """Jitter the images where ``mask`` is true (factors as torchvision's ColorJitter)."""
    n, dev = x.shape[0], x.device
    m = mask.view(n, 1, 1, 1)
    y = x
    if brightness > 0:
        f = _u(g, n, max(0.0, 1 - brightness), 1 + brightness, dev).view(n, 1, 1, 1)
        y = (y * f).clamp(0, 1)
    if contrast > 0:
        f = _u(g, n, max(0.0, 1 - contrast), 1 + contrast, dev).view(n, 1, 1, 1)
        mean = _rgb_to_gray(y).mean(dim=(1, 2, 3), keepdim=True)
        y = (f * y + (1 - f) * mean).clamp(0, 1)
    if saturation > 0:
        f = _u(g, n, max(0.0, 1 - saturation), 1 + saturation, dev).view(n, 1, 1, 1)
        y = (f * y + (1 - f) * _rgb_to_gray(y)).clamp(0, 1)
    if hue > 0:
        f = _u(g, n, -hue, hue, dev).view(n, 1, 1)
        hh, ss, vv = _rgb_to_hsv(y)
        y = _hsv_to_rgb((hh + f) % 1.0, ss, vv).clamp(0, 1)
    return torch.where(m, y, x)


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One random view of each image of ``x`` ``(B, 3, H, W)`` in [0, 1]."""
    n, c, H, W = x.shape
    dev = x.device
    w, h, cx, cy = crop_params(n, H, cfg.crop_scale, cfg.crop_ratio, g, dev)
    flip = torch.rand(n, generator=g, device=dev) < cfg.flip_p
    sx = torch.where(flip, -w, w)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx * 2 - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy * 2 - 1
    grid = F.affine_grid(theta, (n, c, H, W), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = y.clamp(0, 1)
    if c == 3:
        jm = torch.rand(n, generator=g, device=dev) < cfg.jitter_p
        y = color_jitter(y, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, g, jm)
        gm = (torch.rand(n, generator=g, device=dev) < cfg.gray_p).view(n, 1, 1, 1)
        y = torch.where(gm, _rgb_to_gray(y).expand(-1, 3, -1, -1), y)
    return y.contiguous()
