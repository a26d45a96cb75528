"""``GpuSampler``: a :class:`~d2c_fast.sampler.Sampler` on the GPU path with its options
spelled out (bf16 by default on CUDA, CUDA graphs on or off), plus the names benchmarks use.

The GPU path itself is the runtime's: ``Sampler(..., device="cuda")`` (``impl="fast"``) runs
the Triton U-Nets (:mod:`d2c_fast.models.fast_unet`) and the one DDIM loop captured as CUDA
graphs by :class:`d2c_fast.runtime.cuda.CudaGraphExecutor`, guided sampling included. On the
CPU a ``GpuSampler`` runs that executor's static buffers eagerly (``use_graphs`` is False),
which is how the CPU tests exercise it.
"""
from __future__ import annotations

import torch

from .models.fast_unet import FastUNet, build_gpu_unet
from .runtime.cuda import GRAPH_ERRORS, CudaGraphExecutor, UNetCallGraph, capture_or_none
from .sampler import Sampler

__all__ = ["GpuSampler", "FastUNet", "UNetCallGraph", "build_gpu_unet", "GRAPH_ERRORS"]


class GpuSampler(Sampler):
    """``Sampler(ckpt, config, device=device, dtype=dtype)`` on the GPU path.

    ``device``: default ``"cuda"`` when available, else ``"cpu"``; ``dtype``: default bf16 on
    CUDA, fp32 on the CPU; ``use_graphs``: capture the loops (default: on CUDA);
    ``channels_last``: the decoder's activations channels-last."""

    def __init__(self, ckpt, config=None, *, device=None, dtype: torch.dtype | None = None,
                 channels_last: bool = True, use_graphs: bool | None = None):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.use_graphs = device.type == "cuda" if use_graphs is None else bool(use_graphs)
        if self.use_graphs and device.type != "cuda":
            raise ValueError("use_graphs=True needs a CUDA device")
        super().__init__(ckpt, config, device=device, dtype=dtype, impl="fast")
        self.executor = CudaGraphExecutor(use_graphs=self.use_graphs)
        if channels_last:
            self.autoencoder.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.decoders: dict[int, tuple] = {}

    @torch.inference_mode()
    def sample_latents(self, n: int, *, step_noise: torch.Tensor | None = None, eta: float = 0.0,
                       noise=None, generator=None, seed=None, skip=None, steps=None,
                       timesteps=None, eps_scale: float = 1.0, guidance=None) -> torch.Tensor:
        """As :meth:`Sampler.sample_latents`; ``step_noise`` ``(S, n, C, d, d)``: the noise of
        each step when ``eta > 0`` (instead of draws from ``seed`` / ``generator``)."""
        kw = dict(skip=skip, steps=steps, timesteps=timesteps, eta=eta, noise=noise,
                  generator=generator, seed=seed, eps_scale=eps_scale, guidance=guidance)
        if step_noise is None:
            return Sampler.sample_latents(self, n, **kw)
        seq = self.sequence(skip, steps, timesteps)
        if tuple(step_noise.shape) != (len(seq), n, *self.latent_shape):
            raise ValueError(f"step_noise must be {(len(seq), n, *self.latent_shape)}, got "
                             f"{tuple(step_noise.shape)}")
        zT = self.noise(noise, n, self.rng(n, generator, seed))
        x = self.denoise(zT, seq, eta, None, eps_scale=self.check_eps_scale(eps_scale),
                         guidance=self.resolve_guidance(guidance),
                         step_noise=lambda i: step_noise[i].to(self.device))
        return self.unstandardise(x)

    def unet_eps(self, z_t: torch.Tensor, t) -> torch.Tensor:
        """Noise prediction (fp32) for standardised latents, as ``Sampler.unet``."""
        return Sampler.unet(self, z_t, t)

    @torch.inference_mode()
    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> decoder output (fp32), the decoder captured per batch size."""
        n = z.shape[0]
        if n not in self.decoders:
            mf = torch.channels_last if self.channels_last else torch.contiguous_format
            buf = {"z": torch.zeros(n, *self.latent_shape, device=self.device,
                                    dtype=self.dtype).contiguous(memory_format=mf)}

            def body():
                buf["out"] = self.autoencoder.decode_logits(buf["z"])
            graph = capture_or_none(body, f"the decoder (batch {n})") if self.use_graphs else None
            self.decoders[n] = (graph, buf, body)
        graph, buf, body = self.decoders[n]
        buf["z"].copy_(self.check_latents(z))
        graph.replay() if graph is not None else body()
        return buf["out"].float()
