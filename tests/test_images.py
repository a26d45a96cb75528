"""Tests for d2c_fast.images (loading, validation, output helpers)."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_fast import images as I
from d2c_fast.errors import D2CError, ImageError


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _rgb_u8(h=4, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _fake_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit grey; only one row of data (cheap)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _expected(a_u8: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> expected (1, C, H, W) float32."""
    return torch.from_numpy(a_u8.astype(np.float32) / np.float32(255)).permute(2, 0, 1)[None]


# ------------------------------------------------------------------------------------------
# input types
# ------------------------------------------------------------------------------------------


def test_error_is_in_family():
    assert issubclass(ImageError, D2CError) and issubclass(ImageError, ValueError)


def test_uint8_numpy_exact():
    a = _rgb_u8()
    x = I.load_images(a)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 4, 5)
    assert torch.equal(x, _expected(a))
    assert x[0, 0, 0, 0].item() == pytest.approx(a[0, 0, 0] / 255, abs=1e-7)


def test_numpy_batch_gray_and_uint16():
    b = np.stack([_rgb_u8(seed=1), _rgb_u8(seed=2)])
    x = I.load_images(b)
    assert x.shape == (2, 3, 4, 5)
    assert torch.equal(x[1], _expected(b[1])[0])

    g = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    x = I.load_images(g)
    assert x.shape == (1, 3, 2, 2)
    for c in range(3):  # replicated exactly
        assert torch.equal(x[0, c], torch.from_numpy(g.astype(np.float32) / 255))
    x1 = I.load_images(g, channels=1)
    assert x1.shape == (1, 1, 2, 2)

    u16 = np.array([[0, 12345], [65535, 1]], dtype=np.uint16)
    x = I.load_images(u16, channels=1)
    assert abs(x[0, 0, 0, 1].item() - 12345 / 65535) < 1e-7
    assert x[0, 0, 1, 0].item() == 1.0


