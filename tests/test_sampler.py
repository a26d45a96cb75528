"""Sampler semantics on a small random-weight model: DDIM against an independent
implementation of the official formulas, randomness contracts, argument checking."""
import math
import os

import numpy as np
import pytest
import torch

from d2c_fast import Attribute, Sampler
from d2c_fast.errors import AttributeFileError, ImageError
from d2c_fast.eval.metrics import rel_error
from d2c_fast.models import mixture
from d2c_fast.checkpoint.random_init import random_model

CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "d2c_fast", "configs", "tiny64.json")


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=3)


@pytest.fixture(scope="module")
def s(model):
    return Sampler(model, impl="ref")


def official_ddim(unet, x, seq, betas, eta=0.0, noises=None):
    """The official generalized_steps, written out independently (float32 schedule)."""
    b = torch.cat([torch.zeros(1), torch.tensor(betas, dtype=torch.float32)])
    abar = (1 - b).cumprod(0)
    seq_next = [-1] + list(seq[:-1])
    for i, (t, tn) in enumerate(zip(reversed(seq), reversed(seq_next))):
        at, an = abar[t + 1], abar[tn + 1]
        e = unet(x, torch.full((x.shape[0],), float(t)))
        x0 = (x - e * (1 - at).sqrt()) / at.sqrt()
        c1 = eta * ((1 - at / an) * (1 - an) / (1 - at)).sqrt()
        c2 = ((1 - an) - c1 ** 2).sqrt()
        x = an.sqrt() * x0 + c2 * e + (c1 * noises[i] if eta > 0 else 0)
    return x


@pytest.mark.parametrize("skip", [100, 250, 333])
def test_ddim_matches_official_formula(s, model, skip):
    zT = torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(0))
    seq = list(range(0, 999, skip)) + [999]
    betas = np.linspace(1e-4, 0.02, 1000)
    with torch.no_grad():
        want = official_ddim(model.unet, zT, seq, betas) * model.std + model.mean
    assert rel_error(s.sample_latents(2, skip=skip, noise=zT), want) < 1e-5


@pytest.mark.parametrize("lam", [1.02, 0.9])
def test_eps_scale_divides_every_noise_prediction(s, model, lam):
    """``eps_scale``: the official update with ``e / eps_scale`` at every step (epsilon
    scaling); 1.0 is bitwise the default sampler, in ``sample`` too."""
    zT = torch.randn(3, *s.latent_shape, generator=torch.Generator().manual_seed(5))
    betas = np.linspace(1e-4, 0.02, 1000)
    seq = list(range(0, 999, 200)) + [999]
    with torch.no_grad():
        want = official_ddim(lambda x, t: model.unet(x, t) / lam, zT, seq, betas)
        want = want * model.std + model.mean
    got = s.sample_latents(3, skip=200, noise=zT, eps_scale=lam)
    assert rel_error(got, want) < 1e-5
    assert rel_error(got, s.sample_latents(3, skip=200, noise=zT)) > 1e-3
    assert torch.equal(s.sample_latents(3, skip=200, noise=zT, eps_scale=1.0),
                       s.sample_latents(3, skip=200, noise=zT))
    assert torch.equal(s.sample(2, skip=200, seed=4, mode="mode", eps_scale=1.0),
                       s.sample(2, skip=200, seed=4, mode="mode"))
    assert not torch.equal(s.sample(2, skip=200, seed=4, mode="mode", eps_scale=lam),
                           s.sample(2, skip=200, seed=4, mode="mode"))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1.02", True])
def test_eps_scale_checked(s, bad):
    with pytest.raises(ValueError, match="eps_scale"):
        s.sample_latents(1, eps_scale=bad)
    with pytest.raises(ValueError, match="eps_scale"):
        s.sample(1, eps_scale=bad)


def test_ddim_eta_positive_matches_official_formula(s, model, monkeypatch):
    zT = torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(1))
    seq = [0, 300, 600, 999]
    noises = [torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(10 + i))
              for i in range(len(seq))]
    from d2c_fast import diffusion as D
    got = D.ddim(lambda x, t: model.unet(x, t), zT, seq, s.schedule, eta=0.7,
                 step_noise=lambda i: noises[i])
    with torch.no_grad():
        want = official_ddim(model.unet, zT, seq, np.linspace(1e-4, 0.02, 1000), eta=0.7,
                             noises=noises)
    assert rel_error(got, want) < 1e-5
    # and eta changes the result while eta=0 ignores noise
    det = D.ddim(lambda x, t: model.unet(x, t), zT, seq, s.schedule, eta=0.0)
    assert rel_error(got, det) > 1e-3


