"""Fitted attributes: the classifier on standardised latents, PU mode, files, fingerprints,
official boundary files (tiny random model, planted linear signals in latent space)."""
import math
import os

import pytest
import torch

from d2c_fast import Attribute, Sampler
from d2c_fast.attributes import LinearClassifier, fit_linear_cv
from d2c_fast.errors import AttributeFileError
from d2c_fast.checkpoint.random_init import random_model

CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "d2c_fast", "configs", "tiny64.json")


@pytest.fixture(scope="module")
def s():
    torch.set_num_threads(1)
    return Sampler(random_model(CFG, seed=3))


def planted(s, n, seed=0, margin=1.5, rate=0.5, useed=0):
    """Latents whose standardised version carries a linear signal along a unit vector u."""
    g = torch.Generator().manual_seed(useed)
    D = int(torch.tensor(s.latent_shape).prod())
    u = torch.randn(D, generator=g, dtype=torch.float64)
    u /= u.norm()
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    y = (torch.rand(n, generator=torch.Generator().manual_seed(seed + 200)) < rate).double()
    x = x - (x @ u)[:, None] * u + ((2 * y - 1) * margin + 0.5 * torch.randn(
        n, generator=torch.Generator().manual_seed(seed + 300), dtype=torch.float64))[:, None] * u
    z = x.float().reshape(n, *s.latent_shape) * s.std + s.mean
    return z, y, u


def test_fit_separates_planted_signal(s):
    z, y, u = planted(s, 200)
    a = s.fit_attribute(z[y > 0], z[y < 1], name="planted")
    assert a.is_fitted and a.name == "planted" and a.fingerprint == s.fingerprint
    assert a.info["l2"] in [r["l2"] for r in a.info["cv_table"]]
    assert 0.9 < a.info["cv_accuracy"] <= 1.0
    cos = float(a.normal_std @ u / a.normal_std.norm())
    assert cos > 0.8, cos
    zt, yt, _ = planted(s, 400, seed=7)   # fresh points, same planted direction
    acc = float(((a.probability(zt) > 0.5).double() == yt).double().mean())
    assert acc > 0.9
    lo, hi = a.recommended_strength
    assert 0 < lo < hi
    # typical logits: population logits (the prior offset included) whose gap is the logit gap
    neg, pos = a.typical_logits
    assert neg < 0 < pos
    assert abs((pos - neg) - a.info["logit_gap"]) < 1e-9
    zl = a.logit(z[y > 0])
    assert abs(float(zl.median()) - pos) < 0.5 * a.info["logit_gap"]  # in-sample ~ out-of-fold
    # per-position evidence sums to the score; the typical evidence is each class's median
    ev = a.classifier.evidence(z)
    assert ev.shape == (z.shape[0], *s.latent_shape[1:])
    assert torch.allclose(ev.flatten(1).sum(1) + a.classifier.bias, a.score(z), atol=1e-6)
    assert torch.allclose(a.typical_evidence[1].double(), ev[y > 0].median(0).values, atol=1e-5)
    assert torch.allclose(a.typical_evidence[0].double(), ev[y < 1].median(0).values, atol=1e-5)
    assert torch.equal(a.with_prior(0.3).typical_evidence, a.typical_evidence)
    # direction: unit raw norm, collinear with the edit direction (positive class side)
    assert abs(float(a.direction.norm()) - 1) < 1e-5
    e = a.edit_direction
    assert float((e / e.norm() - a.direction).abs().max()) < 1e-5
    assert a.info["fit_seconds"] < 30


def test_fit_inside_inference_mode(s):
    """A pipeline that encodes under torch.inference_mode() can fit there too (labelled and
    positive-only), with the same result as outside."""
    z, y, _ = planted(s, 120)
    out = s.fit_attribute(z[y > 0], z[y < 1])
    with torch.inference_mode():
        zi = z.clone()
        a = s.fit_attribute(zi[y > 0], zi[y < 1])
        pu = s.fit_attribute(zi[y > 0][:30], unlabelled=zi[30:])
    assert torch.equal(a.normal_std, out.normal_std) and pu.is_fitted
    assert float(a.probability(z[:5]).sum()) >= 0


def test_fit_linear_cv_picks_from_grid_and_reports_oof():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).double()
    r = fit_linear_cv(x, y, l2_grid=(1e-3, 1.0), folds=4)
    assert r["l2"] in (1e-3, 1.0) and r["oof"].shape == (60,) and r["folds"] == 4
    assert r["cv_balanced_accuracy"] > 0.85
    with pytest.raises(ValueError, match="both classes"):
        fit_linear_cv(x, torch.ones(60))


