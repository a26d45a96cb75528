"""``Sampler``: the public API over one D2C model (encode, decode, sample, manipulate, fit
attributes, conditional samples): a thin facade over :class:`d2c_fast.runtime.Runtime`, which
holds the networks and the engine's steps, and the feature modules (:mod:`d2c_fast.edit`,
:mod:`d2c_fast.conditional`, :mod:`d2c_fast.attributes`).

Latents returned here are raw encoder-space latents (as the official code); the latent
standardisation ``mod(z) = (z - mean) / std`` is applied only inside the diffusion steps.

Randomness (:class:`d2c_fast.diffusion.BatchRNG`): every method that draws takes ``seed=``
(image ``i`` of a call gets its own generator seeded ``seed + i``: it does not depend on the
batch size or ``batch_size=``, but the same input at another position ``i`` gets another
seed), or ``generator=`` (one ``torch.Generator`` for the whole batch), or explicit noise.
Without any of them, torch's global RNG is used.

Image-returning methods (``sample``, ``manipulate``, ``decode``, ``sample_conditional``) take
``output_type="pt" | "np" | "pil"`` as diffusers' pipelines: a float32 tensor ``(B, C, H, W)``
in [0, 1] (default), a float32 numpy array ``(B, H, W, C)`` in [0, 1], or a list of PIL
images (:func:`d2c_fast.images.to_output`). Image inputs may be tensors, numpy arrays, PIL
images or paths (:func:`d2c_fast.images.load_images`); latents tensors or numpy arrays.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from . import conditional as C
from . import edit as E
from .attributes import DEFAULT_L2_GRID, Attribute, fit_attribute
from .images import check_output_type, to_output
from .runtime import Runtime


class Sampler(Runtime):
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

    # The engine's pieces (encode, decode, decode_logits, unet, the DDIM loop, guidance,
    # checks) are Runtime's public methods; what follows are the features built on them.

    # ------------------------------------------------------------------ generation
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
        eps_scale = self.check_eps_scale(eps_scale)
        guidance = self.resolve_guidance(guidance)
        seq = self.sequence(skip, steps, timesteps)
        return self.sample_latents_from(n, seq, eta, self.rng(n, generator, seed), noise,
                                        batch_size, progress, eps_scale, guidance)

    @torch.inference_mode()
    def sample(self, n: int, *, skip: int | None = None, steps: int | None = None,
               timesteps: Sequence[int] | None = None, eta: float = 0.0, generator=None,
               seed: int | None = None, noise: torch.Tensor | None = None, mode: str = "sample",
               batch_size: int | None = None, progress: bool = False,
               eps_scale: float = 1.0, guidance: float | None = None,
               output_type: str = "pt", seeds: Sequence[int] | None = None):
        """Unconditional images ``(n, C, H, W)`` in [0, 1]: :meth:`sample_latents` then decode
        (``mode`` as in :meth:`decode`). With ``seed``, each image's decode draws continue its
        own generator, so image ``i`` depends only on ``seed + i``; ``seeds``: explicit
        per-image seeds instead (image ``i`` as ``sample(1, seed=seeds[i])``). ``eps_scale`` and
        ``guidance`` as in :meth:`sample_latents`; ``output_type`` ``"pt"``, ``"np"`` or
        ``"pil"`` (module docstring)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        check_output_type(output_type)
        eps_scale = self.check_eps_scale(eps_scale)
        guidance = self.resolve_guidance(guidance)
        seq = self.sequence(skip, steps, timesteps)
        rng = self.rng(n, generator, seed, seeds)
        z = self.sample_latents_from(n, seq, eta, rng, noise, batch_size, progress, eps_scale,
                                     guidance)
        return to_output(self.decode_with(z, mode, rng, batch_size), output_type)

    # ------------------------------------------------------------------ editing
    @torch.inference_mode()
    def manipulate_latents(self, z: torch.Tensor, attr, *, step=None, strength=None,
                           target=None, t0: int | None = None, skip: int | None = None,
                           method: str | None = None, preserve=None,
                           noise: torch.Tensor | None = None, generator=None,
                           seed: int | None = None, eta: float = 0.0,
                           guidance: float | None = None) -> torch.Tensor:
        """The edit in latent space. Returns raw latents. With ``step=`` (official raw steps)
        the default method is the paper's ``"d2c"`` (official ``manipulate_latent`` +
        ``postprocess_latent``): ``zm = z - step * boundary``; noise ``mod(zm)`` to ``t0``
        (default 50); DDIM over ``range(0, t0 + 1, skip)`` (``skip`` default 50); ``unmod``.
        Otherwise the default method is ``"local"``: the edit spread over where each image
        falls short of the class, the same clean-up confined there, regenerated from ``t0``
        300 with the classifier holding the target (the
        better edit against the built-in faces' true counterfactuals,
        docs/quality/README.md). With none of ``step``/``strength``/``target``, a fitted
        attribute is added up to ``target="typical"``.

        ``attr``: an :class:`Attribute`, a path, a tensor, or a list of them (with a list of
        ``step``/``strength`` values). ``step``: official raw step(s). ``strength``:
        calibrated units (fitted attributes): the classifier's logit changes by ``strength``
        (before the clean-up). ``target``: a logit (or ``"typical"``) each image is taken to,
        its own strength per image (see :mod:`d2c_fast.edit`). ``preserve``: fitted
        attributes whose logits the edit must not change. ``method``: ``None`` (the default
        above), ``"local"``, ``"d2c"``, ``"nvae"`` (the step only) or ``"ddim"`` (DDIM
        inversion over the sampling sequence with ``skip`` default 100, step in noise space,
        regenerate). ``guidance``: the d2c
        clean-up's autoguidance weight for models with a guide prior (default ``None``: the
        model's recommended weight, as :meth:`sample_latents`; 1: unguided, the official edit;
        the other methods are unguided). See :mod:`d2c_fast.edit`."""
        return E.manipulate_latents(self, z, attr, step=step, strength=strength, target=target,
                                  t0=t0, skip=skip, method=method, preserve=preserve,
                                  noise=noise, generator=generator, seed=seed, eta=eta,
                                  guidance=guidance)

    @torch.inference_mode()
    def manipulate(self, images, attr, *, step=None, t0: int | None = None,
                   skip: int | None = None,
                   mode: str = "sample", noise=None, generator=None, seed: int | None = None,
                   resize: bool = False, batch_size: int | None = None, strength=None,
                   target=None, method: str | None = None, preserve=None,
                   guidance: float | None = None, output_type: str = "pt",
                   seeds: Sequence[int] | None = None):
        """Edit images along attribute(s): encode, :meth:`manipulate_latents`, decode.
        ``attr``: an :class:`Attribute`, a file, or a built-in attribute name (with the
        built-in model: ``s.manipulate(img, "blond_hair")`` adds blond hair).
        ``images``: tensors, numpy arrays, PIL images or paths (as :meth:`encode`). Returns
        images ``(B, C, H, W)`` in [0, 1] (``output_type="np"``: a ``(B, H, W, C)`` array,
        ``"pil"``: PIL images). ``step`` is the official raw step
        (``z - step * boundary``); ``strength`` (calibrated logit units, ``> 0`` adds the
        attribute) needs an attribute fitted with a classifier (:meth:`fit_attribute`) and is
        not available for plain boundary files; ``target`` (fitted attributes) takes each
        image's logit to a value, e.g. ``"typical"``. ``t0``/``skip``/``method``/``preserve``/
        ``guidance`` as in :meth:`manipulate_latents`; with the ``local`` method (the default
        without ``step=``) the change the edit makes to the decoding is added to the input
        image through its mask, so outside the edit the output keeps the input's own pixels. ``seed``: image ``i``
        draws from ``seed + i``; ``seeds``: explicit per-image seeds instead."""
        check_output_type(output_type)
        return to_output(E.manipulate(self, images, attr, step=step, strength=strength,
                                      target=target, t0=t0, skip=skip, method=method,
                                      preserve=preserve, mode=mode, noise=noise,
                                      generator=generator, seed=seed, seeds=seeds,
                                      resize=resize, batch_size=batch_size,
                                      guidance=guidance), output_type)

    # ------------------------------------------------------------------ attributes
    def fit_attribute(self, positives, negatives=None, *, unlabelled=None, name=None,
                      prior=None, l2_grid=None, folds: int = 5, seed: int = 0,
                      batch_size: int = 256, flip: bool | None = None,
                      resize: bool = False) -> Attribute:
        """Fit an attribute (linear classifier on standardised latents) from labelled
        ``positives``/``negatives``, or positives + ``unlabelled`` (PU mode). Inputs are
        images (anything :meth:`encode` accepts; ``resize=True`` brings other sizes to the
        model's) or raw latents; labelled images are also used mirrored unless
        ``flip=False``. See :func:`d2c_fast.attributes.fit_attribute`."""
        return fit_attribute(self, positives, negatives, unlabelled=unlabelled, name=name,
                             prior=prior, l2_grid=DEFAULT_L2_GRID if l2_grid is None else l2_grid,
                             folds=folds, seed=seed, batch_size=batch_size, flip=flip,
                             resize=resize)

    @torch.inference_mode()
    def sample_conditional(self, attrs, n: int, *, seed: int = 0, batch_size: int = 64,
                           max_draws: int | None = None, threshold=C.DEFAULT_THRESHOLD,
                           return_probs: bool | None = None, skip: int = 100,
                           mode: str = "sample", return_stats: bool = False,
                           progress: bool = False, eps_scale: float = 1.0,
                           guidance: float | None = None, adapt_prior: int = 0,
                           output_type: str = "pt"):
        """Conditional samples by rejection sampling: prior latents (DDIM, ``skip``) accepted
        when every attribute's probability is ``>= threshold`` (default 0.9: precision,
        docs/quality/README.md), or with ``threshold="paper"`` by the paper's rule (accepted
        with the product of the probabilities). Returns ``images`` (``output_type`` as
        :meth:`sample`) with ``return_probs=False``, ``(images, probs)`` (``probs``
        ``(n, len(attrs))``) with ``return_probs=True``, plus ``stats`` with
        ``return_stats``. Not giving ``return_probs`` returns ``(images, probs)`` with a
        ``FutureWarning``: the default becomes ``False`` (images only, as :meth:`sample`) in a
        later release. Image ``k``
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
        check_output_type(output_type)
        if return_probs is None:
            warnings.warn("Sampler.sample_conditional returns (images, probs) when "
                          "return_probs is not given; a later release returns the images "
                          "only, as Sampler.sample does: pass return_probs=True to keep the "
                          "pair, or return_probs=False", FutureWarning, stacklevel=3)
            return_probs = True
        out = C.sample_conditional(self, attrs, n, seed=seed, batch_size=batch_size,
                                   max_draws=max_draws, threshold=threshold,
                                   return_probs=True, skip=skip, mode=mode,
                                   return_stats=True, progress=progress,
                                   eps_scale=eps_scale, guidance=guidance,
                                   adapt_prior=adapt_prior)
        images, probs, stats = out
        out = (to_output(images, output_type),) + ((probs,) if return_probs else ()) + \
            ((stats,) if return_stats else ())
        return out[0] if len(out) == 1 else out


__all__ = ["Sampler", "Attribute"]
