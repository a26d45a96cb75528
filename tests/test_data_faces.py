"""The built-in procedural face dataset (d2c_fast.data.faces)."""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch

from d2c_fast.data import (
    ATTRIBUTE_RATES,
    ATTRIBUTES,
    DatasetError,
    FacesDataset,
    labels_only,
    landmarks,
    make_attribute_preview,
    make_grid_preview,
    render_face,
)
from d2c_fast.data.faces import STYLE_FIELDS
from d2c_fast.errors import D2CError


def _digest(img: torch.Tensor) -> str:
    return hashlib.sha1(img.numpy().tobytes()).hexdigest()


def test_attribute_table():
    assert ATTRIBUTES == ("blond_hair", "red_lipstick", "beard", "eyeglasses", "smiling")
    assert set(ATTRIBUTE_RATES) == set(ATTRIBUTES)
    assert ATTRIBUTE_RATES["blond_hair"] == pytest.approx(0.15)


@pytest.mark.parametrize("res", [64, 32])
def test_image_shape_dtype_range(res):
    img, labels = render_face(3, 7, res)
    assert img.shape == (3, res, res)
    assert img.dtype == torch.float32
    assert img.is_contiguous()
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert torch.isfinite(img).all()
    assert set(labels) == set(ATTRIBUTES)
    assert all(isinstance(v, bool) for v in labels.values())
    # a real picture, not a flat field
    assert float(img.std()) > 0.05


def test_deterministic_bytes():
    a, la = render_face(0, 11)
    b, lb = render_face(0, 11)
    assert _digest(a) == _digest(b) and la == lb
    ds1, ds2 = FacesDataset(20, seed=5), FacesDataset(20, seed=5)
    x1, y1 = ds1[13]
    x2, y2 = ds2[13]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # negative indices, and the item equals render_face with the same (seed, index)
    x3, _ = ds1[-7]
    assert torch.equal(x3, x1)
    assert torch.equal(render_face(5, 13)[0], x1)


def test_different_index_seed_split_give_different_images():
    base = _digest(render_face(0, 0)[0])
    others = {
        _digest(render_face(0, 1)[0]),
        _digest(render_face(1, 0)[0]),
        _digest(render_face(0, 0, split="val")[0]),
        _digest(render_face(0, 0, split="test")[0]),
    }
    assert base not in others and len(others) == 4


def test_labels_only_matches_render():
    for i in range(12):
        assert labels_only(2, i) == render_face(2, i, 16)[1]
        assert labels_only(2, i, "val") == render_face(2, i, 16, split="val")[1]


def test_attribute_rates_and_independence():
    n = 3000
    lab = np.array([[labels_only(0, i)[a] for a in ATTRIBUTES] for i in range(n)], dtype=np.float64)
    for k, a in enumerate(ATTRIBUTES):
        rate = lab[:, k].mean()
        assert abs(rate - ATTRIBUTE_RATES[a]) < 0.03, (a, rate)
    # pairwise (in)dependence: correlation near 0
    corr = np.corrcoef(lab.T)
    off = corr[~np.eye(len(ATTRIBUTES), dtype=bool)]
    assert np.abs(off).max() < 0.06
    # the other splits have the same rates
    val = np.array([[labels_only(0, i, "val")[a] for a in ATTRIBUTES] for i in range(2000)])
    for k, a in enumerate(ATTRIBUTES):
        assert abs(val[:, k].mean() - ATTRIBUTE_RATES[a]) < 0.035


def test_dataset_labels_tensor():
    ds = FacesDataset(30, seed=1, resolution=32)
    assert len(ds) == 30
    img, y = ds[4]
    assert img.shape == (3, 32, 32)
    assert y.shape == (5,) and y.dtype == torch.float32
    assert set(y.tolist()) <= {0.0, 1.0}
    d = labels_only(1, 4)
    assert y.tolist() == [float(d[a]) for a in ATTRIBUTES]
    allv = ds.all_labels()
    assert allv.shape == (30, 5) and torch.equal(allv[4], y)
    with pytest.raises(IndexError):
        ds[30]
    with pytest.raises(IndexError):
        ds[-31]


def test_works_with_dataloader():
    ds = FacesDataset(8, resolution=32)
    dl = torch.utils.data.DataLoader(ds, batch_size=4)
    xb, yb = next(iter(dl))
    assert xb.shape == (4, 3, 32, 32) and yb.shape == (4, 5)
    assert torch.equal(xb[2], ds[2][0])


