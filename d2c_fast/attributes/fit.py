"""Fitting an :class:`~d2c_fast.attributes.Attribute` for a model from examples (images or
raw latents): labelled (positives and negatives) or positive-unlabelled."""
from __future__ import annotations

import math
import numbers
import time
import warnings

import torch

from ..errors import D2CError
from .attribute import Attribute
from .classifier import LinearClassifier
from .logistic import DEFAULT_L2_GRID, balanced_weights, fit_linear_cv, platt_firth
from .pu import mixture_proportion, pu_calibrate

__all__ = ["fit_attribute"]


def _as_latents(sampler, items, what: str, batch_size: int = 256, flip=None, resize=False):
    """Images (anything ``encode`` accepts) or raw latents ``(B, C, H, W)`` -> ``(raw
    latents, raw latents of the mirrored images or None)``. ``flip``: ``None`` mirrors images
    and not latents, ``True`` requires images, ``False`` never mirrors."""
    z = None
    if isinstance(items, torch.Tensor) and items.dim() == 4 and items.is_floating_point() \
            and tuple(items.shape[1:]) == tuple(sampler.latent_shape):
        z = items.detach().float().cpu()
    elif isinstance(items, torch.Tensor) and items.dim() == 3 and items.is_floating_point() \
            and tuple(items.shape) == tuple(sampler.latent_shape):
        z = items.detach().float().cpu().unsqueeze(0)
    if z is not None:
        if flip is True:
            raise ValueError(f"{what}: flip=True mirrors images, but latents were given "
                             "(pass the images, or flip=None / False)")
        return z, None
    try:
        x = sampler.load_images(items, resize=resize)
        z = sampler.encode(x, batch_size=batch_size).cpu()
        zf = sampler.encode(x.flip(-1), batch_size=batch_size).cpu() if flip is not False \
            else None
    except D2CError as e:
        raise type(e)(f"{what}: {e}") from e
    return z, zf


