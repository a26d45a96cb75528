"""``Sampler``: the public API over one D2C model (encode, decode, sample, manipulate).

Latents returned here are raw encoder-space latents (as the official code); the latent
standardisation ``mod(z) = (z - mean) / std`` is applied only inside the diffusion steps.

Randomness: every method that draws takes ``seed=`` (per-image generators seeded
``seed + index``, so an image does not depend on the batch size or its position), or
``generator=`` (one ``torch.Generator`` for the whole batch), or explicit noise. Without any
of them, torch's global RNG is used.
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import Sequence

import torch

from . import diffusion as D
from .attributes import Attribute
from .checkpoint import LoadedModel, load_model
from .errors import CheckpointError, ConfigError
from .models import mixture

_IMPLS = ("ref", "fast")
_BUILTIN = os.path.join(os.path.dirname(__file__), "assets", "builtin.safetensors")


class _RNG:
    """Per-image generators (``seed + i``), one shared generator, or the global RNG."""

    def __init__(self, n: int, device: torch.device, generator=None, seed=None):
        if generator is not None and seed is not None:
            raise ValueError("give generator= or seed=, not both")
        self.n, self.device = n, device
        self.gens = None
        self.generator = generator
        if seed is not None:
            if not isinstance(seed, int):
                raise TypeError(f"seed must be an int, got {type(seed).__name__}")
            if not (-2 ** 63 <= seed and seed + n <= 2 ** 64):
                raise ValueError(f"seed must be a 64-bit integer (image i uses seed + i, so at "
                                 f"most 2**64 - {n} here), got {seed}")
            self.gens = []
            for i in range(n):
                g = torch.Generator(device=device)
                g.manual_seed(seed + i)
                self.gens.append(g)

    def _draw(self, fn, shape, g):
        dev = g.device if g is not None else self.device
        out = fn(shape, generator=g, device=dev)
        return out.to(self.device)

    def randn(self, *shape) -> torch.Tensor:
        if self.gens is not None:
            return torch.stack([self._draw(torch.randn, shape, g) for g in self.gens])
        return self._draw(torch.randn, (self.n, *shape), self.generator)

    def rand(self, *shape) -> torch.Tensor:
        if self.gens is not None:
            return torch.stack([self._draw(torch.rand, shape, g) for g in self.gens])
        return self._draw(torch.rand, (self.n, *shape), self.generator)


def _finite_number(name: str, v, bound: str) -> float:
    """``v`` as a float if it is a real number (not a bool), finite, and ``> 0`` or ``>= 0``
    (``bound``); otherwise ``ValueError`` naming ``name``."""
    ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
          and (v > 0 if bound == "> 0" else v >= 0))
    if not ok:
        raise ValueError(f"{name} must be a finite number {bound}, got {v!r}")
    return float(v)


def _check_device(device) -> torch.device:
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


class Sampler:
    """One D2C model ready for inference.

    Args:
        ckpt: an official ``model.ckpt`` (then ``config`` is the official YAML), a native
            ``.safetensors`` file (config inside), or ``"builtin"``.
        config: path to the official YAML / our JSON, a dict, or a ``ModelConfig``.
        device: where to run (``"cpu"``, ``"cuda"``, ...).
        dtype: compute dtype of the networks (default float32). DDIM arithmetic, the latent
            standardisation and the mixture head always run in float32.
        impl: ``"ref"`` runs the reference modules exactly as the official code (weight norm
            recomputed per call, unfolded BatchNorm); ``"fast"`` runs the inference plan.
    """

    def __init__(self, ckpt, config=None, *, device="cpu", dtype=None, impl: str = "fast"):
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        device = _check_device(device)
        if isinstance(ckpt, LoadedModel):
            loaded = ckpt
        elif isinstance(ckpt, str) and ckpt == "builtin":
            if not os.path.exists(_BUILTIN):
                raise CheckpointError(_BUILTIN, "the built-in model is not shipped in this build "
                                      "(it is produced by the training issue)")
            loaded = load_model(_BUILTIN, config)
        else:
            loaded = load_model(ckpt, config)
        self.config = loaded.config
        from .attributes import model_fingerprint  # fitted attributes record it (fp32 weights)
        self._fingerprint = model_fingerprint(loaded)
        self._legacy_fingerprint = model_fingerprint(loaded, legacy=True)
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
        # (sqrt(abar_t), sqrt(1 - abar_t)) per timestep, fp32. v-prediction U-Nets:
        # eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v
        abar = torch.tensor([self.schedule.abar(t) for t in range(self.num_timesteps)],
                            dtype=torch.float64)
        self._abar_coefs = (abar.sqrt().float().to(self.device),
                            (1 - abar).sqrt().float().to(self.device))
        self._v_coefs = self._abar_coefs if self.config.unet.prediction == "v" else None
        ae, unet, guide = loaded.autoencoder, loaded.unet, loaded.guide
        if impl == "fast":
            from .models.plan import build_fast_autoencoder, build_fast_unet
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
        self._gpu = None
        if impl == "fast" and self.device.type == "cuda":
            # Triton U-Net + graph-captured DDIM loop (d2c_fast/gpu.py)
            from .gpu import attach_gpu_path
            attach_gpu_path(self, loaded)

    def __repr__(self) -> str:
        return (f"Sampler(resolution={self.resolution}, latent={self.latent_shape}, "
                f"impl={self.impl!r}, device={str(self.device)!r}, dtype={self.dtype})")

    # ------------------------------------------------------------------ helpers
    def _latents(self, z, name="latents") -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(z).__name__}")
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

    def _noise(self, noise, n, rng: _RNG, name="noise") -> torch.Tensor:
        if noise is None:
            return rng.randn(*self.latent_shape)
        noise = self._latents(noise, name)
        if noise.shape[0] != n:
            raise ValueError(f"{name} must have batch size {n}, got {tuple(noise.shape)}")
        return noise

    def _mod(self, z):
        return (z - self.mean) / self.std

    def _unmod(self, z):
        return z * self.std + self.mean

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._as_eps(self.unet_model(x.to(self.dtype), t).float(), x, t)

    def _guided_eps(self, guidance: float, eps_scale: float = 1.0):
        """The prior's noise prediction as sampling uses it: autoguidance
        ``eps_g + w (eps - eps_g)`` with the guide prior when ``guidance`` w != 1 (then with
        guidance rescale, :func:`rescale_guided_eps`, where ``guidance_rescale`` > 0),
        divided by ``eps_scale``."""
        phi, t_range = self._rescale_in_use(guidance)

        def model(x, t):
            e = self._eps(x, t)
            if guidance != 1.0:
                eg = self._as_eps(self.guide_model(x.to(self.dtype), t).float(), x, t)
                g = eg + guidance * (e - eg)
                if phi > 0:
                    g = rescale_guided_eps(g, e, x, t, self._abar_coefs, phi, t_range)
                e = g
            return e / eps_scale if eps_scale != 1.0 else e
        return model

    def _check_rescale(self):
        """``(phi, t_range)`` of ``guidance_rescale`` / ``guidance_rescale_t``, validated."""
        from .config import check_guidance_rescale
        try:
            return check_guidance_rescale(self.guidance_rescale, self.guidance_rescale_t,
                                          self.num_timesteps)
        except ConfigError as e:
            raise ValueError(f"Sampler.guidance_{e.field}: {e.cause}") from None

    def _rescale_in_use(self, guidance: float):
        """``(phi, t_range)`` that sampling with the resolved weight ``guidance`` applies:
        ``(0.0, None)`` for ``guidance == 1`` (no guide, nothing to rescale)."""
        return self._check_rescale() if guidance != 1.0 else (0.0, None)

    def set_guidance_rescale(self, phi: float, t_range=None) -> None:
        """Set ``guidance_rescale`` / ``guidance_rescale_t`` together, validated now (a bad
        value raises ``ValueError`` here and leaves both unchanged)."""
        old = self.guidance_rescale, self.guidance_rescale_t
        self.guidance_rescale, self.guidance_rescale_t = phi, t_range
        try:
            self._check_rescale()
        except ValueError:
            self.guidance_rescale, self.guidance_rescale_t = old
            raise

    def sampling_record(self, guidance: float) -> dict:
        """What a sample drawn with the resolved weight ``guidance`` was drawn with, as JSON
        fields: ``guidance``, ``guidance_rescale`` (phi in use) and ``guidance_rescale_t``
        (its timestep range, ``None``: all)."""
        phi, t_range = self._rescale_in_use(guidance)
        return {"guidance": guidance, "guidance_rescale": phi,
                "guidance_rescale_t": list(t_range) if t_range is not None else None}

    def _check_guidance(self, guidance) -> float:
        """``None`` -> the model's recommended weight; otherwise a finite number >= 0 (1: the
        prior alone, the official sampler), and != 1 only for a model with a guide prior."""
        if guidance is None:
            return self.guidance
        guidance = _finite_number("guidance", guidance, ">= 0")
        if guidance != 1 and self.guide_model is None:
            raise ValueError(f"guidance={guidance} needs a model with a guide prior (config "
                             "'diffusion.guide'); this one has none, so only guidance=1 (or "
                             "None) is possible")
        return float(guidance)

    def _as_eps(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The U-Net's fp32 output at ``(x, t)`` as a noise prediction (v models converted)."""
        if self._v_coefs is None:
            return out
        sa, s1 = (c.index_select(0, t.long()).view(-1, 1, 1, 1) for c in self._v_coefs)
        return s1 * x.float() + sa * out

    @staticmethod
    def _chunks(n: int, batch_size: int | None):
        if batch_size is None or batch_size >= n:
            yield 0, n
            return
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for s in range(0, n, batch_size):
            yield s, min(n, s + batch_size)

    # ------------------------------------------------------------------ networks
    @torch.inference_mode()
    def encode(self, images, *, resize: bool = False, batch_size: int | None = None) -> torch.Tensor:
        """Images -> raw latents ``(B, C, d, d)`` float32.

        ``images``: float tensor ``(B, C, H, W)`` in [0, 1], uint8 tensor/array, PIL image(s),
        file path(s), or a list of these (see :func:`d2c_fast.images.load_images`). A size other
        than the model's resolution is an ``ImageError`` unless ``resize=True``.
        """
        from .images import load_images
        x = load_images(images, size=self.resolution, resize=resize,
                        channels=self.image_channels, device=self.device)
        out = [self.autoencoder.encode(x[a:b].to(self.dtype)).float()
               for a, b in self._chunks(x.shape[0], batch_size)]
        return torch.cat(out)

    @torch.inference_mode()
    def decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> decoder output ``(B, 100, H, W)`` float32 (mixture-of-logistics
        parameters; ``(B, 1, H, W)`` Bernoulli logits for an MNIST model).

        The memory format is the decoder's: channels-last for ``impl="fast"`` on CPU (its
        convolutions' layout; a transpose to NCHW would cost ~10% of the decoder), contiguous
        NCHW for ``impl="ref"``. Call ``.contiguous()`` where a consumer needs NCHW."""
        return self._decode_logits(self._latents(latents))

    def _decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Checked raw latents -> fp32 logits in the decoder's layout."""
        return self.autoencoder.decode_logits(z.to(self.dtype)).float()

    def _logits_to_images(self, logits, mode, rng: _RNG | None) -> torch.Tensor:
        if mode not in ("sample", "mode"):
            raise ValueError(f"mode must be 'sample' or 'mode', got {mode!r}")
        if self.bernoulli:
            p = torch.sigmoid(logits)
            if mode == "mode":
                return p
            return (rng.rand(*p.shape[1:]) < p).float()
        if mode == "mode":
            return mixture.mode(logits)
        B, _, H, W = logits.shape
        u_mix = rng.rand(mixture.NUM_MIX, H, W) * (1 - 2e-5) + 1e-5
        u_pix = rng.rand(3, H, W) * (1 - 2e-5) + 1e-5
        if self.impl == "fast":
            return mixture.sample_selected(logits, (u_mix, u_pix))
        return mixture.sample(logits, uniforms=(u_mix, u_pix))

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, *, mode: str = "sample", generator=None,
               seed: int | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Raw latents -> images ``(B, C, H, W)`` in [0, 1].

        ``mode="sample"`` draws from the mixture (the official decode; draws come from
        ``seed``/``generator`` on the model's device); ``mode="mode"`` is deterministic (each
        pixel's most probable component's mean)."""
        z = self._latents(latents)
        rng = _RNG(z.shape[0], self.device, generator, seed)
        out = []
        for a, b in self._chunks(z.shape[0], batch_size):
            logits = self._decode_logits(z[a:b])
            sub = _SubRNG(rng, a, b)
            out.append(self._logits_to_images(logits, mode, sub))
        return torch.cat(out)

    @torch.inference_mode()
    def unet(self, z_t: torch.Tensor, t) -> torch.Tensor:
        """The U-Net's noise prediction for standardised noisy latents ``z_t`` at timesteps
        ``t`` (a number or a ``(B,)`` tensor, float or int). A v-prediction model's output is
        converted: ``eps = sqrt(1 - abar_t) z_t + sqrt(abar_t) v`` (integer ``t``)."""
        x = self._latents(z_t, "z_t")
        tt = torch.as_tensor(t, dtype=torch.float32)
        if tt.device.type == "cpu" and not bool(((tt >= 0) & (tt <= self.num_timesteps - 1)).all()):
            raise ValueError(f"t must be in [0, {self.num_timesteps - 1}] (the model's "
                             f"timesteps), got {t!r}")
        tt = tt.to(self.device)
        if tt.dim() == 0:
            tt = tt.expand(x.shape[0])
        if tt.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(tt.shape)}")
        return self._eps(x, tt)

    # ------------------------------------------------------------------ generation
    def _uncond_seq(self, skip, steps, timesteps) -> list[int]:
        if timesteps is not None:
            if skip is not None or steps is not None:
                raise ValueError("give one of skip=, steps=, timesteps=")
            return D.check_sequence(timesteps, self.num_timesteps)
        if skip is None and steps is None:
            skip = 100
        return D.uncond_sequence(self.num_timesteps, skip=skip, steps=steps)

    def _run_ddim(self, x, seq, eta, rng: _RNG, progress, eps_scale: float = 1.0,
                  guidance: float = 1.0):
        _finite_number("eta", eta, ">= 0")
        model = self._eps
        if eps_scale != 1.0 or guidance != 1.0:
            model = self._guided_eps(guidance, eps_scale)
        elif self._gpu is not None and not progress:
            return self._gpu.run_ddim(x, seq, eta, lambda i: rng.randn(*self.latent_shape))
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(seq), desc="DDIM", unit="step", leave=False)
        try:
            return D.ddim(model, x, seq, self.schedule, eta=eta,
                          step_noise=(lambda i: rng.randn(*self.latent_shape)) if eta > 0 else None,
                          progress=bar)
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def _check_eps_scale(eps_scale) -> float:
        return _finite_number("eps_scale", eps_scale, "> 0")

    def _sample_latents(self, n, seq, eta, rng: _RNG, noise, batch_size, progress,
                        eps_scale: float = 1.0, guidance: float = 1.0):
        zT = self._noise(noise, n, rng)
        out = []
        for a, b in self._chunks(n, batch_size):
            x = self._run_ddim(zT[a:b], seq, eta, _SubRNG(rng, a, b), progress, eps_scale,
                               guidance)
            out.append(self._unmod(x))
        return torch.cat(out)

    @torch.inference_mode()
    def sample_latents(self, n: int, *, skip: int | None = None, steps: int | None = None,
                       timesteps: Sequence[int] | None = None, eta: float = 0.0,
                       generator=None, seed: int | None = None, noise: torch.Tensor | None = None,
                       batch_size: int | None = None, progress: bool = False,
                       eps_scale: float = 1.0, guidance: float | None = None) -> torch.Tensor:
        """Sample raw latents ``(n, C, d, d)`` from the diffusion prior with DDIM.

        Sequence: ``skip`` (default 100: the official ``range(0, T-1, skip) + [T-1]``), or
        ``steps`` evenly spaced U-Net calls, or explicit ``timesteps``. ``eta >= 0`` (0:
        deterministic DDIM). ``noise``: the starting noise ``(n, C, d, d)``; otherwise drawn
        from ``seed`` / ``generator``. ``eps_scale``: every noise prediction is divided by it
        (1: the official sampler; slightly above 1 counters the exposure bias of an imperfect
        prior, "epsilon scaling", Ning et al. 2024, measured in docs/quality/README.md;
        on a GPU a value other than 1 runs the eager DDIM loop, not the captured graph).
        ``guidance``: autoguidance weight w for models with a guide prior (config
        ``diffusion.guide``; Karras et al. 2024): ``eps_guide + w (eps - eps_guide)``. ``None``
        (default): the model's recommended weight (``Sampler.guidance``; 1 for models without
        a guide, such as every official checkpoint); 1: the prior alone, the official sampler.
        Costs one guide U-Net call per step; eager on a GPU like ``eps_scale``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        eps_scale = self._check_eps_scale(eps_scale)
        guidance = self._check_guidance(guidance)
        seq = self._uncond_seq(skip, steps, timesteps)
        rng = _RNG(n, self.device, generator, seed)
        return self._sample_latents(n, seq, eta, rng, noise, batch_size, progress, eps_scale,
                                    guidance)

    @torch.inference_mode()
    def sample(self, n: int, *, skip: int | None = None, steps: int | None = None,
               timesteps: Sequence[int] | None = None, eta: float = 0.0, generator=None,
               seed: int | None = None, noise: torch.Tensor | None = None, mode: str = "sample",
               batch_size: int | None = None, progress: bool = False,
               eps_scale: float = 1.0, guidance: float | None = None) -> torch.Tensor:
        """Unconditional images ``(n, C, H, W)`` in [0, 1]: :meth:`sample_latents` then decode
        (``mode`` as in :meth:`decode`). With ``seed``, each image's decode draws continue its
        own generator, so image ``i`` depends only on ``seed + i``. ``eps_scale`` and
        ``guidance`` as in :meth:`sample_latents`."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        eps_scale = self._check_eps_scale(eps_scale)
        guidance = self._check_guidance(guidance)
        seq = self._uncond_seq(skip, steps, timesteps)
        rng = _RNG(n, self.device, generator, seed)
        z = self._sample_latents(n, seq, eta, rng, noise, batch_size, progress, eps_scale,
                                 guidance)
        out = []
        for a, b in self._chunks(n, batch_size):
            logits = self._decode_logits(z[a:b])
            out.append(self._logits_to_images(logits, mode, _SubRNG(rng, a, b)))
        return torch.cat(out)

    # ------------------------------------------------------------------ editing
    @torch.inference_mode()
    def manipulate_latents(self, z: torch.Tensor, attr, *, step=None, strength=None,
                           target=None, t0: int = 50, skip: int | None = None,
                           method: str = "d2c", preserve=None,
                           noise: torch.Tensor | None = None, generator=None,
                           seed: int | None = None, eta: float = 0.0,
                           guidance: float | None = None) -> torch.Tensor:
        """The D2C edit in latent space (official ``manipulate_latent`` + ``postprocess_latent``):
        ``zm = z - step * boundary``; noise ``mod(zm)`` to ``t0``; DDIM over
        ``range(0, t0 + 1, skip)`` (``skip`` default 50); ``unmod``. Returns raw latents.

        ``attr``: an :class:`Attribute`, a path, a tensor, or a list of them (with a list of
        ``step``/``strength`` values). ``step``: official raw step(s). ``strength``:
        calibrated units (fitted attributes): the classifier's logit changes by ``strength``
        (before the clean-up). ``target``: a logit (or ``"typical"``) each image is taken to,
        its own strength per image (see :mod:`d2c_fast.edit`). ``preserve``: fitted
        attributes whose logits the edit must not change. ``method``: ``"d2c"`` (default),
        ``"nvae"`` (step only) or ``"ddim"`` (DDIM inversion over the sampling sequence with
        ``skip`` default 100, step in noise space, regenerate). ``guidance``: the d2c
        clean-up's autoguidance weight for models with a guide prior (default ``None``: the
        model's recommended weight, as :meth:`sample_latents`; 1: unguided, the official edit;
        the other methods are unguided). See :mod:`d2c_fast.edit`."""
        from .edit import manipulate_latents
        return manipulate_latents(self, z, attr, step=step, strength=strength, target=target,
                                  t0=t0, skip=skip, method=method, preserve=preserve,
                                  noise=noise, generator=generator, seed=seed, eta=eta,
                                  guidance=guidance)

    @torch.inference_mode()
    def manipulate(self, images, attr, *, step=None, t0: int = 50, skip: int | None = None,
                   mode: str = "sample", noise=None, generator=None, seed: int | None = None,
                   resize: bool = False, batch_size: int | None = None, strength=None,
                   target=None, method: str = "d2c", preserve=None,
                   guidance: float | None = None) -> torch.Tensor:
        """Edit images along attribute(s): encode, :meth:`manipulate_latents`, decode.
        Returns images ``(B, C, H, W)`` in [0, 1]. ``step`` is the official raw step
        (``z - step * boundary``); ``strength`` (calibrated logit units, ``> 0`` adds the
        attribute) needs an attribute fitted with a classifier (:meth:`fit_attribute`) and is
        not available for plain boundary files; ``target`` (fitted attributes) takes each
        image's logit to a value, e.g. ``"typical"``. ``t0``/``skip``/``method``/``preserve``/
        ``guidance`` as in :meth:`manipulate_latents`."""
        from .edit import manipulate
        return manipulate(self, images, attr, step=step, strength=strength, target=target,
                          t0=t0, skip=skip, method=method, preserve=preserve, mode=mode,
                          noise=noise, generator=generator, seed=seed, resize=resize,
                          batch_size=batch_size, guidance=guidance)

    # ------------------------------------------------------------------ attributes
    @property
    def fingerprint(self) -> str:
        """``"<config hash>-<weights hash>"`` of this model (see
        :func:`d2c_fast.attributes.model_fingerprint`); fitted attributes record it."""
        return self._fingerprint

    @property
    def legacy_fingerprint(self) -> str:
        """The fingerprint attribute files written before 2026-11-29 recorded for this model
        (``model_fingerprint(..., legacy=True)``); they keep loading on it."""
        return self._legacy_fingerprint

    def fit_attribute(self, positives, negatives=None, *, unlabelled=None, name=None,
                      prior=None, l2_grid=None, folds: int = 5, seed: int = 0,
                      batch_size: int = 256, flip: bool | None = None,
                      resize: bool = False) -> Attribute:
        """Fit an attribute (linear classifier on standardised latents) from labelled
        ``positives``/``negatives``, or positives + ``unlabelled`` (PU mode). Inputs are
        images (anything :meth:`encode` accepts; ``resize=True`` brings other sizes to the
        model's) or raw latents; labelled images are also used mirrored unless
        ``flip=False``. See :func:`d2c_fast.attributes.fit_attribute`."""
        from .attributes import DEFAULT_L2_GRID, fit_attribute
        return fit_attribute(self, positives, negatives, unlabelled=unlabelled, name=name,
                             prior=prior, l2_grid=DEFAULT_L2_GRID if l2_grid is None else l2_grid,
                             folds=folds, seed=seed, batch_size=batch_size, flip=flip,
                             resize=resize)

    @torch.inference_mode()
    def sample_conditional(self, attrs, n: int, *, seed: int = 0, batch_size: int = 64,
                           max_draws: int | None = None, threshold=None,
                           return_probs: bool = True, skip: int = 100, mode: str = "sample",
                           return_stats: bool = False, progress: bool = False,
                           eps_scale: float = 1.0, guidance: float | None = None,
                           adapt_prior: int = 0):
        """Conditional samples by the paper's rejection sampling: prior latents (DDIM,
        ``skip``) accepted with the classifier's probability (product over ``attrs``), or
        when every probability is ``>= threshold``. Returns ``images`` or ``(images, probs)``
        (``probs`` ``(n, len(attrs))``), plus ``stats`` with ``return_stats``. Image ``k``
        depends only on ``(seed, k)``. ``RareAttributeError`` (a ``ValueError``) with the
        observed acceptance rate when ``max_draws`` (default ``100 * n + 1000``) is not
        enough. ``eps_scale``, ``guidance``: as in :meth:`sample_latents`.
        ``adapt_prior=N``: first re-base each classifier on the attribute's rate among ``N``
        pilot prior samples (EM; label shift), so the probabilities are calibrated for the
        model's samples rather than the data (0, default: the classifiers as given; the
        prior a fit assumed otherwise, e.g. 0.5 for 50 + 50 labels without ``prior=``).
        Costs ``N`` prior samples once per call (512: 15.8 s on the built-in model, 2 CPU
        threads; docs/quality/README.md).
        See :mod:`d2c_fast.conditional`."""
        from .conditional import sample_conditional
        return sample_conditional(self, attrs, n, seed=seed, batch_size=batch_size,
                                  max_draws=max_draws, threshold=threshold,
                                  return_probs=return_probs, skip=skip, mode=mode,
                                  return_stats=return_stats, progress=progress,
                                  eps_scale=eps_scale, guidance=guidance,
                                  adapt_prior=adapt_prior)


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


class _SubRNG(_RNG):
    """Images ``[a, b)`` of a batch RNG (per-image generators keep their identity)."""

    def __init__(self, parent: _RNG, a: int, b: int):
        self.n, self.device = b - a, parent.device
        self.generator = parent.generator
        self.gens = parent.gens[a:b] if parent.gens is not None else None


__all__ = ["Sampler", "Attribute"]
