"""A dataset over the image files of a folder (a user's own data)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Sequence

import torch

from d2c_fast.data._common import DatasetError, check_index
from d2c_fast.errors import ImageError
from d2c_fast.images import IMAGE_EXTENSIONS, load_images

__all__ = ["ImageFolderDataset", "RESIZE_MODES", "center_crop_resize"]

log = logging.getLogger(__name__)

RESIZE_MODES = ("center_crop", "resize", "error")


def center_crop_resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """``(1, C, H, W)`` -> the centred ``min(H, W)`` square, resized (bilinear, anti-aliased)
    to ``resolution``. A square image of the right size is returned as is."""
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    if side == resolution:
        return x.contiguous()
    return load_images(x.contiguous(), size=resolution, resize=True)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Every image file under ``root`` (sorted by relative path), as RGB float32 tensors.

    ``dataset[i]`` is ``(image, i)`` with image ``(3, resolution, resolution)`` in ``[0, 1]``,
    read with :func:`d2c_fast.images.load_images` (alpha composited on white, grayscale
    replicated, EXIF orientation applied).

    Args:
        root: the folder.
        resolution: output size (square).
        exts: file name endings to take (case-insensitive; default
            :data:`d2c_fast.images.IMAGE_EXTENSIONS`, as every folder of images).
        recursive: also look in sub-folders. Names starting with "." (files and folders) are
            skipped.
        resize: ``"center_crop"`` (centred square crop, then an anti-aliased resize),
            ``"resize"`` (anti-aliased resize to a square, aspect ratio not kept) or
            ``"error"`` (an image of another size is an :class:`ImageError`).
        skip_bad: when a file cannot be read, log a warning and return the next readable file
            (in order, wrapping round) instead of raising :class:`ImageError`.

    Raises:
        DatasetError: ``root`` is not a directory, holds no matching files, or an argument is
            invalid.
    """

    def __init__(
        self,
        root,
        *,
        resolution: int,
        exts: Sequence[str] = IMAGE_EXTENSIONS,
        recursive: bool = True,
        resize: str = "center_crop",
        skip_bad: bool = False,
    ):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise DatasetError(f"resolution must be a positive int, got {resolution!r}")
        if resize not in RESIZE_MODES:
            raise DatasetError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if isinstance(exts, str):
            exts = (exts,)
        norm = []
        for e in exts:
            if not isinstance(e, str) or not e.strip("."):
                raise DatasetError(f"bad extension {e!r} in exts")
            e = e.lower()
            norm.append(e if e.startswith(".") else "." + e)
        self.root = Path(os.fspath(root))
        if not self.root.is_dir():
            raise DatasetError(f"image folder {str(self.root)!r} does not exist or is not a directory")
        self.resolution = resolution
        self.exts = tuple(norm)
        self.recursive = bool(recursive)
        self.resize = resize
        self.skip_bad = bool(skip_bad)
        self.files: List[Path] = self._scan()
        if not self.files:
            raise DatasetError(
                f"no images with extensions {', '.join(self.exts)} under {str(self.root)!r}"
                + ("" if self.recursive else " (recursive=False)")
            )
        self._bad: set = set()

    def _scan(self) -> List[Path]:
        found = []
        if self.recursive:
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for f in filenames:
                    if not f.startswith(".") and f.lower().endswith(self.exts):
                        found.append(Path(dirpath) / f)
        else:
            for entry in os.scandir(self.root):
                if (
                    not entry.name.startswith(".")
                    and entry.name.lower().endswith(self.exts)
                    and entry.is_file()
                ):
                    found.append(Path(entry.path))
        found.sort(key=lambda p: p.relative_to(self.root).as_posix())
        return found

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        """The file behind item ``i``."""
        return self.files[i]

    def load(self, i: int) -> torch.Tensor:
        """Item ``i``'s image; :class:`ImageError` if the file cannot be used."""
        p = self.files[i]
        if self.resize == "error":
            x = load_images(p, size=self.resolution)
        elif self.resize == "resize":
            x = load_images(p, size=self.resolution, resize=True)
        else:
            x = center_crop_resize(load_images(p), self.resolution)
        return x[0]

    def __getitem__(self, i):
        n = len(self.files)
        i = check_index(i, n, "ImageFolderDataset")
        if not self.skip_bad:
            return self.load(i), i
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return self.load(j), j
            except ImageError as e:
                self._bad.add(j)
                log.warning("skipping unreadable image %s: %s", self.files[j], e)
        raise ImageError(f"no readable image among the {n} files under {str(self.root)!r}")

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset({str(self.root)!r}, n={len(self.files)}, "
            f"resolution={self.resolution}, resize={self.resize!r})"
        )