def test_per_image_seeds_independent_of_batch(s):
    a = s.sample_latents(4, skip=250, seed=7)
    b = s.sample_latents(1, skip=250, seed=9)
    c = s.sample_latents(4, skip=250, seed=7, batch_size=3)
    assert torch.allclose(a[2], b[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(a, c, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0], a[1])


def test_per_image_seeds_with_eta_and_images(s):
    a = s.sample(3, skip=250, eta=1.0, seed=11)
    b = s.sample(1, skip=250, eta=1.0, seed=12)
    assert a.shape == (3, 3, 64, 64)
    assert torch.allclose(a[1], b[0], rtol=1e-4, atol=1e-4)
    assert 0 <= a.min() and a.max() <= 1


def test_generator_reproducible(s):
    a = s.sample_latents(2, skip=500, generator=torch.Generator().manual_seed(5))
    b = s.sample_latents(2, skip=500, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        s.sample_latents(2, generator=torch.Generator(), seed=1)


def test_manipulate_per_image_seed_and_position(s):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    attr = Attribute(torch.randn(s.latent_shape))
    a = s.manipulate(x, attr, step=1.0, seed=100)
    b = s.manipulate(x[1:2], attr, step=1.0, seed=101)
    c = s.manipulate(x, attr, step=1.0, seed=100, batch_size=2)
    assert torch.allclose(a[1], b[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(a, c, rtol=1e-4, atol=1e-4)


def test_explicit_per_image_seeds(s):
    """seeds=[...]: image i as a one-image call with seed=seeds[i] (sample and manipulate)."""
    a = s.sample(2, skip=250, seeds=[5, 9])
    assert torch.allclose(a[1], s.sample(1, skip=250, seed=9)[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(a[0], s.sample(1, skip=250, seed=5)[0], rtol=1e-4, atol=1e-4)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    attr = Attribute(torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(6)))
    e = s.manipulate(x, attr, step=1.0, seeds=[40, 3])
    assert torch.allclose(e[1], s.manipulate(x[1:], attr, step=1.0, seed=3)[0],
                          rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not several"):
        s.sample(2, seeds=[1, 2], seed=1)
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        s.sample(3, seeds=[1, 2])


def test_manipulate_t0_zero_is_one_denoising_step(s, model):
    # t0 = 0: noise to t=0, then one DDIM step to t=-1 (abar = 1), i.e. the x0 prediction
    z = s.encode(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    n = torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(3))
    zp = s.manipulate_latents(z, Attribute(torch.zeros(s.latent_shape)), step=0.0, t0=0, skip=1,
                              noise=n)
    a0 = 1 - 1e-4
    zn = math.sqrt(a0) * (z - model.mean) / model.std + math.sqrt(1 - a0) * n
    x0 = (zn - math.sqrt(1 - a0) * s.unet(zn, 0)) / math.sqrt(a0)
    assert rel_error(zp, x0 * model.std + model.mean) < 1e-5


def test_manipulation_moves_along_minus_boundary(s):
    # the raw step is z - step * boundary before noising (official sign convention)
    z = torch.randn(1, *s.latent_shape)
    d = torch.randn(s.latent_shape)
    n = torch.randn(1, *s.latent_shape)
    a = s.manipulate_latents(z, Attribute(d), step=2.0, noise=n)
    b = s.manipulate_latents(z - 2.0 * d, Attribute(torch.zeros_like(d)), step=0.0, noise=n)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unet_scalar_t_broadcasts(s):
    x = torch.randn(3, *s.latent_shape)
    assert torch.equal(s.unet(x, 500), s.unet(x, torch.full((3,), 500.0)))
    with pytest.raises(ValueError):
        s.unet(x, torch.ones(2))


def test_decode_modes(s):
    z = torch.randn(2, *s.latent_shape)
    m1, m2 = s.decode(z, mode="mode"), s.decode(z, mode="mode")
    assert torch.equal(m1, m2) and m1.shape == (2, 3, 64, 64)
    a, b = s.decode(z, seed=3), s.decode(z, seed=3)
    assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, s.decode(z, seed=4))
    with pytest.raises(ValueError):
        s.decode(z, mode="mean")


def test_mixture_log_prob_normalised():
    # Sum of probabilities over every discrete RGB value of a pixel is 1 (3-bit images).
    torch.manual_seed(0)
    logits = torch.randn(1, 100, 1, 1) * torch.tensor([2.0] * 10 + [1.0] * 90).view(1, 100, 1, 1)
    levels = torch.arange(8) / 7.0
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    x = torch.stack([r.flatten(), g.flatten(), b.flatten()], 1).view(512, 3, 1, 1)
    lp = mixture.log_prob(logits.expand(512, -1, -1, -1), x, num_bits=3)
    assert abs(torch.logsumexp(lp.flatten(), 0).exp().item() - 1.0) < 1e-3


def test_mixture_sample_concentrates_on_mode():
    # one dominant component with a tiny scale: samples equal the mode
    logits = torch.zeros(2, 100, 4, 4)
    logits[:, 0] = 50.0
    logits[:, 10:100].view(2, 3, 30, 4, 4)[:, :, 10:20] = -7.0   # log-scales -> min
    logits[:, 10:100].view(2, 3, 30, 4, 4)[:, :, 0] = 0.3         # means of component 0
    x = mixture.sample(logits, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, mixture.mode(logits), atol=0.02)
    assert torch.allclose(mixture.mode(logits), torch.full_like(x, 0.65), atol=1e-6)


def test_argument_errors(s, model):
    with pytest.raises(ValueError):
        s.decode_logits(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError):
        s.sample_latents(2, eta=-1.0, skip=500)
    with pytest.raises(ValueError):
        s.sample_latents(0)
    with pytest.raises(ValueError):
        s.sample_latents(1, skip=100, steps=10)
    with pytest.raises(ValueError):
        s.sample_latents(1, timesteps=[5, 3])
    with pytest.raises(ValueError):
        Sampler(model, impl="turbo")
    with pytest.raises(ValueError):
        s.manipulate(torch.rand(1, 3, 64, 64), Attribute(torch.zeros(s.latent_shape)), strength=1.0)
    with pytest.raises(AttributeFileError):
        s.manipulate_latents(torch.randn(1, *s.latent_shape), Attribute(torch.zeros(4, 4, 4)), step=1)
    with pytest.raises(ImageError):
        s.encode(torch.rand(1, 3, 32, 32))
    assert s.encode(torch.rand(1, 3, 32, 32), resize=True).shape == (1, *s.latent_shape)
    with pytest.warns(UserWarning, match="multiple of skip"):
        s.manipulate_latents(torch.randn(1, *s.latent_shape), Attribute(torch.zeros(s.latent_shape)),
                             step=0.0, t0=60, skip=50, noise=torch.zeros(1, *s.latent_shape))


def test_ddim_loop_never_reads_device_values(s, monkeypatch):
    """No host round-trips inside the DDIM loop: item()/tolist()/cpu()/numpy() are never
    called while sampling (they would synchronise a GPU)."""
    def boom(*a, **k):
        raise AssertionError("host read inside the sampling loop")
    zT = torch.randn(2, *s.latent_shape)
    attr = Attribute(torch.zeros(s.latent_shape))
    for name in ("item", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    out = s.sample_latents(2, skip=250, noise=zT)
    out2 = s.manipulate_latents(out, attr, step=0.5, noise=zT)
    monkeypatch.undo()
    assert torch.isfinite(out2).all()


@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixture_sample_selected_equals_official_sample(layout, dtype):
    """impl="fast"'s head (select the component, then transform its 9 parameters) draws exactly
    what the official head (transform all 90, then select) draws from the same uniforms."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 100, 7, 9, generator=g) * 3).to(dtype)
    logits[:, 40] = -20.0   # some log-scales below the -7 clamp
    if layout == "cl":
        logits = logits.contiguous(memory_format=torch.channels_last)
    u_mix = torch.rand(3, 10, 7, 9, generator=g) * (1 - 2e-5) + 1e-5
    u_pix = torch.rand(3, 3, 7, 9, generator=g) * (1 - 2e-5) + 1e-5
    want = mixture.sample(logits, uniforms=(u_mix, u_pix))
    assert torch.equal(mixture.sample_selected(logits, (u_mix, u_pix)), want)
    with pytest.raises(ValueError, match="channels"):
        mixture.sample_selected(logits[:, :90], (u_mix, u_pix))


def test_fast_and_ref_decode_draw_the_same_images(model):
    z = torch.randn(2, *model.config.latent_shape, generator=torch.Generator().manual_seed(1))
    a = Sampler(model, impl="ref").decode(z, seed=5)
    b = Sampler(model, impl="fast").decode(z, seed=5)
    assert (a - b).abs().max() < 1e-3   # fp32 logits differ by rounding only


@pytest.fixture(scope="module")
def v_model():
    import json
    raw = json.load(open(CFG))
    raw["diffusion"]["model"]["prediction"] = "v"
    return random_model(raw, seed=3)


def test_v_prediction_config():
    import json
    from d2c_fast.config import load_config
    from d2c_fast.errors import ConfigError
    raw = json.load(open(CFG))
    assert load_config(raw).unet.prediction == "eps"
    assert "prediction" not in load_config(raw).raw["diffusion"]["model"]
    raw["diffusion"]["model"]["prediction"] = "eps"
    assert load_config(raw).to_json() == load_config(json.load(open(CFG))).to_json()
    raw["diffusion"]["model"]["prediction"] = "v"
    assert load_config(raw).raw["diffusion"]["model"]["prediction"] == "v"
    raw["diffusion"]["model"]["prediction"] = "x0"
    with pytest.raises(ConfigError, match="prediction"):
        load_config(raw)


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_v_prediction_model_gives_eps(v_model, impl):
    """Sampler.unet of a v model returns eps = sqrt(1 - abar) x_t + sqrt(abar) v, and DDIM runs
    the official update on that eps."""
    sv = Sampler(v_model, impl=impl)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *sv.latent_shape, generator=g)
    t = torch.tensor([0.0, 500.0, 999.0])
    with torch.inference_mode():
        raw = v_model.unet(x, t)
        eps = sv.unet(x, t)
    ab = torch.tensor([sv.schedule.abar(int(i)) for i in t]).view(-1, 1, 1, 1)
    want = (1 - ab).sqrt() * x + ab.sqrt() * raw
    assert rel_error(eps, want) < 1e-5
    seq = [0, 500, 999]
    betas = sv.schedule.betas
    got = sv.sample_latents(2, timesteps=seq, noise=x[:2])

    class EpsOf:
        def __call__(self, xx, tt):
            a = torch.tensor([sv.schedule.abar(int(i)) for i in tt]).view(-1, 1, 1, 1)
            return (1 - a).sqrt() * xx + a.sqrt() * v_model.unet(xx, tt)
    with torch.inference_mode():
        want_z = official_ddim(EpsOf(), x[:2], seq, betas) * sv.std + sv.mean
    assert rel_error(got, want_z) < 1e-4


def test_gpu_sampler_eager_fallback_serves_v_models(v_model):
    """The GPU path's loop (its CPU eager fallback here) converts v to eps like Sampler."""
    from d2c_fast.gpu import GpuSampler
    ref = Sampler(v_model, impl="ref")
    gs = GpuSampler(v_model, device="cpu")
    assert gs.predict_v
    zT = torch.randn(2, *ref.latent_shape, generator=torch.Generator().manual_seed(4))
    assert rel_error(gs.sample_latents(2, noise=zT, steps=5),
                     ref.sample_latents(2, noise=zT, steps=5)) < 1e-4
    assert rel_error(gs.sample_latents(2, skip=250, eta=1.0, seed=3),
               ref.sample_latents(2, skip=250, eta=1.0, seed=3)) < 1e-4
    t = torch.tensor([10.0, 900.0])
    assert rel_error(gs.unet_eps(zT, t), ref.unet(zT, t)) < 1e-5


def test_cosine_schedule_is_nichol_dhariwal():
    """``cosine``: abar(t) = f(t + 1) / f(0), f(u) = cos^2(pi/2 (u/T + 0.008) / 1.008), written
    out here independently of d2c_fast.diffusion; betas capped at 0.999 at the very end."""
    from d2c_fast import diffusion as D
    T = 1000
    sched = D.Schedule(D.beta_schedule("cosine", beta_start=0.0, beta_end=0.0, num_timesteps=T))

    def f(u):
        return math.cos(math.pi / 2 * (u / T + 0.008) / 1.008) ** 2
    for t in (0, 1, 49, 50, 200, 500, 800, 950):
        assert sched.abar(t) == pytest.approx(f(t + 1) / f(0), rel=2e-5, abs=1e-7), t
    betas = D.beta_schedule("cosine", beta_start=0.0, beta_end=0.0, num_timesteps=T)
    assert betas.max() == pytest.approx(0.999) and (betas > 0).all()
    assert (np.diff(betas) >= 0).all()
    # mid-noise share: linear reaches SNR 0.03 by t = 600, cosine only near t = 900
    lin = D.Schedule(D.beta_schedule("linear", beta_start=1e-4, beta_end=0.02, num_timesteps=T))
    assert lin.abar(600) < 0.03 < sched.abar(600)


def test_cosine_schedule_model_samples_with_official_ddim():
    import json
    from d2c_fast.config import load_config
    raw = json.load(open(CFG))
    raw["diffusion"]["diffusion"]["beta_schedule"] = "cosine"
    m = random_model(load_config(raw), seed=3)
    sc = Sampler(m, impl="ref")
    T = 1000
    f = np.cos(math.pi / 2 * (np.arange(T + 1) / T + 0.008) / 1.008) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    zT = torch.randn(2, *sc.latent_shape, generator=torch.Generator().manual_seed(0))
    seq = list(range(0, 999, 100)) + [999]
    with torch.no_grad():
        want = official_ddim(m.unet, zT, seq, betas) * m.std + m.mean
    assert rel_error(sc.sample_latents(2, skip=100, noise=zT), want) < 1e-5
    # and the cosine model is not sampled with the linear schedule
    lin = official_ddim(m.unet, zT, seq, np.linspace(1e-4, 0.02, T)) * m.std + m.mean
    assert rel_error(sc.sample_latents(2, skip=100, noise=zT), lin) > 1e-3
