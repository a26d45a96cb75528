"""What the server does, without the web framework: the model and its attributes, the checks
of every request field, and the engine calls that serve a batch of requests.

Each request is checked here (a :class:`RequestError` with an HTTP status, or the library's
own :class:`~d2c_fast.errors.D2CError` / ``ValueError`` with the one-line message the CLI
prints) and turned into a batch *key* (everything that is not per image) and a *payload*
(the decoded upload, with PIL only, and its seed). ``run_edits`` / ``run_samples`` serve a
whole group of requests with one key in ONE engine call, with per-image seeds, so each image
equals the direct call ``Sampler.manipulate(image, attr, strength=..., seed=seed)`` /
``Sampler.sample(n, seed=seed)`` made alone (up to the float rounding of batch-size
dependent kernels); they make the tensors and round the results to uint8 arrays, so torch
runs only in the engine thread (:mod:`d2c_fast.serve.batcher`).
"""
from __future__ import annotations

import base64
import io
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..attributes import Attribute, builtin_attribute_names, resolve_attribute
from ..conditional import PAPER_RULE
from ..data.faces import FacesDataset
from ..edit import METHODS, default_method
from ..errors import D2CError
from ..images import array_to_pil, uint8_arrays
from ..sampler import Sampler

__all__ = ["RequestError", "Limits", "Service", "ATTR_NAME", "png_bytes", "b64_png",
           "load_attribute_dir"]

#: Names of attributes the server stores and serves: no path separators, no leading dot.
ATTR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MODES = ("sample", "mode")
SEED_MAX = 2 ** 63 - 1


