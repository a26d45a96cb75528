"""Edits judged against the true counterfactual (d2c_fast/eval/counterfactual.py) and the
local edit method (d2c_fast/edit.py): the scores mean what their definitions say, and the
local edit changes nothing outside its mask."""
from __future__ import annotations

import json
import os

import pytest
import torch

from d2c_fast import Sampler
from d2c_fast.cli.main import main as cli_main
from d2c_fast.edit import (SPREAD_CELLS, edit_delta, edit_mask, edit_plan, local_edit,
                           local_plan, logit_gradient, paste, pixel_mask, resolve, spread,
                           target_strengths)
from d2c_fast.eval.counterfactual import (OTHER_STYLE, counterfactual_pairs, edit_scores,
                                          evaluate_edits, restyled_counterfactuals)


@pytest.fixture(scope="module")
def s():
    return Sampler("builtin")


def test_pairs_differ_only_in_the_attribute():
    x, c = counterfactual_pairs("eyeglasses", "add", 3, 32)
    changed = (c - x).abs().amax(1) > 0.1
    assert x.shape == c.shape == (3, 3, 32, 32)
    assert 0 < changed.float().mean() < 0.3      # glasses: a small part of the picture


def test_restyled_counterfactuals_change_only_what_the_face_does_not_show():
    x, c = counterfactual_pairs("eyeglasses", "add", 3, 32)
    c2 = restyled_counterfactuals("eyeglasses", "add", 3, 32)
    assert c2.shape == c.shape and not torch.equal(c2, c)
    # removing lipstick leaves nothing hidden: the restyled counterfactual is the true one
    _, c = counterfactual_pairs("red_lipstick", "remove", 2, 32, seed=1)
    assert torch.equal(restyled_counterfactuals("red_lipstick", "remove", 2, 32, seed=1), c)


def test_scores_of_the_reference_points(s):
    x, c = counterfactual_pairs("smiling", "add", 4, s.resolution)
    with torch.inference_mode():
        rx = s.decode(s.encode(x), mode="mode")
        rc = s.decode(s.encode(c), mode="mode")
    at_rc = edit_scores(x, c, rc, rx, rc)
    at_rx = edit_scores(x, c, rx, rx, rc)
    assert torch.allclose(at_rc["progress"], torch.ones(4), atol=1e-5)
    assert torch.allclose(at_rx["progress"], torch.zeros(4), atol=1e-5)
    assert torch.allclose(at_rx["outside"], torch.ones(4), atol=1e-5)
    assert (edit_scores(x, c, c, rx, rc)["rmse"] == 0).all()


def test_logit_gradient_is_the_gradient(s):
    a = resolve(s, "beard")[0][0]
    g = logit_gradient(s, a)
    z = s.sample_latents(2, steps=5, seed=0)
    v = torch.randn(s.latent_shape, dtype=torch.float64) * 0.1
    lhs = a.logit(z + (s.std * v).float()) - a.logit(z)
    assert torch.allclose(lhs, (g * v).sum().expand(2), atol=1e-3)


def test_local_edit_leaves_the_latent_outside_its_mask_alone(s):
    z = s.sample_latents(3, steps=5, seed=1)
    attrs, _ = resolve(s, "red_lipstick")
    delta = edit_delta(s, attrs, strength=4.0)
    m = edit_mask(s, delta.expand_as(z))
    assert 0 < m.mean() < 0.5
    with torch.inference_mode():
        out = local_edit(s, z, delta, attrs, eps=torch.randn_like(z), guidance=s.guidance,
                         t0=300, skip=150)
    outside = (m == 0).expand_as(z)
    assert torch.allclose(out[outside], z[outside], atol=1e-5)
    assert (out - z)[~outside].abs().mean() > 0.05
    # the classifier's logit reaches the raw edit's (up to float32 rounding of the last step,
    # whose eps is recovered through sqrt(1 - abar_0) ~ 0.01)
    assert (attrs[0].logit(out) >= attrs[0].logit(z + delta) - 0.05).all()