def test_splits_are_disjoint_streams():
    seen = {}
    for split in ("train", "val", "test"):
        for i in range(60):
            h = _digest(render_face(0, i, 16, split=split)[0])
            assert h not in seen, (split, i, seen.get(h))
            seen[h] = (split, i)


def test_bad_arguments():
    with pytest.raises(DatasetError):
        render_face(0, 0, split="training")
    with pytest.raises(DatasetError):
        FacesDataset(4, split="dev")
    with pytest.raises(DatasetError):
        render_face(-1, 0)
    with pytest.raises(DatasetError):
        render_face(0, 0, force={"moustache": True})
    with pytest.raises(DatasetError):
        render_face(0, 0, 4)
    with pytest.raises(D2CError):
        FacesDataset(-3)


def _diff_mass(seed, index, attr, res=64):
    off = {a: False for a in ATTRIBUTES}
    x0, l0 = render_face(seed, index, res, force=off)
    x1, l1 = render_face(seed, index, res, force={**off, attr: True})
    assert not any(l0.values()) and l1[attr] and sum(l1.values()) == 1
    return (x1 - x0).abs().sum(0).numpy()  # (H, W)


def _face_frame(lm, res=64):
    """Pixel centres and landmarks in face units, rotated back into the face's frame."""
    u, ang = lm["unit"]
    c, sn = np.cos(ang), np.sin(ang)
    o = np.array(lm["face_center"])

    def to_face(x, y):
        dx, dy = (x - o[0]) / u, (y - o[1]) / u
        return c * dx + sn * dy, -sn * dx + c * dy

    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    fx, fy = to_face(xx, yy)
    pts = {k: to_face(*v) for k, v in lm.items() if k != "unit"}
    return fx, fy, pts


def _box(frame, center, half_w, half_h):
    """Pixels within a face-aligned box (sizes in face units) around a landmark name or a
    point in face units."""
    fx, fy, pts = frame
    cx, cy = pts[center] if isinstance(center, str) else center
    return (np.abs(fx - cx) <= half_w) & (np.abs(fy - cy) <= half_h)


IDS = range(8)


def test_force_keeps_identity():
    # forcing an attribute to its drawn value changes nothing; other attributes are untouched
    for i in range(6):
        lab = labels_only(0, i)
        x, _ = render_face(0, i, 32)
        y, _ = render_face(0, i, 32, force=lab)
        assert torch.equal(x, y)


def test_style_from_draws_the_forced_attribute_in_another_face_style():
    assert set(STYLE_FIELDS) == set(ATTRIBUTES)
    i = next(k for k in range(100) if not labels_only(0, k)["eyeglasses"])
    x = render_face(0, i, 32)[0]
    own = render_face(0, i, 32, force={"eyeglasses": True})[0]
    assert torch.equal(render_face(0, i, 32, force={"eyeglasses": True}, style_from=i)[0], own)
    other = [render_face(0, i, 32, force={"eyeglasses": True}, style_from=j)
             for j in range(i + 1, i + 4)]
    assert all(lab["eyeglasses"] for _, lab in other)
    assert all(not torch.equal(img, own) for img, _ in other)   # another frame / size / tint
    for img, _ in other:   # still a small part of the picture: glasses, not another face
        assert 0 < ((img - x).abs().amax(0) > 0.1).float().mean() < 0.3
    # only the forced attribute is restyled: a smile in another face's style differs from the
    # face's own smile only where the smile is drawn (the teeth), nowhere else
    k = next(k for k in range(100) if not labels_only(0, k)["smiling"])
    xs = render_face(0, k, 32)[0]
    s_own = render_face(0, k, 32, force={"smiling": True})[0]
    s_other = render_face(0, k, 32, force={"smiling": True}, style_from=k + 1)[0]
    untouched = (s_own - xs).abs().amax(0) == 0
    assert untouched.float().mean() > 0.5
    assert torch.equal(s_other[:, untouched], s_own[:, untouched])
    with pytest.raises(DatasetError, match="force="):
        render_face(0, i, 32, style_from=1)
    with pytest.raises(DatasetError, match="style_from"):
        render_face(0, i, 32, force={"smiling": True}, style_from=-1)


