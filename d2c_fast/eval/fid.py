"""Frechet distance between feature sets, and an optional user-supplied Inception network
for real FID (nothing is downloaded).

``frechet_distance`` fits a Gaussian to each set (float64) and returns
``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})``. The trace of the matrix
square root is computed without scipy: with ``R = S_a^{1/2}`` (symmetric eigendecomposition),
``(S_a S_b)^{1/2}`` is similar to ``(R S_b R)^{1/2}``, a symmetric PSD matrix whose trace is
the sum of the square roots of its eigenvalues.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import D2CError


def _np64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def gaussian_stats(feats):
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, as numpy's ``np.cov``), float64."""
    f = _np64(feats)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    mu_a, mu_b = _np64(mu_a), _np64(mu_b)
    cov_a, cov_b = np.atleast_2d(_np64(cov_a)), np.atleast_2d(_np64(cov_b))
    r = _sqrtm_psd(cov_a)
    m = r @ cov_b @ r
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(ev, 0, None)).sum())
    d = mu_a - mu_b
    return float(d @ d + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def frechet_distance(feats_a, feats_b) -> float:
    """FD between two feature sets ``(N, D)`` (tensors or arrays)."""
    ma, ca = gaussian_stats(feats_a)
    mb, cb = gaussian_stats(feats_b)
    return frechet_distance_from_stats(ma, ca, mb, cb)


class InceptionWeightsError(D2CError, FileNotFoundError):
    pass


class InceptionFeatures:
    """Real FID features from a user-supplied TorchScript Inception network (for instance
    the ``pt_inception-2015-12-05`` TorchScript file used by common FID tools). Nothing is
    downloaded: without a file this raises :class:`InceptionWeightsError`.

    Calling convention: the module receives uint8-range float images ``(B, 3, H, W)`` in
    ``[0, 255]`` and returns ``(B, 2048)`` pool features; if it accepts
    ``return_features=True`` that is used. Loading TorchScript runs code from the file:
    only pass files you trust.
    """

    def __init__(self, weights_path=None, device="cpu"):
        path = weights_path or os.environ.get("D2C_FAST_INCEPTION")
        if not path:
            raise InceptionWeightsError(
                "real FID needs Inception weights, which cannot be downloaded here: pass "
                "weights_path= (a TorchScript Inception file) or set D2C_FAST_INCEPTION; "
                "otherwise use the oracle's FD (d2c_fast.eval.Oracle.features)")
        if not os.path.isfile(path):
            raise InceptionWeightsError(f"Inception weights file not found: {path}")
        self.path, self.device = path, torch.device(device)
        try:
            self.model = torch.jit.load(path, map_location=self.device).eval()
        except Exception as e:  # not TorchScript, corrupt ...
            raise InceptionWeightsError(f"{path}: not a loadable TorchScript Inception "
                                        f"network ({e})") from e

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        out = []
        for s in range(0, images.shape[0], batch_size):
            x = images[s:s + batch_size].to(self.device).float()
            if x.max() <= 1.0:
                x = x * 255.0
            try:
                f = self.model(x, return_features=True)
            except Exception:
                f = self.model(x)
            out.append(f.reshape(f.shape[0], -1).double().cpu())
        return torch.cat(out)

    def fid(self, images_a, images_b) -> float:
        return frechet_distance(self.features(images_a), self.features(images_b))