class RequestError(D2CError, ValueError):
    """A request the server refuses, with the HTTP status to answer (4xx)."""

    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""
    max_body_bytes: int = 8 * 1024 * 1024    # whole request body (uploads, base64 JSON)
    max_pixels: int = 1024 * 1024            # decoded pixels of one uploaded image
    max_n: int = 16                          # images of one sample request
    max_conditional_n: int = 8               # images of one conditional sample request
    max_abs_value: float = 100.0             # |strength| and |target| (logit units)
    max_fit_images: int = 512                # labelled images of one fit (each class)
    max_draws: int = 1024                    # prior draws of one conditional request


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 ``(H, W, C)`` array (:func:`~d2c_fast.images.uint8_arrays`) -> PNG bytes (PIL
    only, no torch: safe in any thread)."""
    buf = io.BytesIO()
    array_to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def b64_png(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def load_attribute_dir(sampler: Sampler, attr_dir: str) -> tuple[dict, list[str]]:
    """``<name>.safetensors`` files of ``attr_dir`` (valid names only) checked against the
    model: ``({name: Attribute}, [one line per file that was skipped and why])``."""
    out, skipped = {}, []
    if not os.path.isdir(attr_dir):
        return out, skipped
    for f in sorted(os.listdir(attr_dir)):
        name, ext = os.path.splitext(f)
        if ext != ".safetensors" or f.startswith("."):   # not attributes; temp files
            continue
        if not ATTR_NAME.fullmatch(name):
            skipped.append(f"{f}: the name must be letters, digits, '_' or '-' (at most 64)")
            continue
        try:
            out[name] = Attribute.load(os.path.join(attr_dir, f), model=sampler)
        except (D2CError, ValueError, OSError) as e:
            skipped.append(f"{f}: {e}")
    return out, skipped


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _number(name: str, v, lo: float, hi: float, *, typical: bool = False):
    """A finite number in [lo, hi] from a JSON number or a form string (or ``"typical"``)."""
    if typical and v == "typical":
        return v
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise RequestError(f"{name} must be a number{' or typical' if typical else ''}, "
                               f"got {v[:40]!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise RequestError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {v}")
    return v


def _integer(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            raise RequestError(f"{name} must be an integer, got {v[:40]!r}") from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{name} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise RequestError(f"{name} must be an integer in [{lo}, {hi}], got {v}")
    return v


def _choice(name: str, v, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise RequestError(f"{name} must be one of {', '.join(choices)}, got {str(v)[:40]!r}")
    return v


def _flag(name: str, v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.lower() in ("1", "true", "yes", "on")
    raise RequestError(f"{name} must be true or false, got {str(v)[:40]!r}")


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


@dataclass(frozen=True)
class EditKey:
    """The settings a batch of edits shares: ``amount`` is ``"strength"``, ``"target"`` or
    ``"step"`` and ``values`` its value(s)."""
    attrs: tuple
    amount: str
    values: tuple
    method: str
    mode: str


class Service:
    """The model, its attributes (built-in, from ``attr_dir``, fitted through the API) and the
    request handling the app routes to.

    Args:
        sampler: the loaded model.
        attributes: ``{name: Attribute}`` served from the start.
        attr_dir: where fitted attributes are stored (``None``: fitting is off).
        fixed: names that cannot be replaced by a fit (the built-in ones).
    """

    def __init__(self, sampler: Sampler, attributes: Mapping[str, Attribute] | None = None, *,
                 attr_dir: str | None = None, fixed: Sequence[str] = (),
                 limits: Limits = Limits()):
        self.sampler = sampler
        self.attributes: dict[str, Attribute] = dict(attributes or {})
        for name in self.attributes:
            if not ATTR_NAME.fullmatch(name):
                raise ValueError(f"attribute name {name!r}: use letters, digits, '_' and '-' "
                                 "(at most 64, not starting with '_' or '-')")
        self.attr_dir = os.path.abspath(attr_dir) if attr_dir else None
        self.fixed = frozenset(fixed)
        self.limits = limits
        self._faces: list[str] | None = None

    @classmethod
    def open(cls, sampler: Sampler, attr_dir: str | None = None, *, builtin: bool = False,
             limits: Limits = Limits()) -> tuple["Service", list[str]]:
        """The service of ``sampler``: the built-in attributes (``builtin``: the model is the
        built-in one) and the files of ``attr_dir``. Returns it and the skipped files."""
        attrs = {}
        names = builtin_attribute_names() if builtin else ()
        for name in names:
            attrs[name] = resolve_attribute(name, sampler)
        skipped = []
        if attr_dir:
            found, skipped = load_attribute_dir(sampler, attr_dir)
            for name, a in found.items():
                if name in attrs:
                    skipped.append(f"{name}.safetensors: shadows the built-in attribute "
                                   f"{name!r}; rename the file")
                else:
                    attrs[name] = a
        return cls(sampler, attrs, attr_dir=attr_dir, fixed=names, limits=limits), skipped

    # ------------------------------------------------------------------ info
    def model_info(self) -> dict:
        s = self.sampler
        attrs = {}
        for name, a in sorted(self.attributes.items()):
            d = {"fitted": a.is_fitted, "builtin": name in self.fixed}
            if a.recommended_strength is not None:
                d["recommended_strength"] = list(a.recommended_strength)
            if a.is_fitted and "logit_median_positive" in a.info:
                d["typical_logits"] = list(a.typical_logits)
            attrs[name] = d
        return {"resolution": s.resolution, "channels": s.image_channels,
                "latent_shape": list(s.latent_shape), "impl": s.impl, "device": str(s.device),
                "guidance": s.guidance, "attributes": sorted(self.attributes),
                "attribute_info": attrs, "methods": list(METHODS), "modes": list(MODES),
                "fitting": self.attr_dir is not None,
                "limits": {"max_n": self.limits.max_n,
                           "max_conditional_n": self.limits.max_conditional_n,
                           "max_pixels": self.limits.max_pixels,
                           "max_body_bytes": self.limits.max_body_bytes,
                           "max_abs_strength": self.limits.max_abs_value}}

    def faces(self, n: int = 8) -> list[str]:
        """``n`` built-in procedural test faces at the model's resolution, base64 PNG (torch
        work: call it in the engine thread)."""
        if self._faces is None:
            ds = FacesDataset(n, resolution=self.sampler.resolution, seed=1, split="test")
            faces = uint8_arrays(torch.stack([ds[i][0] for i in range(n)]))
            self._faces = [b64_png(png_bytes(f)) for f in faces]
        return self._faces

    def attribute(self, name) -> Attribute:
        if not isinstance(name, str):
            raise RequestError(f"attr must be an attribute name, got {type(name).__name__}")
        a = self.attributes.get(name)
        if a is None:
            have = ", ".join(sorted(self.attributes)) or "none"
            raise RequestError(f"unknown attribute {name[:64]!r}: this server has {have} "
                               "(GET /v1/model)", 404)
        return a

    # ------------------------------------------------------------------ images
    def read_image(self, data, where: str = "image", resize: bool = False) -> Image.Image:
        """Uploaded bytes (or base64 text) -> a decoded PIL image whose size the model takes
        (as it is, or with ``resize``). The header is read and the pixel count checked before
        any pixel is decoded. PIL only, no torch (the I/O threads' part; the engine thread
        makes the tensor, :meth:`image_tensor`)."""
        if isinstance(data, str):
            s = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
            if len(s) > self.limits.max_body_bytes * 4 // 3 + 4:
                raise RequestError(f"{where}: more than {self.limits.max_body_bytes} bytes",
                                   413)
            try:
                data = base64.b64decode(s, validate=True)
            except ValueError:
                raise RequestError(f"{where}: not valid base64 (send the PNG/JPEG file's "
                                   "bytes base64-encoded)") from None
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise RequestError(f"{where}: give an image file (PNG, JPEG, ...)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))   # lazy: the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise RequestError(f"{where}: refused by PIL as a decompression bomb "
                               f"({_one_line(e)[:160]}); send a smaller image", 413) from None
        except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            why = "" if isinstance(e, Image.UnidentifiedImageError) else f" ({_one_line(e)[:120]})"
            raise RequestError(f"{where}: not an image file PIL can read (PNG, JPEG, ...)"
                               f"{why}", 415) from None
        w, h = im.size
        if w * h > self.limits.max_pixels:
            raise RequestError(f"{where}: image is {w}x{h} (WxH) = {w * h} pixels, more than "
                               f"the limit of {self.limits.max_pixels}; send a smaller image",
                               413)
        R = self.sampler.resolution
        if not resize and (w, h) != (R, R):
            raise RequestError(f"{where}: image is {h}x{w} (HxW) but the model expects "
                               f"{R}x{R}; send resize=true to resize it")
        try:
            im.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise RequestError(f"{where}: not an image file PIL can read (PNG, JPEG, ...) "
                               f"({_one_line(e)[:120]})", 415) from None
        return im

    def image_tensor(self, im: Image.Image, resize: bool = False) -> torch.Tensor:
        """A :meth:`read_image` image -> ``(1, C, R, R)`` float32, exactly as the direct call
        (``Sampler.load_images``) makes it; its pixel count was checked by :meth:`read_image`."""
        return self.sampler.load_images(im, resize=resize)

    # ------------------------------------------------------------------ edits
    def parse_edit(self, fields: Mapping[str, Any]):
        """Checked edit request -> ``(EditKey, (PIL image, resize, seed))``, without torch.
        ``fields``: ``image`` (bytes or base64 text), ``attr`` (name or list), ``strength``,
        ``target`` or ``step`` (one value or one per attribute; none: ``target="typical"``),
        ``method`` (default: the library's), ``mode``, ``seed``, ``resize``: the arguments of
        ``Sampler.manipulate``, with the same defaults."""
        known = {"image", "attr", "strength", "target", "step", "method", "mode", "seed",
                 "resize"}
        extra = sorted(set(fields) - known)
        if extra:
            raise RequestError(f"unknown field {extra[0][:40]!r} (edit fields: "
                               f"{', '.join(sorted(known))})")
        if fields.get("attr") in (None, "", []):
            raise RequestError("attr is required: an attribute name (GET /v1/model lists them)")
        names = _as_list(fields["attr"])
        if len(names) > 8:
            raise RequestError("attr: at most 8 attributes in one edit")
        attrs = [self.attribute(n) for n in names]
        if len(set(names)) != len(names):
            raise RequestError("attr: an attribute is given twice")
        given = [k for k in ("strength", "target", "step") if fields.get(k) not in (None, "")]
        if len(given) > 1:
            raise RequestError(f"give one of strength, target, step, not {' and '.join(given)}")
        if given:
            which = given[0]
            raw = _as_list(fields[which])
        else:   # as Sampler.manipulate(img, attr): add the attribute up to its typical logit
            which, raw = "target", ["typical"]
        m = self.limits.max_abs_value
        vals = tuple(_number(which, v, -m, m, typical=which == "target") for v in raw)
        if len(vals) not in (1, len(attrs)):
            raise RequestError(f"{which}: {len(vals)} values for {len(attrs)} attributes")
        for name, a in zip(names, attrs):
            if which != "step" and not a.is_fitted:
                raise RequestError(f"attribute {name!r} is a plain direction (official "
                                   f"boundary file): give step (a raw step along it), "
                                   f"{which} needs a fitted attribute")
        method = fields.get("method") or default_method(None, 1.0 if which == "step" else None)
        method = _choice("method", method, METHODS)
        mode = _choice("mode", fields.get("mode") or "sample", MODES)
        seed = _integer("seed", fields.get("seed", 0) if fields.get("seed") not in ("", None)
                        else 0, 0, SEED_MAX)
        resize = _flag("resize", fields.get("resize", False))
        if fields.get("image") in (None, "", b""):
            raise RequestError("image is required: an image file (multipart field image, or "
                               "base64 in JSON)")
        image = self.read_image(fields["image"], "image", resize)
        key = EditKey(tuple(names), which, vals, method, mode)
        return key, (image, resize, seed)

    def edit_kwargs(self, key: EditKey) -> dict:
        """The keywords of ``Sampler.manipulate`` that the key stands for (one attribute:
        plain values, as a user would write the call)."""
        one = len(key.attrs) == 1
        attr = [self.attributes[n] for n in key.attrs]
        v = key.values
        return {"attr": attr[0] if one else attr, "method": key.method, "mode": key.mode,
                key.amount: v[0] if len(v) == 1 else list(v)}

    def run_edits(self, key: EditKey, payloads: Sequence[tuple]) -> list[np.ndarray]:
        """One engine call for a group of edits with the same key: one uint8 ``(H, W, C)``
        image per request (PNG-encoded by the caller, outside the engine thread)."""
        images = torch.cat([self.image_tensor(im, resize) for im, resize, _ in payloads])
        kw = self.edit_kwargs(key)
        out = self.sampler.manipulate(images, kw.pop("attr"), seeds=[p[2] for p in payloads],
                                      **kw)
        return uint8_arrays(out)

    # ------------------------------------------------------------------ samples
    def parse_sample(self, body: Mapping[str, Any]):
        """``{"n", "seed", "mode", "attr", "threshold"}`` -> ``(key, payload)``: unconditional
        (no ``attr``: batched) or conditional (``attr``: rejection sampling, run alone)."""
        if not isinstance(body, Mapping):
            raise RequestError("send a JSON object such as {\"n\": 4, \"seed\": 0}")
        known = {"n", "seed", "mode", "attr", "threshold"}
        extra = sorted(set(body) - known)
        if extra:
            raise RequestError(f"unknown field {str(extra[0])[:40]!r} (sample fields: "
                               f"{', '.join(sorted(known))})")
        cond = body.get("attr") not in (None, [], "")
        max_n = self.limits.max_conditional_n if cond else self.limits.max_n
        n = _integer("n", body.get("n", 1), 1, max_n)
        seed = _integer("seed", body.get("seed", 0), 0, SEED_MAX - max_n)
        mode = _choice("mode", body.get("mode") or "sample", MODES)
        if not cond:
            if body.get("threshold") is not None:
                raise RequestError("threshold applies to conditional samples (give attr)")
            return ("sample", mode), (n, seed)
        names = _as_list(body["attr"])
        if len(set(map(str, names))) != len(names) or len(names) > 8:
            raise RequestError("attr: distinct attribute names, at most 8")
        for name in names:
            if not self.attribute(name).is_fitted:
                raise RequestError(f"attribute {name!r} is a plain direction: conditional "
                                   "samples need fitted attributes")
        thr = body.get("threshold")   # absent: the library's default rule
        if thr is not None and thr != PAPER_RULE:
            thr = _number(f"threshold (a probability, or {PAPER_RULE!r})", thr, 0.0, 1.0)
        return ("conditional", tuple(names), thr, mode, n, seed), None

    def run_samples(self, mode: str, payloads: Sequence[tuple]) -> list[list[np.ndarray]]:
        """One engine call for a group of sample requests ``(n, seed)``: request ``k``'s image
        ``i`` draws from seed ``seed_k + i`` as ``Sampler.sample(n_k, seed=seed_k)`` does
        (uint8 ``(H, W, C)`` arrays, PNG-encoded by the caller)."""
        seeds = [seed + i for n, seed in payloads for i in range(n)]
        imgs = uint8_arrays(self.sampler.sample(len(seeds), seeds=seeds, mode=mode))
        out, a = [], 0
        for n, _ in payloads:
            out.append(imgs[a:a + n])
            a += n
        return out

    def run_conditional(self, key) -> dict:
        _, names, thr, mode, n, seed = key
        attrs = [self.attributes[k] for k in names]
        kw = {} if thr is None else {"threshold": thr}
        imgs, probs = self.sampler.sample_conditional(
            attrs, n, seed=seed, mode=mode, return_probs=True, **kw,
            max_draws=min(100 * n + 1000, self.limits.max_draws))
        return {"images": [b64_png(png_bytes(x)) for x in uint8_arrays(imgs)],
                "probs": [[float(p) for p in row] for row in probs]}

    # ------------------------------------------------------------------ fitting
    def check_fit_name(self, name) -> str:
        if self.attr_dir is None:
            raise RequestError("fitting is off: start the server with --attr-dir DIR to store "
                               "fitted attributes", 403)
        if not isinstance(name, str) or not ATTR_NAME.fullmatch(name):
            raise RequestError("name must be 1-64 letters, digits, '_' or '-', starting with a "
                               f"letter or digit, got {str(name)[:40]!r}")
        if name in self.fixed:
            raise RequestError(f"{name!r} is a built-in attribute; choose another name", 409)
        path = os.path.realpath(os.path.join(self.attr_dir, name + ".safetensors"))
        if os.path.dirname(path) != os.path.realpath(self.attr_dir):   # pragma: no cover
            raise RequestError(f"name {name!r} leaves the attribute folder")
        return path

    def fit(self, name: str, positives: Sequence[Image.Image],
            negatives: Sequence[Image.Image]) -> dict:
        """Fit ``name`` from labelled images (:meth:`read_image` images read with ``resize``)
        in the engine thread, store it atomically under the attribute folder and serve it."""
        path = self.check_fit_name(name)
        positives, negatives = (torch.cat([self.image_tensor(im, True) for im in x])
                                for x in (positives, negatives))
        a = self.sampler.fit_attribute(positives, negatives, name=name)
        a.save(path)   # atomic (d2c_fast.utils.atomic_write)
        # a new dict, not an insertion: the event loop may be reading the old one right now
        self.attributes = {**self.attributes, name: a}
        info = {"name": name, "file": os.path.basename(path), "positives": len(positives),
                "negatives": len(negatives)}
        if a.recommended_strength is not None:
            info["recommended_strength"] = list(a.recommended_strength)
        for k in ("accuracy", "auc", "cv_accuracy", "cv_auc"):
            if isinstance(a.info.get(k), (int, float)):
                info[k] = a.info[k]
        return info
