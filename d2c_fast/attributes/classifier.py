"""The linear classifier of a fitted attribute, on standardised raw latents."""
from __future__ import annotations

import math

import torch

from ..checkpoint import latent_norm_kind
from ..errors import AttributeFileError

__all__ = ["LinearClassifier", "log_odds"]


def _as_mod(t: torch.Tensor, what: str) -> torch.Tensor:
    """A latent standardisation tensor as ``(C, 1, 1)`` or ``(C, H, W)`` float32 on the CPU
    (accepts the checkpoint's ``(1, C, 1|H, 1|W)`` and a flat per-channel ``(C,)``)."""
    t = t.detach().float().cpu()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    elif t.dim() == 1:
        t = t.reshape(-1, 1, 1)
    if t.dim() != 3:
        raise AttributeFileError(f"latent_mod.{what} must be (C, 1, 1) or (C, H, W), "
                                 f"got {tuple(t.shape)}")
    return t


class LinearClassifier:
    """``score(z) = w . ((z - mean) / std).flatten() + bias``; ``logit = score + offset``.

    ``p = sigmoid(logit)``. ``mode``: ``"labelled"`` (``score`` is the balanced log-odds,
    ``offset = logit(prior)``) or ``"pu"`` (``score`` is already the population log-odds,
    ``offset = 0``). ``mean``/``std`` are the model's latent standardisation the classifier
    assumes: ``(C, 1, 1)`` (per channel) or ``(C, H, W)`` (per position)."""

    def __init__(self, weight: torch.Tensor, bias: float, mean: torch.Tensor, std: torch.Tensor,
                 *, mode: str = "labelled", prior: float = 0.5):
        if mode not in ("labelled", "pu"):
            raise AttributeFileError(f"classifier mode must be 'labelled' or 'pu', got {mode!r}")
        if not 0.0 < prior < 1.0 + 1e-12:
            raise AttributeFileError(f"classifier prior must be in (0, 1], got {prior}")
        self.weight = weight.detach().double().cpu().reshape(-1)
        self.bias = float(bias)
        self.mean, self.std = _as_mod(mean, "mean"), _as_mod(std, "std")
        if self.mean.shape != self.std.shape:
            raise AttributeFileError(f"latent_mod.mean {tuple(self.mean.shape)} and latent_mod.std "
                                     f"{tuple(self.std.shape)} differ in shape")
        if (self.weight.numel() != self.mean.numel()
                if latent_norm_kind(self.mean) == "position"
                else self.weight.numel() % self.mean.shape[0]):
            raise AttributeFileError(f"{self.weight.numel()} classifier weights do not fit the "
                                     f"latent standardisation {tuple(self.mean.shape)}")
        if not torch.isfinite(self.weight).all() or not math.isfinite(self.bias):
            raise AttributeFileError("classifier weights contain NaN or Inf")
        if float(self.weight.norm()) == 0.0:
            raise AttributeFileError("classifier weights are all zero (nothing was learnt)")
        self.mode, self.prior = mode, float(min(prior, 1.0))

    @property
    def offset(self) -> float:
        return log_odds(self.prior) if self.mode == "labelled" else 0.0

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents ``(B, C, H, W)`` -> ``(B, D)`` float64 standardised features."""
        m, s = self.mean.to(z.device), self.std.to(z.device)
        return ((z.float() - m) / s).double().flatten(1)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return self.standardise(z) @ self.weight.to(z.device) + self.bias

    def evidence(self, z: torch.Tensor) -> torch.Tensor:
        """Each latent position's share of the score of raw latents ``(B, C, H, W)``: ``(B, H,
        W)`` float64, ``sum_c weight * standardised z`` (``score = evidence.sum() + bias``)."""
        x = self.standardise(z).view(z.shape)
        return (x * self.weight.to(z.device).view(z.shape[1:])).sum(1)

    def gradient(self, latent_shape) -> torch.Tensor:
        """``d logit / d z`` ``(C, H, W)`` float64 for raw latents of ``latent_shape`` (the
        logit is affine in ``z``: ``weight / std``, the same everywhere)."""
        return (self.weight.reshape(tuple(latent_shape)) / self.std.double()).reshape(
            tuple(latent_shape))

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        return self.score(z) + self.offset

    def probability(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(z))

    def with_prior(self, prior: float) -> "LinearClassifier":
        """The same classifier for a population whose positive rate is ``prior`` (label
        shift: ``p(z | y)`` unchanged), i.e. every logit moves by ``logit(prior) -
        logit(self.prior)``. Labelled mode changes the offset; PU mode (offset 0) the bias."""
        prior = float(prior)
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        shift = log_odds(prior) - log_odds(self.prior)
        return LinearClassifier(self.weight, self.bias + (shift if self.mode == "pu" else 0.0),
                                self.mean, self.std, mode=self.mode, prior=prior)


def log_odds(p: float) -> float:
    """``log(p / (1 - p))``, ``p`` clipped to ``[1e-12, 1 - 1e-12]``."""
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))