def test_numpy_float_and_bad_dtypes():
    a = np.full((3, 3, 3), 0.25, dtype=np.float64)
    x = I.load_images(a)
    assert x.dtype == torch.float32 and torch.all(x == 0.25)
    with pytest.raises(ImageError, match="bool"):
        I.load_images(np.zeros((3, 3), dtype=bool))
    with pytest.raises(ImageError, match="int64"):
        I.load_images(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ImageError, match="channel-first"):
        I.load_images(np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        I.load_images(np.full((3, 3), 2.0, dtype=np.float32))


def test_float_tensor_dtypes_and_range():
    t = torch.rand(2, 3, 6, 7)
    x = I.load_images(t)
    assert torch.equal(x, t)
    x = I.load_images(t[0])  # (C, H, W)
    assert x.shape == (1, 3, 6, 7) and torch.equal(x[0], t[0])
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        x = I.load_images(t.to(dt))
        assert x.dtype == torch.float32
        assert torch.allclose(x, t.to(dt).float())
    # tiny tolerance is clamped
    y = t.clone()
    y[0, 0, 0, 0] = 1.0 + 5e-7
    y[0, 0, 0, 1] = -5e-7
    x = I.load_images(y)
    assert x[0, 0, 0, 0].item() == 1.0 and x[0, 0, 0, 1].item() == 0.0
    for bad in (1.01, -0.01, float("nan"), float("inf")):
        z = t.clone()
        z[1, 2, 3, 4] = bad
        with pytest.raises(ImageError):
            I.load_images(z)
    with pytest.raises(ImageError, match="NaN"):
        I.load_images(torch.full((3, 2, 2), float("nan")))


def test_uint8_tensor_and_bad_tensors():
    u = torch.tensor(np.transpose(_rgb_u8(), (2, 0, 1)))
    x = I.load_images(u)
    assert torch.equal(x[0], u.float() / 255)
    with pytest.raises(ImageError, match="dtype"):
        I.load_images(torch.zeros(1, 3, 4, 4, dtype=torch.int32))
    with pytest.raises(ImageError, match="dtype"):
        I.load_images(torch.zeros(1, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ImageError, match="channels"):
        I.load_images(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ImageError, match="dims"):
        I.load_images(torch.zeros(4, 4))
    with pytest.raises(ImageError, match="dims"):
        I.load_images(torch.zeros(1, 1, 3, 4, 4))


def test_rgba_tensor_composited_on_white():
    t = torch.zeros(1, 4, 2, 2)  # black, alpha 0 except one opaque pixel
    t[0, 3, 1, 1] = 1.0
    t[0, :3, 0, 1] = 0.2
    t[0, 3, 0, 1] = 0.5
    x = I.load_images(t)
    assert x.shape == (1, 3, 2, 2)
    assert torch.all(x[0, :, 0, 0] == 1.0)  # transparent -> white
    assert torch.all(x[0, :, 1, 1] == 0.0)  # opaque black stays black
    assert torch.allclose(x[0, :, 0, 1], torch.full((3,), 0.2 * 0.5 + 0.5))


def test_channels_one_uses_pil_luma():
    a = _rgb_u8(8, 8, seed=3)
    x = I.load_images(a, channels=1)
    ref = np.asarray(Image.fromarray(a).convert("L")).astype(np.float32) / 255
    # PIL rounds to 8 bits: at most half a level apart
    assert np.abs(x[0, 0].numpy() - ref).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ImageError, match="channels"):
        I.load_images(a, channels=2)


# ------------------------------------------------------------------------------------------
# PIL images
# ------------------------------------------------------------------------------------------


def test_pil_rgb_l_1():
    a = _rgb_u8()
    assert torch.equal(I.load_images(Image.fromarray(a)), _expected(a))
    g = np.array([[0, 50], [200, 255]], dtype=np.uint8)
    x = I.load_images(Image.fromarray(g))
    assert torch.equal(x[0], torch.from_numpy(g / np.float32(255)).expand(3, 2, 2))
    b = Image.fromarray(np.array([[True, False]])).convert("1")
    x = I.load_images(b, channels=1)
    assert x.flatten().tolist() == [1.0, 0.0]


def test_pil_rgba_alpha_zero_is_white():
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[..., :3] = 30
    a[0, 0, 3] = 0
    a[0, 1, 3] = 255
    a[1, :, 3] = 255
    x = I.load_images(Image.fromarray(a, mode="RGBA"))
    assert torch.all(x[0, :, 0, 0] == 1.0)
    assert torch.allclose(x[0, :, 0, 1], torch.full((3,), 30 / 255))
    la = Image.fromarray(a[..., [0, 3]], mode="LA")
    x = I.load_images(la)
    assert torch.all(x[0, :, 0, 0] == 1.0)
    assert torch.allclose(x[0, :, 1, 1], torch.full((3,), 30 / 255))


def test_pil_palette_matches_rgb():
    a = _rgb_u8(6, 6, seed=4) // 64 * 64  # few colours -> exact palette
    p = Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert p.mode == "P"
    x = I.load_images(p)
    assert torch.equal(x, _expected(np.asarray(p.convert("RGB"))))
    assert torch.equal(x, _expected(a))


def test_pil_other_modes():
    a = _rgb_u8(seed=5)
    for mode in ("CMYK", "YCbCr"):
        im = Image.fromarray(a).convert(mode)
        x = I.load_images(im)
        ref = _expected(np.asarray(im.convert("RGB")))
        assert x.shape == (1, 3, 4, 5) and torch.equal(x, ref)
    f = Image.fromarray(np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32), mode="F")
    x = I.load_images(f, channels=1)
    assert x.flatten().tolist() == [0.0, 0.5, 0.25, 1.0]
    bad_f = Image.fromarray(np.array([[0.0, 3.0]], dtype=np.float32), mode="F")
    with pytest.raises(ImageError):
        I.load_images(bad_f)
    i32 = Image.fromarray(np.array([[0, 40000]], dtype=np.int32), mode="I")
    x = I.load_images(i32, channels=1)
    assert abs(x[0, 0, 0, 1].item() - 40000 / 65535) < 1e-7
    with pytest.raises(ImageError, match="65535"):
        I.load_images(Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I"))


def test_16bit_png_keeps_precision(tmp_path):
    im = Image.new("I;16", (3, 2))
    im.putpixel((1, 0), 12345)
    im.putpixel((2, 1), 65535)
    p = tmp_path / "deep.png"
    im.save(p)
    x = I.load_images(p)
    assert x.shape == (1, 3, 2, 3)
    assert abs(x[0, 0, 0, 1].item() - 12345 / 65535) < 1e-7
    assert torch.equal(x[0, 0], x[0, 2])  # replicated exactly
    assert x[0, 1, 1, 2].item() == 1.0
    # not quantised to 8 bits
    assert abs(x[0, 0, 0, 1].item() * 255 - round(x[0, 0, 0, 1].item() * 255)) > 1e-3


# ------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------


def test_file_paths_str_and_path(tmp_path):
    a = _rgb_u8(seed=6)
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    assert torch.equal(I.load_images(p), _expected(a))
    assert torch.equal(I.load_images(str(p)), _expected(a))


def test_palette_png_with_transparency(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # colour 0 transparent
    p = tmp_path / "pal.png"
    pal.save(p, transparency=0)
    x = I.load_images(p)
    assert x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent red -> white
    assert x[0, :, 0, 1].tolist() == [0.0, 0.0, 1.0]


def test_bad_files(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello, not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = tmp_path / "good.png"
    Image.fromarray(_rgb_u8(32, 32, seed=7)).save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    missing = tmp_path / "nope.png"
    for path in (txt, empty, trunc, tmp_path, missing):
        with pytest.raises(ImageError) as ei:
            I.load_images(path)
        assert str(path) in str(ei.value)
    with pytest.raises(ImageError, match="no such file"):
        I.load_images("definitely not a file")
    with pytest.raises(ImageError, match="directory"):
        I.load_images(tmp_path)


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "bomb.png"
    p.write_bytes(_fake_png(5000, 5000))  # 25 Mpx claimed, a few hundred bytes
    decoded = []
    orig_load = Image.Image.load

    def spy(self):
        decoded.append(self.size)
        return orig_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageError, match="max_pixels") as ei:
        I.load_images(p, max_pixels=10_000_000)
    assert str(p) in str(ei.value)
    assert decoded == []

    monkeypatch.setattr(I.inputs, "MAX_PIXELS", 1000)   # the module that reads it
    with pytest.raises(ImageError, match="max_pixels"):
        I.load_images(p)
    assert decoded == []
    with pytest.raises(ImageError, match="max_pixels"):  # in-memory lazy PIL image too
        with Image.open(p) as im:
            I.load_images(im)
    assert decoded == []


def test_pil_bomb_error_becomes_image_error(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(_fake_png(20000, 20000))  # 400 Mpx: PIL's DecompressionBombError
    with pytest.raises(ImageError, match="bomb"):
        I.load_images(p, max_pixels=10**12)


# ------------------------------------------------------------------------------------------
# lists, sizes, misc
# ------------------------------------------------------------------------------------------


def test_mixed_list(tmp_path):
    a = _rgb_u8(seed=8)
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    t = torch.rand(2, 3, 4, 5)
    x = I.load_images([a, p, Image.fromarray(a), t, torch.from_numpy(a).permute(2, 0, 1)])
    assert x.shape == (6, 3, 4, 5)
    exp = _expected(a)[0]
    for k in (0, 1, 2, 5):
        assert torch.equal(x[k], exp)
    assert torch.equal(x[3:5], t)


def test_list_errors():
    with pytest.raises(ImageError, match="empty"):
        I.load_images([])
    with pytest.raises(ImageError, match=r"4x5.*6x6|6x6.*4x5"):
        I.load_images([_rgb_u8(), _rgb_u8(6, 6)])
    with pytest.raises(ImageError, match="nested"):
        I.load_images([[_rgb_u8()]])
    for bad in (None, 3, {"a": 1}, b"\x89PNG", 1.5):
        with pytest.raises(ImageError):
            I.load_images(bad)
    with pytest.raises(ImageError, match=r"images\[1\]"):
        I.load_images([_rgb_u8(), None])


def test_size_mismatch_and_resize():
    a = np.full((10, 20, 3), 77, dtype=np.uint8)
    with pytest.raises(ImageError) as ei:
        I.load_images(a, size=16)
    assert "10x20" in str(ei.value) and "16x16" in str(ei.value)
    x = I.load_images(a, size=16, resize=True)
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 77 / 255), atol=1e-6)
    x = I.load_images(a, size=(5, 8), resize=True)
    assert x.shape == (1, 3, 5, 8)
    # correct size passes untouched
    x = I.load_images(a, size=(10, 20))
    assert torch.equal(x, _expected(a))
    # different sizes unified by resize
    x = I.load_images([a, np.zeros((7, 7), dtype=np.uint8)], size=8, resize=True)
    assert x.shape == (2, 3, 8, 8) and torch.all(x[1] == 0)
    # downscale is anti-aliased: a 1-px checkerboard averages to grey
    cb = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    x = I.load_images(cb, size=8, resize=True, channels=1)
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=0.02)
    with pytest.raises(ImageError, match="size"):
        I.load_images(a, size=(0, 4))


