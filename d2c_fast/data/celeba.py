"""CelebA (aligned and cropped images) with its 40 binary attributes, as D2C/NVAE use it.

Expected layout (the official distribution, unpacked)::

    root/img_align_celeba/000001.jpg ... 202599.jpg     (178 x 218, W x H)
    root/list_attr_celeba.txt                           (count, 40 names, "file v1 .. v40")
    root/list_eval_partition.txt                        (optional: "file 0|1|2")

Crop: NVAE's ``CropCelebA64`` (which D2C's training reuses) takes
``pic.crop((15, 40, 178 - 15, 218 - 30))``, the 148 x 148 box (left, top, right, bottom) =
(15, 40, 163, 188): horizontally centred, 5 pixels *below* the vertical centre. That is the
default here (``crop="official"``); ``crop="center"`` gives the exactly centred box
(15, 35, 163, 183). The crop is then resized like torchvision's ``Resize(64)`` on a PIL
image: PIL bilinear (anti-aliased) on the 8-bit crop, then divided by 255.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from d2c_fast.data._common import DatasetError, check_index
from d2c_fast.errors import ImageError
from d2c_fast.images import load_images

__all__ = [
    "CelebADataset",
    "CELEBA_ATTRIBUTES",
    "CELEBA_CROP_BOX",
    "CELEBA_CENTER_CROP_BOX",
    "CELEBA_SPLIT_ENDS",
    "read_attr_file",
    "read_partition_file",
]

#: The 40 attribute names of ``list_attr_celeba.txt``, in file order.
CELEBA_ATTRIBUTES: Tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

#: NVAE / D2C CelebA-64 crop (left, top, right, bottom) of the 178 x 218 aligned images.
CELEBA_CROP_BOX: Tuple[int, int, int, int] = (15, 40, 178 - 15, 218 - 30)
#: The exactly centred 148 x 148 box.
CELEBA_CENTER_CROP_BOX: Tuple[int, int, int, int] = (
    (178 - 148) // 2, (218 - 148) // 2, (178 - 148) // 2 + 148, (218 - 148) // 2 + 148,
)
#: Official split boundaries by row index when ``list_eval_partition.txt`` is absent:
#: train rows < 162770, val rows < 182637, test the rest.
CELEBA_SPLIT_ENDS: Tuple[int, int] = (162770, 182637)
_ALIGNED_SIZE = (178, 218)  # (W, H)
_SPLITS = {"train": 0, "val": 1, "test": 2}

CropSpec = Union[str, Tuple[int, int, int, int], None]


def _read_lines(path, what: str) -> Tuple[Path, List[str]]:
    path = Path(os.fspath(path))
    try:
        with open(path, "r", encoding="utf-8") as f:
            return path, f.read().splitlines()
    except OSError as e:
        raise DatasetError(f"{str(path)!r}: cannot read {what}: {e}") from e


def read_attr_file(path) -> Tuple[List[str], List[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: returns (attribute names, file names, uint8 labels
    ``(N, A)`` in {0, 1}). Values 1 are positive; -1 (or 0) negative. A malformed file is a
    :class:`DatasetError` naming the line."""
    path, lines = _read_lines(path, "attribute file")
    if len(lines) < 2:
        raise DatasetError(f"{str(path)!r}: too short for a CelebA attribute file (needs a count and the names)")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetError(
            f"{str(path)!r} line 1: expected the number of images, got {lines[0][:60]!r}"
        ) from None
    names = lines[1].split()
    if not names:
        raise DatasetError(f"{str(path)!r} line 2: no attribute names")
    if len(set(names)) != len(names):
        raise DatasetError(f"{str(path)!r} line 2: duplicate attribute names")
    files: List[str] = []
    rows: List[List[int]] = []
    for ln, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DatasetError(
                f"{str(path)!r} line {ln}: expected a file name and {len(names)} values, got "
                f"{len(parts)} fields"
            )
        vals = []
        for v in parts[1:]:
            if v == "1":
                vals.append(1)
            elif v in ("-1", "0"):
                vals.append(0)
            else:
                raise DatasetError(f"{str(path)!r} line {ln}: attribute value {v!r} is not 1 or -1")
        files.append(parts[0])
        rows.append(vals)
    if len(files) != count:
        raise DatasetError(f"{str(path)!r}: line 1 says {count} images but {len(files)} rows follow")
    labels = np.asarray(rows, dtype=np.uint8).reshape(len(files), len(names))
    return names, files, labels


def read_partition_file(path) -> Dict[str, int]:
    """Parse ``list_eval_partition.txt`` (``file 0|1|2`` per line) into ``{file: split}``."""
    path, lines = _read_lines(path, "partition file")
    out: Dict[str, int] = {}
    for ln, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DatasetError(f"{str(path)!r} line {ln}: expected 'file 0|1|2', got {line[:60]!r}")
        out[parts[0]] = int(parts[1])
    return out


def _crop_box(crop: CropSpec) -> Optional[Tuple[int, int, int, int]]:
    if crop is None:
        return None
    if isinstance(crop, str):
        if crop == "official":
            return CELEBA_CROP_BOX
        if crop == "center":
            return CELEBA_CENTER_CROP_BOX
        raise DatasetError(f"crop must be 'official', 'center', None or a box, got {crop!r}")
    box = tuple(crop)
    if len(box) != 4 or not all(isinstance(v, (int, np.integer)) for v in box):
        raise DatasetError(f"crop box must be 4 ints (left, top, right, bottom), got {crop!r}")
    l, t, r, b = (int(v) for v in box)
    if not (0 <= l < r and 0 <= t < b):
        raise DatasetError(f"crop box {crop!r} is empty or negative")
    return (l, t, r, b)


