"""Evaluation for the built-in dataset: the attribute oracle (classifier + FD_oracle), an
optional user-supplied Inception network for real FID, reconstruction PSNR, linear probes."""
from .fid import frechet_distance, gaussian_stats, InceptionFeatures
from .metrics import linear_probe, psnr, reconstruction_psnr
from .oracle import Oracle, train_oracle

__all__ = ["Oracle", "train_oracle", "frechet_distance", "gaussian_stats",
           "InceptionFeatures", "psnr", "reconstruction_psnr", "linear_probe"]
