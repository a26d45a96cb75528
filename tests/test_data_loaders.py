"""Loaders for real data on disk: ImageFolderDataset and CelebADataset, on small samples
written by the tests themselves."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_fast.data import (
    CELEBA_ATTRIBUTES,
    CELEBA_CENTER_CROP_BOX,
    CELEBA_CROP_BOX,
    CelebADataset,
    DatasetError,
    ImageFolderDataset,
)
from d2c_fast.data.celeba import read_attr_file
from d2c_fast.errors import D2CError, ImageError


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path, **kw)
    return path


def _solid(h, w, rgb):
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = rgb
    return a


# --------------------------------------------------------------------------------------------
# ImageFolderDataset
# --------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "b.png", _solid(40, 40, (255, 0, 0)))
    _save(root / "a.jpg", _solid(30, 50, (0, 0, 255)), quality=95)
    _save(root / "sub" / "c.PNG", _solid(64, 64, (0, 255, 0)))
    _save(root / "sub" / "deeper" / "d.bmp", _solid(16, 16, (9, 9, 9)))
    (root / "notes.txt").write_text("not an image")
    _save(root / ".hidden.png", _solid(8, 8, (1, 2, 3)))
    return root


def test_folder_sorted_recursive(folder):
    ds = ImageFolderDataset(folder, resolution=32)
    names = [p.relative_to(folder).as_posix() for p in ds.files]
    assert names == ["a.jpg", "b.png", "sub/c.PNG", "sub/deeper/d.bmp"]
    assert len(ds) == 4
    img, idx = ds[1]
    assert idx == 1 and img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert torch.allclose(img, torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 32, 32), atol=1e-6)
    flat = ImageFolderDataset(folder, resolution=32, recursive=False)
    assert [p.name for p in flat.files] == ["a.jpg", "b.png"]
    only_png = ImageFolderDataset(folder, resolution=32, exts=("png",))
    assert [p.name for p in only_png.files] == ["b.png", "c.PNG"]


def test_folder_takes_every_image_extension_that_directory_jobs_take(tmp_path):
    # one extension list: a .tif or .ppm that manipulate-dir edits is a training image too
    from d2c_fast.images import IMAGE_EXTENSIONS
    from d2c_fast.jobs import list_images
    for i, ext in enumerate(IMAGE_EXTENSIONS):
        _save(tmp_path / f"{i}{ext.upper() if i % 2 else ext}", _solid(8, 8, (i, 0, 0)))
    ds = ImageFolderDataset(tmp_path, resolution=8)
    assert [p.name for p in ds.files] == list_images(tmp_path)
    assert len(ds) == len(IMAGE_EXTENSIONS) and {".tif", ".tiff", ".ppm"} <= set(IMAGE_EXTENSIONS)


def test_folder_center_crop_and_resize_modes(tmp_path):
    root = tmp_path / "f"
    a = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40: left/right quarters blue, centre red
    a[:, :10] = (0, 0, 255)
    a[:, 10:30] = (255, 0, 0)
    a[:, 30:] = (0, 0, 255)
    _save(root / "wide.png", a)
    crop = ImageFolderDataset(root, resolution=10)[0][0]
    assert torch.allclose(crop, torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 10, 10), atol=1e-6)
    squash = ImageFolderDataset(root, resolution=10, resize="resize")[0][0]
    assert squash.shape == (3, 10, 10)
    assert float(squash[2, :, 0].mean()) > 0.9  # the blue sides survive a plain resize
    with pytest.raises(ImageError, match="20x40"):
        ImageFolderDataset(root, resolution=10, resize="error")[0]
    same = ImageFolderDataset(root, resolution=20, resize="center_crop")[0][0]
    assert same.shape == (3, 20, 20)


def test_folder_gray_and_rgba_become_rgb(tmp_path):
    root = tmp_path / "g"
    Image.fromarray(np.full((8, 8), 128, np.uint8), "L").save(root.mkdir() or root / "g.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(root / "t.png")
    ds = ImageFolderDataset(root, resolution=8, resize="error")
    g = ds[0][0]
    assert g.shape == (3, 8, 8) and torch.allclose(g, torch.full_like(g, 128 / 255))
    t = ds[1][0]
    assert torch.allclose(t, torch.ones_like(t))


def test_folder_bad_files(tmp_path, caplog):
    root = tmp_path / "bad"
    _save(root / "a_good.png", _solid(8, 8, (10, 20, 30)))
    (root / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = _save(root / "c_trunc.jpg", _solid(32, 32, (200, 100, 50)), quality=90)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    ds = ImageFolderDataset(root, resolution=8)
    with pytest.raises(ImageError, match="b_broken.png"):
        ds[1]
    with pytest.raises(ImageError, match="c_trunc.jpg"):
        ds[2]
    skip = ImageFolderDataset(root, resolution=8, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="d2c_fast.data.folder"):
        img, j = skip[1]
    assert j == 0  # wrapped round to the next readable file
    assert "b_broken.png" in caplog.text and "c_trunc.jpg" in caplog.text
    assert torch.equal(img, skip[0][0])


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", resolution=8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", resolution=8)
    _save(tmp_path / "one" / "a.png", _solid(4, 4, (0, 0, 0)))
    with pytest.raises(DatasetError):
        ImageFolderDataset(tmp_path / "one", resolution=8, resize="crop")
    with pytest.raises(DatasetError):
        ImageFolderDataset(tmp_path / "one", resolution=0)
    ds = ImageFolderDataset(tmp_path / "one", resolution=4)
    with pytest.raises(IndexError):
        ds[1]
    assert issubclass(DatasetError, D2CError)


def test_check_index_types_and_range():
    from d2c_fast.data._common import check_index

    for i in (2, np.int64(2), torch.tensor(2), -3, np.int32(-3)):
        assert check_index(i, 5) == 2 and type(check_index(i, 5)) is int
    for bad in (True, 2.0, "2", torch.tensor(2.0), None):
        with pytest.raises(TypeError, match="indices must be ints"):
            check_index(bad, 5)
    for out in (5, -6, 100):
        with pytest.raises(IndexError, match=f"index {out} out of range for a X of 5"):
            check_index(out, 5, "X")


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------


def _attr_lines(files, rows):
    lines = [str(len(files)), " ".join(CELEBA_ATTRIBUTES)]
    for f, r in zip(files, rows):
        lines.append(f + "  " + " ".join("1" if v else "-1" for v in r).replace(" -1", "  -1"))
    return "\n".join(lines) + "\n"


def _inside_box_image(box, inside=(250, 20, 20), outside=(20, 20, 250)):
    a = np.zeros((218, 178, 3), np.uint8)
    a[:] = outside
    l, t, r, b = box
    a[t:b, l:r] = inside
    return a


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / "celeba"
    files = [f"{k:06d}.jpg" for k in range(1, 6)]
    rng = np.random.default_rng(0)
    rows = rng.random((5, 40)) < 0.5
    rows[:, CELEBA_ATTRIBUTES.index("Smiling")] = [True, False, True, False, True]
    for k, f in enumerate(files):
        if k == 0:
            arr = _inside_box_image(CELEBA_CROP_BOX)
        else:
            arr = rng.integers(0, 256, (218, 178, 3))
        _save(root / "img_align_celeba" / f, arr, quality=100, subsampling=0)
    (root / "list_attr_celeba.txt").write_text(_attr_lines(files, rows))
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{f} {s}\n" for f, s in zip(files, [0, 0, 1, 2, 0]))
    )
    return root, files, rows


def test_celeba_splits_and_labels(celeba):
    root, files, rows = celeba
    tr = CelebADataset(root, split="train")
    assert tr.files == [files[0], files[1], files[4]]
    va = CelebADataset(root, split="val")
    te = CelebADataset(root, split="test")
    al = CelebADataset(root, split="all")
    assert va.files == [files[2]] and te.files == [files[3]] and al.files == files
    img, lab = tr[2]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert lab.shape == (40,) and lab.dtype == torch.float32
    assert lab.tolist() == [float(v) for v in rows[4]]
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert len(tr) == 3 and tr.attributes == CELEBA_ATTRIBUTES


def test_celeba_selected_attributes(celeba):
    root, files, rows = celeba
    ds = CelebADataset(root, split="all", attributes=["Smiling", "Blond_Hair"], resolution=32)
    _, lab = ds[0]
    assert lab.tolist() == [1.0, float(rows[0][CELEBA_ATTRIBUTES.index("Blond_Hair")])]
    assert ds.labels[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(DatasetError, match="Blond"):  # the message lists the valid names
        CelebADataset(root, attributes=["Smiling", "Blonde_Hair"])
    with pytest.raises(DatasetError):
        CelebADataset(root, attributes=[])


def test_celeba_official_crop_box(celeba):
    root, _, _ = celeba
    assert CELEBA_CROP_BOX == (15, 40, 163, 188)  # NVAE CropCelebA64
    assert CELEBA_CENTER_CROP_BOX == (15, 35, 163, 183)
    img, _ = CelebADataset(root, split="all")[0]
    # the crop is exactly the red box: red dominates every pixel, edges included (JPEG noise
    # allowed)
    assert float((img[0] - img[2]).min()) > 0.5
    # at full size the official crop is the box pixel for pixel
    full, _ = CelebADataset(root, split="all", resolution=148)[0]
    assert float((full[0] - full[2]).min()) > 0.5
    # the exactly centred box takes 5 rows of blue from above the red box (rows 35..39)
    cen, _ = CelebADataset(root, split="all", crop="center", resolution=148)[0]
    assert float((cen[2, :4] - cen[0, :4]).min()) > 0.5
    assert float((cen[0, 6:] - cen[2, 6:]).min()) > 0.5
    # one pixel more on any side would show blue
    for box in [(14, 40, 163, 188), (15, 39, 163, 188), (15, 40, 164, 188), (15, 40, 163, 189)]:
        x, _ = CelebADataset(root, split="all", crop=box, resolution=148)[0]
        assert float((x[2] - x[0]).max()) > 0.5, box


def test_celeba_crop_matches_pil_pipeline(celeba):
    root, files, _ = celeba
    ds = CelebADataset(root, split="all")
    with Image.open(root / "img_align_celeba" / files[1]) as im:
        ref = im.convert("RGB").crop(CELEBA_CROP_BOX).resize((64, 64), Image.BILINEAR)
    ref = torch.from_numpy(np.asarray(ref, np.float32) / 255.0).permute(2, 0, 1)
    assert torch.allclose(ds[1][0], ref, atol=1e-6)


def test_celeba_without_partition_file_uses_official_ranges(celeba):
    root, files, _ = celeba
    (root / "list_eval_partition.txt").unlink()
    assert CelebADataset(root, split="train").files == files  # all 5 rows are < 162770
    assert len(CelebADataset(root, split="val")) == 0
    from d2c_fast.data import CELEBA_SPLIT_ENDS

    assert CELEBA_SPLIT_ENDS == (162770, 182637)


def test_celeba_bad_inputs(celeba, tmp_path):
    root, files, rows = celeba
    with pytest.raises(DatasetError):
        CelebADataset(root, split="valid")
    with pytest.raises(DatasetError, match="img_align_celeba"):
        CelebADataset(tmp_path)
    # an image that is not 178x218
    _save(root / "img_align_celeba" / files[3], _solid(100, 100, (0, 0, 0)))
    ds = CelebADataset(root, split="all")
    with pytest.raises(ImageError, match="178x218"):
        ds[3]
    assert CelebADataset(root, split="all", crop=None, resolution=16)[3][0].shape == (3, 16, 16)
    # a missing image file
    (root / "img_align_celeba" / files[2]).unlink()
    with pytest.raises(ImageError, match=files[2]):
        ds[2]
    # malformed attribute files
    attr = root / "list_attr_celeba.txt"
    good = attr.read_text()
    attr.write_text(good.replace("-1", "2", 1))
    with pytest.raises(DatasetError, match="line 3"):
        CelebADataset(root)
    lines = good.splitlines()
    attr.write_text("\n".join(["7"] + lines[1:]) + "\n")
    with pytest.raises(DatasetError, match="says 7"):
        CelebADataset(root)
    attr.write_text("\n".join(lines[:2] + [lines[2] + " 1"] + lines[3:]) + "\n")
    with pytest.raises(DatasetError, match="got 42 fields"):
        CelebADataset(root)
    attr.write_text(good)
    # partition file missing an entry
    (root / "list_eval_partition.txt").write_text(f"{files[0]} 0\n")
    with pytest.raises(DatasetError, match="not in"):
        CelebADataset(root)


def test_read_attr_file_roundtrip(celeba):
    root, files, rows = celeba
    names, fs, lab = read_attr_file(root / "list_attr_celeba.txt")
    assert tuple(names) == CELEBA_ATTRIBUTES and fs == files
    assert lab.dtype == np.uint8 and np.array_equal(lab.astype(bool), rows)
