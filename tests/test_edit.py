"""Editing: calibrated strengths, several attributes, preservation, methods, sweeps, the
projector baseline (tiny random model)."""
import os

import pytest
import torch

from d2c_fast import Attribute, Sampler
from d2c_fast.attributes import LinearClassifier
from d2c_fast.edit import edit_delta, sweep
from d2c_fast.checkpoint.random_init import random_model
from d2c_fast.projector import project, project_and_edit

CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "d2c_fast", "configs", "tiny64.json")


@pytest.fixture(scope="module")
def s():
    torch.set_num_threads(1)
    return Sampler(random_model(CFG, seed=3))


def planted_attr(s, seed, name, bias=0.0):
    """A fitted-style attribute with a random classifier (weights in standardised space)."""
    D = int(torch.tensor(s.latent_shape).prod())
    w = torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w = w * (0.3 + seed % 3) / w.norm()
    clf = LinearClassifier(w, bias, s.mean, s.std, prior=0.5)
    return Attribute(None, name=name, classifier=clf, fingerprint=s.fingerprint,
                     latent_shape=s.latent_shape)


def zs(s, n=3, seed=0):
    return torch.randn(n, *s.latent_shape, generator=torch.Generator().manual_seed(seed)) \
        * s.std + s.mean


def test_strength_is_a_logit_change_for_the_nvae_method(s):
    z = zs(s)
    for seed in (1, 2, 3):
        a = planted_attr(s, seed, f"a{seed}")
        for st in (1.0, -2.5):
            zp = s.manipulate_latents(z, a, strength=st, method="nvae")
            d = a.logit(zp) - a.logit(z)
            assert torch.allclose(d, torch.full_like(d, st), atol=1e-4), d
        # the official step equivalent of a strength
        zq = s.manipulate_latents(z, a, step=a.strength_to_step(1.0), method="nvae")
        assert torch.allclose(a.logit(zq) - a.logit(z), torch.ones(3, dtype=torch.float64),
                              atol=1e-4)
        # sign convention: a negative official step adds the attribute
        assert bool((a.logit(s.manipulate_latents(z, a, step=-1.0, method="nvae"))
                     > a.logit(z)).all())


def test_several_attributes_and_preservation(s):
    z = zs(s)
    a, b, c = (planted_attr(s, k, n) for k, n in ((1, "a"), (2, "b"), (4, "c")))
    zp = s.manipulate_latents(z, [a, b], strength=[1.0, -0.5], method="nvae")
    assert torch.allclose(a.logit(zp) - a.logit(z), torch.full((3,), 1.0, dtype=torch.float64),
                          atol=1e-4)
    assert torch.allclose(b.logit(zp) - b.logit(z), torch.full((3,), -0.5, dtype=torch.float64),
                          atol=1e-4)
    # preserve: the edit is orthogonal (standardised space) to the preserved normals
    delta = edit_delta(s, a, strength=2.0, preserve=[b, c])[0]
    d_std = (delta.double() / s.std.double().reshape(-1, 1, 1)).flatten()
    for p in (b, c):
        assert abs(float(p.normal_std @ d_std)) < 1e-6 * float(d_std.norm()) * float(p.normal_std.norm())
    assert abs(float(a.normal_std @ d_std) - 2.0) < 1e-5
    zp = s.manipulate_latents(z, a, strength=2.0, preserve=[b, c], method="nvae")
    assert torch.allclose(b.logit(zp), b.logit(z), atol=1e-4)
    assert torch.allclose(c.logit(zp), c.logit(z), atol=1e-4)
    # without preservation b's logit moves (the random normals are not orthogonal)
    zq = s.manipulate_latents(z, a, strength=2.0, method="nvae")
    assert not torch.allclose(b.logit(zq), b.logit(z), atol=1e-3)
    # preserved part is the minimum-norm solution: no larger than needed
    assert float(d_std.norm()) >= 2.0 / float(a.normal_std.norm()) - 1e-9
    # plain boundaries with step and preservation: projected too
    plain = Attribute(torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(9)))
    zr = s.manipulate_latents(z, plain, step=3.0, preserve=b, method="nvae")
    assert torch.allclose(b.logit(zr), b.logit(z), atol=1e-4)
    with pytest.raises(ValueError, match="fitted"):
        s.manipulate_latents(z, a, strength=1.0, preserve=plain)


