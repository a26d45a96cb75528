"""Image outputs: :func:`to_output` gives the API's float images in the form ``output_type``
names (``"pt"`` tensor, ``"np"`` float32 ``(B, H, W, C)`` array, ``"pil"`` PIL images:
diffusers' convention); :func:`to_uint8`, :func:`to_pil`; the output-path rules
(:func:`check_output_dir`, :func:`check_output_file`, :func:`output_paths`,
:func:`refuse_shared_outputs`); :func:`save_png`, :func:`make_grid`, :func:`save_grid`. Files
are written atomically. Part of :mod:`d2c_fast.images`."""
from __future__ import annotations

import math
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from d2c_fast.errors import ImageError
from d2c_fast.utils import atomic_write

from .inputs import IMAGE_CHANNELS, PathLike

__all__ = ["to_uint8", "to_pil", "OUTPUT_TYPES", "to_output", "check_output_type", "save_png",
           "make_grid", "save_grid", "output_paths", "check_output_file", "check_output_dir",
           "refuse_shared_outputs"]


def _as_batch(images: Any, what: str = "images") -> torch.Tensor:
    """Tensor (C,H,W)/(B,C,H,W) or list of such -> (B, C, H, W) tensor (float or uint8)."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ImageError(f"{what}: empty list")
        parts = [_as_batch(t, f"{what}[{i}]") for i, t in enumerate(images)]
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ImageError(f"{what}: images have different shapes (C, H, W): {sorted(shapes)}")
        if len({p.dtype for p in parts}) > 1:
            parts = [_to_float(p) for p in parts]
        return torch.cat([p.to(parts[0].device) for p in parts], dim=0)
    if not isinstance(images, torch.Tensor):
        raise ImageError(
            f"{what}: expected a tensor (C, H, W) / (B, C, H, W) or a list of them, got "
            f"{type(images).__name__}"
        )
    t = images
    if t.dim() == 3:
        t = t.unsqueeze(0)
    elif t.dim() != 4:
        raise ImageError(f"{what}: expected (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
    if t.shape[1] not in IMAGE_CHANNELS:
        raise ImageError(f"{what}: {t.shape[1]} channels (shape {tuple(t.shape)}); expected 1, 3 or 4")
    if not (t.dtype == torch.uint8 or t.is_floating_point()):
        raise ImageError(f"{what}: dtype {t.dtype} not supported; use float in [0, 1] or uint8")
    return t


def _to_float(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    return t.to(torch.float32)


def to_uint8(images: Any) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 ``(B, C, H, W)`` on the same device.

    ``images`` is a tensor ``(C, H, W)`` / ``(B, C, H, W)`` or a list of such. Values are
    clamped to ``[0, 1]`` (NaN becomes 0) and rounded as ``floor(x * 255 + 0.5)``. uint8 input
    is returned as is (made 4-D).
    """
    t = _as_batch(images)
    if t.dtype == torch.uint8:
        return t
    x = torch.nan_to_num(t.detach().to(torch.float32), nan=0.0).clamp(0.0, 1.0)
    return torch.floor(x * 255.0 + 0.5).to(torch.uint8)


def _pil_mode(c: int) -> str:
    return {1: "L", 3: "RGB", 4: "RGBA"}[c]


def uint8_arrays(images: Any) -> List[np.ndarray]:
    """Images (see :func:`to_uint8`) -> one uint8 ``(H, W, C)`` numpy array each (the torch
    part of :func:`to_pil`)."""
    return list(to_uint8(images).cpu().permute(0, 2, 3, 1).contiguous().numpy())


def array_to_pil(a: np.ndarray) -> Image.Image:
    """One uint8 ``(H, W, C)`` array -> a PIL image ("L", "RGB" or "RGBA" by channels): PIL
    and numpy only, no torch (the PIL part of :func:`to_pil`)."""
    mode = _pil_mode(a.shape[2])
    im = Image.fromarray(np.ascontiguousarray(a[:, :, 0] if mode == "L" else a))
    if im.mode != mode:  # pragma: no cover - fromarray infers L / RGB / RGBA for uint8
        im = im.convert(mode)
    return im


def to_pil(images: Any) -> List[Image.Image]:
    """Images (see :func:`to_uint8`) -> list of PIL images ("L", "RGB" or "RGBA" by channels)."""
    return [array_to_pil(a) for a in uint8_arrays(images)]


#: The forms image-returning API calls give (``output_type=``), as diffusers' pipelines.
OUTPUT_TYPES: Tuple[str, ...] = ("pt", "np", "pil")


def to_output(images: torch.Tensor, output_type: str = "pt") -> Any:
    """Float images ``(B, C, H, W)`` in [0, 1] (what the API computes) in the form
    ``output_type`` asks for, the convention of diffusers' pipelines:

    * ``"pt"``: the tensor itself, float32 ``(B, C, H, W)`` in [0, 1], on the model's device;
    * ``"np"``: a float32 numpy array ``(B, H, W, C)`` in [0, 1] (channels last), on the host;
    * ``"pil"``: a list of ``B`` PIL images (8-bit, rounded as :func:`to_uint8`).

    ``ValueError`` for any other ``output_type`` (:func:`check_output_type` checks it before
    the work)."""
    check_output_type(output_type)
    if output_type == "pt":
        return images
    if output_type == "np":
        return images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
    return to_pil(images)