def test_positive_unlabelled_mode(s):
    z, y, u = planted(s, 400, seed=5, rate=0.3)
    pos, _, _ = planted(s, 300, seed=6, rate=1.0)
    a = s.fit_attribute(pos[:100], unlabelled=z, name="pu")
    assert a.classifier.mode == "pu" and a.info["n_unlabelled"] == 400
    cos = float(a.normal_std @ u / a.normal_std.norm())
    assert cos > 0.7, cos
    rate = float(y.mean())                   # the unlabelled set's positive rate, 0.335
    # the estimated prior (best bin: an upper-bound-type estimate, here from weakly separated
    # out-of-fold scores, AUC 0.8) is near the rate; the calibrated posterior averages to it
    assert abs(a.classifier.prior - rate) < 0.1, (a.classifier.prior, rate)
    p = a.probability(z)
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    acc = float(((p > 0.5).double() == y).double().mean())
    assert acc > 0.85, acc
    assert abs(float(p.mean()) - rate) < 0.05, (float(p.mean()), rate)
    b = s.fit_attribute(pos[:100], unlabelled=z, prior=0.3)
    assert b.classifier.prior == 0.3 and b.info["prior_source"] == "given"
    assert abs(float(b.probability(z).mean()) - 0.3) < 0.05
    with pytest.raises(ValueError):
        s.fit_attribute(pos, z, unlabelled=z)


@pytest.mark.parametrize("pi", [0.1, 0.3, 0.6])
def test_mixture_proportion_best_bin(pi):
    """Best-bin estimation on scores from known mixtures: separable classes give the true
    proportion within the sampling error of 1,000 unlabelled scores; overlapping classes give
    an upper bound of it (q_U(t) / q_P(t) >= pi for every t, negatives only add to q_U)."""
    from d2c_fast.attributes import mixture_proportion as _mixture_proportion
    errs = []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        n_u = 1000
        k = int(round(pi * n_u))
        sp = torch.randn(200, generator=g, dtype=torch.float64) + 4.0
        su = torch.cat([torch.randn(k, generator=g, dtype=torch.float64) + 4.0,
                        torch.randn(n_u - k, generator=g, dtype=torch.float64) - 4.0])
        errs.append(_mixture_proportion(sp, su) - pi)
        # overlapping classes: an upper bound (up to sampling noise)
        su2 = torch.cat([su[:k], torch.randn(n_u - k, generator=g, dtype=torch.float64) + 2.0])
        assert _mixture_proportion(sp, su2) > pi - 0.05
    assert max(abs(e) for e in errs) < 0.05, errs
    assert abs(sum(errs) / len(errs)) < 0.03, errs
    with pytest.raises(ValueError):
        _mixture_proportion(torch.zeros(0), torch.zeros(5))


def test_fit_from_images(s):
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(12, 3, 64, 64, generator=g)
    imgs[:6, 0] = imgs[:6, 0] * 0.3 + 0.7     # red images are "positive"
    a = s.fit_attribute(imgs[:6], imgs[6:], folds=3)
    assert a.is_fitted and a.info["n_positive"] == 6 and a.info["folds"] == 3


def test_save_load_round_trip(s, tmp_path):
    z, y, _ = planted(s, 100)
    a = s.fit_attribute(z[y > 0], z[y < 1], name="blond")
    p = a.save(tmp_path / "blond.safetensors")
    b = Attribute.load(p, model=s)
    assert b.name == "blond" and b.fingerprint == a.fingerprint and b.is_fitted
    assert torch.equal(a.direction, b.direction)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert a.classifier.bias == b.classifier.bias and a.classifier.prior == b.classifier.prior
    assert torch.equal(a.probability(z), b.probability(z))
    assert b.info["cv_accuracy"] == a.info["cv_accuracy"]
    assert tuple(b.recommended_strength) == tuple(a.recommended_strength)
    assert "conventions" in b.info and b.info["mode"] == "labelled"
    # a plain direction saves too
    c = Attribute(torch.randn(s.latent_shape), name="plain")
    q = c.save(tmp_path / "plain.safetensors")
    d = Attribute.load(q)
    assert not d.is_fitted and torch.equal(d.direction, c.direction)
    # a safetensors file that is not an attribute file
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AttributeFileError, match="not a d2c_fast attribute"):
        Attribute.load(tmp_path / "other.safetensors")


def test_fingerprint_mismatch_is_refused(s, tmp_path):
    s2 = Sampler(random_model(CFG, seed=4))
    assert s2.fingerprint != s.fingerprint
    assert s2.fingerprint.split("-")[0] == s.fingerprint.split("-")[0]   # same config
    assert Sampler(random_model(CFG, seed=3), impl="ref").fingerprint == s.fingerprint
    z, y, _ = planted(s, 60)
    a = s.fit_attribute(z[y > 0], z[y < 1], name="smile", folds=3)
    p = a.save(tmp_path / "smile.safetensors")
    with pytest.raises(AttributeFileError, match="another|fitted on model"):
        Attribute.load(p, model=s2)
    b = Attribute.load(p)
    with pytest.raises(AttributeFileError, match="same architecture, different weights"):
        s2.manipulate_latents(z[:1], b, strength=1.0, method="nvae")
    with pytest.raises(AttributeFileError):
        s2.sample_conditional(b, 1)
    s.manipulate_latents(z[:1], b, strength=1.0, method="nvae")   # its own model is fine