def test_device_argument():
    x = I.load_images(_rgb_u8(), device=torch.device("cpu"))
    assert x.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
        y = I.load_images([_rgb_u8(), torch.rand(3, 4, 5)], device="cuda")
        assert y.device.type == "cuda" and y.shape == (2, 3, 4, 5)


# ------------------------------------------------------------------------------------------
# output helpers
# ------------------------------------------------------------------------------------------


def test_to_uint8_rounding():
    t = torch.tensor([0.0, 1 / 255, 0.5, 1.0, 1.5, -0.2, float("nan"), 2.5 / 255 - 1e-4])
    t = t.view(1, 1, 1, -1)
    u = I.to_uint8(t)
    assert u.dtype == torch.uint8 and u.shape == (1, 1, 1, 8)
    assert u.flatten().tolist() == [0, 1, 128, 255, 255, 0, 0, 2]
    assert I.to_uint8(torch.zeros(3, 2, 2)).shape == (1, 3, 2, 2)
    a = _rgb_u8()
    assert torch.equal(I.to_uint8(I.load_images(a))[0].permute(1, 2, 0), torch.from_numpy(a))


def test_to_pil_modes():
    ims = I.to_pil(torch.rand(2, 3, 4, 5))
    assert len(ims) == 2 and ims[0].mode == "RGB" and ims[0].size == (5, 4)
    assert I.to_pil(torch.rand(1, 4, 4))[0].mode == "L"
    assert I.to_pil(torch.rand(4, 4, 4))[0].mode == "RGBA"