def check_output_type(output_type) -> str:
    """``output_type`` if it is one of :data:`OUTPUT_TYPES`, else ``ValueError``."""
    if not isinstance(output_type, str) or output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {', '.join(map(repr, OUTPUT_TYPES))}, "
                         f"got {output_type!r}")
    return output_type


def _write_png(im: Image.Image, path: PathLike) -> str:
    return atomic_write(path, lambda f: im.save(f, format="PNG"))


def check_output_dir(path: PathLike, what: str = "output directory") -> str:
    """``path`` as a directory to write into, checked before any work: refused (``ValueError``)
    when it, or a parent of it, is an existing file. Not created here."""
    path = os.fspath(path)
    p = os.path.abspath(path)
    while True:
        if os.path.exists(p) and not os.path.isdir(p):
            raise ValueError(f"{what} {path!r}: {p!r} is a file, not a directory")
        up = os.path.dirname(p)
        if up == p:
            return path
        p = up


def check_output_file(path: PathLike, what: str = "output file") -> str:
    """``path`` as a file to (over)write, checked before any work: refused (``ValueError``)
    when it is an existing directory or its parent cannot be a directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a directory; give a file name")
    check_output_dir(os.path.dirname(os.path.abspath(path)), f"{what} {path!r}: its folder")
    return path


def refuse_shared_outputs(inputs: Sequence[PathLike], outputs: Sequence[str]) -> None:
    """``ValueError`` naming the first two inputs that map to the same output path."""
    first: dict = {}
    for p, o in zip(inputs, outputs):
        if o in first:
            raise ValueError(f"inputs {os.fspath(first[o])!r} and {os.fspath(p)!r} would both "
                             f"be written as {o!r}; rename one")
        first[o] = p


def output_paths(inputs: Sequence[PathLike], out_dir: PathLike,
                 suffixes: Sequence[str] = (".png",)) -> List[List[str]]:
    """One output path per input file and suffix, ``out_dir/<input name without extension>
    <suffix>`` (``result[j][i]`` for suffix ``j``, input ``i``), checked before any work:
    two inputs with the same name (``a/face.png`` and ``b/face.png``, ``a.png`` and ``a.jpg``)
    would write the same file, and an output must not be one of the inputs; both are refused
    (``ValueError``), as is an ``out_dir`` that is a file."""
    out_dir = check_output_dir(out_dir)
    if len(set(suffixes)) != len(suffixes):
        raise ValueError(f"output name suffixes repeat ({list(suffixes)}): e.g. two sweep values "
                         f"that print alike would write the same files")
    stems = [os.path.splitext(os.path.basename(os.fspath(p)))[0] for p in inputs]
    refuse_shared_outputs(inputs, [os.path.join(out_dir, s + suffixes[0]) for s in stems])
    src = {os.path.realpath(os.fspath(p)) for p in inputs}
    out = [[os.path.join(out_dir, stem + sfx) for stem in stems] for sfx in suffixes]
    for row in out:
        for q in row:
            if os.path.realpath(q) in src:
                raise ValueError(f"output {q!r} would overwrite an input image; choose another "
                                 f"output directory")
    return out


def _format_path(pattern: str, i: int) -> str:
    try:
        return pattern.format(i=i)
    except (KeyError, IndexError, ValueError) as e:
        raise ImageError(
            f"bad path pattern {pattern!r}: {e!r}; only the field {{i}} is allowed "
            "(e.g. 'out/{i:04d}.png'); double other braces"
        ) from e


def save_png(images: Any, path_or_pattern: PathLike) -> List[str]:
    """Write images as 8-bit PNG files, atomically; returns the written paths.

    A single image (``(C, H, W)`` or a batch of 1) is written to ``path_or_pattern`` (if it
    contains ``{i}`` it is formatted with ``i=0``). A batch of several images needs a pattern
    with an ``{i}`` field, e.g. ``"out/{i:04d}.png"``, formatted with the index in the batch;
    otherwise :class:`ImageError`. Parent directories are created. Each file is written to a
    temporary file in its directory and moved into place with :func:`os.replace`.
    """
    pils = to_pil(images)
    pattern = os.fspath(path_or_pattern)
    if not isinstance(pattern, str):
        pattern = os.fsdecode(pattern)
    has_field = "{i" in pattern
    if len(pils) > 1:
        if not has_field:
            raise ImageError(
                f"save_png: a batch of {len(pils)} images needs a path pattern with {{i}} "
                f"(e.g. 'out/{{i:04d}}.png'), got {pattern!r}"
            )
        paths = [_format_path(pattern, i) for i in range(len(pils))]
        if len(set(paths)) != len(paths):
            raise ImageError(f"save_png: pattern {pattern!r} does not give distinct file names")
    else:
        paths = [_format_path(pattern, 0) if has_field else pattern]
    return [_write_png(im, p) for im, p in zip(pils, paths)]


def _grid(
    images: Any, nrow: int, padding: int, pad_value: float
) -> Tuple[torch.Tensor, int, int]:
    """Returns (grid (C, H', W'), number of rows, cell height)."""
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ImageError(f"nrow must be a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ImageError(f"padding must be a non-negative int, got {padding!r}")

    if isinstance(images, (list, tuple)) and len(images) > 0 and all(
        isinstance(t, torch.Tensor) and t.dim() == 4 for t in images
    ):
        rows = [_to_float(_as_batch(t, f"images[{i}]")) for i, t in enumerate(images)]
    else:
        batch = _to_float(_as_batch(images))
        rows = [batch[k : k + nrow] for k in range(0, batch.shape[0], nrow)]

    hw = {tuple(r.shape[-2:]) for r in rows}
    if len(hw) > 1:
        raise ImageError(f"make_grid: rows have different image sizes (H, W): {sorted(hw)}")
    chans = {r.shape[1] for r in rows}
    if len(chans) > 1:
        if chans <= {1, 3}:
            rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows]
            c = 3
        else:
            raise ImageError(f"make_grid: rows have different channel counts: {sorted(chans)}")
    else:
        c = chans.pop()
    h, w = hw.pop()
    ncols = max(r.shape[0] for r in rows)
    nrows = len(rows)
    device = rows[0].device
    grid = torch.full(
        (c, nrows * (h + padding) + padding, ncols * (w + padding) + padding),
        float(pad_value),
        dtype=torch.float32,
        device=device,
    )
    for ri, r in enumerate(rows):
        y = padding + ri * (h + padding)
        for ci in range(r.shape[0]):
            x = padding + ci * (w + padding)
            grid[:, y : y + h, x : x + w] = r[ci].to(device)
    return grid, nrows, h


def make_grid(
    images: Any, nrow: int = 8, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile images into one float32 ``(C, H', W')`` image.

    * ``images`` a tensor ``(B, C, H, W)`` (or a list of ``(C, H, W)`` tensors): laid out
      ``nrow`` per row, ``ceil(B / nrow)`` rows.
    * ``images`` a list of ``(B_i, C, H, W)`` batches: **each batch is one row** and ``nrow`` is
      ignored, e.g. ``[originals, reconstructions, edits]`` gives 3 rows. Shorter rows are
      filled with ``pad_value``; 1-channel rows are replicated to 3 channels when mixed with
      RGB rows.

    ``padding`` pixels of ``pad_value`` go between and around the cells, so the result is
    ``(C, rows * (H + padding) + padding, cols * (W + padding) + padding)``. uint8 input is
    divided by 255; values are otherwise left as they are.
    """
    return _grid(images, nrow, padding, pad_value)[0]


