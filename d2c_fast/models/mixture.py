"""The decoder's output distribution: a 10-component discretised mixture of logistics
(PixelCNN++ style, with the linear R->G->B coupling), as the official D2C/NVAE head.

Layout of ``logits`` ``(B, 10 * M, H, W)`` with ``M = 10`` mixtures: channels ``[0, M)`` are
the mixture logits; then for each of R, G, B a block of ``3M`` channels: ``M`` means, ``M``
log-scales (clamped at -7), ``M`` coupling coefficients (through tanh).
All maths in float32 whatever the logits' dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUM_MIX = 10


def split_logits(logits: torch.Tensor, num_mix: int = NUM_MIX):
    B, C, H, W = logits.shape
    if C != 10 * num_mix:
        raise ValueError(f"expected {10 * num_mix} channels of mixture parameters, got {C}")
    logits = logits.float()
    logit_probs = logits[:, :num_mix]
    rest = logits[:, num_mix:].reshape(B, 3, 3 * num_mix, H, W)
    means = rest[:, :, :num_mix]
    log_scales = torch.clamp(rest[:, :, num_mix:2 * num_mix], min=-7.0)
    coeffs = torch.tanh(rest[:, :, 2 * num_mix:])
    return logit_probs, means, log_scales, coeffs


def log_prob(logits: torch.Tensor, x: torch.Tensor, num_bits: int = 8,
             num_mix: int = NUM_MIX) -> torch.Tensor:
    """Per-pixel log-likelihood ``(B, H, W)`` of images ``x`` in [0, 1] ``(B, 3, H, W)``
    (official ``DiscMixLogistic.log_prob``, bins of width ``2 / (2**num_bits - 1)``)."""
    if x.min() < 0 or x.max() > 1:
        raise ValueError("images must lie in [0, 1]")
    logit_probs, means, log_scales, coeffs = split_logits(logits, num_mix)
    max_val = 2.0 ** num_bits - 1
    s = (2 * x.float() - 1).unsqueeze(2)                                  # B, 3, 1, H, W
    m0 = means[:, 0]
    m1 = means[:, 1] + coeffs[:, 0] * s[:, 0]
    m2 = means[:, 2] + coeffs[:, 1] * s[:, 0] + coeffs[:, 2] * s[:, 1]
    centered = s - torch.stack([m0, m1, m2], dim=1)                      # B, 3, M, H, W
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centered + 1.0 / max_val)
    min_in = inv_s * (centered - 1.0 / max_val)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    mid = torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-10)),
                      log_pdf_mid - math.log(max_val / 2))
    lp = torch.where(s < -0.999, log_cdf_plus,
                     torch.where(s > 0.99, log_one_minus_cdf_min, mid))
    lp = lp.sum(1) + F.log_softmax(logit_probs, dim=1)                   # B, M, H, W
    return torch.logsumexp(lp, dim=1)


def _couple(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Apply the R->G->B linear coupling with the official clamping order; -> [0, 1]."""
    x0 = torch.clamp(x[:, 0], -1, 1)
    x1 = torch.clamp(x[:, 1] + coeffs[:, 0] * x0, -1, 1)
    x2 = torch.clamp(x[:, 2] + coeffs[:, 1] * x0 + coeffs[:, 2] * x1, -1, 1)
    return torch.stack([x0, x1, x2], dim=1) / 2.0 + 0.5


def _select(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    # t: B, 3, M, H, W ; idx: B, H, W -> B, 3, H, W
    B, _, _, H, W = t.shape
    return torch.gather(t, 2, idx.view(B, 1, 1, H, W).expand(B, 3, 1, H, W)).squeeze(2)


def sample(logits: torch.Tensor, uniforms: tuple[torch.Tensor, torch.Tensor] | None = None,
           generator: torch.Generator | None = None, temperature: float = 1.0,
           num_mix: int = NUM_MIX) -> torch.Tensor:
    """Draw images in [0, 1] ``(B, 3, H, W)``: Gumbel-max over components, then a logistic
    sample, coupled and clamped (official ``DiscMixLogistic.sample``).

    ``uniforms``: optional ``(u_mix (B, M, H, W), u_pix (B, 3, H, W))`` already in
    ``[1e-5, 1 - 1e-5]``; otherwise they are drawn from ``generator`` on the logits' device.
    """
    logit_probs, means, log_scales, coeffs = split_logits(logits, num_mix)
    B, M, H, W = logit_probs.shape
    if uniforms is None:
        u_mix = torch.rand((B, M, H, W), generator=generator, device=logits.device)
        u_pix = torch.rand((B, 3, H, W), generator=generator, device=logits.device)
        u_mix = u_mix * (1 - 2e-5) + 1e-5
        u_pix = u_pix * (1 - 2e-5) + 1e-5
    else:
        u_mix, u_pix = uniforms
    gumbel = -torch.log(-torch.log(u_mix))
    idx = torch.argmax(logit_probs / temperature + gumbel, dim=1)
    mu, ls, co = _select(means, idx), _select(log_scales, idx), _select(coeffs, idx)
    x = mu + torch.exp(ls) / temperature * (torch.log(u_pix) - torch.log1p(-u_pix))
    return _couple(x, co)


def sample_selected(logits: torch.Tensor, uniforms: tuple[torch.Tensor, torch.Tensor],
                    num_mix: int = NUM_MIX) -> torch.Tensor:
    """:func:`sample` (temperature 1) with the same result bit for bit, for ``impl="fast"``:
    the component is chosen first and only its 9 parameters per pixel are gathered, clamped and
    passed through tanh (the official head transforms all 90, then selects); works on
    channels-last logits without a copy."""
    B, C, H, W = logits.shape
    if C != 10 * num_mix:
        raise ValueError(f"expected {10 * num_mix} channels of mixture parameters, got {C}")
    u_mix, u_pix = uniforms
    M = num_mix
    idx = torch.argmax(logits[:, :M].float() + -torch.log(-torch.log(u_mix)), dim=1,
                       keepdim=True)                                          # B, 1, H, W
    base = torch.arange(3, device=logits.device).view(1, 3, 1, 1) * (3 * M) + M
    sel = torch.gather(logits, 1, torch.cat([base, base + M, base + 2 * M], 1) + idx).float()
    mu, ls, co = sel[:, 0:3], torch.clamp(sel[:, 3:6], min=-7.0), torch.tanh(sel[:, 6:9])
    x = mu + torch.exp(ls) * (torch.log(u_pix) - torch.log1p(-u_pix))
    return _couple(x, co)


def mode(logits: torch.Tensor, num_mix: int = NUM_MIX) -> torch.Tensor:
    """Deterministic decode: each pixel's most probable component, its (coupled) mean.
    A d2c_fast choice, not part of the official format."""
    logit_probs, means, _, coeffs = split_logits(logits, num_mix)
    idx = torch.argmax(logit_probs, dim=1)
    return _couple(_select(means, idx), _select(coeffs, idx))


def uniforms_per_image(n: int, shape_mix, shape_pix, generators, device) -> tuple:
    """Per-image uniform draws (one generator per image) for :func:`sample`."""
    u_mix = torch.stack([torch.rand(shape_mix, generator=g, device=device) for g in generators])
    u_pix = torch.stack([torch.rand(shape_pix, generator=g, device=device) for g in generators])
    return u_mix * (1 - 2e-5) + 1e-5, u_pix * (1 - 2e-5) + 1e-5
