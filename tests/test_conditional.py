"""Conditional generation by rejection sampling (tiny random model, planted classifiers)."""
import math
import os

import pytest
import torch

from d2c_fast import Attribute, Sampler
from d2c_fast.attributes import LinearClassifier
from d2c_fast.conditional import RareAttributeError, sample_conditional
from d2c_fast.eval.metrics import rel_error
from d2c_fast.checkpoint.random_init import random_model

CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "d2c_fast", "configs", "tiny64.json")
SKIP = 500   # 3 U-Net calls per prior sample


@pytest.fixture(scope="module")
def s():
    torch.set_num_threads(1)
    return Sampler(random_model(CFG, seed=3))


def const_attr(s, p, name="const"):
    """A classifier whose probability is ``p`` for every latent (tiny weights)."""
    D = int(torch.tensor(s.latent_shape).prod())
    clf = LinearClassifier(torch.full((D,), 1e-9, dtype=torch.float64), 0.0, s.mean, s.std,
                           prior=p)
    return Attribute(None, name=name, classifier=clf, fingerprint=s.fingerprint,
                     latent_shape=s.latent_shape)


def test_acceptance_rate_matches_the_probability(s):
    a = const_attr(s, 0.3)
    img, p, st = s.sample_conditional(a, 60, seed=0, batch_size=128, skip=SKIP,
                                      return_stats=True, threshold="paper")
    assert img.shape == (60, 3, 64, 64) and p.shape == (60, 1)
    assert torch.allclose(p, torch.full_like(p, 0.3), atol=1e-6)
    # geometric attempts: mean 1 / 0.3; the overall rate within 4 sigma of 0.3
    rate = st["acceptance_rate"]
    sd = math.sqrt(0.3 * 0.7 / st["draws"])
    assert abs(60 / sum(st["attempts"]) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / sum(st["attempts"]))
    assert 0.3 - 6 * sd < rate < 0.3 + 6 * sd or st["draws"] > sum(st["attempts"])
    # conjunction: the product of probabilities
    b, b2 = const_attr(s, 0.5, "half"), const_attr(s, 0.5, "half too")
    with pytest.raises(ValueError, match="given twice"):
        s.sample_conditional([b, b], 4, skip=SKIP)
    with pytest.raises(TypeError, match="n must be an int"):
        s.sample_conditional(b, "12", skip=SKIP)
    with pytest.raises(TypeError, match="seed must be an int"):
        s.sample_conditional(b, 2, seed=1.5, skip=SKIP)
    import numpy as np
    from d2c_fast.conditional import _thresholds
    for t in (np.array([0.5, 0.75]), torch.tensor([0.5, 0.75]), [0.5, 0.75]):
        assert _thresholds(t, 2).tolist() == [0.5, 0.75]
    assert _thresholds(np.float64(0.3), 2).tolist() == [0.3, 0.3]
    assert _thresholds("paper", 2) is None and _thresholds(None, 2) is None
    with pytest.raises(ValueError, match="paper"):
        _thresholds("strict", 2)
    _, p2, st2 = s.sample_conditional([b, b2], 40, seed=1, batch_size=128, skip=SKIP,
                                      return_stats=True, threshold="paper")
    assert p2.shape == (40, 2)
    n_att = sum(st2["attempts"])
    assert abs(40 / n_att - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n_att)