def save_grid(
    images: Any,
    path: PathLike,
    nrow: int = 8,
    padding: int = 2,
    pad_value: float = 1.0,
    labels: Optional[Sequence[str]] = None,
) -> str:
    """:func:`make_grid` then an atomic 8-bit PNG write to ``path``; returns the path.

    ``labels``, if given, has one string per grid row; they are drawn with PIL's default font
    on a margin added at the left (margin colour ``pad_value``, text black or white for
    contrast), vertically centred on their row.
    """
    grid, nrows, cell_h = _grid(images, nrow, padding, pad_value)
    im = to_pil(grid)[0]
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != nrows:
            raise ImageError(f"save_grid: {len(labels)} labels for {nrows} rows")
        im = _add_labels(im, labels, padding, cell_h, pad_value)
    return _write_png(im, path)


def _add_labels(
    im: Image.Image, labels: List[str], padding: int, cell_h: int, pad_value: float
) -> Image.Image:
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [measure.textbbox((0, 0), s, font=font) for s in labels]
    margin = max(b[2] - b[0] for b in boxes) + 8
    bg = int(math.floor(min(max(float(pad_value), 0.0), 1.0) * 255 + 0.5))
    fg = 0 if bg >= 128 else 255
    mode = im.mode
    nb = len(im.getbands())
    fill_bg = bg if nb == 1 else tuple([bg] * 3 + ([255] if nb == 4 else []))
    fill_fg = fg if nb == 1 else tuple([fg] * 3 + ([255] if nb == 4 else []))
    out = Image.new(mode, (im.width + margin, im.height), fill_bg)
    out.paste(im, (margin, 0))
    draw = ImageDraw.Draw(out)
    for r, (s, b) in enumerate(zip(labels, boxes)):
        y_mid = padding + r * (cell_h + padding) + cell_h / 2
        th = b[3] - b[1]
        draw.text((4 - b[0], int(y_mid - th / 2) - b[1]), s, fill=fill_fg, font=font)
    return out