def test_edit_mask_keeps_the_fewest_positions_holding_half_the_energy(s, monkeypatch):
    import d2c_fast.edit as E
    C, H, W = s.latent_shape
    d = torch.zeros(2, C, H, W)
    for (i, j), energy in zip([(2, 3), (8, 8), (12, 1), (5, 14)], [4.0, 3.0, 2.0, 1.0]):
        d[0, 0, i, j] = energy ** 0.5                   # standardised energy 4, 3, 2, 1 of 10
    d[1, 1, 0, 0] = 1.0                                 # all of the second image's at one place
    delta = d * s.std.detach()[0]
    monkeypatch.setattr(E, "MASK_DILATE", 0)
    m = edit_mask(s, delta)
    assert m.shape == (2, 1, H, W)
    assert set(map(tuple, m[0, 0].nonzero().tolist())) == {(2, 3), (8, 8)}   # 4 + 3 >= 5
    assert set(map(tuple, m[1, 0].nonzero().tolist())) == {(0, 0)}
    assert edit_mask(s, torch.zeros(1, C, H, W)).sum() == 0
    monkeypatch.setattr(E, "MASK_DILATE", 1)
    assert edit_mask(s, delta)[0, 0].sum() == 18         # two 3x3 blocks


def test_pixel_mask_covers_each_cell_and_feathers_its_edge():
    m = torch.zeros(1, 1, 8, 8)
    m[0, 0, 2:5, 2:5] = 1                             # a 3x3 block of latent cells
    p = pixel_mask(m, 16)
    assert p.shape == (1, 1, 16, 16)
    # the cells' pixels are 4..9; a 5-pixel box ramps 1/5, 2/5, ... across 2..11
    assert (p[0, 0, 6:8, 6:8] == 1).all()             # inside: the edit, whole
    assert torch.allclose(p[0, 0, 6, 2:6], torch.tensor([1, 2, 3, 4]) / 5.0)
    assert torch.allclose(p[0, 0, 6, 8:12], torch.tensor([4, 3, 2, 1]) / 5.0)
    assert p[0, 0, 1, 1] == 0 and p[0, 0, 12, 12] == 0 and p[0, 0, 2, 2] > 0
    assert p.max() <= 1 and p.min() >= 0
    assert torch.equal(pixel_mask(torch.ones(2, 1, 4, 4), 8), torch.ones(2, 1, 8, 8))
    x, e = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert torch.equal(paste(x, e, 0.5 * e, torch.zeros(1, 1, 4, 4)), x)


def test_paste_adds_the_change_of_the_decoding_to_the_input():
    g = torch.Generator().manual_seed(0)
    x, e, r = (torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))
    m = torch.zeros(2, 1, 4, 4)
    m[:, :, 1:3, 1:3] = 1
    p = pixel_mask(m, 8)
    out = paste(x, e, r, m)
    assert torch.allclose(out, (x + p * (e - r)).clamp(0, 1))
    assert torch.equal(paste(x, e, e, m), x)        # no change where the decoding is the same
    assert out.min() >= 0 and out.max() <= 1


def _hair_picture():
    """32x32 grey picture, a dark band (rows 0-11, all columns) and a dark blob far from it;
    a latent (16x16) mask over the band's middle; the band recoloured inside the mask."""
    dark, light = torch.tensor([0.1, 0.08, 0.06]), torch.tensor([0.9, 0.8, 0.5])
    x = torch.full((1, 3, 32, 32), 0.5)
    x[0, :, :12, :] = dark.view(3, 1, 1)
    x[0, :, 26:30, 2:6] = dark.view(3, 1, 1)
    m = torch.zeros(1, 1, 16, 16)
    m[0, 0, :6, 6:10] = 1
    inside = pixel_mask(m, 32)[0, 0] > 0.99
    out = x.clone()
    band = torch.zeros(32, 32, dtype=torch.bool)
    band[:12] = True
    out[0][:, inside & band] = light.view(3, 1)
    return x, out, m, inside, band, light


def test_spread_carries_a_colour_change_along_connected_pixels_of_that_colour():
    x, out, m, inside, band, light = _hair_picture()
    got = spread(x, out, m)
    feather = pixel_mask(m, 32)[0, 0] > 0
    assert 2 * SPREAD_CELLS >= 12     # the band's far ends are 12 pixels (6 cells) from the mask
    far = band & ~feather
    assert far.sum() > 200
    assert torch.allclose(got[0][:, far], light.view(3, 1).expand(-1, int(far.sum())),
                          atol=0.02)                       # the band's rest recoloured
    assert torch.equal(got[0][:, ~band], x[0][:, ~band])     # not the grey, nor the far blob
    assert torch.equal(got[0][:, inside], out[0][:, inside])  # the mask's own pixels as pasted
    assert torch.equal(spread(x, x.clone(), m), x)          # no change, nothing to spread


