"""Attribute editing: calibrated strengths, several attributes at once, preservation, the
paper's three edit methods, strength sweeps.

The edit ``delta`` (raw latent space) is built in :func:`edit_delta`:

* ``step=`` (official raw steps, any attribute incl. official boundary files):
  ``delta = -sum_i step_i * direction_i`` (``z - step * boundary``, unchanged).
* ``strength=`` (calibrated, fitted attributes only): the **minimum-norm edit in standardised
  space** ``d`` (``x = (z - mean) / std``) such that each target classifier's logit changes by
  exactly its strength, ``w_i . d = s_i``, and each preserved classifier's logit does not
  change, ``w_p . d = 0``: ``d = M^T (M M^T)^+ r`` with ``M`` the stacked weights and ``r``
  the targets (zeros for preserved). One attribute without ``preserve`` gives
  ``d = s w / |w|^2``; with ``preserve`` it is the component of ``w`` orthogonal to the
  preserved normals, rescaled so the target logit still moves by ``s``. ``delta = std * d``.
  With ``step=`` and ``preserve=``, the step's standardised direction is projected
  orthogonally to the preserved normals.
* ``target=`` (calibrated per image, fitted attributes only): each image gets its own
  strength, the one that takes its classifier logit to the target: ``s = max(target - logit,
  0)`` for ``target >= 0`` (add the attribute, at least this sure; images already past the
  target are not pushed further), ``s = min(target - logit, 0)`` for ``target < 0`` (remove
  it). ``"typical"`` is the median (out-of-fold) logit of the fit's positives
  (:attr:`Attribute.typical_logits`). Then as ``strength=``, one row of ``r`` per image. A
  fixed strength over-edits the images that are near the boundary and under-edits those far
  from it; a target edits each as much as it needs. The image's own logit is all it depends
  on, so results do not depend on the batch.

Methods (``method=``; default ``None``: ``"local"`` unless ``step=`` is given, then
``"d2c"``, so the official edit stays exactly the release's):

* ``"local"`` (the default edit): D2C's clean-up confined to where the edit lives, with the
  classifier holding the target. (a) *Where the edit goes* (:func:`edit_plan`,
  :func:`local_plan`): for fitted attributes that carry
  :attr:`~d2c_fast.attributes.Attribute.typical_evidence` (every fit since 2026-12-07), per
  image and latent position the evidence gap: how far the image's share of the classifier's
  score falls short of the typical member of the class it is taken to. The mask ``m`` is the
  positions where the attribute's direction lives (:func:`edit_mask` of it: the fewest
  positions holding ``MASK_ENERGY``, half, of its standardised energy, grown by
  ``MASK_DILATE``) that this image needs: within them, the fewest holding ``LOCAL_SHARE`` of
  its squared gap, grown by ``MASK_DILATE``. The edit is the minimum-norm one weighted by
  the gap (:func:`edit_delta` ``weights=``), so each position is asked for logit in
  proportion to its gap and the logit moves by exactly the strength, as without weights.
  Plain directions and attributes fitted before get the unweighted edit and its
  :func:`edit_mask`. (b) ``z + delta`` is standardised and noised to ``LOCAL_T0`` (fresh
  noise ``eps``), then DDIM over ``range(0, t0 + 1, LOCAL_SKIP)`` (autoguided as sampling)
  where, at every step, the predicted clean latent is moved along ``m * g`` (``g`` each
  fitted classifier's gradient) until its logit reaches the logit of ``z + delta`` (edited
  attributes: only towards it; ``preserve``: both ways), and outside ``m`` the state is
  replaced by the unedited latent noised with the same ``eps`` (as blended / inpainting
  samplers do); the result is ``z`` outside ``m``. The prior regenerates the masked region at
  a noise level high enough to draw the attribute rather than a tint of it. (c)
  :func:`manipulate` and :func:`sweep` add the change the edit made to the decoding
  (``decode(edited) - decode(z)``, the same decode draws) to the input image through ``m``
  (:func:`paste`: each latent cell's pixels, the edge feathered over about a cell each
  side), so inside the mask the input's detail stays wherever the edit did not change the
  decoding. (d) A change that is one colour map inside the mask (every pixel of a colour
  changed the same way: hair turned blond, not glasses drawn on some skin pixels) reaches
  past it (:func:`spread`): along neighbouring pixels of those colours (hair that falls
  outside the few-shot direction's mask), by the affine colour map fitted to the mask's
  changed pixels; elsewhere the output is the input's own pixels (:func:`manipulate_latents`
  returns (b)'s latents). Measured against the built-in faces' true counterfactuals in
  docs/quality/README.md.
* ``"d2c"`` (the paper's, the default with ``step=``): ``z + delta`` -> standardise -> noise
  to ``t0`` -> deterministic DDIM over ``range(0, t0 + 1, skip)`` (``skip`` default 50) ->
  unstandardise.
  ``guidance`` (default ``None``: the model's recommended weight, as in sampling; 1 for
  models without a guide prior, i.e. the official edit) denoises with the autoguided noise
  prediction ``eps_g + w (eps - eps_g)`` of a model with a guide prior, which adds one call
  of the guide per DDIM step. On the built-in model the guided clean-up keeps more of a
  small edit (docs/quality/README.md: lipstick at 1x its logit gap, success 0.655 ->
  0.765 at 0.988 -> 0.993 preservation); ``guidance=1`` gives the unguided edit.
* ``"nvae"``: ``z + delta`` only (no diffusion clean-up), so a strength-``s`` edit moves the
  classifier's logit by exactly ``s``.
* ``"ddim"``: DDIM inversion (the deterministic ODE run backwards, with the noise prediction
  of the timestep being stepped to, i.e. the same ``(t, t_next)`` pairs and U-Net calls as
  sampling) of ``mod(z)`` over the unconditional sampling sequence
  ``range(0, T - 1, skip) + [T - 1]`` (``skip`` default 100, the sampling default) to
  ``x_T``; the step is applied in standardised units (``x_T + delta / std``), then DDIM
  regenerates over the same sequence. ``t0`` is not used; the prior's ODE is unguided
  (``guidance`` other than ``None`` / 1 is refused, as for ``"nvae"``).
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from . import diffusion as D
from .diffusion import chunks
from .attributes import as_attribute
from .errors import AttributeFileError

METHODS = ("local", "d2c", "nvae", "ddim")

# The local edit's settings: one setting for every attribute (docs/quality/README.md,
# "Edits against the true counterfactual", measures them and the alternatives tried).
D2C_T0 = 50              # the paper's edit (method "d2c"): noise level ...
D2C_SKIP = 50            # ... and DDIM stride: steps 50, 0 (the official defaults)
LOCAL_T0 = 300           # noise level of the masked regeneration
LOCAL_SKIP = 150         # DDIM stride: steps 300, 150, 0 (3 steps; d2c takes 2)
MASK_ENERGY = 0.5        # the fewest latent positions holding this share of the edit's energy
MASK_DILATE = 1          # ... grown by this many positions
LOCAL_SHARE = 0.9        # per image: the positions holding this share of its squared evidence gap
# Spreading a colour change past the mask (:func:`spread`):
SPREAD_BIN = 0.04        # colours are compared in bins this wide (per channel, [0, 1] range)
SPREAD_MIN = 0.1         # a pixel's change counts when a channel moves by at least this much
SPREAD_SUPPORT = 8       # changed mask pixels of a colour needed before that colour spreads
SPREAD_CONSISTENT = 0.1  # ... and their changes' variance, relative to the mean change's square
SPREAD_STEP = 0.15       # the largest colour step between neighbouring pixels it crosses
SPREAD_CELLS = 8         # how far from the mask it may reach, in latent cells
NOISED = ("d2c", "local")  # the methods that draw noise (one draw per image)


def _as_list(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def resolve(sampler, attr, preserve=None):
    """``attr``/``preserve`` (an attribute, path, tensor, or lists of them) -> checked lists of
    :class:`Attribute` (shape and fingerprint checked against ``sampler``)."""
    attrs = [as_attribute(a, sampler.latent_shape, sampler) for a in _as_list(attr)]
    if not attrs:
        raise ValueError("give at least one attribute")
    pres = [as_attribute(a, sampler.latent_shape, sampler) for a in (_as_list(preserve) or [])]
    for p in pres:
        if not p.is_fitted:
            raise AttributeFileError(f"preserve= needs fitted attributes (classifiers); "
                                     f"{p.name or 'one of them'} is a plain direction")
    return attrs, pres


def _values(vals, n, what):
    v = _as_list(vals)
    if len(v) == 1 and n > 1:
        v = v * n
    if len(v) != n:
        raise ValueError(f"{what}: {len(v)} values for {n} attributes")
    out = [float(x) for x in v]
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{what} must be finite, got {out}")
    return out


def _check_edit_args(step, strength, target=None):
    given = [k for k, v in (("step", step), ("strength", strength), ("target", target))
             if v is not None]
    if not given:
        raise ValueError("give step= (the official raw step along the boundary), strength= "
                         "(calibrated logit units, fitted attributes) or target= (a logit "
                         "each image is taken to, fitted attributes)")
    if len(given) > 1:
        raise ValueError(f"give one of step=, strength=, target=, not {' and '.join(given)}")


def _need_fitted(attrs, what):
    for a in attrs:
        if not a.is_fitted:
            raise AttributeFileError(f"{what} needs an attribute fitted with a classifier; "
                                     f"{a.name or 'this attribute'} is a plain direction "
                                     "(official boundary): use step=")


def target_strengths(sampler, attr, z, target) -> torch.Tensor:
    """Per-image calibrated strengths ``(B, k)`` float64 (CPU) that take each image's logit
    to ``target`` (one value, or one per attribute; ``"typical"`` = the fit's median positive
    logit); see the module docstring for the clamping rule."""
    attrs, _ = resolve(sampler, attr)
    _need_fitted(attrs, "target=")
    vals = _as_list(target)
    if len(vals) == 1 and len(attrs) > 1:
        vals = vals * len(attrs)
    if len(vals) != len(attrs):
        raise ValueError(f"target: {len(vals)} values for {len(attrs)} attributes")
    z = sampler.check_latents(z, "z")
    cols = []
    for a, v in zip(attrs, vals):
        if isinstance(v, str):
            if v != "typical":
                raise ValueError(f"target must be a logit or 'typical', got {v!r}")
            v = a.typical_logits[1]
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"target must be finite, got {v}")
        d = v - a.logit(z).detach().cpu()
        cols.append(d.clamp(min=0.0) if v >= 0 else d.clamp(max=0.0))
    return torch.stack(cols, 1)


def edit_delta(sampler, attr, *, step=None, strength=None, preserve=None, weights=None
               ) -> torch.Tensor:
    """The raw-space edit ``(1, C, H, W)`` float32 on ``sampler.device`` (module docstring).
    ``strength`` may also be a ``(B, k)`` tensor of per-image strengths (from
    :func:`target_strengths`): the edit is then ``(B, C, H, W)``. ``weights`` (with
    ``strength``): per-image, per-position weights ``(B, 1, H, W)`` >= 0 of the minimum-norm
    solve, i.e. the edit of least ``sum (d / weight)^2`` (none where the weight is 0):
    ``d = L M^T (M L M^T)^+ r`` with ``L = diag(weights)``; an image whose weights cannot
    meet its strengths gets the unweighted edit."""
    _check_edit_args(step, strength)
    attrs, pres = resolve(sampler, attr, preserve)
    shape = sampler.latent_shape
    std = sampler.std.detach()[0].to("cpu", torch.float64)   # (C, 1, 1) or (C, H, W)
    if step is not None:
        steps = _values(step, len(attrs), "step")
        delta = torch.zeros(shape)
        for a, st in zip(attrs, steps):
            delta = delta - st * a.direction
        if pres:
            d = (delta.double() / std).flatten()
            q, _ = torch.linalg.qr(torch.stack([p.normal_std for p in pres], 1))
            kept = d - q @ (q.T @ d)
            if float(kept.norm()) <= 1e-6 * float(d.norm()):
                raise ValueError("the edit lies within the directions of the attributes to "
                                 "preserve (is one of them the edited attribute?): nothing "
                                 "would be left to edit")
            d = kept
            delta = (std * d.reshape(shape)).float()
        return delta.to(sampler.device).unsqueeze(0)
    _need_fitted(attrs, "strength=")
    if isinstance(strength, torch.Tensor) and strength.dim() == 2:
        if strength.shape[1] != len(attrs):
            raise ValueError(f"strength: {strength.shape[1]} columns for {len(attrs)} "
                             "attributes")
        s = strength.detach().to("cpu", torch.float64)
        if not torch.isfinite(s).all():
            raise ValueError("strength: per-image strengths must be finite")
    else:
        s = torch.tensor([_values(strength, len(attrs), "strength")], dtype=torch.float64)
    m = torch.stack([a.normal_std for a in attrs] + [p.normal_std for p in pres])
    r = torch.cat([s, s.new_zeros(s.shape[0], len(pres))], 1)       # (B, k + p)
    atol = 1e-6 * (1 + float(r.abs().max()))
    gram = m @ m.T
    coef = r @ torch.linalg.pinv(gram, hermitian=True)                # gram is symmetric
    if not torch.allclose(coef @ gram, r, atol=atol):
        raise ValueError("the requested strengths cannot be met together: the classifiers of "
                         "the edited and preserved attributes are linearly dependent (the same "
                         "attribute given twice?)")
    d = coef @ m
    if weights is not None:
        lam = weights.detach().to("cpu", torch.float64).expand(-1, shape[0], -1, -1)
        lam = lam.reshape(lam.shape[0], -1)                           # (B, D)
        if lam.shape[0] != r.shape[0] or (lam < 0).any() or not torch.isfinite(lam).all():
            raise ValueError(f"weights: {lam.shape[0]} rows of finite values >= 0 needed for "
                             f"{r.shape[0]} strengths")
        gw = torch.einsum("kd,bd,ld->bkl", m, lam, m)
        cw = torch.einsum("bk,bkl->bl", r, torch.linalg.pinv(gw, hermitian=True))
        met = (torch.einsum("bk,bkl->bl", cw, gw) - r).abs().amax(1) <= atol
        dw = torch.einsum("bk,kd,bd->bd", cw, m, lam)
        d = torch.where(met[:, None], dw, d.expand_as(dw))
    return (std * d.reshape(-1, *shape)).float().to(sampler.device)


def edit_plan(sampler, attrs, pres, z, *, method, step=None, strength=None, target=None):
    """The edit of raw latents ``z`` (``attrs``/``pres`` resolved by :func:`resolve`):
    ``(delta, mask)``, ``delta`` from :func:`edit_delta` (per image for ``target``), ``mask``
    the ``local`` method's (``None`` for the others). For ``local`` with fitted attributes
    that carry :attr:`~d2c_fast.attributes.Attribute.typical_evidence`, the calibrated edit
    goes where each image falls short of the class (:func:`local_plan`); otherwise the mask
    is :func:`edit_mask` of the delta."""
    _check_edit_args(step, strength, target)
    if target is not None:
        strength = target_strengths(sampler, attrs, z, target)
    if method == "local" and step is None and all(
            a.is_fitted and a.typical_evidence is not None for a in attrs):
        if not isinstance(strength, torch.Tensor) or strength.dim() != 2:
            strength = torch.tensor([_values(strength, len(attrs), "strength")],
                                    dtype=torch.float64).expand(z.shape[0], -1)
        return local_plan(sampler, attrs, pres, z, strength)
    delta = edit_delta(sampler, attrs, step=step, strength=strength, preserve=pres)
    return delta, (edit_mask(sampler, delta) if method == "local" else None)


def local_plan(sampler, attrs, pres, z, strengths):
    """The ``local`` edit of raw latents ``z`` by per-image strengths ``(B, k)``: ``(delta,
    mask)`` (module docstring, "where the edit goes"). For each edited attribute and image,
    the evidence gap ``g`` per latent position: how far the image's share of the classifier's
    score (:meth:`~d2c_fast.attributes.classifier.LinearClassifier.evidence`) falls short of
    the typical member's of the class it is taken to (:attr:`Attribute.typical_evidence`;
    0 where it is already there). The mask is where the attribute's direction lives
    (:func:`edit_mask` of it) and, within it, where this image needs the change: the fewest
    positions holding ``LOCAL_SHARE`` of ``sum g^2``, grown by ``MASK_DILATE``. The edit is
    :func:`edit_delta`'s with position weights ``g / |w|^2`` on the mask (``w`` the
    standardised weights at the position: a position is asked for logit in proportion to
    its gap), so the logits move by exactly the strengths, as without weights."""
    shape = sampler.latent_shape
    dev = sampler.device
    z = sampler.check_latents(z, "z")
    s = strengths.detach().to("cpu", torch.float64)
    lam = torch.zeros(z.shape[0], 1, *shape[1:], dtype=torch.float64)
    mask = torch.zeros_like(lam)
    for i, a in enumerate(attrs):
        sgn = torch.sign(s[:, i]).view(-1, 1, 1)
        ev = a.require_classifier("local_plan").evidence(z.detach().cpu())
        typ = a.typical_evidence.double()
        gap = (sgn * (torch.where(sgn > 0, typ[1], typ[0]) - ev)).clamp(min=0)
        w2 = a.normal_std.reshape(shape).square().sum(0)
        where = edit_mask(sampler, a.edit_direction.to(dev).unsqueeze(0)).cpu().double()
        m = _dilate(share_mask(gap.square().unsqueeze(1), LOCAL_SHARE)) * where
        li = m * torch.where(w2 > 0, gap / w2.clamp(min=1e-30), torch.zeros_like(gap)).unsqueeze(1)
        # nothing short anywhere in the mask, but the logit still is: the direction's own mask
        empty = (li.flatten(1).amax(1) <= 0) & (sgn.flatten() != 0)
        li = torch.where(empty.view(-1, 1, 1, 1), where.expand_as(li), li)
        m = torch.where(empty.view(-1, 1, 1, 1), where.expand_as(m), m)
        lam = lam + li / li.flatten(1).amax(1).clamp(min=1e-300).view(-1, 1, 1, 1)
        mask = torch.maximum(mask, m)    # empty where the strength is 0 (no gap, not empty)
    delta = edit_delta(sampler, attrs, strength=s, preserve=pres, weights=lam)
    return delta, mask.to(dev, torch.float32)


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def default_method(method, step):
    """``method``, or the default when it is ``None``: ``"d2c"`` for official raw steps
    (``step=``: the release's edit), else ``"local"``."""
    if method is None:
        return "d2c" if step is not None else "local"
    _check_method(method)
    return method


def default_amount(attrs, step, strength, target):
    """``target="typical"`` when none of ``step``/``strength``/``target`` is given and every
    attribute is fitted (the fit's median positive logit: add the attribute as surely as a
    typical face that has it); otherwise ``target`` unchanged."""
    if step is None and strength is None and target is None and all(a.is_fitted
                                                                      for a in attrs):
        return "typical"
    return target


def edit_guidance(sampler, method: str, guidance) -> float:
    """The autoguidance weight an edit with ``method`` uses: for ``"d2c"`` and ``"local"``,
    ``guidance``
    checked as sampling checks it (``None``: the model's recommended weight); the other
    methods have no guided step, so only ``None`` or 1 is accepted (-> 1)."""
    _check_method(method)
    if method in ("d2c", "local"):
        return sampler.resolve_guidance(guidance)
    if guidance is not None and guidance != 1:
        raise ValueError(f"guidance={guidance!r} applies to the d2c method's clean-up only; "
                         f"method {method!r} is unguided (leave guidance unset)")
    return 1.0


def apply_delta(sampler, z, delta, *, method="d2c", t0=None, skip=None, eps=None, rng=None,
                eta=0.0, inverted=None, guidance: float = 1.0, attrs=(), preserve=(), mask=None
                ) -> torch.Tensor:
    """Apply a raw edit ``delta`` to raw latents ``z`` with ``method``. ``eps``: the noise of
    the ``d2c`` method ``(B, C, H, W)``; ``inverted``: precomputed ``ddim`` inversion of ``z``
    (from :func:`invert`, same ``skip``) to reuse across strengths; ``guidance``: the ``d2c``
    clean-up's autoguidance weight (a number, 1 = unguided; see :func:`edit_guidance`).
    ``attrs``/``preserve``: the resolved attributes of the edit (the ``local`` method holds
    their logits); ``mask``: the ``local`` method's mask when the caller already has it
    (:func:`edit_mask` of ``delta``, computed here otherwise). ``t0`` default: ``D2C_T0``
    (``d2c``), ``LOCAL_T0`` (``local``)."""
    _check_method(method)
    if method not in ("d2c", "local") and guidance != 1:
        raise ValueError(f"guidance={guidance!r}: method {method!r} is unguided")
    if method == "nvae":
        out = z + delta
    elif method == "local":
        out = local_edit(sampler, z, delta, attrs, preserve, eps=eps, guidance=guidance,
                         t0=LOCAL_T0 if t0 is None else t0,
                         skip=LOCAL_SKIP if skip is None else skip, mask=mask)
    elif method == "d2c":
        seq = D.manip_sequence(D2C_T0 if t0 is None else t0, D2C_SKIP if skip is None else skip,
                               sampler.num_timesteps)
        zn = D.add_noise(sampler.standardise(z + delta), seq[-1], eps, sampler.schedule)
        out = sampler.unstandardise(sampler.denoise(zn, seq, eta, rng, guidance=guidance))
    else:
        seq = D.uncond_sequence(sampler.num_timesteps, skip=100 if skip is None else skip)
        xT = inverted if inverted is not None else invert(sampler, z, skip=skip)
        xT = xT + delta / sampler.std
        out = sampler.unstandardise(sampler.denoise(xT, seq, 0.0, rng))
    if not torch.isfinite(out).all():
        raise ValueError(f"the {method} edit gave non-finite latents: the step or strength "
                         f"(largest |edit| {float(delta.abs().max()):.3g} in raw latent units) is "
                         f"far outside what the model can represent")
    return out


def edit_mask(sampler, delta: torch.Tensor) -> torch.Tensor:
    """Where an edit lives: ``(B, 1, H, W)`` 0/1 at latent resolution (the ``local``
    method's mask, see the module docstring). An all-zero edit has an all-zero mask."""
    return _dilate(share_mask(((delta / sampler.std) ** 2).sum(1, keepdim=True), MASK_ENERGY))


def share_mask(energy: torch.Tensor, share: float) -> torch.Tensor:
    """``(B, 1, H, W)`` 0/1: per image, the fewest positions of ``energy`` (>= 0) that hold
    ``share`` of its total, largest first (none for an all-zero image)."""
    flat = energy.flatten(1)
    total = flat.sum(1, keepdim=True)
    v, order = flat.sort(1, descending=True)
    # a position is kept while the energy of the larger ones is still short of the share
    keep = ((v.cumsum(1) - v) < share * total) & (total > 0)
    return torch.zeros_like(flat).scatter(1, order, keep.to(flat.dtype)).view_as(energy)


def _dilate(m: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(m, 2 * MASK_DILATE + 1, 1, MASK_DILATE) if MASK_DILATE else m


def pixel_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A latent-resolution 0/1 mask ``(B, 1, h, w)`` -> ``(B, 1, size, size)`` in [0, 1]: each
    latent cell covers its block of pixels, and the edge is feathered by a box filter two
    cells and a pixel wide (a ramp of about a cell on each side of it), so the paste leaves
    no seam (docs/quality/log-2026-12-07.md measures one cell against two)."""
    m = F.interpolate(mask, size=(size, size), mode="nearest")
    k = 2 * max(size // mask.shape[-1], 1) + 1
    return F.avg_pool2d(F.pad(m, (k // 2,) * 4, mode="replicate"), k, 1)


def paste(images: torch.Tensor, edited: torch.Tensor, reconstructed: torch.Tensor,
          mask: torch.Tensor) -> torch.Tensor:
    """The ``local`` method's last step: the input ``images`` plus the change the edit made
    to their decoding (``edited - reconstructed``, both decoded with the same draws) where
    the latent ``mask`` is set (:func:`pixel_mask`), clipped to [0, 1]. Outside the mask the
    output is the input; inside, the input's own detail stays wherever the edit did not
    change the decoding."""
    m = pixel_mask(mask.to(edited.dtype), edited.shape[-1])
    return (images.to(edited.dtype) + m * (edited - reconstructed)).clamp(0, 1)


def finish_local(images: torch.Tensor, edited: torch.Tensor, reconstructed: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """The ``local`` method's output image: :func:`paste` the decoding's change into the
    input, then :func:`spread` a colour change past the mask (module docstring, (c)-(d))."""
    return spread(images, paste(images, edited, reconstructed, mask), mask)


def _bin_stats(q, key, values, nbins):
    """Per image, sums of ``values`` (B, V, N) over the colour bins ``q`` (B, 3, N) (flat
    index ``key``, (B, N)) of each bin and its 26 neighbours: (B, V, nbins**3)."""
    B, V, _ = values.shape
    out = torch.zeros(B, V, nbins ** 3, dtype=values.dtype, device=values.device)
    room = {-1: q > 0, 1: q < nbins - 1}                           # (B, 3, N) per offset
    for o in itertools.product((-1, 0, 1), repeat=3):
        valid = None
        for axis, oa in enumerate(o):
            if oa:
                r = room[oa][:, axis]
                valid = r if valid is None else valid & r
        v = values if valid is None else values * valid.unsqueeze(1)
        k = (key + (o[0] * nbins + o[1]) * nbins + o[2]).clamp(0, nbins ** 3 - 1)
        out.scatter_add_(2, k.unsqueeze(1).expand(-1, V, -1), v)
    return out


def spread(images: torch.Tensor, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The ``local`` method's reach past its latent mask for colour changes (module
    docstring): where the pasted edit ``out`` changes every pixel of a colour inside the mask
    the same way (at least ``SPREAD_SUPPORT`` pixels of that colour bin and its neighbours
    changed by ``SPREAD_MIN`` or more, and the variance of the changes of all its pixels in
    the mask under ``SPREAD_CONSISTENT`` times their mean's squared size), the pixels of
    those colours connected to them through steps of less than ``SPREAD_STEP`` (up to
    ``SPREAD_CELLS`` latent cells away) change too, by the affine colour map fitted to the
    mask's consistently changed pixels. A change that is not one colour map (glasses drawn
    on some skin pixels, not on others; a smile) spreads nowhere.
    ``images``/``out`` (B, 3, R, R) in [0, 1], ``mask`` the latent mask (B, 1, h, w)."""
    B, C, R, _ = images.shape
    if C != 3:
        return out
    x = images.to(out.dtype)
    d = out - x
    pm = pixel_mask(mask.to(out.dtype), R)[:, 0]                    # (B, R, R)
    inside = (pm > 0.99).flatten(1)                                  # (B, N)
    nb = int(math.ceil(1 / SPREAD_BIN))
    q = (x / SPREAD_BIN).floor().clamp(0, nb - 1).long().flatten(2)   # (B, 3, N)
    key = (q[:, 0] * nb + q[:, 1]) * nb + q[:, 2]                      # (B, N)
    df = d.flatten(2)                                                # (B, 3, N)
    big = df.abs().amax(1) >= SPREAD_MIN                             # (B, N)
    s = _bin_stats(q, key, inside.unsqueeze(1).to(out.dtype) * torch.cat(
        [torch.ones_like(df[:, :1]), df, (df * df).sum(1, keepdim=True),
         big.unsqueeze(1).to(out.dtype)], 1), nb)
    sup = s[:, 5]
    n = s[:, 0].clamp(min=1)
    mean = s[:, 1:4] / n.unsqueeze(1)
    m2 = (mean * mean).sum(1)
    var = s[:, 4] / n - m2
    ok_bin = (sup >= SPREAD_SUPPORT) & (var < SPREAD_CONSISTENT * m2) \
        & (mean.abs().amax(1) >= SPREAD_MIN)
    ok = torch.gather(ok_bin, 1, key)                                # (B, N)
    seeds = ok & inside & big
    few = seeds.sum(1) < SPREAD_SUPPORT                              # nothing to fit a map to
    if bool(few.all()):
        return out
    # the colour map: an affine fit of the seeds' changes to their colours
    A = torch.cat([x.flatten(2), torch.ones_like(df[:, :1])], 1)     # (B, 4, N)
    w = seeds.to(out.dtype)
    G = torch.einsum("bin,bn,bjn->bij", A, w, A) + 1e-3 * torch.eye(4, dtype=out.dtype,
                                                                       device=out.device)
    theta = torch.linalg.solve(G, torch.einsum("bin,bn,bjn->bij", A, w, df))   # (B, 4, 3)
    region = seeds.view(B, R, R)
    allowed = ok.view(B, R, R)
    # a pixel may be reached from its upper / lower / left / right neighbour: a colour step
    # under SPREAD_STEP into an allowed pixel (computed once; no wrap-around at the border)
    steps = []
    for dim, sh in ((1, 1), (1, -1), (2, 1), (2, -1)):
        gate = ((x - torch.roll(x, sh, dim + 1)).abs().amax(1) < SPREAD_STEP) & allowed
        edge = [slice(None)] * 3
        edge[dim] = 0 if sh == 1 else R - 1
        gate[tuple(edge)] = False
        steps.append((dim, sh, gate))
    for _ in range(SPREAD_CELLS * max(R // mask.shape[-1], 1)):
        grown = region.clone()
        for dim, sh, gate in steps:
            grown |= torch.roll(region, sh, dim) & gate
        if torch.equal(grown, region):
            break
        region = grown
    region = region & ~few.view(B, 1, 1) & (pm < 0.99)
    change = torch.einsum("bin,bic->bcn", A, theta).view(B, 3, R, R)
    return (out + ((1 - pm) * region.to(out.dtype)).unsqueeze(1) * change).clamp(0, 1)


def logit_gradient(sampler, attr) -> torch.Tensor:
    """The gradient ``(C, H, W)`` float64 of a fitted attribute's logit with respect to the
    model's *standardised* latent (the logit is affine in the latent: exact)."""
    g = attr.require_classifier("logit_gradient").gradient(sampler.latent_shape)
    return g * sampler.std.detach()[0].to("cpu", torch.float64)


def local_edit(sampler, z, delta, attrs, preserve=(), *, eps, guidance: float, t0: int,
               skip: int, mask=None) -> torch.Tensor:
    """The ``local`` method (module docstring): raw latents ``z`` + raw edit ``delta`` ->
    edited raw latents; ``eps`` the noise ``(B, C, H, W)``; ``mask`` :func:`edit_mask` of
    ``delta`` if the caller has it."""
    seq = D.manip_sequence(t0, skip, sampler.num_timesteps)
    sched = sampler.schedule
    if delta.shape[0] == 1 and z.shape[0] > 1:
        delta = delta.expand_as(z)
    m = edit_mask(sampler, delta) if mask is None else mask
    x_orig = sampler.standardise(z)
    x_edit = sampler.standardise(z + delta)
    # Per fitted attribute: (mask * gradient, gradient, goal, role); logits are counted
    # relative to the input's, so the goal is the logit change of the raw edit (0: preserve).
    holds = []
    for a, role in [(a, "edit") for a in attrs] + [(p, "keep") for p in preserve]:
        if not a.is_fitted:
            continue
        g = logit_gradient(sampler, a).to(z.device, torch.float32)
        goal = ((x_edit - x_orig) * g).sum((1, 2, 3))
        holds.append((m * g, g, goal if role == "edit" else torch.zeros_like(goal), role))

    def hold(x, t, e):
        a = sched.abar(int(t[0]))
        x0 = (x - math.sqrt(1 - a) * e) / math.sqrt(a)
        for gm, g, goal, role in holds:
            gap = goal - ((x0 - x_orig) * g).sum((1, 2, 3))
            if role == "edit":   # only towards the goal: never undo more than asked
                gap = torch.where(goal >= 0, gap.clamp(min=0), gap.clamp(max=0))
            slope = (gm * g).sum((1, 2, 3))
            c = torch.where(slope > 1e-8, gap / slope.clamp(min=1e-8), torch.zeros_like(gap))
            x0 = x0 + c.view(-1, 1, 1, 1) * gm
        return (x - math.sqrt(a) * x0) / math.sqrt(1 - a)

    nexts = list(reversed([-1] + seq[:-1]))

    def blend(i, x):
        tn = nexts[i]
        known = x_orig if tn < 0 else D.add_noise(x_orig, tn, eps, sched)
        return m * x + (1 - m) * known

    xt = m * D.add_noise(x_edit, seq[-1], eps, sched) \
        + (1 - m) * D.add_noise(x_orig, seq[-1], eps, sched)
    x = sampler.denoise(xt, seq, 0.0, None, guidance=guidance, eps_map=hold, after_step=blend)
    return sampler.unstandardise(x)


def invert(sampler, z, *, skip=None) -> torch.Tensor:
    """DDIM inversion (``method="ddim"``) of raw latents -> standardised ``x_T``."""
    seq = D.uncond_sequence(sampler.num_timesteps, skip=100 if skip is None else skip)
    return D.ddim_invert(sampler.prior_eps, sampler.standardise(z), seq, sampler.schedule)


def manipulate_latents(sampler, z, attr, *, step=None, strength=None, target=None, t0=None,
                       skip=None, method=None, preserve=None, noise=None, generator=None,
                       seed=None, eta=0.0, rng=None, guidance=None) -> torch.Tensor:
    """``Sampler.manipulate_latents`` (see the module docstring). Returns raw latents."""
    method = default_method(method, step)
    w = edit_guidance(sampler, method, guidance)
    z = sampler.check_latents(z, "z")
    n = z.shape[0]
    attrs, pres = resolve(sampler, attr, preserve)
    target = default_amount(attrs, step, strength, target)
    delta, m = edit_plan(sampler, attrs, pres, z, method=method, step=step, strength=strength,
                         target=target)
    if rng is None:
        rng = sampler.rng(n, generator, seed)
    eps = sampler.noise(noise, n, rng) if method in NOISED else None
    return apply_delta(sampler, z, delta, method=method, t0=t0, skip=skip, eps=eps, rng=rng,
                       eta=eta, guidance=w, attrs=attrs, preserve=pres, mask=m)


def manipulate(sampler, images, attr, *, step=None, strength=None, target=None, t0=None,
               skip=None, method=None, preserve=None, mode="sample", noise=None,
               generator=None, seed=None, seeds=None, resize=False,
               batch_size=None, guidance=None) -> torch.Tensor:
    """``Sampler.manipulate``: encode, edit, decode (``(B, C, H, W)`` in [0, 1]). ``seeds``:
    explicit per-image seeds (instead of ``seed + i``). With none of ``step``/``strength``/
    ``target``, a fitted attribute is added up to ``target="typical"``."""
    method = default_method(method, step)
    w = edit_guidance(sampler, method, guidance)
    attrs, pres = resolve(sampler, attr, preserve)   # read attribute files once
    target = default_amount(attrs, step, strength, target)
    _check_edit_args(step, strength, target)
    if target is None:  # bad attributes / strengths fail before the encoder runs
        edit_delta(sampler, attrs, step=step, strength=strength, preserve=pres)
    else:
        _need_fitted(attrs, "target=")
    x = sampler.load_images(images, resize=resize)
    z = sampler.encode(x, batch_size=batch_size)
    n = z.shape[0]
    delta, mask = edit_plan(sampler, attrs, pres, z, method=method, step=step,
                            strength=strength, target=target)
    rng = sampler.rng(n, generator, seed, seeds)
    if noise is not None:
        noise = sampler.noise(noise, n, rng)
    out = []
    for a, b in chunks(n, batch_size):
        sub = rng.slice(a, b)
        eps = None
        if method in NOISED:
            eps = noise[a:b] if noise is not None else sub.randn(*sampler.latent_shape)
        d = delta if delta.shape[0] == 1 else delta[a:b]
        m = None if mask is None else (mask if mask.shape[0] == 1 else mask[a:b])
        zp = apply_delta(sampler, z[a:b], d, method=method, t0=t0, skip=skip, eps=eps, rng=sub,
                         guidance=w, attrs=attrs, preserve=pres, mask=m)
        draws = sampler.decode_draws(sub) if mode == "sample" else None
        img = sampler.logits_to_images(sampler.logits(zp), mode, sub, draws)
        if m is not None:
            rec = sampler.logits_to_images(sampler.logits(z[a:b]), mode, sub, draws)
            img = finish_local(x[a:b], img, rec, m)
        out.append(img)
    return torch.cat(out)


@torch.inference_mode()
def sweep(sampler, images, attr, strengths=None, *, steps=None, method=None, t0=None, skip=None,
          preserve=None, mode="sample", seed: int = 0, resize=False,
          batch_size=None, guidance=None) -> torch.Tensor:
    """Interpolation grid: ``(len(strengths), B, C, H, W)``. Row ``k`` edits every image with
    ``strengths[k]`` (or raw ``steps[k]``); image ``i`` uses the same noise and decode draws
    (generator ``seed + i``, restarted for every row), so rows differ only by the strength and
    strength 0 is the method's reconstruction (for ``local``, whose mask is then empty: the
    input images). The ``ddim`` inversion is computed once."""
    if mode not in ("sample", "mode"):
        raise ValueError(f"mode must be 'sample' or 'mode', got {mode!r}")
    if (strengths is None) == (steps is None):
        raise ValueError("give strengths= or steps=")
    vals = list(strengths if strengths is not None else steps)
    method = default_method(method, steps)
    w = edit_guidance(sampler, method, guidance)
    attrs, pres = resolve(sampler, attr, preserve)
    x = sampler.load_images(images, resize=resize)
    z = sampler.encode(x, batch_size=batch_size)
    inv = invert(sampler, z, skip=skip) if method == "ddim" else None
    rec = None
    if method == "local":   # the paste's reference: the same decode draws as every row
        rec = (sampler.decode(z, mode=mode, seed=seed) if mode == "sample"
               else sampler.decode(z, mode=mode))
    rows = []
    for v in vals:
        kw = {"strength": v} if strengths is not None else {"step": v}
        delta, m = edit_plan(sampler, attrs, pres, z, method=method, **kw)
        rng = sampler.rng(z.shape[0], None, seed)
        eps = rng.randn(*sampler.latent_shape) if method in NOISED else None
        zp = apply_delta(sampler, z, delta, method=method, t0=t0, skip=skip, eps=eps, rng=rng,
                         inverted=inv, guidance=w, attrs=attrs, preserve=pres, mask=m)
        img = (sampler.decode(zp, mode=mode, seed=seed) if mode == "sample"
               else sampler.decode(zp, mode=mode))
        rows.append(img if m is None else finish_local(x, img, rec, m))
    return torch.stack(rows)


__all__ = ["METHODS", "edit_delta", "target_strengths", "apply_delta", "invert",
           "manipulate", "manipulate_latents", "sweep", "resolve", "edit_guidance",
           "default_method", "default_amount", "local_edit", "edit_mask", "pixel_mask",
           "paste", "spread", "finish_local",
           "logit_gradient", "edit_plan", "local_plan", "share_mask",
           "D2C_T0", "D2C_SKIP", "LOCAL_T0", "LOCAL_SKIP", "MASK_ENERGY", "MASK_DILATE",
           "LOCAL_SHARE", "SPREAD_BIN", "SPREAD_MIN", "SPREAD_SUPPORT", "SPREAD_CONSISTENT",
           "SPREAD_STEP", "SPREAD_CELLS"]
