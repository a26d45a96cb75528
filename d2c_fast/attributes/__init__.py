"""Attributes: directions in the raw latent space used to edit images, optionally with the
linear classifier they were fitted from.

Two kinds of :class:`Attribute`:

* **plain directions** (official boundary files ``{"boundary": (1, C, H, W)}``): only
  ``direction``. The official edit is ``z - step * boundary`` (a positive step moves
  *against* the stored direction, exactly as the release's ``BoundaryInterpolationLayer``; the
  release's own files use both signs: its README edits blond with ``--step -15`` and beard
  with ``--step 20``).
* **fitted attributes** (:func:`fit_attribute`, ``Sampler.fit_attribute``): a logistic
  regression on *standardised, flattened* latents ``x = ((z - mean) / std).flatten()`` (the
  model's own ``latent_mod`` standardisation: per channel as the official release, or per
  latent position for models trained so), ``score(z) = w . x + b``.

Sign and unit conventions of a fitted attribute (explicit, because the release mixes them):

* ``edit_direction`` ``(C, H, W)``, raw space: ``z + s * edit_direction`` raises the
  classifier's logit by exactly ``s`` (``edit_direction = std * W / |w|^2`` with ``W`` the
  weights reshaped to the latent; this is the steepest ascent of the logit in *standardised*
  space, mapped back to raw space). ``strength=s`` in ``Sampler.manipulate`` means exactly
  this: ``s > 0`` adds the attribute, ``s < 0`` removes it, and ``s = 1`` moves the logit by
  +1 whatever the attribute.
* ``direction`` (the official "boundary", unit L2 norm in raw space) is
  ``edit_direction / |edit_direction|``: it points **towards the positive class**, so with the
  official convention ``z - step * boundary`` a **negative** ``step`` adds the attribute
  (``step = -s * |edit_direction|`` is the same edit as ``strength = s``;
  :meth:`Attribute.strength_to_step`).

Probabilities. Labelled mode fits with class-balanced weights (a 15%-rare attribute counts as
much as its complement), then Platt-scales the score on the out-of-fold scores of the
cross-validation, by Firth's penalised likelihood (L2 shrinks scores; a calibrated logit is
needed both for probabilities and for the strength unit; the penalty keeps the slope finite
when the classes separate, where plain maximum likelihood diverges), so ``score`` is the
calibrated *balanced* log-odds; the posterior in the population is ``logit p = score + logit(prior)`` with ``prior`` the positive rate given by
the caller (default: the rate in the labelled set, i.e. a random labelled sample).
Positive-unlabelled mode ("100 faces with blond hair" + unlabelled faces) is a case-control PU
learner: the direction is the balanced L2 logistic regression of labelled positives P against
the unlabelled U (L2 chosen by the out-of-fold AUC, which under ``f_U = prior f_P +
(1 - prior) f_N`` is ``prior / 2 + (1 - prior) AUC_PN``, a monotone function of the AUC we
want). The prior, when not given, is the mixture proportion estimated from the out-of-fold
scores by best-bin estimation (Garg et al. 2021: ``P_U(S >= t) / P_P(S >= t)`` at the ``t``
minimising its upper confidence bound, see :func:`~.pu.mixture_proportion`; the Elkan-Noto ``c``
correction needs calibrated probabilities, which high-dimensional regularised fits lack, this
rank-based bound does not). The score is then calibrated to the population posterior
``p(y=1|z) = sigmoid(a * score + c)`` by maximising the case-control likelihood of "labelled
vs unlabelled" (odds ``n_P p / (n_U prior)``) over ``(a, c)`` on the out-of-fold scores, so a PU
attribute's logit is, like a labelled one's, the posterior log-odds (same strength unit).

Files: :meth:`Attribute.save` writes one self-describing ``.safetensors`` (tensors
``direction``, and for fitted attributes ``classifier.weight``, ``classifier.bias``,
``latent_mod.mean``, ``latent_mod.std`` and (fits since 2026-12-07; optional when reading)
``evidence.typical`` ``(2, H, W)``, :attr:`Attribute.typical_evidence`; metadata
``format=d2c_fast_attribute``, ``version``, ``info`` (JSON: name, fingerprint, fit settings,
accuracy, conventions)).
:meth:`Attribute.load` reads that and official boundary ``.ckpt`` files. A fitted attribute
records the fingerprint of its model (:func:`d2c_fast.checkpoint.model_fingerprint`); using
it with another model is an :class:`AttributeFileError`.

Modules (layer 4; they import the checkpoint, image and base layers only):

* :mod:`~d2c_fast.attributes.attribute`: :class:`Attribute`, its file format, ``as_attribute``
  / ``as_direction``, ``estimate_prior``;
* :mod:`~d2c_fast.attributes.classifier`: :class:`LinearClassifier`;
* :mod:`~d2c_fast.attributes.logistic`: the fitting maths (L2 logistic regression, its
  cross-validation, Platt-Firth calibration);
* :mod:`~d2c_fast.attributes.pu`: positive-unlabelled pieces (mixture proportion, calibration);
* :mod:`~d2c_fast.attributes.fit`: :func:`fit_attribute`, both modes;
* :mod:`~d2c_fast.attributes.builtin`: the built-in model's shipped attributes, by name.
"""
from ..checkpoint import model_fingerprint
from .attribute import (ATTR_FORMAT, ATTR_VERSION, Attribute, as_attribute, as_direction,
                        estimate_prior, load_attribute, resolve_attribute)
from .builtin import ATTRIBUTE_DIR, builtin_attribute_names, builtin_attribute_path
from .classifier import LinearClassifier, log_odds
from .fit import fit_attribute
from .logistic import (DEFAULT_L2_GRID, auc, balanced_weights, fit_linear_cv, fit_lr,
                       platt_firth, stratified_folds)
from .pu import mixture_proportion, pu_calibrate

__all__ = ["Attribute", "LinearClassifier", "as_direction", "as_attribute", "fit_attribute",
           "load_attribute", "resolve_attribute", "ATTRIBUTE_DIR", "builtin_attribute_names",
           "builtin_attribute_path",
           "fit_linear_cv", "model_fingerprint", "estimate_prior", "DEFAULT_L2_GRID",
           "ATTR_FORMAT", "ATTR_VERSION", "fit_lr", "platt_firth", "balanced_weights",
           "stratified_folds", "auc", "mixture_proportion", "pu_calibrate", "log_odds"]