def test_accepted_samples_follow_the_classifier(s):
    """A real (non-constant) planted classifier: accepted latents have higher probabilities
    than prior samples, and the threshold rule keeps only p >= threshold."""
    D = int(torch.tensor(s.latent_shape).prod())
    w = torch.randn(D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    clf = LinearClassifier(2.0 * w / w.norm(), 0.0, s.mean, s.std, prior=0.5)
    a = Attribute(None, name="planted", classifier=clf, fingerprint=s.fingerprint,
                  latent_shape=s.latent_shape)
    prior_p = a.probability(s.sample_latents(64, skip=SKIP, seed=1000))
    _, p = s.sample_conditional(a, 32, seed=0, skip=SKIP, batch_size=64)
    assert float(p.mean()) > float(prior_p.mean())
    _, pt = s.sample_conditional(a, 8, seed=0, skip=SKIP, threshold=0.6)
    assert bool((pt >= 0.6).all())


def test_per_image_seeds_do_not_depend_on_batching(s):
    """Image k depends only on (seed, k): same accepted candidate whatever the batching
    (values equal up to the U-Net's batch-size-dependent float rounding)."""
    a = const_attr(s, 0.4)
    x1, p1, st1 = s.sample_conditional(a, 5, seed=7, batch_size=3, skip=SKIP, mode="mode", threshold="paper",
                                       return_stats=True)
    x2, p2, st2 = s.sample_conditional(a, 5, seed=7, batch_size=50, skip=SKIP, mode="mode", threshold="paper",
                                       return_stats=True)
    assert st1["attempts"] == st2["attempts"]
    assert torch.allclose(x1, x2, atol=1e-4)
    x3 = sample_conditional(s, a, None, items=[3, 4], seed=7, skip=SKIP, return_probs=False,
                            mode="mode", threshold="paper")
    assert torch.allclose(x3, x1[3:], atol=1e-4)
    x4 = s.sample_conditional(a, 5, seed=8, skip=SKIP, return_probs=False, mode="mode",
                              threshold="paper")
    assert not torch.allclose(x4, x1, atol=1e-2)


def test_rare_attribute_error_reports_the_acceptance_rate(s):
    a = const_attr(s, 0.02, "rare")
    with pytest.raises(RareAttributeError, match=r"acceptance rate") as ei:
        s.sample_conditional(a, 10, seed=0, max_draws=40, batch_size=20, skip=SKIP,
                             threshold="paper")
    e = ei.value
    assert e.draws == 40 and 0 <= e.acceptance_rate < 0.25 and "max_draws=40" in str(e)
    assert isinstance(e, ValueError)
    b = const_attr(s, 0.3)
    with pytest.raises(RareAttributeError, match="rare AND const"):
        s.sample_conditional([a, b], 2, seed=0, max_draws=8, skip=SKIP, threshold="paper")
    # threshold rule: never met -> error; always met -> every draw accepted
    with pytest.raises(RareAttributeError):
        s.sample_conditional(b, 2, threshold=0.5, max_draws=10, skip=SKIP)
    _, _, st = s.sample_conditional(b, 4, threshold=0.2, skip=SKIP, return_stats=True)
    assert st["acceptance_rate"] == 1.0


def test_plain_direction_is_refused(s):
    with pytest.raises(ValueError, match="fitted"):
        s.sample_conditional(Attribute(torch.zeros(s.latent_shape)), 1, skip=SKIP)


@pytest.mark.parametrize("lam", [1.0, 1.05])
def test_eps_scale_reaches_the_prior(s, lam):
    """``eps_scale``: with threshold 0 every first candidate is accepted, so image ``k`` is
    the scaled DDIM from candidate ``(k, 0)``'s start noise (drawn first from its generator)."""
    from d2c_fast.conditional import draw_seed, sample_conditional_latents
    a = const_attr(s, 0.5)
    z, _, _, _ = sample_conditional_latents(s, a, 2, seed=7, threshold=0.0, skip=SKIP,
                                            eps_scale=lam)
    zT = torch.stack([torch.randn(*s.latent_shape, generator=torch.Generator().manual_seed(
        draw_seed(7, k, 0))) for k in range(2)])
    want = s.sample_latents(2, skip=SKIP, noise=zT, eps_scale=lam)
    # batch 2 vs the sampler's batch of candidates: float32 rounding only
    assert rel_error(z, want) < 1e-5
    if lam != 1.0:
        assert rel_error(z, s.sample_latents(2, skip=SKIP, noise=zT)) > 1e-3
    with pytest.raises(ValueError, match="eps_scale"):
        s.sample_conditional(a, 1, eps_scale=0.0)


def planted_attr(s, scale=2.0, prior=0.5):
    D = int(torch.tensor(s.latent_shape).prod())
    w = torch.randn(D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    clf = LinearClassifier(scale * w / w.norm(), 0.0, s.mean, s.std, prior=prior)
    return Attribute(None, name="planted", classifier=clf, fingerprint=s.fingerprint,
                     latent_shape=s.latent_shape)


def test_adapt_prior_rebases_on_the_pilot_rate(s):
    """adapt_prior=N: the classifier is re-based on the EM rate among N pilot prior samples
    drawn from their own seed stream: the same rate whatever the items or batching, the
    returned probabilities are the re-based classifier's, and images still depend only on
    (seed, k)."""
    from d2c_fast.attributes import estimate_prior
    from d2c_fast.conditional import adapt_priors, pilot_seed, sample_conditional_latents
    import d2c_fast.diffusion as D
    a = planted_attr(s)
    z, p, _, st = sample_conditional_latents(s, a, 6, seed=4, batch_size=5, skip=SKIP,
                                             adapt_prior=12)
    assert st["pilot_draws"] == 12 and len(st["adapted_priors"]) == 1
    r = st["adapted_priors"][0]
    assert st["priors"] == [pytest.approx(r)] and 0 < r < 1
    # the rate is EM on the pilot latents: regenerate them from their seeds
    rng = D.BatchRNG.from_generators(
        [torch.Generator().manual_seed(pilot_seed(4, j)) for j in range(12)], s.device)
    zp = s.unstandardise(s.denoise(rng.randn(*s.latent_shape),
                                   D.uncond_sequence(s.num_timesteps, skip=SKIP), 0.0, rng,
                                   progress=False, eps_scale=1.0, guidance=1.0))
    assert estimate_prior(a, zp) == pytest.approx(r, abs=1e-4)
    assert torch.allclose(p[:, 0], a.with_prior(r).probability(z), atol=1e-9)
    # independent of batching and of which items are asked for
    z2, p2, _, st2 = sample_conditional_latents(s, a, [4, 5], seed=4, batch_size=64, skip=SKIP,
                                                adapt_prior=12)
    assert st2["adapted_priors"][0] == pytest.approx(r, abs=1e-6)
    # the same samples up to float32 rounding: kernels may round differently per batch size (on
    # AVX-512 hosts by ~4e-7 of the latents' scale); other seeds differ at the scale itself
    assert (z2 - z[4:]).abs().max() <= 1e-5 * z.abs().max()
    (b,), rates = adapt_priors(s, [a], 12, seed=4, batch_size=3, skip=SKIP)
    assert rates[0] == pytest.approx(r, abs=1e-6) and b.info["prior_source"].startswith("adapted")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="adapt_prior"):
            s.sample_conditional(a, 1, skip=SKIP, adapt_prior=bad)


def test_sample_conditional_dir_records_adapted_priors(s, tmp_path):
    import json
    from d2c_fast.jobs import sample_conditional_dir
    a = planted_attr(s)
    r = sample_conditional_dir(s, tmp_path, a, 2, seed=1, skip=SKIP, progress=False,
                               adapt_prior=8, batch_size=4)
    assert r["written"] == 2
    rec = json.load(open(tmp_path / "000000.json"))
    assert rec["adapt_prior"] == 8 and len(rec["priors"]) == 1 and rec["priors"][0] != 0.5
