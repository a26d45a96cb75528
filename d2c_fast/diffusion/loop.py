"""The DDIM loop: the one implementation that sampling, editing, conditional generation and
the CUDA-graph executor all run, and its inverse (DDIM inversion).

A run is described by :class:`DDIMSteps`: the ``(t, t_next)`` pairs of a timestep sequence
in the official order and, per step, the timestep tensor fed to the network and the five
coefficients of :func:`~d2c_fast.diffusion.schedule.ddim_step_coeffs`. The steps live either
on the host (Python floats: nothing to copy, the eager executor) or in device tables
(``DDIMSteps.to_tables``: a captured CUDA graph replays another sequence of the same length
after a table copy, without re-capture and without a host synchronisation). The loop itself
is the same for both.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..ops.ddim_step import ddim_step
from .schedule import Schedule, ddim_step_coeffs

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DDIMSteps:
    """The steps of a DDIM run from ``seq[-1]`` down to a clean sample: the pairs
    ``(t, t_next)`` of ``reversed(seq)`` and ``reversed([-1] + seq[:-1])`` (official order)
    with their coefficients for ``eta``.

    ``coeffs``/``timesteps`` are host values by default; after :meth:`to_tables` they are
    device tensors ``(S, 5)`` and ``(S,)`` (the same numbers in float32)."""

    def __init__(self, sched: Schedule, seq: Sequence[int], eta: float = 0.0):
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        seq = [int(t) for t in seq]
        self.seq, self.eta = seq, float(eta)
        self.pairs = list(zip(reversed(seq), reversed([-1] + seq[:-1])))
        self.coeffs: Sequence = [ddim_step_coeffs(sched, t, tn, self.eta) for t, tn in self.pairs]
        self.timesteps: Sequence = [float(t) for t, _ in self.pairs]
        self.with_noise = self.eta > 0

    def __len__(self) -> int:
        return len(self.pairs)

    def to_tables(self, device) -> "DDIMSteps":
        """A copy whose coefficients and timesteps are float32 device tensors."""
        out = object.__new__(DDIMSteps)
        out.__dict__.update(self.__dict__)
        out.coeffs = torch.tensor(self.coeffs, dtype=torch.float32).to(device)
        out.timesteps = torch.tensor(self.timesteps, dtype=torch.float32).to(device)
        return out

    def t(self, i: int, n: int, device) -> torch.Tensor:
        """The timestep of step ``i`` as a float32 ``(n,)`` tensor on ``device``."""
        ts = self.timesteps
        if isinstance(ts, torch.Tensor):
            return ts[i].expand(n)
        return torch.full((n,), ts[i], device=device, dtype=torch.float32)


def ddim_loop(eps_fn: EpsFn, x: torch.Tensor, steps: DDIMSteps, *,
              step_noise: Callable[[int], torch.Tensor] | None = None,
              inplace: bool = False, callback: Callable[[int], None] | None = None,
              after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
              impl: str = "fast") -> torch.Tensor:
    """Run ``steps`` from ``x`` (standardised latents at ``steps.seq[-1]``): per step,
    ``eps = eps_fn(x, t)`` then one ``d2c_fast::ddim_step`` update (the official arithmetic:
    ``x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t)``, ``x' = sqrt(a_next) x0 + c1 z + c2 eps``).

    ``step_noise(i)``: the Gaussian noise of step ``i`` (only called when ``eta > 0``).
    ``inplace``: update ``x`` in place (static buffers of a captured graph); otherwise a new
    tensor per step. ``callback(i)`` after each step (progress bars). ``after_step(i, x)``
    returns the state the next step starts from (masked sampling: known content blended back
    outside a mask, as blended / inpainting samplers do). ``impl``: the update's
    implementation (``"ref"``: plain PyTorch everywhere; ``"fast"``: the Triton kernel on
    CUDA, the same arithmetic). No clipping and no host synchronisation."""
    if steps.with_noise and step_noise is None:
        raise ValueError("eta > 0 needs step_noise")
    n = x.shape[0]
    for i in range(len(steps)):
        e = eps_fn(x, steps.t(i, n, x.device))
        z = step_noise(i) if steps.with_noise else None
        x = ddim_step(x, e.to(x.dtype), steps.coeffs[i], z, out=x if inplace else None,
                      impl=impl)
        if after_step is not None:
            x = after_step(i, x)
        if callback is not None:
            callback(i)
    return x


def ddim(eps_fn: EpsFn, x: torch.Tensor, seq: Sequence[int], sched: Schedule, *,
         eta: float = 0.0, step_noise: Callable[[int], torch.Tensor] | None = None,
         progress=None, impl: str = "fast") -> torch.Tensor:
    """DDIM from ``x`` at ``seq[-1]`` down to a clean sample over ``seq`` (ascending):
    :func:`ddim_loop` over ``DDIMSteps(sched, seq, eta)``. ``eps_fn(x, t)`` predicts the
    noise, ``t`` a float32 ``(B,)`` tensor on ``x``'s device; ``progress``: anything with
    ``update(1)`` (a tqdm bar)."""
    steps = DDIMSteps(sched, seq, eta)
    return ddim_loop(eps_fn, x, steps, step_noise=step_noise, impl=impl,
                     callback=(lambda i: progress.update(1)) if progress is not None else None)


def ddim_invert(eps_fn: EpsFn, x: torch.Tensor, seq: Sequence[int], sched: Schedule,
                progress=None) -> torch.Tensor:
    """Deterministic DDIM inversion of clean standardised latents ``x`` to ``seq[-1]``: the
    pairs of :func:`ddim` traversed upwards, each step from ``t_next`` to ``t`` using
    ``eps(x, t)`` evaluated at the current point (the usual approximation)."""
    seq = list(seq)
    prev = [-1] + seq[:-1]
    n = x.shape[0]
    for t_prev, t in zip(prev, seq):
        a_prev, a_t = sched.abar(t_prev), sched.abar(t)
        tt = torch.full((n,), float(t), device=x.device, dtype=torch.float32)
        e = eps_fn(x, tt).to(x.dtype)
        x0 = (x - math.sqrt(1 - a_prev) * e) / math.sqrt(a_prev)
        x = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * e
        if progress is not None:
            progress.update(1)
    return x
