"""Conditional generation by rejection sampling (the D2C paper, section 3.3).

Each output image ``k`` is the first accepted candidate of its own stream: candidate
``(k, m)`` (``m = 0, 1, ...``) draws its start noise, then one acceptance uniform ``u``, then
(if kept) its decode draws from one generator seeded by a hash of ``(seed, k, m)``. Its latent
is sampled from the diffusion prior (deterministic DDIM, ``skip``), and it is accepted when
every ``p_i(z) >= threshold_i`` (the default rule, ``threshold=DEFAULT_THRESHOLD`` = 0.9) or,
with ``threshold="paper"``, when ``u < prod_i p_i(z)`` (the paper's rule: samples then follow
``p(z | all attributes)`` for calibrated classifiers, assuming independent attribute
errors). The paper's rule also accepts the model's ambiguous samples in proportion to their
probability; with 100 labels that costs precision and fidelity to the class (judged by an
independent classifier on the built-in faces, docs/quality/README.md: blond / lipstick / beard
precision 0.895 / 0.825 / 0.835 with the paper's rule, 0.990 / 0.970 / 0.980 at 0.9, and
FD_oracle to real faces of the class 42.8 / 49.4 / 57.5 vs 21.7 / 25.9 / 37.1), so 0.9 is
the default. Image ``k`` therefore depends only on ``(seed, k)``, not on
the batch size, on the other images, or on which process of a sharded job produced it.

``adapt_prior=N`` first calibrates each classifier to the model's own samples: ``N`` pilot
latents (their own seed stream, ``pilot_seed(seed, j)``, the same in every process) give the
attribute's rate among the model's samples by EM (:func:`d2c_fast.attributes.estimate_prior`),
and the classifier's probabilities are re-based on that rate (label shift). A model that
under-produces an attribute otherwise gets probabilities calibrated for the data's rate, too
high on its own samples, and accepts more of its ambiguous ones (built-in model, beard, three
100-label fits: expected precision 0.884 / 0.838 / 0.951 -> 0.920 / 0.865 / 0.961 over the
same 1,000 prior samples; docs/quality/README.md). Still deterministic in ``(seed, k)``.

Candidates are evaluated in batches (``batch_size`` prior samples per DDIM run), several per
pending image when few images remain. ``max_draws`` bounds the total number of prior samples;
when it runs out, :class:`RareAttributeError` reports the observed acceptance rate and the
budget the request would need.
"""
from __future__ import annotations

import hashlib
import math
import numbers
from typing import Sequence

import torch

from . import diffusion as D
from .attributes import estimate_prior
from .diffusion import BatchRNG
from .edit import resolve
from .errors import D2CError


class RareAttributeError(D2CError, ValueError):
    """Rejection sampling ran out of its draw budget (the attributes are too rare)."""

    def __init__(self, msg, acceptance_rate: float, draws: int, accepted: int):
        super().__init__(msg)
        self.acceptance_rate, self.draws, self.accepted = acceptance_rate, draws, accepted


def _hash_seed(text: str) -> int:
    h = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def draw_seed(seed: int, k: int, m: int) -> int:
    """The generator seed of candidate ``m`` of image ``k`` (63-bit hash)."""
    return _hash_seed(f"d2c_fast.conditional:{int(seed)}:{int(k)}:{int(m)}")


def pilot_seed(seed: int, j: int) -> int:
    """The generator seed of pilot latent ``j`` (``adapt_prior``; 63-bit hash)."""
    return _hash_seed(f"d2c_fast.conditional.pilot:{int(seed)}:{int(j)}")


