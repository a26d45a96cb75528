"""Image input/output for d2c_fast.

:func:`load_images` turns whatever the user has (tensors, numpy arrays, PIL images, file
paths, or lists of those) into one float32 ``(B, C, H, W)`` tensor in ``[0, 1]``, and refuses
anything it cannot use with an :class:`~d2c_fast.errors.ImageError` saying why.

The output helpers go the other way: :func:`to_output` gives the API's float images in the
form ``output_type`` names (``"pt"`` tensor, ``"np"`` float32 ``(B, H, W, C)`` array,
``"pil"`` PIL images: diffusers' convention, used by every image-returning ``Sampler``
call); :func:`to_uint8` (rounded 8-bit tensor), :func:`to_pil` (list of PIL images; in two halves,
:func:`uint8_arrays` with torch and :func:`array_to_pil` without, for callers that keep torch
in one thread),
:func:`save_png` (one PNG per image, ``"out/{i:03d}.png"``), :func:`make_grid` and
:func:`save_grid` (a tiled picture, optionally with row labels). Files are written
atomically: to a temporary file in the destination directory, then moved into place with
:func:`os.replace`, so a reader never sees a half-written PNG.

Two modules: :mod:`.inputs` (loading, channel conversion) and :mod:`.outputs` (conversions,
output paths, PNGs, grids); both only depend on torch, numpy, Pillow,
:mod:`d2c_fast.errors` and :mod:`d2c_fast.utils`.
"""
from .inputs import (IMAGE_CHANNELS, IMAGE_EXTENSIONS, MAX_PIXELS, PathLike, is_gray,
                     load_images, to_channels)
from .outputs import (OUTPUT_TYPES, check_output_dir, check_output_file, check_output_type,
                      make_grid, output_paths, refuse_shared_outputs, save_grid, save_png,
                      to_output, to_pil, to_uint8, uint8_arrays, array_to_pil)

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_CHANNELS", "MAX_PIXELS", "PathLike", "load_images",
           "to_uint8", "to_pil", "uint8_arrays", "array_to_pil", "OUTPUT_TYPES", "to_output", "check_output_type", "save_png",
           "make_grid", "save_grid", "output_paths", "check_output_file", "check_output_dir",
           "refuse_shared_outputs", "to_channels", "is_gray"]
