"""The fingerprint of a loaded model: what fitted attribute files record to refuse another
model, and what a training run's resume check compares (:func:`identity_json`)."""
from __future__ import annotations

import hashlib
import json

import torch

from .load import is_alias_key

__all__ = ["model_fingerprint", "identity_json", "is_legacy_fingerprint"]


def _tensor_digest(h, t: torch.Tensor) -> None:
    t = t.detach().to("cpu", torch.float32).contiguous()
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())


def identity_json(config) -> str:
    """The normalised config JSON without the guide's sampling recommendations (``weight``,
    ``rescale``, ``rescale_t`` of ``diffusion.guide``): changing how a model is sampled by
    default does not make it another model for its attributes."""
    raw = config.raw
    g = raw["diffusion"].get("guide")
    if g is None:
        return config.to_json()
    g = {k: v for k, v in g.items() if k not in ("weight", "rescale", "rescale_t")}
    return json.dumps({**raw, "diffusion": {**raw["diffusion"], "guide": g}}, sort_keys=True)


def model_fingerprint(loaded, legacy: bool = False) -> str:
    """Fingerprint of a model (a ``LoadedModel``): ``"<config hash>-<weights hash>"``, 12 and
    16 hex digits of SHA-256. The config hash covers the normalised config JSON (less the guide
    prior's sampling recommendations); the weights hash covers the latent standardisation and
    every floating-point tensor of the autoencoder and the prior U-Net, in float32 (not the
    guide prior's, which only steers sampling). It is computed from the reference modules at
    load time, so it does not depend on ``impl``, device or dtype.

    ``legacy=True``: the fingerprint of attribute files written before 2026-11-29 (12 + 12
    digits, the weights hash over the standardisation and six tensors only, so a model
    fine-tuned elsewhere kept it); :meth:`d2c_fast.Attribute.check_model` still accepts those
    files on the model they name."""
    ch = hashlib.sha256(identity_json(loaded.config).encode()).hexdigest()[:12]
    h = hashlib.sha256()
    _tensor_digest(h, loaded.mean)
    _tensor_digest(h, loaded.std)
    ae = [(k, v) for k, v in loaded.autoencoder.state_dict().items()
          if not is_alias_key(k) and v.is_floating_point()]
    un = [(k, v) for k, v in loaded.unet.state_dict().items() if v.is_floating_point()]
    for k, v in (ae[:2] + ae[-2:] + un[:1] + un[-1:] if legacy else ae + un):
        h.update(k.encode())
        _tensor_digest(h, v)
    return f"{ch}-{h.hexdigest()[:12 if legacy else 16]}"


def is_legacy_fingerprint(fp: str) -> bool:
    """Whether ``fp`` has the pre-2026-11-29 form (12 + 12 hex digits)."""
    parts = fp.split("-")
    return len(parts) == 2 and len(parts[1]) == 12
