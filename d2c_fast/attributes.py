"""Attributes: directions in the raw latent space used to edit images.

An official attribute file is ``{"boundary": (1, C, H, W)}``; the official edit is
``z - step * boundary`` (so a positive step moves *against* the stored direction, exactly as
the release's ``BoundaryInterpolationLayer``). :class:`Attribute` keeps that convention.
"""
from __future__ import annotations

import os

import torch

from .errors import AttributeFileError


class Attribute:
    """A latent direction ``(C, H, W)`` in raw encoder space.

    ``name`` is for display. ``source`` records where it came from.
    """

    def __init__(self, direction: torch.Tensor, *, name: str | None = None,
                 source: str | None = None):
        if not isinstance(direction, torch.Tensor) or not direction.is_floating_point():
            raise AttributeFileError("an attribute direction must be a float tensor")
        if direction.dim() == 4 and direction.shape[0] == 1:
            direction = direction[0]
        if direction.dim() != 3:
            raise AttributeFileError(f"an attribute direction must be (C, H, W) or (1, C, H, W), "
                                     f"got {tuple(direction.shape)}")
        if not torch.isfinite(direction).all():
            raise AttributeFileError("attribute direction contains NaN or Inf")
        self.direction = direction.detach().float().cpu()
        self.name = name
        self.source = source

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.direction.shape)

    @classmethod
    def load(cls, path) -> "Attribute":
        """Load an official boundary ``.ckpt`` (read without executing code)."""
        from .checkpoint import load_boundary
        p = os.fspath(path)
        return cls(load_boundary(p), name=os.path.splitext(os.path.basename(p))[0], source=p)

    def check_latent_shape(self, latent_shape) -> None:
        if tuple(latent_shape) != self.shape:
            raise AttributeFileError(
                f"attribute {self.name or ''} has shape {self.shape}, the model's latents are "
                f"{tuple(latent_shape)}: it belongs to another model")

    def __repr__(self) -> str:
        return f"Attribute(name={self.name!r}, shape={self.shape})"


def as_direction(attr, latent_shape, device) -> torch.Tensor:
    """An :class:`Attribute`, a tensor, or a path -> direction ``(1, C, H, W)`` on ``device``."""
    if isinstance(attr, (str, os.PathLike)):
        attr = Attribute.load(attr)
    elif isinstance(attr, torch.Tensor):
        attr = Attribute(attr)
    elif not isinstance(attr, Attribute):
        raise AttributeFileError(f"expected an Attribute, a tensor or a path, got "
                                 f"{type(attr).__name__}")
    attr.check_latent_shape(latent_shape)
    return attr.direction.to(device).unsqueeze(0)