class CelebADataset(torch.utils.data.Dataset):
    """CelebA images with attribute labels.

    ``dataset[i]`` is ``(image, labels)``: image float32 ``(3, resolution, resolution)`` in
    ``[0, 1]``; labels float32 in {0, 1}, one per requested attribute (default: all 40, in
    file order).

    Args:
        root: folder holding ``img_align_celeba/`` and ``list_attr_celeba.txt`` (and
            optionally ``list_eval_partition.txt``).
        resolution: output size (square); 64 for D2C's CelebA-64.
        split: "train", "val", "test" or "all". From the partition file if present, else
            the official row ranges (:data:`CELEBA_SPLIT_ENDS`).
        attributes: names to return, in that order (``None``: all). Unknown names are a
            :class:`DatasetError` listing the valid ones.
        crop: "official" (NVAE/D2C box (15, 40, 163, 188), the default), "center"
            ((15, 35, 163, 183)), an explicit (left, top, right, bottom) box, or ``None`` (no
            crop; the whole image is resized, aspect ratio not kept). With a box, images must
            be the aligned 178 x 218 ones or an :class:`ImageError` is raised.

    Files are not checked when the dataset is built (there are 202,599); a missing or
    unreadable image raises :class:`ImageError` naming it when it is loaded.
    """

    def __init__(
        self,
        root,
        *,
        resolution: int = 64,
        split: str = "train",
        attributes: Optional[Sequence[str]] = None,
        crop: CropSpec = "official",
    ):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise DatasetError(f"resolution must be a positive int, got {resolution!r}")
        if split not in ("train", "val", "test", "all"):
            raise DatasetError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
        self.root = Path(os.fspath(root))
        self.img_dir = self.root / "img_align_celeba"
        attr_path = self.root / "list_attr_celeba.txt"
        part_path = self.root / "list_eval_partition.txt"
        if not self.root.is_dir():
            raise DatasetError(f"CelebA root {str(self.root)!r} does not exist or is not a directory")
        if not self.img_dir.is_dir():
            raise DatasetError(f"CelebA: image folder {str(self.img_dir)!r} not found")
        if not attr_path.is_file():
            raise DatasetError(f"CelebA: attribute file {str(attr_path)!r} not found")
        self.resolution = resolution
        self.split = split
        self.crop_box = _crop_box(crop)

        names, files, labels = read_attr_file(attr_path)
        self.all_attributes: Tuple[str, ...] = tuple(names)
        if attributes is None:
            cols = list(range(len(names)))
        else:
            if isinstance(attributes, str):
                attributes = [attributes]
            index = {n: k for k, n in enumerate(names)}
            unknown = [a for a in attributes if a not in index]
            if unknown:
                raise DatasetError(
                    f"CelebA: unknown attribute name(s) {unknown}; valid names: {', '.join(names)}"
                )
            if len(attributes) == 0:
                raise DatasetError("CelebA: attributes is empty (use None for all)")
            cols = [index[a] for a in attributes]
        self.attributes: Tuple[str, ...] = tuple(names[c] for c in cols)

        if split == "all":
            rows = np.arange(len(files))
        else:
            sid = _SPLITS[split]
            if part_path.is_file():
                part = read_partition_file(part_path)
                missing = [f for f in files if f not in part]
                if missing:
                    raise DatasetError(
                        f"CelebA: {len(missing)} image(s) of the attribute file are not in "
                        f"{str(part_path)!r}, e.g. {missing[0]!r}"
                    )
                which = np.array([part[f] for f in files], dtype=np.int64)
            else:
                which = np.searchsorted(np.array(CELEBA_SPLIT_ENDS), np.arange(len(files)), side="right")
            rows = np.nonzero(which == sid)[0]
        self.files: List[str] = [files[r] for r in rows]
        self.labels = torch.from_numpy(labels[rows][:, cols].astype(np.float32))

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.img_dir / self.files[i]

    def load(self, i: int) -> torch.Tensor:
        """Item ``i``'s cropped, resized image (float32 ``(3, R, R)``)."""
        p = self.path(i)
        x = load_images(p)[0]  # (3, H, W) float32, exact k/255 values
        if self.crop_box is None:
            return load_images(x, size=self.resolution, resize=True)[0]
        h, w = x.shape[-2:]
        if (w, h) != _ALIGNED_SIZE:
            raise ImageError(
                f"{str(p)!r}: CelebA aligned images are 178x218 (WxH) but this one is {w}x{h}; "
                "pass crop=None to resize it whole, or an explicit crop box"
            )
        l, t, r, b = self.crop_box
        u8 = (x[:, t:b, l:r] * 255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        im = Image.fromarray(u8)
        if im.size != (self.resolution, self.resolution):
            im = im.resize((self.resolution, self.resolution), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) * np.float32(1.0 / 255.0)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __getitem__(self, i):
        i = check_index(i, len(self.files), "CelebADataset")
        return self.load(i), self.labels[i].clone()

    def __repr__(self) -> str:
        return (
            f"CelebADataset({str(self.root)!r}, split={self.split!r}, n={len(self.files)}, "
            f"resolution={self.resolution}, attributes={len(self.attributes)})"
        )
