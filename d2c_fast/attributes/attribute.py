"""The :class:`Attribute` type (a latent direction, optionally with its classifier), its
file format, and the helpers that turn what a user passes into a checked attribute. Sign and
unit conventions: see :mod:`d2c_fast.attributes`."""
from __future__ import annotations

import json
import os
from typing import Sequence

import torch

from ..checkpoint import is_legacy_fingerprint, load_boundary, read_safetensors
from ..errors import AttributeFileError
from ..utils import atomic_write
from .builtin import builtin_attribute_names, builtin_attribute_path, looks_like_name
from .classifier import LinearClassifier, log_odds

__all__ = ["Attribute", "as_attribute", "as_direction", "load_attribute",
           "resolve_attribute", "estimate_prior", "ATTR_FORMAT",
           "ATTR_VERSION"]

ATTR_FORMAT = "d2c_fast_attribute"
ATTR_VERSION = "1"


class Attribute:
    """A latent direction ``(C, H, W)`` in raw encoder space, optionally with the classifier
    it was fitted from (see the module docstring for the sign conventions).

    ``name`` is for display, ``source`` records where it came from, ``fingerprint`` the model
    it belongs to (``None``: any model with the right latent shape), ``info`` the fit's
    record (accuracy, regularisation, counts, recommended strengths). ``typical_evidence``
    (fitted attributes; ``None`` in files fitted before it existed): ``(2, H, W)``, per latent
    position the median share of the classifier's score of the fit's negatives (row 0; PU:
    the unlabelled set) and positives (row 1) (:meth:`LinearClassifier.evidence`); the
    ``local`` edit spreads its change over the positions where an image falls short of the
    class it is taken to."""

    def __init__(self, direction: torch.Tensor | None = None, *, name: str | None = None,
                 source: str | None = None, classifier: LinearClassifier | None = None,
                 fingerprint: str | None = None, info: dict | None = None,
                 latent_shape: Sequence[int] | None = None,
                 typical_evidence: torch.Tensor | None = None):
        self.classifier = classifier
        if direction is None:
            if classifier is None or latent_shape is None:
                raise AttributeFileError("an attribute needs a direction (or a classifier and "
                                         "the latent shape)")
            direction = self._edit_direction_of(classifier, tuple(latent_shape))
            direction = direction / direction.norm()
        if not isinstance(direction, torch.Tensor) or not direction.is_floating_point():
            raise AttributeFileError("an attribute direction must be a float tensor")
        if direction.dim() == 4 and direction.shape[0] == 1:
            direction = direction[0]
        if direction.dim() != 3:
            raise AttributeFileError(f"an attribute direction must be (C, H, W) or (1, C, H, W), "
                                     f"got {tuple(direction.shape)}")
        if not torch.isfinite(direction).all():
            raise AttributeFileError("attribute direction contains NaN or Inf")
        self.direction = direction.detach().float().cpu()
        if classifier is not None and classifier.weight.numel() != self.direction.numel():
            raise AttributeFileError(f"classifier has {classifier.weight.numel()} weights, the "
                                     f"direction {self.direction.numel()} elements")
        if typical_evidence is not None:
            if classifier is None:
                raise AttributeFileError("typical_evidence belongs to a fitted attribute (it "
                                         "is per-position classifier evidence)")
            typical_evidence = typical_evidence.detach().float().cpu()
            want = (2, *self.direction.shape[1:])
            if tuple(typical_evidence.shape) != want:
                raise AttributeFileError(f"typical_evidence must be {want} (negative, positive "
                                         f"class), got {tuple(typical_evidence.shape)}")
            if not torch.isfinite(typical_evidence).all():
                raise AttributeFileError("typical_evidence contains NaN or Inf")
        self.typical_evidence = typical_evidence
        self.name = name
        self.source = source
        self.fingerprint = fingerprint
        self.info = dict(info or {})

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _edit_direction_of(clf: LinearClassifier, shape) -> torch.Tensor:
        w = clf.weight.reshape(shape)
        return (clf.std.double() * w / w.square().sum()).float()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.direction.shape)

    @property
    def is_fitted(self) -> bool:
        return self.classifier is not None

    def require_classifier(self, what: str) -> LinearClassifier:
        """The classifier, or an :class:`AttributeFileError` saying that ``what`` needs one
        (this attribute is a plain direction)."""
        if self.classifier is None:
            raise AttributeFileError(f"{what} needs an attribute fitted with a classifier; "
                                     f"{self.name or 'this attribute'} is a plain direction "
                                     "(official boundary): use step=")
        return self.classifier


    @property
    def edit_direction(self) -> torch.Tensor:
        """Raw-space ``(C, H, W)``: ``z + s * edit_direction`` raises the logit by exactly
        ``s`` (fitted attributes only)."""
        return self._edit_direction_of(self.require_classifier("edit_direction"), self.shape)

    @property
    def normal_std(self) -> torch.Tensor:
        """The classifier's weights ``(D,)`` float64 in standardised space (the normal of its
        decision hyperplane there)."""
        return self.require_classifier("normal_std").weight

    def strength_to_step(self, strength: float) -> float:
        """The official raw step (``z - step * direction``) equal to ``strength``."""
        return -float(strength) * float(self.edit_direction.norm())

    @property
    def typical_logits(self) -> tuple[float, float]:
        """``(negative, positive)``: the median out-of-fold logits of the fit's two classes
        (PU mode: of the unlabelled set and the positives). ``target="typical"`` edits take
        an image to the positive one."""
        self.require_classifier("typical_logits")
        i = self.info
        if "logit_median_positive" not in i:
            raise AttributeFileError(f"{self.name or 'this attribute'} was fitted by an older "
                                     "d2c_fast that did not record its typical logits: refit "
                                     "it, or give target= as a number")
        return float(i["logit_median_negative"]), float(i["logit_median_positive"])

    @property
    def recommended_strength(self):
        """``(low, high)`` calibrated strengths from the fit (see :func:`fit_attribute`)."""
        r = self.info.get("recommended_strength")
        return tuple(r) if r is not None else None

    # ------------------------------------------------------------------ classifier
    def score(self, z: torch.Tensor) -> torch.Tensor:
        return self.require_classifier("score").score(z)

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        """Classifier logit ``(B,)`` float64 of raw latents (the unit of ``strength``)."""
        return self.require_classifier("logit").logit(z)

    def probability(self, z: torch.Tensor) -> torch.Tensor:
        """``p(attribute | z)`` ``(B,)`` float64 of raw latents (population posterior)."""
        return self.require_classifier("probability").probability(z)

    def with_prior(self, prior: float, source: str = "given") -> "Attribute":
        """A copy whose probabilities are for a population with positive rate ``prior``
        (:meth:`LinearClassifier.with_prior`: every logit moves by ``logit(prior) -
        logit(old prior)``; the direction and the balanced score are unchanged). ``info``
        records the new ``prior`` with ``prior_source = source``, the old one as
        ``fit_prior``, and the typical logits move with the rest."""
        clf = self.require_classifier("with_prior")
        new = clf.with_prior(prior)
        shift = log_odds(new.prior) - log_odds(clf.prior)
        info = dict(self.info)
        info.setdefault("fit_prior", clf.prior)
        info.update(prior=new.prior, prior_source=source)
        for k in ("logit_median_positive", "logit_median_negative"):
            if k in info:
                info[k] = float(info[k]) + shift
        return Attribute(self.direction, name=self.name, source=self.source, classifier=new,
                         fingerprint=self.fingerprint, info=info,
                         typical_evidence=self.typical_evidence)

    # ------------------------------------------------------------------ model checks
    def check_latent_shape(self, latent_shape) -> None:
        if tuple(latent_shape) != self.shape:
            raise AttributeFileError(
                f"attribute {self.name or ''} has shape {self.shape}, the model's latents are "
                f"{tuple(latent_shape)}: it belongs to another model")

    def check_model(self, model) -> None:
        """Refuse (``AttributeFileError``) a model this attribute was not fitted on. ``model``:
        a ``Sampler`` or a fingerprint string. Plain directions only check the shape."""
        fp = model if isinstance(model, str) else getattr(model, "fingerprint", None)
        if not isinstance(model, str):
            self.check_latent_shape(model.latent_shape)
            if self.fingerprint is not None and is_legacy_fingerprint(self.fingerprint):
                fp = getattr(model, "legacy_fingerprint", fp)
        if self.fingerprint is None or fp is None or fp == self.fingerprint:
            return
        same_cfg = fp.split("-")[0] == self.fingerprint.split("-")[0]
        why = ("same architecture, different weights" if same_cfg
               else "different architecture/config")
        raise AttributeFileError(
            f"attribute {self.name or ''} was fitted on model {self.fingerprint}, this model is "
            f"{fp} ({why}): refit it on this model (Sampler.fit_attribute)")

    # ------------------------------------------------------------------ files
    def save(self, path) -> str:
        """Write a self-describing ``.safetensors`` (atomic). Returns the path."""
        from safetensors.torch import save_file
        p = os.fspath(path)
        tensors = {"direction": self.direction.contiguous()}
        info = dict(self.info)
        info.update(name=self.name, fingerprint=self.fingerprint,
                    latent_shape=list(self.shape))
        if self.classifier is not None:
            c = self.classifier
            tensors["classifier.weight"] = c.weight.contiguous()
            tensors["classifier.bias"] = torch.tensor([c.bias], dtype=torch.float64)
            tensors["latent_mod.mean"] = c.mean.contiguous()
            tensors["latent_mod.std"] = c.std.contiguous()
            info.update(mode=c.mode, prior=c.prior, conventions=_CONVENTIONS)
        if self.typical_evidence is not None:
            tensors["evidence.typical"] = self.typical_evidence.contiguous()
        meta = {"format": ATTR_FORMAT, "version": ATTR_VERSION,
                "info": json.dumps(info, sort_keys=True)}
        atomic_write(p, lambda tmp: save_file(tensors, tmp, metadata=meta), to_path=True)
        return p

    @classmethod
    def load(cls, path, model=None) -> "Attribute":
        """Load our ``.safetensors`` attribute file or an official boundary ``.ckpt`` (read
        without executing code). With ``model`` (a ``Sampler`` or a fingerprint), refuse an
        attribute fitted on another model."""
        p = os.fspath(path)
        if os.path.isdir(p):
            raise AttributeFileError(f"{p}: is a directory, not an attribute file")
        if _looks_like_safetensors(p):
            attr = cls._load_safetensors(p)
        else:
            d = load_boundary(p)
            try:
                attr = cls(d, name=os.path.splitext(os.path.basename(p))[0], source=p)
            except AttributeFileError as e:
                raise AttributeFileError(f"{p}: {e}") from e
        if not bool(attr.direction.ne(0).any()):
            raise AttributeFileError(f"{p}: the direction is all zeros (an edit along it would "
                                     "change nothing)")
        if model is not None:
            attr.check_model(model)
        return attr

    @classmethod
    def _load_safetensors(cls, p: str) -> "Attribute":
        meta, tensors = read_safetensors(
            p, lambda msg: AttributeFileError(f"{p}: not a readable safetensors file ({msg})"))
        if meta.get("format") != ATTR_FORMAT:
            if "config" in meta:
                raise AttributeFileError(f"{p}: this is a model file, not an attribute file "
                                         "(fit one with fit-attribute / Sampler.fit_attribute)")
            raise AttributeFileError(f"{p}: not a d2c_fast attribute file "
                                     f"(format={meta.get('format')!r})")
        if meta.get("version") != ATTR_VERSION:
            raise AttributeFileError(f"{p}: unsupported attribute file version "
                                     f"{meta.get('version')!r}")
        try:
            info = json.loads(meta.get("info", "{}"))
        except json.JSONDecodeError as e:
            raise AttributeFileError(f"{p}: metadata 'info' is not JSON") from e
        if not isinstance(info, dict):
            raise AttributeFileError(f"{p}: metadata 'info' must be a JSON object, got "
                                     f"{type(info).__name__}")
        try:
            return cls._from_tensors(p, tensors, info)
        except (AttributeFileError, ValueError, TypeError) as e:
            if str(e).startswith(f"{p}:"):
                raise
            raise AttributeFileError(f"{p}: {e}") from e

    @classmethod
    def _from_tensors(cls, p: str, tensors: dict, info: dict) -> "Attribute":
        if "direction" not in tensors:
            raise AttributeFileError(f"{p}: missing tensor 'direction'")
        clf = None
        keys = {"classifier.weight", "classifier.bias", "latent_mod.mean", "latent_mod.std"}
        if keys & set(tensors):
            if not keys <= set(tensors):
                raise AttributeFileError(f"{p}: incomplete classifier (missing "
                                         f"{sorted(keys - set(tensors))})")
            d = tensors["direction"]
            d = d[0] if d.dim() == 4 and d.shape[0] == 1 else d
            c = d.shape[0] if d.dim() == 3 else -1
            for k in ("latent_mod.mean", "latent_mod.std"):
                n = tensors[k].numel()
                if n == c:                                  # per channel
                    tensors[k] = tensors[k].reshape(c, 1, 1)
                elif d.dim() == 3 and n == d.numel():       # per position
                    tensors[k] = tensors[k].reshape(d.shape)
                else:
                    raise AttributeFileError(f"{p}: {k} has {n} values, expected the "
                                             f"direction's {c} channels or {d.numel()} positions")
            if tensors["classifier.bias"].numel() != 1:
                raise AttributeFileError(f"{p}: classifier.bias must have one value")
            if not (tensors["latent_mod.std"] > 0).all():
                raise AttributeFileError(f"{p}: latent_mod.std must be positive")
            clf = LinearClassifier(tensors["classifier.weight"],
                                   float(tensors["classifier.bias"].reshape(())),
                                   tensors["latent_mod.mean"], tensors["latent_mod.std"],
                                   mode=info.get("mode", "labelled"),
                                   prior=float(info.get("prior", 0.5)))
        name = info.get("name") or os.path.splitext(os.path.basename(p))[0]
        return cls(tensors["direction"], name=name, source=p, classifier=clf,
                   fingerprint=info.get("fingerprint"), info=info,
                   typical_evidence=tensors.get("evidence.typical"))

    def __repr__(self) -> str:
        extra = ""
        if self.classifier is not None:
            acc = self.info.get("cv_accuracy")
            extra = (f", fitted={self.classifier.mode!r}"
                     + (f", cv_accuracy={acc:.3f}" if isinstance(acc, float) else ""))
        return f"Attribute(name={self.name!r}, shape={self.shape}{extra})"


