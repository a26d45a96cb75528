"""Training images as one in-memory uint8 tensor ``(N, 3, R, R)`` (rendered or decoded once,
optionally cached in the run folder), and a tiny synthetic stand-in dataset for tests."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import numpy as np
import torch

from ..data import CelebADataset, FacesDataset, ImageFolderDataset
from ..data.faces import RENDER_VERSION
from ..errors import ConfigError
from .engine import DistInfo, barrier, save_checkpoint
from .config import DataConfig


class SyntheticShapes(torch.utils.data.Dataset):
    """A cheap stand-in with the ``FacesDataset`` interface: ``(image (3,R,R) in [0,1],
    labels (5,))``, deterministic in ``(seed, index)``. Each label switches one visual
    feature (a coloured disc, a bar, a dark band, two dots, background tint)."""

    attributes = ("blond_hair", "red_lipstick", "beard", "eyeglasses", "smiling")

    def __init__(self, n: int, resolution: int = 64, seed: int = 0, split: str = "train"):
        self.n, self.resolution, self.seed = n, resolution, seed
        self.split = {"train": 0, "val": 1, "test": 2}[split]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        r = self.resolution
        g = np.random.default_rng([self.seed, self.split, i, 77])
        lab = (g.random(5) < np.array([0.3, 0.3, 0.3, 0.3, 0.5])).astype(np.float32)
        yy, xx = np.mgrid[0:r, 0:r] / r
        cx, cy = 0.5 + 0.1 * g.standard_normal(), 0.5 + 0.1 * g.standard_normal()
        base = g.random(3) * 0.5 + 0.25
        img = np.ones((3, r, r), np.float32) * base[:, None, None]
        face = ((xx - cx) ** 2 + (yy - cy) ** 2) < 0.08
        img[:, face] = np.array([0.9, 0.7, 0.6])[:, None]
        if lab[0]:
            img[:, (yy < cy - 0.2) & face] = np.array([0.95, 0.9, 0.3])[:, None]
        if lab[1]:
            img[:, (np.abs(yy - cy - 0.15) < 0.03) & (np.abs(xx - cx) < 0.08)] = \
                np.array([0.9, 0.05, 0.1])[:, None]
        if lab[2]:
            img[:, (yy > cy + 0.1) & face] *= 0.3
        if lab[3]:
            for dx in (-0.1, 0.1):
                img[:, ((xx - cx - dx) ** 2 + (yy - cy + 0.05) ** 2) < 0.003] = 0.05
        if lab[4]:
            img[2] = np.clip(img[2] + 0.15, 0, 1)
        return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32)), torch.from_numpy(lab)


def make_dataset(cfg: DataConfig, resolution: int, split: Optional[str] = None,
                 n: Optional[int] = None):
    split = split or cfg.split
    n = cfg.n if n is None else n
    if cfg.kind == "faces":
        return FacesDataset(n, resolution=resolution, seed=cfg.seed, split=split)
    if cfg.kind == "synthetic":
        return SyntheticShapes(n, resolution=resolution, seed=cfg.seed, split=split)
    if cfg.kind == "folder":
        if not cfg.root:
            raise ConfigError("train.data.root", "an image folder needs root")
        return _Limit(ImageFolderDataset(cfg.root, resolution=resolution), n)
    if cfg.kind == "celeba":
        if not cfg.root:
            raise ConfigError("train.data.root", "CelebA needs root")
        return _Limit(CelebADataset(cfg.root, split=split, resolution=resolution), n)
    raise ConfigError("train.data.kind", f"unknown dataset kind {cfg.kind!r}")


class _Limit(torch.utils.data.Dataset):
    def __init__(self, ds, n):
        self.ds, self.n = ds, min(n, len(ds)) if n else len(ds)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.ds[i]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def dataset_to_uint8(ds, workers: int = 0, batch_size: int = 64,
                     progress: bool = False) -> torch.Tensor:
    """Every image of ``ds`` as one uint8 tensor ``(N, C, R, R)``."""
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                         num_workers=workers)
    out = []
    it = loader
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(loader, desc="render data", dynamic_ncols=True)
    for batch in it:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        out.append(_to_uint8(x))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.uint8)


def _cache_key(cfg: DataConfig, resolution: int) -> str:
    d = {"kind": cfg.kind, "n": cfg.n, "seed": cfg.seed, "split": cfg.split, "root": cfg.root,
         "resolution": resolution, "v": 1}
    if cfg.kind == "faces":
        d["render"] = RENDER_VERSION
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(cfg: DataConfig, resolution: int, out_dir: str) -> str:
    """Where :func:`load_images` keeps the rendered / decoded images of ``cfg``."""
    return os.path.join(out_dir, f"data-{cfg.kind}-{_cache_key(cfg, resolution)}.pt")


def load_images(cfg: DataConfig, resolution: int, out_dir: str, info: DistInfo,
                dataset=None, progress: bool = True) -> torch.Tensor:
    """The training images as uint8 ``(N, C, R, R)``. Rank 0 builds the cache file
    (``out_dir/data-<key>.pt``) if asked; the other ranks wait and read it."""
    if dataset is not None:
        return dataset_to_uint8(dataset, workers=cfg.workers, progress=progress and info.is_main)
    path = cache_path(cfg, resolution, out_dir)
    if cfg.cache:
        if info.is_main and not os.path.exists(path):
            x = dataset_to_uint8(make_dataset(cfg, resolution), workers=cfg.workers,
                                 progress=progress)
            save_checkpoint(path, {"images": x})
        barrier(info)
        return torch.load(path, map_location="cpu", weights_only=True)["images"]
    return dataset_to_uint8(make_dataset(cfg, resolution), workers=cfg.workers,
                            progress=progress and info.is_main)
