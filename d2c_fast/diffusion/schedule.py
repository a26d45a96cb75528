"""Diffusion schedules, timestep sequences, forward noising and the DDIM step coefficients:
small pure functions.

Notation: ``abar(t) = prod_{i <= t} (1 - beta_i)`` for ``t >= 0`` and ``abar(-1) = 1``.
The schedule is computed once on the host in float64; per-step coefficients are Python
floats, so the sampling loop never synchronises with the device.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch


def beta_schedule(kind: str, *, beta_start: float, beta_end: float, num_timesteps: int) -> np.ndarray:
    """The official schedules (``linear``, ``quad``, ``const``, ``jsd``, ``sigmoid``), float64,
    and ``cosine`` (Nichol & Dhariwal 2021, eq. 17: ``abar(t) = f(t) / f(0)`` with
    ``f(t) = cos^2(pi / 2 * (t / T + s) / (1 + s))``, ``s = 0.008``, betas capped at 0.999;
    ``beta_start`` / ``beta_end`` are ignored). Not in the official release: it keeps more
    of the training at mid signal-to-noise ratios than ``linear``, which reaches SNR 0.03
    by t = 600 of 1000."""
    T = num_timesteps
    if kind == "linear":
        betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    elif kind == "quad":
        betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
    elif kind == "const":
        betas = beta_end * np.ones(T, dtype=np.float64)
    elif kind == "jsd":
        betas = 1.0 / np.linspace(T, 1, T, dtype=np.float64)
    elif kind == "sigmoid":
        betas = 1 / (np.exp(-np.linspace(-6, 6, T)) + 1) * (beta_end - beta_start) + beta_start
    elif kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    else:
        raise ValueError(f"unknown beta schedule {kind!r}")
    return betas


class Schedule:
    """``abar`` for ``t`` in ``[-1, T-1]``. The official code casts betas to float32 before the
    cumulative product; we do the same so ``impl="ref"`` matches it bit for bit in spirit."""

    def __init__(self, betas: np.ndarray):
        self.betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(self.betas)
        b32 = torch.from_numpy(self.betas).float()
        abar = torch.cumprod(1 - torch.cat([torch.zeros(1), b32]), dim=0)  # index t + 1
        self._abar = abar.double().numpy()

    @classmethod
    def from_config(cls, sched) -> "Schedule":
        return cls(beta_schedule(sched.beta_schedule, beta_start=sched.beta_start,
                                 beta_end=sched.beta_end,
                                 num_timesteps=sched.num_diffusion_timesteps))

    def abar(self, t: int) -> float:
        if not -1 <= t < self.num_timesteps:
            raise ValueError(f"timestep {t} outside [-1, {self.num_timesteps - 1}]")
        return float(self._abar[t + 1])


def uncond_sequence(num_timesteps: int, *, skip: int | None = None,
                    steps: int | None = None) -> list[int]:
    """Timesteps of unconditional DDIM sampling (ascending).

    ``skip``: the official ``range(0, T - 1, skip) + [T - 1]``. ``steps``: exactly ``steps``
    U-Net calls at ``round(linspace(0, T - 1, steps))`` (so ``steps=11`` for ``T = 1000`` is
    ``[0, 100, ..., 500, 599, ..., 899, 999]``, close to but not ``skip=100``). Give one.
    """
    T = num_timesteps
    if (skip is None) == (steps is None):
        raise ValueError("give exactly one of skip= or steps=")
    if skip is not None:
        if not isinstance(skip, int) or skip < 1:
            raise ValueError(f"skip must be a positive int, got {skip!r}")
        return list(range(0, T - 1, skip)) + [T - 1]
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, {T}], got {steps!r}")
    if steps == 1:
        return [T - 1]
    seq = sorted({int(round(v)) for v in np.linspace(0, T - 1, steps)})
    return seq


def manip_sequence(t0: int, skip: int, num_timesteps: int) -> list[int]:
    """Official post-processing sequence ``range(0, t0 + 1, skip)``. The latent is noised to
    its last entry, so ``t0`` not divisible by ``skip`` is effectively rounded down (as the
    official code does); we warn in that case."""
    if not isinstance(t0, int) or not 0 <= t0 < num_timesteps:
        raise ValueError(f"t0 must be an int in [0, {num_timesteps - 1}], got {t0!r}")
    if not isinstance(skip, int) or skip < 1:
        raise ValueError(f"skip must be a positive int, got {skip!r}")
    seq = list(range(0, t0 + 1, skip))
    if seq[-1] != t0:
        warnings.warn(f"t0={t0} is not a multiple of skip={skip}: noising to t={seq[-1]} "
                      "(official behaviour)", stacklevel=3)
    return seq


def check_sequence(seq: Sequence[int], num_timesteps: int) -> list[int]:
    seq = [int(t) for t in seq]
    if not seq:
        raise ValueError("empty timestep sequence")
    if any(b <= a for a, b in zip(seq, seq[1:])):
        raise ValueError(f"timesteps must be strictly increasing, got {seq}")
    if seq[0] < 0 or seq[-1] >= num_timesteps:
        raise ValueError(f"timesteps must lie in [0, {num_timesteps - 1}], got {seq}")
    return seq


def add_noise(x0: torch.Tensor, t: int, noise: torch.Tensor, sched: Schedule) -> torch.Tensor:
    """Forward process: ``sqrt(abar(t)) x0 + sqrt(1 - abar(t)) noise``."""
    a = sched.abar(t)
    return math.sqrt(a) * x0 + math.sqrt(1 - a) * noise


def ddim_step_coeffs(sched: Schedule, t: int, t_next: int, eta: float):
    """Coefficients of one DDIM update (Song et al. 2021, eq. 12):
    ``x0 = (x - sqrt(1 - a_t) e) / sqrt(a_t)``,
    ``x' = sqrt(a_next) x0 + c1 noise + c2 e`` with
    ``c1 = eta sqrt((1 - a_t / a_next)(1 - a_next) / (1 - a_t))``, ``c2 = sqrt(1 - a_next - c1^2)``."""
    at, an = sched.abar(t), sched.abar(t_next)
    c1 = eta * math.sqrt(max((1 - at / an) * (1 - an) / (1 - at), 0.0)) if eta > 0 else 0.0
    c2 = math.sqrt(max(1 - an - c1 * c1, 0.0))
    return math.sqrt(at), math.sqrt(1 - at), math.sqrt(an), c1, c2