_CONVENTIONS = ("strength s: z + s * edit_direction raises the classifier logit by s (s > 0 "
                "adds the attribute); direction (boundary) points to the positive class with "
                "unit raw norm, so the official z - step * boundary adds it for step < 0")


def _looks_like_safetensors(p: str) -> bool:
    if p.endswith(".safetensors"):
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def as_direction(attr, latent_shape, device) -> torch.Tensor:
    """An :class:`Attribute`, a tensor, or a path -> direction ``(1, C, H, W)`` on ``device``."""
    return as_attribute(attr, latent_shape).direction.to(device).unsqueeze(0)


def as_attribute(attr, latent_shape, model=None) -> Attribute:
    """An :class:`Attribute`, a tensor, a path, or the name of a built-in attribute
    (:mod:`~d2c_fast.attributes.builtin`; a file of that name wins) -> checked
    :class:`Attribute`."""
    if isinstance(attr, (str, os.PathLike)):
        attr = load_attribute(attr)
    elif isinstance(attr, torch.Tensor):
        attr = Attribute(attr)
    elif not isinstance(attr, Attribute):
        raise AttributeFileError(f"expected an Attribute, a tensor or a path, got "
                                 f"{type(attr).__name__}")
    attr.check_latent_shape(latent_shape)
    if model is not None:
        attr.check_model(model)
    return attr