def test_save_png_roundtrip(tmp_path):
    a = _rgb_u8(8, 9, seed=9)
    x = I.load_images(a)
    out = tmp_path / "sub" / "dir" / "one.png"
    paths = I.save_png(x[0], out)
    assert paths == [str(out)]
    assert np.array_equal(np.asarray(Image.open(out)), a)

    batch = torch.rand(3, 3, 5, 6)
    paths = I.save_png(batch, str(tmp_path / "b" / "{i:03d}.png"))
    assert [os.path.basename(p) for p in paths] == ["000.png", "001.png", "002.png"]
    u = I.to_uint8(batch)
    for k, p in enumerate(paths):
        assert torch.equal(torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1), u[k])
        assert torch.equal(I.to_uint8(I.load_images(p))[0], u[k])
    # no temp files left behind
    assert sorted(os.listdir(tmp_path / "b")) == ["000.png", "001.png", "002.png"]

    with pytest.raises(ImageError, match=r"\{i\}"):
        I.save_png(batch, tmp_path / "same.png")
    assert not (tmp_path / "same.png").exists()


def test_save_png_atomic_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def boom(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        I.save_png(torch.rand(3, 2, 2), target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.png"]


def test_make_grid_shapes_and_values():
    b = torch.rand(10, 3, 4, 5)
    g = I.make_grid(b, nrow=4, padding=2, pad_value=0.5)
    assert g.shape == (3, 3 * (4 + 2) + 2, 4 * (5 + 2) + 2)
    assert torch.equal(g[:, 2:6, 2:7], b[0])
    assert torch.equal(g[:, 8:12, 2:7], b[4])  # second row starts at image 4
    assert torch.all(g[:, 0, :] == 0.5)
    # empty trailing cells are padding
    assert torch.all(g[:, 14:18, 2 + 2 * 7 : 2 + 2 * 7 + 5] == 0.5)

    rows = [torch.rand(6, 3, 8, 8) for _ in range(3)]
    g = I.make_grid(rows, padding=1)
    assert g.shape == (3, 3 * 9 + 1, 6 * 9 + 1)
    assert torch.equal(g[:, 1 + 2 * 9 : 1 + 2 * 9 + 8, 1 + 5 * 9 : 1 + 5 * 9 + 8], rows[2][5])

    g = I.make_grid(torch.rand(3, 1, 4, 4), nrow=8, padding=0)
    assert g.shape == (1, 4, 12)
    with pytest.raises(ImageError):
        I.make_grid([torch.rand(2, 3, 4, 4), torch.rand(2, 3, 5, 5)])


def test_save_grid_roundtrip_and_labels(tmp_path):
    rows = [torch.rand(2, 3, 6, 6), torch.rand(2, 3, 6, 6)]
    p = I.save_grid(rows, tmp_path / "g" / "grid.png", padding=2)
    g = I.make_grid(rows, padding=2)
    saved = torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
    assert torch.equal(saved, I.to_uint8(g)[0])

    p2 = I.save_grid(rows, tmp_path / "labelled.png", padding=2, labels=["orig", "recon"])
    im = np.asarray(Image.open(p2))
    assert im.shape[0] == g.shape[1] and im.shape[1] > g.shape[2]
    margin = im.shape[1] - g.shape[2]
    # the grid is intact to the right of the label margin, and the labels drew something dark
    assert np.array_equal(im[:, margin:].transpose(2, 0, 1), I.to_uint8(g)[0].numpy())
    assert im[:, :margin].min() < 128
    with pytest.raises(ImageError, match="labels"):
        I.save_grid(rows, tmp_path / "bad.png", labels=["only one"])
