"""A procedurally rendered, labelled face dataset (no downloads).

Every image is a cartoon-like face drawn with PIL at ``supersample`` times the target
resolution and box-filtered down (``Image.reduce``), so edges are anti-aliased. The picture is
a pure function of ``(seed, split, index)``: two numpy generators are seeded from that tuple,
one for the five binary attributes and one for everything else (the "identity"), so

* the labels can be computed without rendering (:func:`labels_only`), and
* an attribute can be switched on or off for the *same* identity (``force={...}``): the
  identity generator draws the same numbers whatever the attributes are. ``style_from=j``
  draws the forced attributes in the style of face ``j`` instead (:data:`STYLE_FIELDS`: the
  frames, beard style, shade, ... that a face does not show while it lacks the attribute).

Attributes (independent Bernoulli draws, rates in :data:`ATTRIBUTE_RATES`), chosen to mirror
the D2C paper's CelebA edits:

* ``blond_hair``: light yellow hair (otherwise black, dark brown, brown or auburn).
* ``red_lipstick``: saturated red lips, drawn a little over the lip line (otherwise lips a
  little darker and redder than skin).
* ``beard``: dark hair over the lower face (full beard, chin beard + moustache, or heavy
  stubble), with a stroke texture.
* ``eyeglasses``: dark frames around both eyes with a bridge and temples (sometimes tinted).
* ``smiling``: a broad open smile: wider mouth with upturned corners, teeth, smile lines,
  narrower eyes.

Nuisance factors: skin tone (very light to very dark), face width/height/jaw, ears, neck and
clothes, hair style (short, side part, bangs, long, curly, bald-ish) and colour, eye size,
spacing and iris colour, eyebrows, nose, pose (shift, scale, in-plane rotation, a small yaw
that moves the features sideways), background gradient, directional lighting, brightness and
white balance.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from d2c_fast.data._common import DatasetError, check_index
from d2c_fast.data.face_drawing import (
    STYLE_FIELDS,
    Canvas,
    Identity,
    draw_beard,
    draw_body,
    draw_eyes,
    draw_face,
    draw_glasses,
    draw_hair_back,
    draw_hair_front,
    draw_mouth,
    draw_nose,
    finish,
    hair_color,
)
from d2c_fast.images import make_grid, save_png

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_RATES",
    "SPLITS",
    "FacesDataset",
    "render_face",
    "labels_only",
    "make_grid_preview",
    "make_attribute_preview",
    "landmarks",
    "RENDER_VERSION",
    "labels_tensor",
    "STYLE_FIELDS",
]

#: Attribute names, in the order of the label vector.
ATTRIBUTES: Tuple[str, ...] = ("blond_hair", "red_lipstick", "beard", "eyeglasses", "smiling")

#: Probability that each attribute is on (drawn independently).
ATTRIBUTE_RATES: Dict[str, float] = {
    "blond_hair": 0.15,
    "red_lipstick": 0.30,
    "beard": 0.20,
    "eyeglasses": 0.15,
    "smiling": 0.50,
}

#: Version of the drawing code: bumped whenever the same ``(seed, split, index)`` renders a
#: different picture, so caches of rendered images (``d2c_fast.train``) are not reused across it.
#: 1: the first three built-in models. 2: faces drawn ~28% larger (face ~58% of the image width,
#: close to CelebA's official 64x64 crop, instead of ~45%) and fuller, slightly wider lips.
#: 3: a broad open smile (taller opening, more teeth, wider mouth, stronger smile lines,
#: narrower eyes), lipstick drawn 15% over the lip line, thicker glasses frames: at 32x32 the
#: version-2 smile changed the built-in model's standardised latent by 4.2 (lipstick 9.1,
#: glasses 7.2, blond 28), too little for its prior to keep (docs/quality/README.md).
RENDER_VERSION: int = 3

#: Split names and the number mixed into the seed material of each (disjoint streams).
SPLITS: Dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Seed-material tags of the two generators (arbitrary constants).
_TAG_LABELS = 0x1ABE15
_TAG_IDENTITY = 0x1DE7


# --------------------------------------------------------------------------------------------
# seeds and labels
# --------------------------------------------------------------------------------------------


def _split_id(split: str) -> int:
    try:
        return SPLITS[split]
    except (KeyError, TypeError):
        raise DatasetError(f"split must be one of {tuple(SPLITS)}, got {split!r}") from None


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
        raise DatasetError(f"{name} must be a non-negative int, got {v!r}")
    return int(v)


def labels_only(seed: int, index: int, split: str = "train") -> Dict[str, bool]:
    """The attribute labels of image ``index`` without rendering it (a few microseconds)."""
    seed = _check_int("seed", seed)
    index = _check_int("index", index)
    rng = np.random.default_rng([_TAG_LABELS, _split_id(split), seed, index])
    u = rng.random(len(ATTRIBUTES))
    return {a: bool(u[i] < ATTRIBUTE_RATES[a]) for i, a in enumerate(ATTRIBUTES)}


def _apply_force(labels: Dict[str, bool], force: Optional[Mapping[str, bool]]) -> Dict[str, bool]:
    if not force:
        return labels
    out = dict(labels)
    for k, v in force.items():
        if k not in ATTRIBUTE_RATES:
            raise DatasetError(f"force: unknown attribute {k!r}; known: {', '.join(ATTRIBUTES)}")
        out[k] = bool(v)
    return out


def render_face(
    seed: int,
    index: int,
    resolution: int = 64,
    *,
    split: str = "train",
    force: Optional[Mapping[str, bool]] = None,
    supersample: int = 4,
    style_from: Optional[int] = None,
) -> Tuple[torch.Tensor, Dict[str, bool]]:
    """Render face ``index`` of the stream ``(seed, split)``.

    Returns ``(image, labels)``: a float32 ``(3, resolution, resolution)`` tensor in ``[0, 1]``
    and a dict ``{attribute: bool}`` over :data:`ATTRIBUTES`. ``force`` overrides attributes
    (e.g. ``{"smiling": True}``) while keeping everything else about the face; the returned
    labels include the override. ``style_from``: the index of another face of the same
    stream whose style (:data:`STYLE_FIELDS`) the attributes in ``force`` are drawn in (a
    counterfactual as plausible as the true one, in a style this face does not show). The face
    is drawn at ``supersample * resolution`` pixels (2 or 4) and box-filtered down.
    """
    resolution = _check_int("resolution", resolution)
    if resolution < 8:
        raise DatasetError(f"resolution must be >= 8, got {resolution}")
    if supersample not in (1, 2, 3, 4):
        raise DatasetError(f"supersample must be 1, 2, 3 or 4, got {supersample!r}")
    labels = _apply_force(labels_only(seed, index, split), force)
    rng = np.random.default_rng([_TAG_IDENTITY, _split_id(split), int(seed), int(index)])
    ident = Identity(rng)
    if style_from is not None:
        if not force:
            raise DatasetError("style_from= restyles the attributes in force=; give force=")
        j = _check_int("style_from", style_from)
        donor = Identity(np.random.default_rng([_TAG_IDENTITY, _split_id(split), int(seed), j]))
        for attr in force:
            for field in STYLE_FIELDS[attr]:
                setattr(ident, field, getattr(donor, field))
    size = resolution * supersample
    cv = Canvas(size, ident)
    yaw = ident.yaw
    blond = labels["blond_hair"]
    hair = hair_color(ident, blond)

    cv.background(ident)
    draw_body(cv, ident)
    draw_hair_back(cv, ident, hair)
    draw_face(cv, ident, yaw)
    if labels["beard"]:
        draw_beard(cv, ident, hair, yaw, blond)
    draw_nose(cv, ident, yaw)
    draw_mouth(cv, ident, yaw, labels["red_lipstick"], labels["smiling"])
    draw_eyes(cv, ident, yaw, labels["smiling"], hair, blond)
    draw_hair_front(cv, ident, hair)
    if labels["eyeglasses"]:
        draw_glasses(cv, ident, yaw)

    im = cv.im.reduce(supersample) if supersample > 1 else cv.im
    arr = np.asarray(im, dtype=np.float32) * np.float32(1.0 / 255.0)
    arr = finish(arr, ident)
    img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return img, labels


def landmarks(
    seed: int, index: int, resolution: int = 64, *, split: str = "train"
) -> Dict[str, Tuple[float, float]]:
    """Where the parts of face ``index`` land in the output image, as ``(x, y)`` pixel
    coordinates (continuous; pixel ``(i, j)`` spans ``[i, i+1) x [j, j+1)``), without
    rendering. Keys: ``face_center``, ``left_eye``, ``right_eye``, ``nose``, ``mouth``,
    ``chin``, ``hair_top``; plus ``unit`` = ``(pixels per face unit, rotation in radians)``
    (the canvas spans 2 face units at scale 1; the face is about 0.9 units wide)."""
    resolution = _check_int("resolution", resolution)
    rng = np.random.default_rng([_TAG_IDENTITY, _split_id(split), _check_int("seed", seed), _check_int("index", index)])
    ident = Identity(rng)
    half = resolution / 2.0
    sc = ident.scale * half
    c, sn = math.cos(ident.angle), math.sin(ident.angle)
    m = np.array([[c * sc, -sn * sc], [sn * sc, c * sc]])
    o = np.array([half + ident.cx * half, half + ident.cy * half])
    ry = ident.face_ry
    pts = {
        "face_center": (0.0, 0.0),
        "left_eye": (-ident.eye_dx + ident.yaw, ident.eye_y * ry),
        "right_eye": (ident.eye_dx + ident.yaw, ident.eye_y * ry),
        "nose": (ident.yaw * 1.6, ident.nose_y),
        "mouth": (ident.yaw * 1.2, ident.mouth_y),
        "chin": (0.0, ry),
        "hair_top": (0.0, -0.1 * ry - ry),
    }
    out = {k: tuple(float(v) for v in (np.array(p) @ m.T + o)) for k, p in pts.items()}
    out["unit"] = (float(sc), float(ident.angle))
    return out


def labels_tensor(labels: Mapping[str, bool]) -> torch.Tensor:
    """``{attribute: bool}`` -> float32 tensor of 0/1 in :data:`ATTRIBUTES` order."""
    return torch.tensor([1.0 if labels[a] else 0.0 for a in ATTRIBUTES], dtype=torch.float32)


class FacesDataset(torch.utils.data.Dataset):
    """``n`` procedurally rendered faces of the stream ``(seed, split)``.

    ``dataset[i]`` is ``(image, labels)``: image float32 ``(3, R, R)`` in ``[0, 1]``, labels a
    float32 tensor of 0/1 of length 5 in :data:`ATTRIBUTES` order. Images are rendered on the
    fly (deterministic, nothing cached), so any number of DataLoader workers give identical
    data. Splits "train", "val", "test" are disjoint random streams.
    """

    attributes = ATTRIBUTES

    def __init__(
        self,
        n: int,
        *,
        resolution: int = 64,
        seed: int = 0,
        split: str = "train",
        supersample: int = 4,
    ):
        self.n = _check_int("n", n)
        self.resolution = _check_int("resolution", resolution)
        self.seed = _check_int("seed", seed)
        _split_id(split)
        self.split = split
        self.supersample = supersample
        if self.resolution < 8:
            raise DatasetError(f"resolution must be >= 8, got {resolution}")

    def __len__(self) -> int:
        return self.n

    def _index(self, i) -> int:
        return check_index(i, self.n, "FacesDataset")

    def __getitem__(self, i):
        i = self._index(i)
        img, labels = render_face(
            self.seed, i, self.resolution, split=self.split, supersample=self.supersample
        )
        return img, labels_tensor(labels)

    def labels(self, i) -> torch.Tensor:
        """The label vector of item ``i`` without rendering it."""
        return labels_tensor(labels_only(self.seed, self._index(i), self.split))

    def all_labels(self) -> torch.Tensor:
        """``(n, 5)`` float32 labels of the whole dataset, without rendering."""
        if self.n == 0:
            return torch.zeros((0, len(ATTRIBUTES)), dtype=torch.float32)
        return torch.stack([self.labels(i) for i in range(self.n)])

    def __repr__(self) -> str:
        return (
            f"FacesDataset(n={self.n}, resolution={self.resolution}, seed={self.seed}, "
            f"split={self.split!r})"
        )


# --------------------------------------------------------------------------------------------
# previews
# --------------------------------------------------------------------------------------------

_SHORT = {"blond_hair": "BL", "red_lipstick": "LP", "beard": "BD", "eyeglasses": "GL", "smiling": "SM"}


def make_grid_preview(
    path,
    n: int = 64,
    *,
    seed: int = 0,
    split: str = "train",
    resolution: int = 64,
    nrow: int = 8,
    zoom: int = 2,
) -> str:
    """Write a PNG contact sheet of the first ``n`` faces, each captioned with its attributes
    (BL blond, LP lipstick, BD beard, GL glasses, SM smiling). Returns the path."""
    from PIL import ImageFont


    n = _check_int("n", n)
    if n == 0:
        raise DatasetError("make_grid_preview: n must be >= 1")
    font = ImageFont.load_default()
    cell = resolution * zoom
    cap = 12
    pad = 2
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    sheet = Image.new("RGB", (ncol * (cell + pad) + pad, nrows * (cell + cap + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        img, lab = render_face(seed, i, resolution, split=split)
        arr = (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
        r, c = divmod(i, ncol)
        x, y = pad + c * (cell + pad), pad + r * (cell + cap + pad)
        sheet.paste(tile, (x, y))
        text = " ".join(_SHORT[a] for a in ATTRIBUTES if lab[a]) or "-"
        draw.text((x + 1, y + cell), text, fill=(0, 0, 0), font=font)
    tensor = torch.from_numpy(np.asarray(sheet).copy()).permute(2, 0, 1)
    return save_png(tensor, path)[0]


def make_attribute_preview(
    path, n: int = 6, *, seed: int = 0, split: str = "train", resolution: int = 64, zoom: int = 2
) -> str:
    """Write a PNG where each row is one identity: all attributes off, then each attribute on
    alone (columns: none, then :data:`ATTRIBUTES` in order). Returns the path."""

    rows = []
    for i in range(n):
        off = {a: False for a in ATTRIBUTES}
        row = [render_face(seed, i, resolution, split=split, force=off)[0]]
        for a in ATTRIBUTES:
            row.append(render_face(seed, i, resolution, split=split, force={**off, a: True})[0])
        rows.append(torch.stack(row))
    grid = torch.stack(rows)  # (n, 6, 3, R, R)
    if zoom > 1:
        grid = grid.repeat_interleave(zoom, dim=-1).repeat_interleave(zoom, dim=-2)

    sheet = make_grid(list(grid), padding=2)
    return save_png(sheet, path)[0]