def load_attribute(spec) -> Attribute:
    """A path or a built-in attribute name -> :class:`Attribute` (not yet checked against a
    model). A missing file that is not a built-in name is an :class:`AttributeFileError` that
    lists the built-in names."""
    p = os.fspath(spec)
    if os.path.exists(p):
        return Attribute.load(p)
    path = builtin_attribute_path(p)
    if path is not None:
        return Attribute.load(path)
    names = builtin_attribute_names()
    hint = (f"; built-in attributes (for the built-in model): {', '.join(names)}"
            if names and looks_like_name(p) else "")
    raise AttributeFileError(f"{p}: no such attribute file{hint}")


def resolve_attribute(spec, model) -> Attribute:
    """What a user names as an attribute (an :class:`Attribute`, a tensor, a path, or a
    built-in attribute name) -> :class:`Attribute` checked against ``model`` (a ``Sampler``:
    latent shape and fingerprint)."""
    return as_attribute(spec, model.latent_shape, model)


def estimate_prior(attr: "Attribute", z: torch.Tensor, iters: int = 200,
                   tol: float = 1e-7) -> float:
    """The positive rate of ``attr``'s attribute among the raw latents ``z`` by the EM of
    Saerens, Latinne & Decaestecker (2002, "Adjusting the outputs of a classifier to new a
    priori probabilities"): with the classifier calibrated for prior ``pi0``, iterate
    ``pi <- mean_i sigmoid(logit_i - logit(pi0) + logit(pi))`` (the maximum-likelihood rate
    under label shift). Used by conditional sampling to calibrate the classifier to the
    model's own samples (``adapt_prior``): a model that under-produces an attribute makes the
    data-rate probabilities too high on its samples."""
    clf = attr.require_classifier("estimate_prior")
    lg = clf.logit(z).double().flatten()
    if lg.numel() < 1:
        raise ValueError("estimate_prior needs at least one latent")
    base = lg - log_odds(clf.prior)
    pi = min(max(clf.prior, 1e-6), 1 - 1e-6)
    for _ in range(int(iters)):
        new = min(max(float(torch.sigmoid(base + log_odds(pi)).mean()), 1e-6), 1 - 1e-6)
        converged = abs(new - pi) < tol
        pi = new
        if converged:
            break
    return pi