def test_official_boundary_still_loads_and_step_is_unchanged(s, tmp_path):
    d = torch.randn(1, *s.latent_shape, generator=torch.Generator().manual_seed(2))
    p = tmp_path / "blond.ckpt"
    torch.save({"boundary": d}, p)
    a = Attribute.load(p, model=s)
    assert not a.is_fitted and a.name == "blond" and torch.equal(a.direction, d[0])
    z = torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(3))
    n = torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(4))
    got = s.manipulate_latents(z, a, step=1.5, noise=n)
    want = s.manipulate_latents(z - 1.5 * d, Attribute(torch.zeros(s.latent_shape)), step=0.0,
                                noise=n)
    assert torch.equal(got, want)
    assert torch.equal(s.manipulate_latents(z, a, step=1.5, method="nvae"), z - 1.5 * d)
    with pytest.raises(ValueError, match="fitted"):
        s.manipulate_latents(z, a, strength=1.0)
    with pytest.raises(ValueError):
        s.manipulate_latents(z, a)
    with pytest.raises(ValueError):
        s.manipulate_latents(z, a, step=1.0, strength=1.0)


def test_classifier_validation():
    with pytest.raises(AttributeFileError):
        LinearClassifier(torch.zeros(4), 0.0, torch.zeros(1), torch.ones(1))
    with pytest.raises(AttributeFileError):
        LinearClassifier(torch.ones(4), 0.0, torch.zeros(1), torch.ones(1), mode="other")
    with pytest.raises(AttributeFileError):
        Attribute(torch.randn(4, 2, 2), classifier=LinearClassifier(
            torch.ones(3), 0.0, torch.zeros(4), torch.ones(4)))


def test_platt_firth_is_nearly_unbiased_and_finite_under_separation():
    """The labelled mode's calibration (Firth-penalised Platt scaling): on 1-D scores with a
    known posterior (unit-variance Gaussians at +-mu: log-odds 2 mu s), 50 per class, the
    slope averages to within 15% of the truth also where the classes nearly separate (the
    smoothed-target Platt fit it replaced averaged 2.1 for a true 4); perfectly separated
    scores still give a finite slope."""
    from d2c_fast.attributes import balanced_weights as _balanced_weights
    from d2c_fast.attributes import platt_firth as _platt_firth
    y = torch.cat([torch.ones(50), torch.zeros(50)]).double()
    for mu in (1.0, 2.0):
        est = []
        for r in range(40):
            g = torch.Generator().manual_seed(r)
            sc = torch.cat([torch.randn(50, generator=g, dtype=torch.float64) + mu,
                            torch.randn(50, generator=g, dtype=torch.float64) - mu])
            a, c = _platt_firth(sc, y, _balanced_weights(y))
            est.append(a)
            assert abs(c / a) < 0.5   # balanced classes, symmetric scores: boundary near 0
        mean = sum(est) / len(est)
        assert abs(mean - 2 * mu) < 0.15 * 2 * mu, (mu, mean)
    sep = torch.cat([torch.linspace(1, 3, 50), torch.linspace(-3, -1, 50)]).double()
    a, c = _platt_firth(sep, y, _balanced_weights(y))
    assert 0 < a < 50 and abs(c) < 1e-3
    p = torch.sigmoid(a * sep + c)
    assert float(p[:50].min()) > 0.5 and float(p[:50].max()) < 1.0


