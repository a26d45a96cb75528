"""``Runtime``: one loaded D2C model ready for inference, with its engine's pieces public.

It holds the networks (autoencoder, prior U-Net, optional guide prior) in the chosen
implementation (``impl="ref"``: the official modules and cost; ``"fast"``: the inference plan),
device and dtype, and gives the steps every feature is built from: checked latents, the
latent standardisation, the prior's (guided) noise prediction, the DDIM loop through the
executor of the device (eager, or a captured CUDA graph), encoding, decoding and the mixture
draws. :class:`~d2c_fast.sampler.Sampler` is the user-facing facade over it; editing
(:mod:`d2c_fast.edit`) and conditional generation (:mod:`d2c_fast.conditional`) take a
``Runtime``.

Latents at this level are raw encoder-space latents (as the official code); the
standardisation ``x = (z - mean) / std`` is applied only inside the diffusion steps.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from .. import diffusion as D
from ..checkpoint import LoadedModel, load_model, model_fingerprint
from ..diffusion import BatchRNG, Guidance, chunks
from ..errors import CheckpointError
from ..images import check_output_type, load_images, to_output
from ..models import mixture
from ..models.plan import build_fast_autoencoder, build_fast_unet
from ..utils import finite_number
from .cuda import CudaGraphExecutor, build_gpu_unet

IMPLS = ("ref", "fast")
BUILTIN_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets",
                            "builtin.safetensors")


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` that this torch build can use, or ``ValueError``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, ...)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available (this torch build or "
                         f"machine has no usable GPU); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def open_model(ckpt, config=None) -> LoadedModel:
    """A ``LoadedModel`` as given, ``"builtin"``, or a checkpoint path (+ official config)."""
    if isinstance(ckpt, LoadedModel):
        return ckpt
    if isinstance(ckpt, str) and ckpt == "builtin":
        if not os.path.exists(BUILTIN_PATH):
            raise CheckpointError(BUILTIN_PATH, "the built-in model is not shipped in this build "
                                  "(it is produced by the training issue)")
        return load_model(BUILTIN_PATH, config)
    return load_model(ckpt, config)


class Runtime:
    """One D2C model on a device (see the module docstring; arguments as
    :class:`~d2c_fast.sampler.Sampler`)."""

    def __init__(self, ckpt, config=None, *, device="cpu", dtype=None, impl: str = "fast"):
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        device = check_device(device)
        loaded = open_model(ckpt, config)
        self.config = loaded.config
        self.fingerprint = model_fingerprint(loaded)            # fitted attributes record it
        self.legacy_fingerprint = model_fingerprint(loaded, legacy=True)
        self.impl = impl
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype}")
        self.latent_shape = tuple(self.config.latent_shape)
        self.resolution = self.config.resolution
        self.image_channels = self.config.autoencoder.image_channels
        self.num_bits = self.config.autoencoder.num_x_bits
        self.schedule = D.Schedule.from_config(self.config.schedule)
        self.num_timesteps = self.schedule.num_timesteps
        self.mean = loaded.mean.to(self.device)
        self.std = loaded.std.to(self.device)
        abar = torch.tensor([self.schedule.abar(t) for t in range(self.num_timesteps)],
                            dtype=torch.float64)
        #: per-timestep ``(sqrt(abar_t), sqrt(1 - abar_t))``, float32 on the device
        self.abar_coefs = (abar.sqrt().float().to(self.device),
                           (1 - abar).sqrt().float().to(self.device))
        ae, unet, guide = loaded.autoencoder, loaded.unet, loaded.guide
        self.executor = None
        if impl == "fast" and self.device.type == "cuda":
            # Triton U-Nets and the DDIM loop captured as CUDA graphs (runtime/cuda.py)
            ae = build_fast_autoencoder(ae)
            unet = build_gpu_unet(unet, dtype=self.dtype, device=self.device)
            guide = build_gpu_unet(guide, dtype=self.dtype, device=self.device) \
                if guide is not None else None
            self.executor = CudaGraphExecutor()
        elif impl == "fast":
            cl = self.device.type == "cpu"   # channels-last U-Nets: oneDNN at batch 1
            ae, unet = build_fast_autoencoder(ae), build_fast_unet(unet, channels_last=cl)
            guide = build_fast_unet(guide, channels_last=cl) if guide is not None else None
        self.autoencoder = ae.to(self.device, self.dtype)
        self.unet_model = unet.to(self.device, self.dtype)
        # autoguidance prior (config ``diffusion.guide``; not in the official release)
        self.guide_model = guide.to(self.device, self.dtype) if guide is not None else None
        self.guidance = self.config.guide_weight   # the model's recommended weight (1: none)
        # guidance rescale (phi, and the timesteps [lo, hi] where it applies; None: all) used
        # whenever guidance != 1; the model's recommendation, settable (0: off)
        self.guidance_rescale = self.config.guide_rescale
        self.guidance_rescale_t = self.config.guide_rescale_t
        self.bernoulli = self.autoencoder.bernoulli
        self.predict_v = self.config.unet.prediction == "v"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(resolution={self.resolution}, "
                f"latent={self.latent_shape}, impl={self.impl!r}, device={str(self.device)!r}, "
                f"dtype={self.dtype})")

    # ------------------------------------------------------------------ inputs
    def check_latents(self, z, name="latents") -> torch.Tensor:
        """``z`` (a tensor or numpy array) as checked raw latents ``(B, C, d, d)`` float32 on
        the device."""
        if isinstance(z, np.ndarray):
            z = torch.tensor(z)   # a copy: the array may be read-only
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} must be a tensor or numpy array, got {type(z).__name__}")
        if z.dim() == 3:
            z = z.unsqueeze(0)
        if z.dim() != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"{name} must be (B, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {z.dtype}")
        if z.device.type == "cpu" and not bool(torch.isfinite(z).all()):   # no GPU sync
            raise ValueError(f"{name} contain NaN or Inf")
        return z.to(self.device, torch.float32)

    def noise(self, noise, n: int, rng: BatchRNG, name="noise") -> torch.Tensor:
        """The given noise (checked, batch ``n``), or a draw from ``rng``."""
        if noise is None:
            return rng.randn(*self.latent_shape)
        noise = self.check_latents(noise, name)
        if noise.shape[0] != n:
            raise ValueError(f"{name} must have batch size {n}, got {tuple(noise.shape)}")
        return noise

    def rng(self, n: int, generator=None, seed: int | None = None,
            seeds=None) -> BatchRNG:
        """The batch RNG of ``n`` images on the device: ``seed`` (image ``i`` seeded
        ``seed + i``), explicit per-image ``seeds``, one ``generator``, or the global one."""
        if seeds is None:
            return BatchRNG(n, self.device, generator, seed)
        if generator is not None or seed is not None:
            raise ValueError("give seeds=, seed= or generator=, not several")
        if len(seeds) != n:
            raise ValueError(f"seeds: {len(seeds)} seeds for {n} images")
        return BatchRNG.from_seeds(seeds, self.device)

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the prior's standardised space ``(z - mean) / std``."""
        return (z - self.mean) / self.std

    def unstandardise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def sequence(self, skip=None, steps=None, timesteps=None) -> list[int]:
        """The sampling timesteps: ``timesteps`` checked, or ``skip`` (default 100) / ``steps``."""
        if timesteps is not None:
            if skip is not None or steps is not None:
                raise ValueError("give one of skip=, steps=, timesteps=")
            return D.check_sequence(timesteps, self.num_timesteps)
        if skip is None and steps is None:
            skip = 100
        return D.uncond_sequence(self.num_timesteps, skip=skip, steps=steps)

    # ------------------------------------------------------------------ the prior
    def _as_eps(self, net):
        """The network's fp32 noise prediction at standardised ``(x, t)``."""
        def eps(x, t):
            return net(x.to(self.dtype), t).float()
        return D.eps_from_v(eps, self.abar_coefs) if self.predict_v else eps

    def prior_eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prior's (unguided) fp32 noise prediction for standardised ``x`` at ``t`` (B,)."""
        return self._as_eps(self.unet_model)(x, t)

    def resolve_guidance(self, guidance) -> float:
        """``None`` -> the model's recommended weight; otherwise a finite number >= 0 (1: the
        prior alone, the official sampler), and != 1 only for a model with a guide prior."""
        if guidance is None:
            return self.guidance
        guidance = finite_number("guidance", guidance, ">= 0")
        if guidance != 1 and self.guide_model is None:
            raise ValueError(f"guidance={guidance} needs a model with a guide prior (config "
                             "'diffusion.guide'); this one has none, so only guidance=1 (or "
                             "None) is possible")
        return float(guidance)

    def guidance_for(self, weight: float) -> Guidance:
        """The :class:`~d2c_fast.diffusion.Guidance` that sampling with the resolved weight
        uses (this runtime's rescale settings, validated)."""
        return Guidance.checked(weight, self.guidance_rescale, self.guidance_rescale_t,
                                self.num_timesteps)

    def set_guidance_rescale(self, phi: float, t_range=None) -> None:
        """Set ``guidance_rescale`` / ``guidance_rescale_t`` together, validated now (a bad
        value raises ``ValueError`` here and leaves both unchanged)."""
        D.check_rescale(phi, t_range, self.num_timesteps)
        self.guidance_rescale, self.guidance_rescale_t = phi, t_range

    def sampling_record(self, guidance: float) -> dict:
        """What a sample drawn with the resolved weight ``guidance`` was drawn with, as JSON
        fields: ``guidance``, ``guidance_rescale`` (phi in use) and ``guidance_rescale_t``
        (its timestep range, ``None``: all)."""
        return self.guidance_for(guidance).record()

    @staticmethod
    def check_eps_scale(eps_scale) -> float:
        return finite_number("eps_scale", eps_scale, "> 0")

    def eps_fn(self, guidance: float = 1.0, eps_scale: float = 1.0):
        """The noise prediction sampling calls: the prior, autoguided with the guide prior
        when ``guidance`` != 1 (with this runtime's rescale), divided by ``eps_scale``."""
        g = self.guidance_for(guidance)
        guide = self._as_eps(self.guide_model) if self.guide_model is not None else None
        return g.eps_fn(self._as_eps(self.unet_model), guide, self.abar_coefs,
                        eps_scale=eps_scale)

    def denoise(self, x: torch.Tensor, seq: Sequence[int], eta: float, rng: BatchRNG | None, *,
                progress: bool = False, eps_scale: float = 1.0, guidance: float = 1.0,
                step_noise=None, eps_map=None, after_step=None) -> torch.Tensor:
        """DDIM from standardised ``x`` at ``seq[-1]`` to a clean standardised sample, through
        this device's executor (a captured CUDA graph on the GPU path; eager otherwise, and
        with a progress bar). Step noise (``eta > 0``) comes from ``step_noise(i)`` if given,
        else from ``rng``, one draw per step. ``eps_map(x, t, eps)`` rewrites each noise
        prediction and ``after_step(i, x)`` each step's result (masked, guided edits,
        :mod:`d2c_fast.edit`); with either the loop runs eagerly."""
        finite_number("eta", eta, ">= 0")
        steps = D.DDIMSteps(self.schedule, seq, eta)
        eps = self.eps_fn(guidance, eps_scale)
        if eps_map is not None:
            base = eps
            eps = lambda x, t: eps_map(x, t, base(x, t))   # noqa: E731
        draw = None
        if steps.with_noise:
            draw = step_noise or (lambda i: rng.randn(*self.latent_shape))
        if self.executor is not None and not progress and eps_map is None \
                and after_step is None:
            key = (guidance, self.guidance_rescale, str(self.guidance_rescale_t), eps_scale)
            return self.executor.run(eps, key, x, steps, draw)
        bar = None
        if progress:
            from tqdm.auto import tqdm   # optional: only for progress bars
            bar = tqdm(total=len(steps), desc="DDIM", unit="step", leave=False)
        try:
            return D.ddim_loop(eps, x, steps, step_noise=draw, impl=self.impl,
                               callback=(lambda i: bar.update(1)) if bar is not None else None,
                               after_step=after_step)
        finally:
            if bar is not None:
                bar.close()

    def sample_latents_from(self, n: int, seq, eta, rng: BatchRNG, noise=None,
                            batch_size=None, progress=False, eps_scale: float = 1.0,
                            guidance: float = 1.0) -> torch.Tensor:
        """``n`` raw latents by DDIM over ``seq`` from ``noise`` (or draws of ``rng``), in
        chunks of ``batch_size``; arguments already resolved."""
        zT = self.noise(noise, n, rng)
        out = []
        for a, b in chunks(n, batch_size):
            x = self.denoise(zT[a:b], seq, eta, rng.slice(a, b), progress=progress,
                             eps_scale=eps_scale, guidance=guidance)
            out.append(self.unstandardise(x))
        return torch.cat(out)

    # ------------------------------------------------------------------ networks
    def load_images(self, images, *, resize: bool = False) -> torch.Tensor:
        """Images as this model takes them: float32 ``(B, C, R, R)`` in [0, 1] on its device,
        ``C`` and ``R`` the model's (:func:`d2c_fast.images.load_images` with the model's
        size and channels). A size other than the model's resolution is an ``ImageError``
        unless ``resize=True``."""
        return load_images(images, size=self.resolution, resize=resize,
                           channels=self.image_channels, device=self.device)

    @torch.inference_mode()
    def encode(self, images, *, resize: bool = False, batch_size: int | None = None) -> torch.Tensor:
        """Images -> raw latents ``(B, C, d, d)`` float32.

        ``images``: float tensor ``(B, C, H, W)`` in [0, 1], uint8 tensor/array, PIL image(s),
        file path(s), or a list of these (see :func:`d2c_fast.images.load_images`). A size other
        than the model's resolution is an ``ImageError`` unless ``resize=True``.
        """
        x = self.load_images(images, resize=resize)
        out = [self.autoencoder.encode(x[a:b].to(self.dtype)).float()
               for a, b in chunks(x.shape[0], batch_size)]
        return torch.cat(out)

    @torch.inference_mode()
    def decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> decoder output ``(B, 100, H, W)`` float32 (mixture-of-logistics
        parameters; ``(B, 1, H, W)`` Bernoulli logits for an MNIST model).

        The memory format is the decoder's: channels-last for ``impl="fast"`` on CPU (its
        convolutions' layout; a transpose to NCHW would cost ~10% of the decoder), contiguous
        NCHW for ``impl="ref"``. Call ``.contiguous()`` where a consumer needs NCHW."""
        return self.logits(self.check_latents(latents))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Checked raw latents -> fp32 logits in the decoder's layout."""
        return self.autoencoder.decode_logits(z.to(self.dtype)).float()

    def decode_draws(self, rng: BatchRNG) -> tuple:
        """The uniforms a sampled decode of ``rng.n`` images takes from ``rng`` (what
        :meth:`logits_to_images` draws itself when not given them)."""
        R = self.resolution
        if self.bernoulli:
            return (rng.rand(self.image_channels, R, R),)
        return (rng.rand(mixture.NUM_MIX, R, R) * (1 - 2e-5) + 1e-5,
                rng.rand(3, R, R) * (1 - 2e-5) + 1e-5)

    def logits_to_images(self, logits, mode, rng: BatchRNG | None, draws=None) -> torch.Tensor:
        """Decoder logits -> images in [0, 1]: the mixture's mode, or a draw from ``rng``
        (``draws``: the uniforms of :meth:`decode_draws`, to decode two latents of an image
        with the same draws)."""
        if mode not in ("sample", "mode"):
            raise ValueError(f"mode must be 'sample' or 'mode', got {mode!r}")
        if mode == "sample" and draws is None:
            draws = self.decode_draws(rng)
        if self.bernoulli:
            p = torch.sigmoid(logits)
            if mode == "mode":
                return p
            return (draws[0] < p).float()
        if mode == "mode":
            return mixture.mode(logits)
        u_mix, u_pix = draws
        if self.impl == "fast":
            return mixture.sample_selected(logits, (u_mix, u_pix))
        return mixture.sample(logits, uniforms=(u_mix, u_pix))

    def decode_with(self, z: torch.Tensor, mode: str, rng: BatchRNG,
                    batch_size: int | None = None) -> torch.Tensor:
        """Checked raw latents -> images, chunk by chunk, drawing from ``rng``."""
        out = []
        for a, b in chunks(z.shape[0], batch_size):
            out.append(self.logits_to_images(self.logits(z[a:b]), mode, rng.slice(a, b)))
        return torch.cat(out)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, *, mode: str = "sample", generator=None,
               seed: int | None = None, batch_size: int | None = None,
               output_type: str = "pt"):
        """Raw latents (tensor or numpy array) -> images ``(B, C, H, W)`` in [0, 1].

        ``mode="sample"`` draws from the mixture (the official decode; draws come from
        ``seed``/``generator`` on the model's device); ``mode="mode"`` is deterministic (each
        pixel's most probable component's mean). ``output_type``: ``"pt"`` (this tensor),
        ``"np"`` (float32 ``(B, H, W, C)`` array) or ``"pil"`` (list of PIL images), see
        :func:`d2c_fast.images.to_output`."""
        check_output_type(output_type)
        z = self.check_latents(latents)
        return to_output(self.decode_with(z, mode, self.rng(z.shape[0], generator, seed),
                                          batch_size), output_type)

    @torch.inference_mode()
    def unet(self, z_t: torch.Tensor, t) -> torch.Tensor:
        """The U-Net's noise prediction for standardised noisy latents ``z_t`` at timesteps
        ``t`` (a number or a ``(B,)`` tensor, float or int). A v-prediction model's output is
        converted: ``eps = sqrt(1 - abar_t) z_t + sqrt(abar_t) v`` (integer ``t``)."""
        x = self.check_latents(z_t, "z_t")
        tt = torch.as_tensor(t, dtype=torch.float32)
        if tt.device.type == "cpu" and not bool(((tt >= 0) & (tt <= self.num_timesteps - 1)).all()):
            raise ValueError(f"t must be in [0, {self.num_timesteps - 1}] (the model's "
                             f"timesteps), got {t!r}")
        tt = tt.to(self.device)
        if tt.dim() == 0:
            tt = tt.expand(x.shape[0])
        if tt.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(tt.shape)}")
        return self.prior_eps(x, tt)


__all__ = ["Runtime", "IMPLS", "BUILTIN_PATH", "check_device", "open_model"]