def test_target_takes_each_logit_to_the_target(s):
    z = zs(s, n=6, seed=5)
    a, b = planted_attr(s, 1, "a"), planted_attr(s, 2, "b")
    l0 = a.logit(z)
    for tgt in (float(l0.median()), float(l0.max()) + 1.0, float(l0.min()) - 0.5):
        zp = s.manipulate_latents(z, a, target=tgt, method="nvae")
        want = torch.maximum(l0, torch.tensor(tgt, dtype=torch.float64)) if tgt >= 0 else \
            torch.minimum(l0, torch.tensor(tgt, dtype=torch.float64))
        assert torch.allclose(a.logit(zp), want, atol=1e-4), (tgt, a.logit(zp), want)
        # images already past the target are untouched
        keep = (l0 >= tgt) if tgt >= 0 else (l0 <= tgt)
        assert torch.equal(zp[keep], z[keep])
    # per-image strengths equal what target_strengths reports
    from d2c_fast.edit import target_strengths
    st = target_strengths(s, a, z, 1.5)
    assert st.shape == (6, 1) and bool((st >= 0).all())
    assert torch.allclose(st[:, 0], (1.5 - l0).clamp(min=0))
    # two attributes with per-attribute targets and a preserved third
    c = planted_attr(s, 4, "c")
    zq = s.manipulate_latents(z, [a, b], target=[2.0, -1.0], preserve=c, method="nvae")
    assert bool((a.logit(zq) >= 2.0 - 1e-4).all()) and bool((b.logit(zq) <= -1.0 + 1e-4).all())
    assert torch.allclose(c.logit(zq), c.logit(z), atol=1e-4)
    # per image: the same result alone or in a batch (d2c, fixed seeds)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    full = s.manipulate(x, a, target=2.0, seed=0, mode="mode")
    one = s.manipulate(x[2:], a, target=2.0, seed=2, mode="mode")
    assert torch.allclose(one[0], full[2], atol=1e-5)
    # "typical" needs the fit's record; errors are clear
    with pytest.raises(Exception, match="typical logits"):
        s.manipulate_latents(z, a, target="typical")
    a.info.update(logit_median_negative=-3.0, logit_median_positive=2.5)
    assert a.typical_logits == (-3.0, 2.5)
    zt = s.manipulate_latents(z, a, target="typical", method="nvae")
    assert bool((a.logit(zt) >= 2.5 - 1e-4).all())
    with pytest.raises(ValueError, match="one of step=, strength=, target="):
        s.manipulate_latents(z, a, strength=1.0, target=1.0)
    with pytest.raises(ValueError, match="'typical'"):
        s.manipulate_latents(z, a, target="blond")
    with pytest.raises(ValueError, match="finite"):
        s.manipulate_latents(z, a, target=float("nan"))
    plain = Attribute(torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(9)))
    with pytest.raises(ValueError, match="fitted"):
        s.manipulate(x, plain, target=1.0)


def test_methods_run_and_differ(s):
    a = planted_attr(s, 1, "a")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = {m: s.manipulate(x, a, strength=3.0, method=m, seed=0, mode="mode")
            for m in ("d2c", "nvae", "ddim")}
    for m, o in outs.items():
        assert o.shape == (2, 3, 64, 64) and float(o.min()) >= 0 and float(o.max()) <= 1, m
    assert not torch.allclose(outs["d2c"], outs["nvae"])
    assert not torch.allclose(outs["d2c"], outs["ddim"])
    assert not torch.allclose(outs["nvae"], outs["ddim"])
    # deterministic per image seed; independent of the batch
    again = s.manipulate(x[1:], a, strength=3.0, method="d2c", seed=1, mode="mode")
    assert torch.allclose(again[0], outs["d2c"][1], atol=1e-5)
    z = s.encode(x)
    # ddim at strength 0 is the DDIM inversion-regeneration round trip (not the identity)
    z0 = s.manipulate_latents(z, a, strength=0.0, method="ddim", skip=250)
    assert z0.shape == z.shape and torch.isfinite(z0).all()
    zt = s.manipulate_latents(z, a, strength=0.0, method="d2c", t0=0, skip=1, seed=0)
    assert zt.shape == z.shape
    with pytest.raises(ValueError, match="method"):
        s.manipulate(x, a, strength=1.0, method="stylegan")


def test_sweep_grid(s):
    a = planted_attr(s, 2, "a")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    g = sweep(s, x, a, [-1.0, 0.0, 1.0, 2.0], seed=0)
    assert g.shape == (4, 2, 3, 64, 64)
    assert not torch.allclose(g[0], g[3])
    g2 = sweep(s, x, a, [0.0], seed=0)
    assert torch.allclose(g2[0], g[1])
    assert torch.equal(g[1], x)      # the local method at strength 0: nothing pasted, the input
    assert sweep(s, x, a, [0.0, 1.0], method="ddim", skip=500, mode="mode").shape == (2, 2, 3, 64, 64)


def test_projector_reduces_its_loss(s):
    x = s.decode(zs(s, 1, seed=5), mode="mode")
    with pytest.raises(ValueError, match="impl='ref'"):
        project(s, x, steps=2)
    s = Sampler(random_model(CFG, seed=3), impl="ref")
    for loss in ("nll", "mse"):
        z, info = project(s, x, steps=25, loss=loss)
        assert z.shape == (1, *s.latent_shape) and len(info["losses"]) == 25
        assert info["losses"][-1] < info["losses"][0], (loss, info["losses"][:3], info["losses"][-3:])
    a = planted_attr(s, 1, "a")
    img, info = project_and_edit(s, x, a, strength=1.0, steps=3)
    assert img.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError):
        project(s, x, steps=0)