def test_lipstick_changes_only_the_lips():
    for i in IDS:
        d = _diff_mass(0, i, "red_lipstick")
        fr = _face_frame(landmarks(0, i))
        box = _box(fr, "mouth", 0.3, 0.15)
        assert d.sum() > 5.0, i  # clearly visible
        assert d[box].sum() / d.sum() > 0.95, i
        # lips got redder: mean R - G over the changed pixels increases
        off = {a: False for a in ATTRIBUTES}
        x0 = render_face(0, i, force=off)[0]
        x1 = render_face(0, i, force={**off, "red_lipstick": True})[0]
        ch = d > 0.05
        assert float((x1[0] - x1[1])[torch.from_numpy(ch)].mean()) > float((x0[0] - x0[1])[torch.from_numpy(ch)].mean()) + 0.15


def test_beard_changes_the_lower_face():
    for i in IDS:
        d = _diff_mass(0, i, "beard")
        fr = _face_frame(landmarks(0, i))
        below = fr[1] > fr[2]["nose"][1] - 0.1
        assert d.sum() > 30.0, i
        assert d[below].sum() / d.sum() > 0.95, i
        # the chin area gets darker
        chin_x, chin_y = fr[2]["chin"]
        chin = _box(fr, (chin_x, chin_y - 0.1), 0.12, 0.06)
        off = {a: False for a in ATTRIBUTES}
        x0 = render_face(0, i, force=off)[0]
        x1 = render_face(0, i, force={**off, "beard": True})[0]
        m = torch.from_numpy(chin)
        assert float(x1.mean(0)[m].mean()) < float(x0.mean(0)[m].mean()) - 0.05, i


def test_glasses_change_the_eye_band():
    for i in IDS:
        d = _diff_mass(0, i, "eyeglasses")
        fr = _face_frame(landmarks(0, i))
        (lx, ly), (rx, ry) = fr[2]["left_eye"], fr[2]["right_eye"]
        band = _box(fr, ((lx + rx) / 2, (ly + ry) / 2), 0.6, 0.16)
        assert d.sum() > 15.0, i
        assert d[band].sum() / d.sum() > 0.95, i
        # both eyes are framed
        for eye in ("left_eye", "right_eye"):
            ring = _box(fr, eye, 0.16, 0.12)
            assert d[ring].sum() > 3.0, (i, eye)


def test_smiling_changes_the_mouth():
    for i in IDS:
        d = _diff_mass(0, i, "smiling")
        fr = _face_frame(landmarks(0, i))
        (lx, ly), (rx, ry) = fr[2]["left_eye"], fr[2]["right_eye"]
        (mx, my), (nx, ny) = fr[2]["mouth"], fr[2]["nose"]
        mouth = _box(fr, "mouth", 0.3, 0.16)
        eyes = _box(fr, ((lx + rx) / 2, (ly + ry) / 2), 0.45, 0.1)
        lines = _box(fr, (mx, (my + ny) / 2), 0.32, 0.2)
        assert d.sum() > 10.0, i
        assert d[mouth].sum() / d.sum() > 0.5, i
        assert d[mouth | eyes | lines].sum() / d.sum() > 0.95, i


def test_blond_changes_the_hair():
    for i in IDS:
        d = _diff_mass(0, i, "blond_hair")
        fr = _face_frame(landmarks(0, i))
        assert d.sum() > 40.0, i
        # nothing changes on the lower face (mouth, chin)
        low = _box(fr, "mouth", 0.2, 0.15)
        assert d[low].sum() / d.sum() < 0.05, i
        # the hair got lighter and yellower
        off = {a: False for a in ATTRIBUTES}
        x0 = render_face(0, i, force=off)[0]
        x1 = render_face(0, i, force={**off, "blond_hair": True})[0]
        m = torch.from_numpy(d > 0.3)
        assert float(x1.mean(0)[m].mean()) > float(x0.mean(0)[m].mean()) + 0.2, i
        assert float((x1[0] - x1[2])[m].mean()) > 0.1, i  # yellow: R well above B


def test_throughput_smoke():
    ds = FacesDataset(64)
    t = time.perf_counter()
    for i in range(64):
        ds[i]
    rate = 64 / (time.perf_counter() - t)
    print(f"FacesDataset 64x64: {rate:.0f} images/s")  # informative only, no assert


def test_previews(tmp_path):
    from PIL import Image

    p = make_grid_preview(tmp_path / "grid.png", n=10, nrow=5, resolution=32)
    with Image.open(p) as im:
        assert im.mode == "RGB" and im.width > 5 * 64
    q = make_attribute_preview(tmp_path / "attrs.png", n=2, resolution=16)
    with Image.open(q) as im:
        assert im.width > 6 * 32 and im.height > 2 * 32