# inference_mode(False): the L-BFGS fits need autograd, also when the caller is inside
# torch.inference_mode() (as a pipeline that encodes its images usually is).
@torch.inference_mode(False)
def fit_attribute(sampler, positives, negatives=None, *, unlabelled=None, name=None,
                  prior: float | None = None, l2_grid=DEFAULT_L2_GRID, folds: int = 5,
                  seed: int = 0, batch_size: int = 256, flip: bool | None = None,
                  resize: bool = False) -> Attribute:
    """Fit an :class:`Attribute` for ``sampler``'s model (see the module docstring).

    ``positives``/``negatives``/``unlabelled``: images (anything ``Sampler.encode`` accepts)
    or raw latents ``(B, C, H, W)``. Give ``negatives`` (labelled mode) or ``unlabelled``
    (positive-unlabelled mode), not both.

    ``flip``: train on the mirrored images too (each image's mirror image, encoded, is an
    extra training item with its label, in the same cross-validation fold; never scored).
    ``None`` (default): for inputs given as images, not for raw latents; ``True``: the inputs
    must be images; ``False``: off, for attributes that a mirror changes (a head turned
    left, text). Labelled mode only: positive-unlabelled fits never mirror (on the built-in
    lipstick, mirrored unlabelled images led the AUC criterion to a 100x weaker L2 and a
    held-out balanced accuracy of 0.71 instead of 0.94). With 100 labels on the built-in
    model, mirroring lifted the beard classifier's held-out balanced accuracy by 1-3 points
    on each of three label draws (docs/quality/README.md).

    ``prior``: the positive rate in the population, for the probabilities used by conditional
    sampling (labelled default: the labelled set's rate; PU default: estimated).
    Regularisation: class-balanced L2 logistic regression on standardised latents, L2 chosen
    in ``l2_grid`` by stratified ``folds``-fold cross-validation (balanced accuracy; PU mode:
    AUC of positives vs unlabelled, see the code comment) (L-BFGS in float64; seconds
    for hundreds of latents). ``info`` records: ``cv_accuracy`` (labelled: balanced accuracy
    of the chosen L2, out of fold; PU: balanced accuracy of labelled-vs-unlabelled, a lower
    bound of the real one), ``l2``, counts, ``prior``, ``recommended_strength`` = ``(0.5 g,
    1.5 g)`` with ``g`` the gap between the median out-of-fold logits of the two classes (the
    strength that takes a typical negative to a typical positive for the ``nvae`` step; the
    ``d2c`` clean-up pulls edits back towards the data, so it usually needs the upper end),
    and those medians themselves (``logit_median_positive`` / ``_negative``, population
    logits: :attr:`Attribute.typical_logits`, ``target="typical"``). The attribute also
    keeps :attr:`Attribute.typical_evidence`: per latent position, the median of each
    class's share of the score (:meth:`LinearClassifier.evidence`)."""
    t0 = time.perf_counter()
    if (negatives is None) == (unlabelled is None):
        raise ValueError("give negatives= (labelled mode) or unlabelled= (positive-unlabelled "
                         "mode), exactly one")
    if prior is not None and not 0.0 < float(prior) < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    if flip not in (None, True, False):
        raise ValueError(f"flip must be None, True or False, got {flip!r}")
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    try:
        grid = [float(v) for v in l2_grid]
    except (TypeError, ValueError):
        raise ValueError(f"l2_grid must be a list of numbers > 0, got {l2_grid!r}") from None
    if not grid or not all(math.isfinite(v) and v > 0 for v in grid):
        raise ValueError(f"l2_grid must be a non-empty list of finite numbers > 0, got {l2_grid!r}")
    if negatives is None:
        if flip:
            raise ValueError("flip=True is for labelled fits; positive-unlabelled fits do not "
                             "mirror (measured: the mirrors misled its AUC-based L2 choice)")
        flip = False
    zp, zpf = _as_latents(sampler, positives, "positives", batch_size, flip, resize)
    zo, zof = _as_latents(sampler, negatives if negatives is not None else unlabelled,
                          "negatives" if negatives is not None else "unlabelled", batch_size,
                          flip, resize)
    mode = "labelled" if negatives is not None else "pu"
    n1, n0 = zp.shape[0], zo.shape[0]
    if n1 < 2 or n0 < 2:
        other = "negatives" if mode == "labelled" else "unlabelled images"
        raise ValueError(f"fitting needs at least 2 positives and 2 {other} (cross-validation "
                         f"chooses the regularisation), got {n1} and {n0}")
    clf0 = LinearClassifier(torch.ones(zp[0].numel()), 0.0, sampler.mean.cpu(), sampler.std.cpu())
    x = torch.cat([clf0.standardise(zp), clf0.standardise(zo)])
    y = torch.cat([torch.ones(zp.shape[0]), torch.zeros(zo.shape[0])]).double()
    # mirrored copies of whichever side came as images, each tied to its source item
    aug = [(clf0.standardise(zf), torch.arange(n) + off)
           for zf, n, off in ((zpf, n1, 0), (zof, n0, n1)) if zf is not None]
    augment = (torch.cat([a for a, _ in aug]), torch.cat([i for _, i in aug])) if aug else None
    # PU: the positive-vs-unlabelled AUC is pi/2 + (1 - pi) * (the positive-vs-negative AUC),
    # a monotone function of the quantity we want, so it selects L2 consistently; accuracy
    # at a fixed threshold is not.
    fit = fit_linear_cv(x, y, l2_grid=l2_grid, folds=folds, seed=seed,
                        criterion="balanced_accuracy" if mode == "labelled" else "auc",
                        augment=augment)
    # Platt scaling on the out-of-fold scores: L2 shrinks the scores, and both the
    # probabilities (rejection sampling) and the strength unit need a calibrated logit.
    # Firth's penalty keeps the scale finite when the out-of-fold scores separate the
    # classes without the under-confidence of Platt's smoothed targets (platt_firth).
    if mode == "labelled":
        a_scale, pc = platt_firth(fit["oof"], y, balanced_weights(y))
        pi = float(prior) if prior is not None else n1 / (n1 + n0)
        prior_src = "given" if prior is not None else "labelled set rate"
    else:
        # the prior from the (rank-based) mixture proportion, then the 1-D case-control PU
        # likelihood gives the population posterior sigmoid(a * score + c) directly
        pi = float(prior) if prior is not None else mixture_proportion(fit["oof"][:n1],
                                                                        fit["oof"][n1:])
        prior_src = "given" if prior is not None else "estimated (mixture proportion, best bin)"
        a_scale, pc = pu_calibrate(fit["oof"][:n1], fit["oof"][n1:], pi)
    if not a_scale > 0:
        a_scale, pc = 1.0, 0.0
    w, b = a_scale * fit["w"], a_scale * fit["b"] + pc
    oof = a_scale * fit["oof"] + pc
    clf = LinearClassifier(w, b, sampler.mean.cpu(), sampler.std.cpu(), mode=mode, prior=pi)
    pred = (oof + clf.offset > 0.0).double()
    gap = float(oof[:n1].median() - oof[n1:].median())
    info = {
        "mode": mode, "n_positive": n1,
        ("n_negative" if mode == "labelled" else "n_unlabelled"): n0,
        "l2": fit["l2"], "folds": fit["folds"], "cv_accuracy": fit["cv_balanced_accuracy"],
        "cv_accuracy_kind": ("balanced accuracy, out of fold" if mode == "labelled" else
                             "balanced accuracy of positives vs unlabelled, out of fold"),
        "cv_accuracy_at_prior": float((pred == y).double().mean()),
        "cv_auc": fit["cv_auc"], "l2_criterion": fit["criterion"],
        "cv_table": fit["table"], "prior": pi, "prior_source": prior_src,
        "logit_gap": gap, "recommended_strength": [0.5 * gap, 1.5 * gap],
        "logit_median_positive": float(oof[:n1].median()) + clf.offset,
        "logit_median_negative": float(oof[n1:].median()) + clf.offset,
        "weight_norm_std": float(w.norm()), "platt_scale": a_scale,
        "n_mirrored": 0 if augment is None else int(augment[1].numel()),
        "fit_seconds": round(time.perf_counter() - t0, 3),
        "standardisation": "x = ((z - latent_mod.mean) / latent_mod.std).flatten(); "
                           "score = classifier.weight . x + classifier.bias",
    }
    if mode == "labelled" and fit["cv_balanced_accuracy"] < 0.6:
        warnings.warn(f"attribute {name or ''}: out-of-fold balanced accuracy "
                      f"{fit['cv_balanced_accuracy']:.2f} is near chance ({n1} positives, {n0} "
                      f"negatives); its direction and probabilities are unreliable: give more "
                      f"or clearer examples", stacklevel=4)   # the caller of Sampler.fit_attribute
    # where a typical member of each class has its evidence: the local edit spreads its
    # change over the positions where an image lacks it (d2c_fast.edit.local_plan)
    ev = clf.evidence(torch.cat([zp, zo]))
    typical = torch.stack([ev[n1:].median(0).values, ev[:n1].median(0).values])
    return Attribute(None, name=name, source="fit_attribute", classifier=clf,
                     fingerprint=getattr(sampler, "fingerprint", None), info=info,
                     latent_shape=sampler.latent_shape, typical_evidence=typical)
