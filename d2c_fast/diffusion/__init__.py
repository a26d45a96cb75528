"""Diffusion: schedules and timestep sequences (:mod:`.schedule`), the one DDIM loop and its
inversion (:mod:`.loop`), guidance (:mod:`.guidance`) and the batch RNG (:mod:`.rng`).

The schedule is computed once on the host in float64; per-step coefficients are Python floats
or device tables, so the sampling loop never synchronises with the device.
"""
from __future__ import annotations

from .guidance import Guidance, check_rescale, eps_from_v, rescale_guided_eps
from .loop import DDIMSteps, ddim, ddim_invert, ddim_loop
from .rng import BatchRNG, chunks
from .schedule import (Schedule, add_noise, beta_schedule, check_sequence, ddim_step_coeffs,
                       manip_sequence, uncond_sequence)

__all__ = ["Schedule", "beta_schedule", "uncond_sequence", "manip_sequence", "check_sequence",
           "add_noise", "ddim_step_coeffs", "DDIMSteps", "ddim_loop", "ddim", "ddim_invert",
           "Guidance", "check_rescale", "rescale_guided_eps", "eps_from_v", "BatchRNG", "chunks"]
