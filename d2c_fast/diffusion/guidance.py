"""Autoguidance and guidance rescale as one small object that turns the prior (and the guide
prior) into the one noise prediction the DDIM loop calls.

``Guidance(weight, rescale, rescale_t)``:

* ``weight`` w: autoguidance (Karras et al. 2024) ``eps_g + w (eps - eps_g)`` with the guide
  prior's ``eps_g``; 1 is the prior alone (the official sampler, no guide call).
* ``rescale`` phi and ``rescale_t``: guidance rescale (Lin et al. 2024, eq. 15-16) applied to
  the x0 predictions at the timesteps ``[lo, hi]`` (``None``: all); 0 is off. Only used when
  ``weight != 1``.

The networks are noise predictors ``f(x, t)`` on standardised latents (a v-prediction U-Net is
wrapped once at load, not converted inside the loop). Nothing here reads a tensor on the host,
so a guided step can be captured in a CUDA graph like an unguided one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import ConfigError, check_guidance_rescale

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Guidance:
    """How the prior's noise prediction is guided (see the module docstring)."""

    weight: float = 1.0
    rescale: float = 0.0
    rescale_t: tuple[int, int] | None = None

    @classmethod
    def checked(cls, weight: float, rescale, rescale_t, num_timesteps: int) -> "Guidance":
        """A ``Guidance`` for the resolved ``weight``; when it guides (``weight != 1``), with
        ``rescale`` / ``rescale_t`` validated (:func:`check_rescale`). With ``weight == 1``
        nothing is guided, so there is nothing to rescale."""
        if weight == 1.0:
            return cls(1.0, 0.0, None)
        phi, t_range = check_rescale(rescale, rescale_t, num_timesteps)
        return cls(float(weight), phi, t_range)

    @property
    def active(self) -> bool:
        """Whether the guide prior is called (``weight != 1``)."""
        return self.weight != 1.0

    def record(self) -> dict:
        """As JSON fields: ``guidance``, ``guidance_rescale``, ``guidance_rescale_t``."""
        return {"guidance": self.weight, "guidance_rescale": self.rescale,
                "guidance_rescale_t": list(self.rescale_t) if self.rescale_t is not None else None}

    def eps_fn(self, prior: EpsFn, guide: EpsFn | None, abar_coefs, *,
               eps_scale: float = 1.0) -> EpsFn:
        """The noise prediction the DDIM loop calls: ``prior`` alone when inactive, else the
        autoguided (and rescaled) combination with ``guide``; divided by ``eps_scale``
        ("epsilon scaling") when that is not 1. ``abar_coefs``: per-timestep
        ``(sqrt(abar), sqrt(1 - abar))`` float32 tensors on the device."""
        if self.active and guide is None:
            raise ValueError(f"guidance={self.weight} needs a model with a guide prior")
        if not self.active and eps_scale == 1.0:
            return prior
        w, phi, t_range = self.weight, self.rescale, self.rescale_t

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            e = prior(x, t)
            if w != 1.0:
                eg = guide(x, t)
                g = eg + w * (e - eg)
                if phi > 0:
                    g = rescale_guided_eps(g, e, x, t, abar_coefs, phi, t_range)
                e = g
            return e / eps_scale if eps_scale != 1.0 else e
        return eps


def check_rescale(phi, t_range, num_timesteps: int):
    """``(phi, t_range)`` validated as ``Sampler.guidance_rescale`` / ``guidance_rescale_t``
    (``ValueError`` naming the attribute)."""
    try:
        return check_guidance_rescale(phi, t_range, num_timesteps)
    except ConfigError as e:
        raise ValueError(f"Sampler.guidance_{e.field}: {e.cause}") from None


def rescale_guided_eps(eps_guided, eps_prior, x, t, abar_coefs, phi: float,
                       t_range=None) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps
    are flawed", eq. 15-16) applied to x0 predictions: with ``x0 = (x - sqrt(1 - abar_t) eps)
    / sqrt(abar_t)``, the guided ``x0_g`` is scaled per sample by ``phi std(x0_p) / std(x0_g)
    + 1 - phi`` (``x0_p``: the prior's own prediction, std over C, H, W), and returned as a
    noise prediction. Samples whose ``t`` is outside ``t_range = (lo, hi)`` (inclusive; None:
    all) keep ``eps_guided``. ``abar_coefs``: per-timestep (sqrt(abar), sqrt(1 - abar))."""
    sa, s1 = (c.index_select(0, t.long()).view(-1, 1, 1, 1) for c in abar_coefs)
    x = x.float()
    x0g = (x - s1 * eps_guided) / sa
    x0p = (x - s1 * eps_prior) / sa
    sg = x0g.flatten(1).std(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    sp = x0p.flatten(1).std(1).view(-1, 1, 1, 1)
    factor = phi * sp / sg + (1.0 - phi)
    if t_range is not None:
        tt = t.view(-1, 1, 1, 1)
        factor = torch.where((tt >= t_range[0]) & (tt <= t_range[1]), factor,
                             torch.ones_like(factor))
    return (x - sa * (x0g * factor)) / s1


def eps_from_v(unet: EpsFn, abar_coefs) -> EpsFn:
    """A noise predictor from a v-prediction network: ``eps = sqrt(1 - abar_t) x_t +
    sqrt(abar_t) v`` (integer ``t``), in float32."""
    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sa, s1 = (c.index_select(0, t.long()).view(-1, 1, 1, 1) for c in abar_coefs)
        return s1 * x.float() + sa * unet(x, t).float()
    return eps