def test_fit_linear_cv_augmented_rows_train_with_their_source():
    """augment=(x_aug, src): copies join the training folds of their source item, are never
    scored (oof over the n items), and the final fit is the plain fit on items + copies."""
    from d2c_fast.attributes import balanced_weights as _balanced_weights
    from d2c_fast.attributes import fit_lr as _fit_lr
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.3 * torch.randn(40, generator=g, dtype=torch.float64) > 0).double()
    src = torch.arange(0, 40, 2)
    xa = x[src] + 0.1 * torch.randn(20, 6, generator=g, dtype=torch.float64)
    r = fit_linear_cv(x, y, l2_grid=(0.1,), folds=4, augment=(xa, src))
    assert r["oof"].shape == (40,)
    w, b = _fit_lr(torch.cat([x, xa]), torch.cat([y, y[src]]), 0.1,
                   _balanced_weights(torch.cat([y, y[src]])))
    assert torch.allclose(r["w"], w) and r["b"] == pytest.approx(b)
    plain = fit_linear_cv(x, y, l2_grid=(0.1,), folds=4)
    assert not torch.allclose(plain["w"], r["w"])
    # fold 0's out-of-fold scores come from a model that saw no copy of a fold-0 item
    from d2c_fast.attributes import stratified_folds as _folds
    fold = _folds(y, 4, 0)
    tr = fold != 0
    keep = tr[src]
    xx, yy = torch.cat([x[tr], xa[keep]]), torch.cat([y[tr], y[src[keep]]])
    w0, b0 = _fit_lr(xx, yy, 0.1, _balanced_weights(yy))
    assert torch.allclose(r["oof"][fold == 0], x[fold == 0] @ w0 + b0)
    with pytest.raises(ValueError, match="augment"):
        fit_linear_cv(x, y, augment=(xa, src + 40))


def test_fit_from_images_trains_on_mirrors(s):
    """Images are also used mirrored (flip=None), each mirror an extra item of its source's
    class; flip=False turns it off; flip=True with latents is an error."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(12, 3, 64, 64, generator=g)
    imgs[:6, 0] = imgs[:6, 0] * 0.3 + 0.7
    a = s.fit_attribute(imgs[:6], imgs[6:], folds=3)
    off = s.fit_attribute(imgs[:6], imgs[6:], folds=3, flip=False)
    assert a.info["n_mirrored"] == 12 and off.info["n_mirrored"] == 0
    assert not torch.allclose(a.normal_std, off.normal_std)
    assert a.info["n_positive"] == 6 and a.info["n_negative"] == 6   # mirrors are not items
    z = s.encode(imgs)
    with pytest.raises(ValueError, match="flip=True"):
        s.fit_attribute(z[:6], z[6:], flip=True)
    assert s.fit_attribute(z[:6], z[6:], folds=3).info["n_mirrored"] == 0
    pu = s.fit_attribute(imgs[:6], unlabelled=imgs[6:], folds=3)   # PU: never mirrored
    assert pu.info["n_mirrored"] == 0
    with pytest.raises(ValueError, match="labelled fits"):
        s.fit_attribute(imgs[:6], unlabelled=imgs[6:], flip=True)
    with pytest.raises(ValueError, match="flip must be"):
        s.fit_attribute(imgs[:6], imgs[6:], flip="yes")


def test_estimate_prior_em_recovers_a_shifted_rate(s):
    """Label shift: a classifier exactly calibrated for balanced classes (score = log-odds of
    1-D Gaussian classes N(+-1, 1) along u: 2 s) applied to a population with positive rate
    0.2: the EM of Saerens et al. finds 0.2 (within sampling error of 4,000 latents),
    whatever prior the classifier was calibrated for; with_prior then moves every logit by
    the logit difference, in both modes."""
    from d2c_fast.attributes import estimate_prior
    g = torch.Generator().manual_seed(0)
    D = int(torch.tensor(s.latent_shape).prod())
    u = torch.randn(D, generator=g, dtype=torch.float64)
    u /= u.norm()
    n = 4000
    y = (torch.rand(n, generator=g) < 0.2).double()
    sc = (2 * y - 1) + torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    x = x - (x @ u)[:, None] * u + sc[:, None] * u
    z = x.float().reshape(n, *s.latent_shape) * s.std + s.mean
    for pi0 in (0.5, 0.8):
        clf = LinearClassifier(2 * u, 0.0, s.mean, s.std, prior=pi0)
        a = Attribute(None, classifier=clf, latent_shape=s.latent_shape,
                      info={"logit_median_positive": 3.0})
        est = estimate_prior(a, z)
        assert abs(est - float(y.mean())) < 0.03, (est, float(y.mean()))
        b = a.with_prior(est, source="test")
        d = math.log(est / (1 - est)) - math.log(pi0 / (1 - pi0))
        assert torch.allclose(b.logit(z[:50]), a.logit(z[:50]) + d, atol=1e-9)
        assert b.info["prior"] == est and b.info["fit_prior"] == pi0
        assert b.info["logit_median_positive"] == pytest.approx(3.0 + d)
        assert torch.equal(b.direction, a.direction)
    pu = LinearClassifier(2 * u, 0.3, s.mean, s.std, mode="pu", prior=0.4)
    pu2 = pu.with_prior(0.1)
    assert pu2.mode == "pu" and pu2.prior == 0.1
    assert torch.allclose(pu2.logit(z[:20]), pu.logit(z[:20]) + math.log(0.1 / 0.9)
                          - math.log(0.4 / 0.6), atol=1e-9)
    with pytest.raises(ValueError):
        pu.with_prior(1.0)