def test_spread_leaves_a_change_that_is_not_one_colour_map_in_its_mask():
    # glasses drawn on some of the dark pixels only: the colour's change is not consistent
    x, out, m, inside, band, light = _hair_picture()
    out = x.clone()
    some = inside & band
    some[:, ::2] = False
    out[0][:, some] = light.view(3, 1)
    assert torch.equal(spread(x, out, m), out)
    # one-channel pictures are not colour-mapped at all
    assert torch.equal(spread(x[:, :1], out[:, :1], m), out[:, :1])


def test_local_edit_keeps_the_input_pixels_outside_its_mask(s):
    x, _ = counterfactual_pairs("smiling", "add", 3, s.resolution)
    out = s.manipulate(x, "smiling", seed=0)          # the default: local, sampled decode
    a = resolve(s, "smiling")[0]
    with torch.inference_mode():
        z = s.encode(x)
        m = pixel_mask(edit_plan(s, a, [], z, method="local", target="typical")[1],
                       s.resolution).expand_as(x)
        rx = s.decode(z, mode="mode")
    assert 0 < (m > 0).float().mean() < 0.6
    # the input's own pixels, not rx's (a smile is no colour map: nothing spreads)
    assert torch.equal(out[m == 0], x[m == 0])
    assert not torch.allclose(rx[m == 0], x[m == 0], atol=1e-3)
    assert (out - x)[m == 1].abs().mean() > 0.02       # and an edit inside


def test_local_plan_goes_where_the_image_falls_short_and_meets_the_strengths(s):
    import d2c_fast.edit as E
    x, _ = counterfactual_pairs("beard", "add", 4, s.resolution)
    a = resolve(s, "beard")[0]
    with torch.inference_mode():
        z = s.encode(x)
    st = target_strengths(s, a, z, "typical")
    assert (st > 0).all()
    delta, m = local_plan(s, a, [], z, st)
    # the logit moves by exactly the strength (up to float32 rounding), as the unweighted edit
    assert torch.allclose(a[0].logit(z + delta) - a[0].logit(z), st[:, 0], atol=1e-3)
    # ... and its change lies in the mask, which lies in the direction's own mask
    where = edit_mask(s, a[0].edit_direction.unsqueeze(0))
    assert (m <= where).all() and 0 < m.mean() < where.mean() + 1e-6
    assert (delta.abs().sum(1, keepdim=True)[m == 0] == 0).all()
    # no change where the face already has the typical positive's evidence: the gap
    ev = a[0].classifier.evidence(z)
    gap = (a[0].typical_evidence[1].double() - ev).clamp(min=0)
    moved = delta.abs().sum(1) > 0
    assert moved.any() and (gap[moved] > 0).all()
    # each position moves its share of the logit in proportion to its gap:
    # evidence(z + delta) - evidence(z) = strength * gap / (sum of the gaps it moves)
    asked = a[0].classifier.evidence(z + delta) - ev
    for i in range(z.shape[0]):
        mv = moved[i]
        want = st[i, 0] * gap[i][mv] / gap[i][mv].sum()
        assert torch.allclose(asked[i][mv], want, atol=2e-3)
    # removing goes to the negatives' evidence: strengths negative, logit down by as much
    st2 = -st
    d2, m2 = local_plan(s, a, [], z, st2)
    assert torch.allclose(a[0].logit(z + d2) - a[0].logit(z), st2[:, 0], atol=1e-3)
    # a zero strength is no edit and an empty mask
    d0, m0 = local_plan(s, a, [], z, torch.zeros_like(st))
    assert d0.abs().max() == 0 and m0.sum() == 0
    assert E.LOCAL_SHARE < 1


