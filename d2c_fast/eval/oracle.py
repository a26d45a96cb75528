"""The attribute oracle for the built-in faces: a small CNN trained on ground-truth labels.

``Oracle.predict(images)`` gives attribute probabilities ``(B, 5)``; ``Oracle.features(images)``
the penultimate features (``width * 4``-d) that ``frechet_distance`` compares between image
sets (FD_oracle, this project's stand-in for FID). Weights and settings are one
``.safetensors`` file (metadata: ``format=d2c_fast_oracle``, config JSON, held-out metrics).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import read_safetensors
from ..data import FacesDataset
from ..errors import CheckpointError
from ..utils import atomic_write

ORACLE_FORMAT = "d2c_fast_oracle"
DEFAULT_ATTRIBUTES = ("blond_hair", "red_lipstick", "beard", "eyeglasses", "smiling")


def _block(ci, co, stride):
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co),
                         nn.ReLU(inplace=True))


class Oracle(nn.Module):
    """CNN: three stages of (3x3 conv, 3x3 stride-2 conv) with BN-ReLU, global average pool,
    a ``4w -> 4w`` ReLU layer (the features), a linear layer to the attribute logits."""

    def __init__(self, resolution: int = 32, width: int = 32,
                 attributes: Sequence[str] = DEFAULT_ATTRIBUTES, metrics: Optional[dict] = None):
        super().__init__()
        self.resolution, self.width = int(resolution), int(width)
        self.attributes = tuple(attributes)
        self.metrics = dict(metrics or {})
        w = self.width
        self.body = nn.Sequential(_block(3, w, 1), _block(w, w, 2), _block(w, 2 * w, 1),
                                  _block(2 * w, 2 * w, 2), _block(2 * w, 4 * w, 1),
                                  _block(4 * w, 4 * w, 2))
        self.fc = nn.Linear(4 * w, 4 * w)
        self.head = nn.Linear(4 * w, len(self.attributes))

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.float()
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              antialias=True, align_corners=False)
        return 2 * x - 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self._prep(x)).mean(dim=(2, 3))
        return F.relu(self.fc(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_attributes)``."""
        return self.head(self.forward_features(x))

    def _batched(self, fn, images, batch_size):
        dev = next(self.parameters()).device
        was = self.training
        self.eval()
        out = []
        with torch.no_grad():
            for s in range(0, images.shape[0], batch_size):
                out.append(fn(images[s:s + batch_size].to(dev)).float().cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, len(self.attributes))

    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Attribute probabilities ``(B, n_attributes)`` of images in [0, 1] (or uint8)."""
        return self._batched(lambda x: torch.sigmoid(self(x)), images, batch_size)

    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Penultimate features ``(B, 4 * width)`` for FD_oracle."""
        return self._batched(self.forward_features, images, batch_size)

    # ------------------------------------------------------------------ files
    def config(self) -> dict:
        return {"resolution": self.resolution, "width": self.width,
                "attributes": list(self.attributes)}

    def save(self, path) -> None:
        from safetensors.torch import save_file
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": ORACLE_FORMAT, "config": json.dumps(self.config()),
                "metrics": json.dumps(self.metrics)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), to_path=True)

    @classmethod
    def load(cls, path, device="cpu") -> "Oracle":
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise CheckpointError(p, "no such file")
        meta, tensors = read_safetensors(
            p, lambda msg: CheckpointError(p, f"not a safetensors file ({msg})"))
        if meta.get("format") != ORACLE_FORMAT:
            raise CheckpointError(p, f"not an oracle file (format {meta.get('format')!r})")
        cfg = json.loads(meta["config"])
        m = cls(cfg["resolution"], cfg["width"], cfg["attributes"],
                metrics=json.loads(meta.get("metrics", "{}")))
        try:
            m.load_state_dict(tensors)
        except RuntimeError as e:
            raise CheckpointError(p, f"weights do not match the oracle config: {e}") from e
        return m.to(device).eval()


def _render(ds, workers: int = 0):
    loader = torch.utils.data.DataLoader(ds, batch_size=128, num_workers=workers)
    xs, ys = [], []
    for x, y in loader:
        xs.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
        ys.append(y.float())
    return torch.cat(xs), torch.cat(ys)


def accuracy_per_attribute(model: Oracle, x, y) -> list:
    p = model.predict(x)
    return [float(v) for v in ((p > 0.5).float() == y).float().mean(dim=0)]


def train_oracle(resolution: int = 32, *, n_train: int = 8000, n_val: int = 2000,
                 epochs: int = 6, batch_size: int = 64, lr: float = 2e-3, width: int = 32,
                 seed: int = 0, data_seed: int = 1000, max_minutes: Optional[float] = None,
                 train_data=None, val_data=None, progress: bool = True, workers: int = 0,
                 threads: Optional[int] = None) -> Oracle:
    """Train the oracle on ``FacesDataset(n_train, split="train", seed=data_seed)`` (or
    ``train_data``: a Dataset of ``(image, labels)``), measure per-attribute accuracy on the
    held-out ``split="val"`` stream (or ``val_data``), store it in ``oracle.metrics``.
    Augmentation: horizontal flips (every attribute is mirror-invariant) and small Gaussian
    pixel noise. AdamW with a cosine learning rate."""
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _train_oracle(resolution, n_train, n_val, epochs, batch_size, lr, width, seed,
                             data_seed, max_minutes, train_data, val_data, progress, workers)
    finally:
        torch.set_num_threads(threads_before)


def _train_oracle(resolution, n_train, n_val, epochs, batch_size, lr, width, seed, data_seed,
                  max_minutes, train_data, val_data, progress, workers) -> Oracle:
    t0 = time.perf_counter()
    if train_data is None or val_data is None:
        train_data = train_data or FacesDataset(n_train, resolution=resolution, seed=data_seed,
                                                split="train")
        val_data = val_data or FacesDataset(n_val, resolution=resolution, seed=data_seed,
                                            split="val")
    xtr, ytr = _render(train_data, workers)
    xva, yva = _render(val_data, workers)
    attrs = getattr(train_data, "attributes", DEFAULT_ATTRIBUTES)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Oracle(resolution, width, attrs[:ytr.shape[1]])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = xtr.shape[0]
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    # class balance: positive weight per attribute (rare attributes matter as much)
    pos = ytr.mean(dim=0).clamp(1e-3, 1 - 1e-3)
    pos_weight = ((1 - pos) / pos).sqrt()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc="oracle", dynamic_ncols=True, file=sys.stderr)
    step = 0
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
                break
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = xtr[idx].float() / 255.0
            flip = torch.rand(x.shape[0], generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            x = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
            lr_t = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for gr in opt.param_groups:
                gr["lr"] = lr_t
            loss = F.binary_cross_entropy_with_logits(model(x), ytr[idx], pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.detach().item():.4f}")
    if bar is not None:
        bar.close()
    model.eval()
    acc = accuracy_per_attribute(model, xva, yva)
    model.metrics = {"heldout_accuracy": dict(zip(model.attributes, acc)),
                     "n_train": int(n), "n_heldout": int(xva.shape[0]), "steps": step,
                     "seconds": round(time.perf_counter() - t0, 1),
                     "heldout": "FacesDataset split=val" if n_val else "user"}
    return model
