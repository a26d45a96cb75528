"""Image inputs: :func:`load_images` turns whatever the user has (tensors, numpy arrays, PIL
images, file paths, or lists of those) into one float32 ``(B, C, H, W)`` tensor in ``[0, 1]``,
and refuses anything it cannot use with an :class:`~d2c_fast.errors.ImageError` saying why;
channel conversions (:func:`to_channels`, :func:`is_gray`). Part of :mod:`d2c_fast.images`."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from d2c_fast.errors import ImageError

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_CHANNELS", "MAX_PIXELS", "PathLike", "load_images",
           "to_channels", "is_gray"]

#: File name endings (lower case) of the image files that folders of images are read by
#: (training folders, directory edits, ``fit-attribute`` folders): what PIL decodes.
IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif",
                                     ".tiff")

#: Largest image (width * height) that :func:`load_images` will decode from a file or a PIL
#: image. Checked from the header, before any pixel is decoded. Override per call with
#: ``max_pixels=``.
MAX_PIXELS: int = 64_000_000

#: Tolerance on the ``[0, 1]`` range of float inputs; values within it are clamped.
RANGE_TOLERANCE = 1e-6

# ITU-R 601-2 luma, the weights PIL uses for RGB -> "L".
_LUMA = (0.299, 0.587, 0.114)

#: Channel counts an image may have (gray, RGB, RGBA).
IMAGE_CHANNELS = (1, 3, 4)

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def load_images(
    images: Any,
    *,
    size: Union[int, Tuple[int, int], None] = None,
    resize: bool = False,
    channels: int = 3,
    device: Union[str, torch.device] = "cpu",
    max_pixels: Optional[int] = None,
) -> torch.Tensor:
    """Load images into a float32 ``(B, channels, H, W)`` tensor with values in ``[0, 1]``.

    Accepted inputs:

    * **float torch tensors** ``(B, C, H, W)`` or ``(C, H, W)`` with values in ``[0, 1]``
      (a tolerance of 1e-6 is allowed and clamped away; anything further out, NaN or Inf is an
      :class:`ImageError`). float64 / float16 / bfloat16 are converted to float32. Gradients
      flow through (the tensor is not detached).
    * **uint8 torch tensors** ``(B, C, H, W)`` or ``(C, H, W)``, divided by 255. Other integer
      and bool dtypes are refused.
    * **numpy arrays**, channel-last: ``(H, W)`` (grayscale), ``(H, W, C)`` or ``(B, H, W, C)``.
      uint8 is divided by 255, uint16 by 65535; float arrays must be in ``[0, 1]`` like float
      tensors. bool and other integer dtypes are refused.
    * **PIL images** of any mode. "1", "L", "I;16*" are grayscale; "P" (palette) is converted to
      RGB (RGBA when it has transparency); "CMYK", "YCbCr", "LAB", "HSV", "RGBX" are converted to
      RGB; "I;16"/"I;16B"/"I;16L" and "I" (values must lie in 0..65535) are scaled by 1/65535
      without going through 8 bits; "F" must hold values in ``[0, 1]``. A lazily opened image is
      subject to the ``max_pixels`` limit before it is decoded. Only the first frame of an
      animated / multi-page image is used.
    * **file paths** (``str`` or :class:`pathlib.Path`): opened with PIL; the header is read
      first and images with more than ``max_pixels`` pixels are refused before decoding; then
      the file is verified and decoded. PIL's ``DecompressionBombWarning`` /
      ``DecompressionBombError`` are turned into :class:`ImageError` (so PIL's own limit,
      ``PIL.Image.MAX_IMAGE_PIXELS``, applies too). A missing file, a directory, a file that is
      not an image, or a truncated / corrupt image is an :class:`ImageError` naming the path.
      The EXIF orientation tag, when present, is applied.
    * **lists / tuples** of any of the above (mixing types is fine; batched items contribute all
      their images). All images must have the same size after the optional resize, otherwise an
      :class:`ImageError` lists the sizes. An empty list is refused; nested lists are refused.

    Channels: the source may have 1 (gray), 2 (gray + alpha, PIL "LA"), 3 (RGB) or 4 (RGBA)
    channels (tensors and arrays: 1, 3 or 4). An **alpha channel is composited onto a white
    background** (``rgb * a + (1 - a)``) and dropped. With ``channels=3`` grayscale is replicated
    exactly to the three channels; with ``channels=1`` RGB is reduced to luma with the ITU-R
    601-2 weights (0.299, 0.587, 0.114), the same as PIL's "L" conversion.

    Size: ``size`` is the model resolution, an int (square) or ``(H, W)``. An image of another
    size is an :class:`ImageError` naming both sizes, unless ``resize=True``: then it is resized
    (aspect ratio not preserved) with ``torch.nn.functional.interpolate(mode="bilinear",
    antialias=True, align_corners=False)`` on the float data (so 16-bit precision is kept) and
    clamped to ``[0, 1]``. Without ``size`` images are kept at their size.

    Args:
        images: the input(s), see above.
        size: model resolution, ``int`` or ``(H, W)``; ``None`` to keep sizes.
        resize: resize images whose size differs from ``size`` instead of refusing them.
        channels: 3 (RGB) or 1 (grayscale).
        device: device of the returned tensor.
        max_pixels: pixel limit for files / PIL images; defaults to :data:`MAX_PIXELS`.

    Returns:
        float32 tensor ``(B, channels, H, W)`` in ``[0, 1]`` on ``device``.

    Raises:
        ImageError: for every input that cannot be used, with a message saying why.
    """
    if channels not in (1, 3):
        raise ImageError(f"channels must be 1 or 3, got {channels!r}")
    target = _parse_size(size)
    if resize and target is None:
        raise ImageError("resize=True needs size= (the model resolution)")
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ImageError(f"max_pixels must be a positive int, got {max_pixels!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ImageError(f"invalid device {device!r}: {e}") from e

    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ImageError("empty list of images")
        items = [(item, f"images[{i}]" + (f" ({os.fspath(item)})"
                                            if isinstance(item, (str, os.PathLike)) else ""))
                 for i, item in enumerate(images)]
        for item, where in items:
            if isinstance(item, (list, tuple)):
                raise ImageError(f"{where}: nested lists are not supported; flatten the list")
    elif isinstance(images, (str, os.PathLike)):
        items = [(images, repr(os.fspath(images)))]
    else:
        items = [(images, "images")]

    parts: List[torch.Tensor] = []
    labels: List[str] = []
    notes: List[str] = []
    for item, where in items:
        x, mode = _convert_one(item, where, limit)  # (N, C, H, W) float32 in [0, 1]
        note = _conversion(mode, x.shape[1], channels)
        if note:
            notes.append(f"{where}: {note}")
        x = x.to(dev)
        x = to_channels(x, channels)
        if target is not None and tuple(x.shape[-2:]) != target:
            if not resize:
                h, w = x.shape[-2:]
                raise ImageError(
                    f"{where}: image is {h}x{w} (HxW) but the model expects "
                    f"{target[0]}x{target[1]}; pass resize=True (command line: --resize) to "
                    f"resize it"
                )
            x = _resize(x, target)
        parts.append(x)
        labels.append(where)

    sizes = [tuple(p.shape[-2:]) for p in parts]
    if len(set(sizes)) > 1:
        listing = ", ".join(f"{w}: {s[0]}x{s[1]}" for w, s in zip(labels, sizes))
        raise ImageError(
            f"images have different sizes (HxW): {listing}; pass size=... and resize=True "
            "to bring them to one size"
        )
    if notes:
        more = f"; and {len(notes) - 3} more" if len(notes) > 3 else ""
        warnings.warn(f"converted {len(notes)} of {len(items)} inputs to the model's "
                      f"{'RGB' if channels == 3 else 'grayscale'}: " + "; ".join(notes[:3])
                      + more, stacklevel=2)
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    if out.dtype != torch.float32:  # pragma: no cover - defensive
        out = out.float()
    return out.contiguous()


def _parse_size(size: Any) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
        and all(int(s) > 0 for s in size)
    ):
        return (int(size[0]), int(size[1]))
    raise ImageError(f"size must be a positive int or (H, W), got {size!r}")


def _convert_one(item: Any, where: str, max_pixels: int) -> Tuple[torch.Tensor, Optional[str]]:
    """One input -> (float32 (N, C, H, W) in [0, 1], C in {1, 2, 3, 4}, on the item's device;
    the PIL mode of an image or file, else None)."""
    if isinstance(item, torch.Tensor):
        return _from_tensor(item, where), None
    if isinstance(item, np.ndarray):
        return _from_numpy(item, where), None
    if isinstance(item, Image.Image):
        return _from_pil(item, where, max_pixels), item.mode
    if isinstance(item, (str, os.PathLike)):
        return _from_path(item, where, max_pixels)
    if item is None:
        raise ImageError(f"{where}: got None instead of an image")
    raise ImageError(
        f"{where}: unsupported input type {type(item).__name__}; expected a torch tensor, a "
        "numpy array, a PIL image, a file path, or a list of those"
    )


def _conversion(mode: Optional[str], c: int, channels: int) -> Optional[str]:
    """What loading does to an input of ``c`` channels (PIL ``mode`` for images and files)
    to give the model's ``channels``, in words; None when it is the model's own format."""
    steps = []
    if mode in ("P", "PA"):
        steps.append("palette expanded")
    elif mode is not None and mode not in ("1", "L", "LA", "RGB", "RGBA", "F", "I") \
            and not mode.startswith("I;16"):
        steps.append(f"converted from mode {mode}")
    if c in (2, 4):
        steps.append("transparency composited over white")
    if c in (1, 2) and channels == 3:
        steps.append("grayscale copied to R, G and B")
    if c in (3, 4) and channels == 1:
        steps.append("colour reduced to gray (luma)")
    if not steps:
        return None
    return f"{'PIL mode ' + mode if mode else _channels_text(c)}, " + ", ".join(steps)


def _channels_text(c: int) -> str:
    return f"{c} channel{'s' if c != 1 else ''}"


def _check_float_range(x: torch.Tensor, where: str) -> torch.Tensor:
    if x.numel() == 0:
        raise ImageError(f"{where}: empty image (shape {tuple(x.shape)})")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ImageError(f"{where}: image contains {n_nan} NaN and {n_inf} Inf values")
    lo = float(x.min())
    hi = float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        hint = ""
        if hi > 1.5:
            hint = " (looks like 0..255 data: divide by 255 or pass uint8)"
        elif lo < 0:
            hint = " (if the data is in [-1, 1], pass (x + 1) / 2)"
        raise ImageError(
            f"{where}: float image values must be in [0, 1], got min {lo:.6g} max {hi:.6g}"
            + hint
        )
    return x.clamp(0.0, 1.0)


def _check_shape(shape: Tuple[int, ...], where: str) -> None:
    if any(s == 0 for s in shape):
        raise ImageError(f"{where}: empty image (shape {tuple(shape)})")


def _from_tensor(t: torch.Tensor, where: str) -> torch.Tensor:
    if t.dim() == 3:
        t = t.unsqueeze(0)
    elif t.dim() != 4:
        raise ImageError(
            f"{where}: tensor must be (B, C, H, W) or (C, H, W), got {t.dim()} dims with "
            f"shape {tuple(t.shape)}"
        )
    c = t.shape[1]
    if c not in IMAGE_CHANNELS:
        hint = ""
        if t.shape[-1] in IMAGE_CHANNELS:
            hint = " (it looks channel-last; tensors must be channel-first: permute(0, 3, 1, 2))"
        raise ImageError(
            f"{where}: tensor has {c} channels (shape {tuple(t.shape)}); expected 1, 3 or 4"
            + hint
        )
    _check_shape(tuple(t.shape), where)
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if t.is_floating_point():
        return _check_float_range(t.to(torch.float32), where)
    raise ImageError(
        f"{where}: tensor dtype {t.dtype} is not supported; use float (values in [0, 1]) "
        "or uint8 (0..255)"
    )


def _from_numpy(a: np.ndarray, where: str) -> torch.Tensor:
    if a.dtype == np.bool_:
        raise ImageError(f"{where}: bool arrays are not accepted; convert to uint8 (0/255)")
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim in (3, 4):
        if a.shape[-1] not in IMAGE_CHANNELS:
            layout = "(H, W, C)" if a.ndim == 3 else "(B, H, W, C)"
            hint = ""
            if a.shape[a.ndim - 3] in IMAGE_CHANNELS:
                hint = f" (it looks channel-first; numpy arrays must be channel-last {layout})"
            raise ImageError(
                f"{where}: array of shape {a.shape} is not {layout} with C in 1, 3, 4" + hint
            )
        if a.ndim == 3:
            a = a[None]
    else:
        raise ImageError(
            f"{where}: array must be (H, W), (H, W, C) or (B, H, W, C), got shape {a.shape}"
        )
    _check_shape(a.shape, where)
    kind, itemsize = a.dtype.kind, a.dtype.itemsize  # byte order agnostic ('>u2' too)
    if kind == "u" and itemsize == 1:
        f = a.astype(np.float32)
        f /= np.float32(255.0)
        x = torch.from_numpy(f)
    elif kind == "u" and itemsize == 2:
        f = a.astype(np.float32)
        f /= np.float32(65535.0)
        x = torch.from_numpy(f)
    elif kind == "f":
        x = _check_float_range(torch.from_numpy(a.astype(np.float32)), where)
    else:
        raise ImageError(
            f"{where}: array dtype {a.dtype} is not supported; use uint8, uint16 or float "
            "(values in [0, 1])"
        )
    return x.permute(0, 3, 1, 2).contiguous()


def _check_pixels(size: Tuple[int, int], max_pixels: int, where: str) -> None:
    w, h = size
    n = int(w) * int(h)
    if n > max_pixels:
        raise ImageError(
            f"{where}: image is {w}x{h} (WxH) = {n} pixels, more than the limit of "
            f"{max_pixels} (max_pixels); refusing to decode it (possible decompression bomb)"
        )


def _from_pil(im: Image.Image, where: str, max_pixels: int) -> torch.Tensor:
    _check_pixels(im.size, max_pixels, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
            arr = _pil_to_array(im, where)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{where}: refused by PIL as a decompression bomb: {e}") from e
    except MemoryError:
        raise
    except Exception as e:  # PIL raises assorted errors on corrupt data
        raise ImageError(f"{where}: cannot decode image: {e}") from e
    x = torch.from_numpy(arr)  # (H, W, C) float32
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def _pil_to_array(im: Image.Image, where: str) -> np.ndarray:
    """PIL image -> float32 (H, W, C) in [0, 1], C in {1, 2, 3, 4}."""
    mode = im.mode
    if im.width == 0 or im.height == 0:
        raise ImageError(f"{where}: empty image ({im.width}x{im.height})")
    has_transparency = "transparency" in im.info

    if mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float32)
        a /= np.float32(65535.0)
        return a[:, :, None]
    if mode == "I":
        a = np.asarray(im)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageError(
                f"{where}: mode 'I' image has values in [{lo}, {hi}]; expected 16-bit data "
                "in [0, 65535]"
            )
        a = a.astype(np.float32)
        a /= np.float32(65535.0)
        return a[:, :, None]
    if mode == "F":
        a = np.asarray(im).astype(np.float32)
        x = _check_float_range(torch.from_numpy(a), where)
        return x.numpy()[:, :, None]

    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or has_transparency) else "RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("L", "RGB") and has_transparency:
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pass
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")

    a = np.asarray(im)
    if a.dtype != np.uint8:  # pragma: no cover - all modes above are 8-bit
        raise ImageError(f"{where}: unsupported PIL mode {mode!r}")
    if a.ndim == 2:
        a = a[:, :, None]
    f = a.astype(np.float32)
    f /= np.float32(255.0)
    return f


def _from_path(p: PathLike, where: str, max_pixels: int) -> Tuple[torch.Tensor, str]:
    try:
        path = Path(os.fspath(p))
    except (TypeError, ValueError) as e:
        raise ImageError(f"{where}: invalid path {p!r}: {e}") from e
    name = where   # load_images's label of a path names it: 'a.png' or images[i] (a.png)
    try:
        exists = path.exists()
        is_dir = path.is_dir()
    except (OSError, ValueError) as e:
        raise ImageError(f"{name}: cannot access path: {e}") from e
    if not exists:
        if isinstance(p, str):
            raise ImageError(f"{name}: no such file (a str input is taken as a file path)")
        raise ImageError(f"{name}: no such file")
    if is_dir:
        raise ImageError(f"{name}: is a directory, not an image file")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # 1) header only: refuse oversized images before decoding anything
            with Image.open(path) as im:
                _check_pixels(im.size, max_pixels, name)
                im.verify()  # structural check (CRCs for PNG); the object is unusable after
            # 2) reopen and decode
            with Image.open(path) as im:
                _check_pixels(im.size, max_pixels, name)
                im.load()
                try:
                    im2 = ImageOps.exif_transpose(im)
                except Exception:  # a broken EXIF block should not make the image unusable
                    im2 = im
                if im2 is None:  # pragma: no cover - older PIL with in_place semantics
                    im2 = im
                arr = _pil_to_array(im2, name)
                mode = im2.mode
    except ImageError:
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image file (PIL cannot identify it)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused by PIL as a decompression bomb: {e}") from e
    except MemoryError:
        raise
    except Exception as e:  # truncated / corrupt files: OSError, SyntaxError, EOFError, ...
        raise ImageError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    x = torch.from_numpy(arr)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous(), mode


def _composite_white(x: torch.Tensor) -> torch.Tensor:
    """(N, C+1, H, W) with alpha last -> (N, C, H, W) composited over white."""
    color, alpha = x[:, :-1], x[:, -1:]
    return color * alpha + (1.0 - alpha)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Float images ``(N, C, H, W)``, C in 1..4 (2 and 4: the last is alpha, composited over
    white) -> ``channels`` (1 or 3): gray copied to R, G and B, colour reduced to ITU-R
    601-2 luma (PIL's "L")."""
    c = x.shape[1]
    if c in (2, 4):
        x = _composite_white(x)
        c -= 1
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).clamp(0.0, 1.0)
    raise ImageError(f"cannot convert {c} channels to {channels}")  # pragma: no cover


def is_gray(x: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which of the images ``(N, C, H, W)`` are gray (one channel, or R, G and
    B equal everywhere, as a grayscale file loads for an RGB model)."""
    if x.shape[1] == 1:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return ((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).flatten(1).all(1)


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.clamp(0.0, 1.0)