def test_weighted_edit_delta_keeps_the_preserved_logits(s):
    a, pres = resolve(s, "beard", ["smiling"])
    z = s.sample_latents(3, steps=5, seed=2)
    st = torch.tensor([[2.0], [3.0], [4.0]], dtype=torch.float64)
    w = torch.rand(3, 1, *s.latent_shape[1:], generator=torch.Generator().manual_seed(0))
    d = edit_delta(s, a, strength=st, preserve=pres, weights=w)
    assert torch.allclose(a[0].logit(z + d) - a[0].logit(z), st[:, 0], atol=1e-3)
    assert torch.allclose(pres[0].logit(z + d), pres[0].logit(z), atol=1e-3)
    # uniform weights are the unweighted (minimum-norm) edit
    ones = edit_delta(s, a, strength=st, preserve=pres, weights=torch.ones_like(w))
    assert torch.allclose(ones, edit_delta(s, a, strength=st, preserve=pres), atol=1e-6)
    # zero weight: no change there
    w[:, :, :8] = 0
    d = edit_delta(s, a, strength=st, weights=w)
    assert d[:, :, :8].abs().max() == 0
    with pytest.raises(ValueError, match="weights"):
        edit_delta(s, a, strength=st, weights=-w)
    # an image whose weights cannot meet its strength (all zero) gets the unweighted edit
    w[1] = 0
    d = edit_delta(s, a, strength=st, weights=w)
    assert torch.allclose(d[1], edit_delta(s, a, strength=st)[1], atol=1e-6)
    assert d[0, :, :8].abs().max() == 0


def test_attributes_without_typical_evidence_keep_the_direction_mask(s, tmp_path):
    from d2c_fast.attributes import Attribute
    a = resolve(s, "smiling")[0][0]
    p = a.save(tmp_path / "a.safetensors")
    b = Attribute.load(p)
    assert torch.equal(b.typical_evidence, a.typical_evidence)
    old = Attribute(a.direction, name="old", classifier=a.classifier, info=a.info)
    assert old.typical_evidence is None
    z = s.sample_latents(2, steps=5, seed=3)
    delta, m = edit_plan(s, [old], [], z, method="local", target="typical")
    assert torch.equal(m, edit_mask(s, delta))
    assert edit_plan(s, [a], [], z, method="nvae", target="typical")[1] is None
    from d2c_fast.errors import AttributeFileError
    with pytest.raises(AttributeFileError, match="typical_evidence must be"):
        Attribute(a.direction, classifier=a.classifier, typical_evidence=torch.zeros(3, 16, 16))
    with pytest.raises(AttributeFileError, match="fitted attribute"):
        Attribute(a.direction, typical_evidence=a.typical_evidence)


def test_default_edit_is_local_to_typical(s):
    x, _ = counterfactual_pairs("red_lipstick", "add", 2, s.resolution)
    a = s.manipulate(x, "red_lipstick", seed=0, mode="mode")
    b = s.manipulate(x, "red_lipstick", seed=0, mode="mode", method="local", target="typical")
    assert torch.equal(a, b)


def test_official_step_keeps_the_paper_method(s):
    x, _ = counterfactual_pairs("beard", "add", 2, s.resolution)
    a = s.manipulate(x, "beard", step=-3.0, seed=0, mode="mode")
    b = s.manipulate(x, "beard", step=-3.0, seed=0, mode="mode", method="d2c", t0=50)
    assert torch.equal(a, b)


def test_evaluate_edits_rows_and_grid(s, tmp_path):
    attrs = {"eyeglasses": resolve(s, "eyeglasses")[0][0]}
    grid = str(tmp_path / "g.png")
    rows = evaluate_edits(s, attrs, {"default": {}, "nvae": {"method": "nvae"}}, n=3,
                          grid=grid)
    assert {(r["direction"], r["setting"]) for r in rows} == {
        (d, k) for d in ("add", "remove")
        for k in ("default", "nvae", "reconstruction of the counterfactual", OTHER_STYLE)}
    ceiling = [r for r in rows if r["setting"].startswith("reconstruction")]
    assert all(abs(r["progress"] - 1) < 1e-5 for r in ceiling)
    assert os.path.getsize(grid) > 0


def test_cli_eval_edits(tmp_path):
    out = tmp_path / "ev"
    rc = cli_main(["eval-edits", "builtin", "--attributes", "smiling", "--methods", "nvae",
                   "--faces", "2", "-o", str(out)])
    assert rc == 0
    data = json.loads((out / "edits.json").read_text())
    assert len(data["rows"]) == 6 and (out / "edits_grid.png").exists()
    assert "| smiling | add | nvae |" in (out / "edits.md").read_text()