def check_adapt_prior(n, minimum: int = 0) -> int:
    """``adapt_prior`` validated: an int ``>= minimum`` (pilot samples; 0: off)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"adapt_prior must be an int >= {minimum} (pilot samples; 0: off), "
                         f"got {n!r}")
    return n


def pilot_latents(sampler, n_pilot: int, *, seed: int = 0, batch_size: int = 64,
                  skip: int = 100, eps_scale: float = 1.0, guidance: float | None = None,
                  progress: bool = False) -> torch.Tensor:
    """The ``n_pilot`` prior latents of ``adapt_prior`` (raw, ``(n_pilot, C, H, W)``): DDIM
    (``skip``) from start noise drawn from ``pilot_seed(seed, j)``."""
    check_adapt_prior(n_pilot, minimum=1)
    eps_scale = sampler.check_eps_scale(eps_scale)
    guidance = sampler.resolve_guidance(guidance)
    seq = D.uncond_sequence(sampler.num_timesteps, skip=skip)
    zs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_pilot, desc="adapt-prior pilot", unit="draw", leave=False)
    for a in range(0, n_pilot, batch_size):
        b = min(n_pilot, a + batch_size)
        rng = BatchRNG.from_seeds([pilot_seed(seed, j) for j in range(a, b)], sampler.device)
        zT = rng.randn(*sampler.latent_shape)
        zs.append(sampler.unstandardise(sampler.denoise(zT, seq, 0.0, rng, eps_scale=eps_scale,
                                                        guidance=guidance)))
        if bar is not None:
            bar.update(b - a)
    if bar is not None:
        bar.close()
    return torch.cat(zs)


def adapt_to(attrs, z: torch.Tensor):
    """``attrs`` re-based on their rates among the latents ``z`` (EM; module docstring).
    Returns ``(adapted attributes, rates)``."""
    rates = [estimate_prior(a, z) for a in attrs]
    adapted = [a.with_prior(r, source=f"adapted: EM on {z.shape[0]} model samples")
               for a, r in zip(attrs, rates)]
    return adapted, rates


def adapt_priors(sampler, attrs, n_pilot: int, *, seed: int = 0, batch_size: int = 64,
                 skip: int = 100, eps_scale: float = 1.0, guidance: float | None = None,
                 progress: bool = False):
    """``attrs`` re-based on their rates among ``n_pilot`` prior samples
    (:func:`pilot_latents`, :func:`adapt_to`). Returns ``(adapted attributes, rates)``."""
    return adapt_to(attrs, pilot_latents(sampler, n_pilot, seed=seed, batch_size=batch_size,
                                         skip=skip, eps_scale=eps_scale, guidance=guidance,
                                         progress=progress))


DEFAULT_THRESHOLD = 0.9
PAPER_RULE = "paper"


def _thresholds(threshold, n_attr):
    """``threshold`` -> ``(A,)`` float64 thresholds, or ``None`` for the paper's rule
    (``"paper"``; ``None`` too, the name of that rule before it stopped being the default)."""
    if threshold is None or (isinstance(threshold, str) and threshold == PAPER_RULE):
        return None
    if isinstance(threshold, str):
        raise ValueError(f"threshold must be a probability in [0, 1], per-attribute "
                         f"probabilities, or {PAPER_RULE!r} (the paper's rule), got "
                         f"{threshold!r}")
    if isinstance(threshold, torch.Tensor) or type(threshold).__module__ == "numpy":
        a = torch.as_tensor(threshold, dtype=torch.float64)      # arrays and numpy scalars
        threshold = a.flatten().tolist() if a.dim() else float(a)
    t = list(threshold) if isinstance(threshold, (list, tuple)) else [threshold] * n_attr
    if len(t) != n_attr:
        raise ValueError(f"threshold: {len(t)} values for {n_attr} attributes")
    for v in t:
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"thresholds must be in [0, 1], got {v}")
    return torch.tensor([float(v) for v in t], dtype=torch.float64)


def acceptance(probs: torch.Tensor, u: torch.Tensor, thresholds=None) -> torch.Tensor:
    """``(B, A)`` probabilities, ``(B,)`` uniforms -> ``(B,)`` bool accepted."""
    if thresholds is not None:
        return (probs >= thresholds.to(probs.device)).all(dim=1)
    return u.double() < probs.prod(dim=1)


def sample_conditional_latents(sampler, attrs, items: Sequence[int] | int, *, seed: int = 0,
                               batch_size: int = 64, max_draws: int | None = None,
                               threshold=DEFAULT_THRESHOLD, skip: int = 100,
                               progress: bool = False,
                               eps_scale: float = 1.0, guidance: float | None = None,
                               adapt_prior: int = 0):
    """Rejection-sample latents for image indices ``items`` (an int ``n`` means
    ``range(n)``). Returns ``(z (n, C, H, W), probs (n, A) float64, gens, stats)`` in the
    order of ``items``; ``gens`` are the accepted candidates' generators (positioned for the
    decode draws). ``eps_scale``, ``guidance``: as in ``Sampler.sample_latents``.
    ``adapt_prior``: number of pilot samples for the classifiers' calibration to the model's
    samples (0: off, the classifiers as given; module docstring)."""
    attrs, _ = resolve(sampler, attrs)
    for a in attrs:
        a.require_classifier("conditional sampling")
    for i, a in enumerate(attrs):
        for b in attrs[:i]:
            if a is b or (a.name == b.name and torch.equal(a.classifier.weight,
                                                           b.classifier.weight)
                          and a.classifier.bias == b.classifier.bias):
                raise ValueError(f"attribute {a.name or i} is given twice: its probability would "
                                 f"count twice in the acceptance")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(items, torch.Tensor) and items.dim() == 0:
        items = int(items)
    if isinstance(items, numbers.Integral) and not isinstance(items, bool):
        items = list(range(int(items)))
    elif isinstance(items, (str, bytes, float, bool)) or not hasattr(items, "__iter__"):
        raise TypeError(f"n must be an int (or items a sequence of image indices), got "
                        f"{type(items).__name__} {items!r}")
    else:
        items = [int(k) for k in items]
    n = len(items)
    if n < 1:
        raise ValueError("nothing to sample (n < 1)")
    if len(set(items)) != n:
        raise ValueError("items must be distinct")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_draws = 100 * n + 1000 if max_draws is None else int(max_draws)
    if max_draws < 1:
        raise ValueError(f"max_draws must be >= 1, got {max_draws}")
    thr = _thresholds(threshold, len(attrs))
    eps_scale = sampler.check_eps_scale(eps_scale)
    guidance = sampler.resolve_guidance(guidance)
    check_adapt_prior(adapt_prior)
    rates = None
    if adapt_prior:
        attrs, rates = adapt_priors(sampler, attrs, adapt_prior, seed=seed,
                                    batch_size=batch_size, skip=skip, eps_scale=eps_scale,
                                    guidance=guidance, progress=progress)
    seq = D.uncond_sequence(sampler.num_timesteps, skip=skip)
    next_m = {k: 0 for k in items}
    done: dict[int, tuple] = {}
    pending = list(items)
    draws = n_ok = 0   # candidates evaluated / candidates accepted (incl. surplus ones)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n, desc="conditional", unit="img", leave=False)
    try:
        while pending:
            budget = min(batch_size, max_draws - draws)
            if budget <= 0:
                acc = len(done)
                rate = n_ok / max(draws, 1)
                need = (f"about {math.ceil(n / rate)} draws" if rate > 0
                        else f"more than {draws} draws")
                names = " AND ".join(a.name or "?" for a in attrs)
                raise RareAttributeError(
                    f"conditional sampling of [{names}] ran out of max_draws={max_draws}: "
                    f"{acc} of {n} images done after {draws} draws (observed acceptance rate "
                    f"{rate:.4g}); "
                    f"{n} images need {need}: raise max_draws, lower the threshold, or use "
                    f"fewer attributes", rate, draws, acc)
            per = max(1, budget // len(pending))
            cands = []
            for k in pending:
                for _ in range(per):
                    if len(cands) >= budget:
                        break
                    cands.append((k, next_m[k]))
                    next_m[k] += 1
                if len(cands) >= budget:
                    break
            rng = BatchRNG.from_seeds([draw_seed(seed, k, m) for k, m in cands], sampler.device)
            zT = rng.randn(*sampler.latent_shape)
            u = rng.rand(1)[:, 0]
            z = sampler.unstandardise(sampler.denoise(zT, seq, 0.0, rng, eps_scale=eps_scale,
                                                      guidance=guidance))
            p = torch.stack([a.probability(z) for a in attrs], dim=1)
            ok = acceptance(p, u, thr).cpu().tolist()
            draws += len(cands)
            n_ok += sum(ok)
            for i, (k, m) in enumerate(cands):
                if ok[i] and k not in done:   # candidates of k come in increasing m
                    done[k] = (z[i], p[i].cpu(), rng.generators[i], m)
                    if bar is not None:
                        bar.update(1)
            pending = [k for k in pending if k not in done]
    finally:
        if bar is not None:
            bar.close()
    zs = torch.stack([done[k][0] for k in items])
    probs = torch.stack([done[k][1] for k in items])
    gens = [done[k][2] for k in items]
    stats = {"draws": draws, "accepted": n, "acceptance_rate": n_ok / draws,
             "attempts": [done[k][3] + 1 for k in items],
             "attributes": [a.name for a in attrs],
             "rule": "threshold" if thr is not None else "probability",
             "priors": [a.classifier.prior for a in attrs], "pilot_draws": int(adapt_prior)}
    if rates is not None:
        stats["adapted_priors"] = rates
    return zs, probs, gens, stats


def decode_with(sampler, z, gens, mode="sample", batch_size=None) -> torch.Tensor:
    """Decode latents, image ``i`` drawing from ``gens[i]``."""
    return sampler.decode_with(z, mode, BatchRNG.from_generators(gens, sampler.device),
                               batch_size)


def sample_conditional(sampler, attrs, n, *, seed: int = 0, batch_size: int = 64,
                       max_draws: int | None = None, threshold=DEFAULT_THRESHOLD,
                       return_probs: bool = True,
                       skip: int = 100, mode: str = "sample", return_stats: bool = False,
                       progress: bool = False, items=None, eps_scale: float = 1.0,
                       guidance: float | None = None, adapt_prior: int = 0):
    """``Sampler.sample_conditional`` (module docstring). ``items`` (instead of ``n``):
    explicit image indices (sharded jobs)."""
    with torch.inference_mode():
        z, probs, gens, stats = sample_conditional_latents(
            sampler, attrs, items if items is not None else n, seed=seed,
            batch_size=batch_size, max_draws=max_draws, threshold=threshold, skip=skip,
            progress=progress, eps_scale=eps_scale, guidance=guidance,
            adapt_prior=adapt_prior)
        images = decode_with(sampler, z, gens, mode, batch_size)
    out = (images,)
    if return_probs:
        out += (probs,)
    if return_stats:
        out += (stats,)
    return out[0] if len(out) == 1 else out


__all__ = ["sample_conditional", "sample_conditional_latents", "RareAttributeError",
           "draw_seed", "pilot_seed", "pilot_latents", "adapt_to", "adapt_priors",
           "check_adapt_prior", "acceptance", "decode_with", "DEFAULT_THRESHOLD", "PAPER_RULE"]
