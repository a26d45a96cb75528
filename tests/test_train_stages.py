"""Stage 1 (MoCo autoencoder) and stage 2 (latent diffusion) pieces on tiny models."""
import math

import pytest
import torch
import torch.nn.functional as F

import d2c_fast

from d2c_fast.config import config_from_dict
from d2c_fast.train.augment import augment
from d2c_fast.train.autoencoder import AETrainer, MoCoAE, recalibrate_bn
from d2c_fast.train.diffusion import (DiffusionTrainer, alphas_cumprod, antithetic_timesteps,
                                      encode_latents, latent_stats, logit_normal_timesteps,
                                      noise_estimation_loss, sample_timesteps)
from d2c_fast.train.data import SyntheticShapes, dataset_to_uint8
from d2c_fast.train.engine import DistInfo
from d2c_fast.train.config import AugmentConfig, TrainConfig
from d2c_fast.train.testing import tiny_model_dict, tiny_train_dict


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg():
    return config_from_dict(tiny_model_dict())


def test_moco_momentum_update_math():
    m = MoCoAE(_cfg())
    q0 = [p.detach().clone() for p in m.query_params()]
    k0 = [p.detach().clone() for p in m.key_params()]
    assert all(torch.equal(a, b) for a, b in zip(q0, k0))       # key starts as a copy
    assert not any(p.requires_grad for p in m.key_params())
    with torch.no_grad():
        for p in m.query_params():
            p.add_(1.0)
    m.momentum_update()
    for a, k in zip(q0, m.key_params()):
        assert torch.allclose(k, m.m * a + (1 - m.m) * (a + 1.0), atol=1e-6)


def test_moco_queue_enqueue_wraps():
    m = MoCoAE(_cfg())                       # K = 24, dim 8
    assert torch.allclose(m.queue.norm(dim=0), torch.ones(24), atol=1e-5)
    k1 = F.normalize(torch.randn(16, 8), dim=1)
    m.enqueue(k1)
    assert int(m.queue_ptr) == 16 and torch.equal(m.queue[:, :16], k1.T)
    k2 = F.normalize(torch.randn(16, 8), dim=1)
    m.enqueue(k2)                            # 8 at the end, 8 wrap to the front
    assert int(m.queue_ptr) == 8
    assert torch.equal(m.queue[:, 16:], k2[:8].T) and torch.equal(m.queue[:, :8], k2[8:].T)


def test_moco_forward_logits():
    torch.manual_seed(0)
    m = MoCoAE(_cfg())
    x = torch.rand(4, 3, 16, 16)
    nll, logits, k = m(x, x)
    assert nll.shape == (4,) and logits.shape == (4, 25) and k.shape == (4, 8)
    assert torch.allclose(k.norm(dim=1), torch.ones(4), atol=1e-5)
    assert (logits.abs() <= 1 / m.T + 1e-4).all()               # cosine / T
    assert (nll > 0).all()


def test_moco_latent_noise_reaches_the_decoder_only():
    """``latent_noise``: the decoder's input is ``z + s * std_c(z) * noise`` (per-channel batch
    std, noise drawn from the given generator), the encoder's ``z`` and MoCo's logits are
    untouched; scale 0 is the plain forward."""
    torch.manual_seed(0)
    m = MoCoAE(_cfg()).eval()
    x = torch.rand(5, 3, 16, 16)
    seen = []
    orig = m.encoder_q.decode_logits
    m.encoder_q.decode_logits = lambda z: (seen.append(z.detach().clone()), orig(z))[1]
    with torch.no_grad():
        z = m.encoder_q.encode(x)
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(11))
        nll0, lg0, _ = m(x, x)
        nll1, lg1, _ = m(x, x, 0.3, torch.Generator().manual_seed(11))
        nll2, _, _ = m(x, x, 0.0, torch.Generator().manual_seed(11))
    assert torch.equal(seen[0], z) and torch.equal(seen[2], z) and torch.equal(nll0, nll2)
    sd = z.std(dim=(0, 2, 3), keepdim=True)
    assert torch.allclose(seen[1] - z, 0.3 * sd * noise, atol=1e-6)
    assert not torch.equal(nll0, nll1)
    m.queue_ptr.zero_()
    assert torch.allclose(lg0, lg1)


def test_latent_noise_config_checked():
    d = tiny_train_dict(ae_steps=1, diffusion_steps=1)
    d["ae"]["latent_noise"] = -0.1
    with pytest.raises(d2c_fast.ConfigError, match="train.ae.latent_noise"):
        TrainConfig.from_dict(d)


def test_augment_deterministic_and_valid():
    x = torch.rand(6, 3, 16, 16)
    cfg = AugmentConfig()
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    c = augment(x, cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    ident = AugmentConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0,
                          jitter_p=0.0, gray_p=0.0)
    assert torch.allclose(augment(x, ident, torch.Generator().manual_seed(0)), x, atol=1e-5)
    flip = AugmentConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=1.0,
                         jitter_p=0.0, gray_p=0.0)
    assert torch.allclose(augment(x, flip, torch.Generator().manual_seed(0)), x.flip(-1),
                          atol=1e-5)
    gray = AugmentConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0,
                         jitter_p=0.0, gray_p=1.0)
    y = augment(x, gray, torch.Generator().manual_seed(0))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])


def _images(n=48, res=16):
    return dataset_to_uint8(SyntheticShapes(n, resolution=res))


def test_ae_losses_decrease(tmp_path):
    d = tiny_train_dict(ae_steps=30)
    d["ae"].update(lr=3e-3, batch_size=16)
    tc = TrainConfig.from_dict(d)
    tr = AETrainer(tc, tc.model_config(), _images(), str(tmp_path), DistInfo())
    m = [tr.train_step(s)[0] for s in range(30)]
    first = sum(r["nll_bpd"] for r in m[:5]) / 5
    last = sum(r["nll_bpd"] for r in m[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    assert all(math.isfinite(r["loss"]) for r in m)


def test_bn_recalibration_uses_clean_batches():
    torch.manual_seed(0)
    m = MoCoAE(_cfg())
    ae = m.encoder_q
    x = torch.rand(16, 3, 16, 16) * 0.5
    recalibrate_bn(ae, [x[:8], x[8:]])
    bn = next(mod for mod in ae.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    assert bn.momentum is not None and int(bn.num_batches_tracked) == 2


def test_antithetic_timesteps():
    g = torch.Generator().manual_seed(0)
    t = antithetic_timesteps(7, 1000, g)
    assert t.shape == (7,) and t.min() >= 0 and t.max() < 1000
    assert torch.equal(t[4:7], 999 - t[:3])
    t = antithetic_timesteps(8, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(t[5:], 999 - t[:3])


def test_logit_normal_timesteps():
    """t / T logit-normal: the empirical CDF matches Phi((logit(k / T) - mean) / std) on the
    discrete grid, pairs are mirrored about the mean in logit space, and the config switches
    the trainer's sampler (uniform stays the official antithetic draw)."""
    T, mean, std = 1000, -0.4, 1.0
    t = logit_normal_timesteps(40001, T, torch.Generator().manual_seed(0), mean, std)
    assert t.shape == (40001,) and t.dtype == torch.int64 and t.min() >= 0 and t.max() < T
    k = torch.arange(50, T, 50, dtype=torch.float64)
    expect = 0.5 * (1 + torch.erf((torch.log(k / (T - k)) - mean) / (std * math.sqrt(2))))
    got = (t.double().view(-1, 1) < k).double().mean(0)
    assert (got - expect).abs().max() < 0.01, (got, expect)
    lo, hi = t[:20001].double(), t[20001:].double()       # pairs z, -z (floored)
    mid = lambda v: torch.log((v + 0.5) / (T - v - 0.5))  # noqa: E731
    assert ((mid(lo[:20000]) + mid(hi)) / 2 - mean).abs().median() < 0.01
    # mass in the mid-noise range [200, 600): ~63% here vs 40% uniform
    assert 0.6 < float(((t >= 200) & (t < 600)).double().mean()) < 0.66
    d = tiny_train_dict(diffusion_steps=1)
    st = TrainConfig.from_dict(d).diffusion
    assert st.t_sampling == "uniform"
    assert torch.equal(sample_timesteps(9, T, torch.Generator().manual_seed(3), st),
                       antithetic_timesteps(9, T, torch.Generator().manual_seed(3)))
    d["diffusion"].update(t_sampling="logit_normal", t_logit=[mean, std])
    st = TrainConfig.from_dict(d).diffusion
    assert torch.equal(sample_timesteps(9, T, torch.Generator().manual_seed(3), st),
                       logit_normal_timesteps(9, T, torch.Generator().manual_seed(3), mean, std))
    for bad in ({"t_sampling": "lognormal"}, {"t_logit": [0.0, 0.0]}, {"t_logit": [0.0]},
                {"t_logit": [float("nan"), 1.0]}):
        d = tiny_train_dict(diffusion_steps=1)
        d["diffusion"].update(bad)
        with pytest.raises(d2c_fast.ConfigError, match="t_sampling|t_logit"):
            TrainConfig.from_dict(d)


def test_noise_estimation_loss_formula():
    cfg = _cfg()
    abar = alphas_cumprod(cfg.schedule)
    assert abar.dtype == torch.float32 and abar[0] == pytest.approx(1 - 1e-4)
    x0, e = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    t = torch.tensor([0, 500, 999])
    seen = {}

    def model(x, tt):
        seen["x"], seen["t"] = x, tt
        return torch.zeros_like(x)

    loss = noise_estimation_loss(model, x0, t, e, abar)
    a = abar[t].view(-1, 1, 1, 1)
    assert torch.allclose(seen["x"], a.sqrt() * x0 + (1 - a).sqrt() * e)
    assert seen["t"].dtype == torch.float32
    assert loss.item() == pytest.approx(float(e.square().sum() / 3), rel=1e-5)


def test_latent_stats_and_flips():
    torch.manual_seed(0)
    from d2c_fast.models.autoencoder import AutoEncoder
    ae = AutoEncoder(_cfg().autoencoder).eval()
    imgs = _images(10)
    z = encode_latents(ae, imgs, batch_size=4, flip=True)
    assert z.shape == (20, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(z[10:11], ae.encode(imgs[:1].float().div(255).flip(-1)), atol=1e-5)
    mean, std = latent_stats(z)
    assert mean.shape == std.shape == (1, 4, 1, 1)
    zs = (z - mean) / std
    assert torch.allclose(zs.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(zs.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)
    # per position (ours): every (c, h, w) standardised over the batch alone
    mp, sp = latent_stats(z, "position")
    assert mp.shape == sp.shape == (1, 4, 4, 4)
    zp = (z - mp) / sp
    assert torch.allclose(zp.mean(dim=0), torch.zeros(4, 4, 4), atol=1e-5)
    assert torch.allclose(zp.std(dim=0, unbiased=False), torch.ones(4, 4, 4), atol=1e-4)
    assert torch.allclose(mp.mean(dim=(2, 3), keepdim=True), mean, atol=1e-5)
    with pytest.raises(ValueError, match="norm"):
        latent_stats(z, "pixel")
    zc = z.clone()
    zc[:, 1, 2, 3] = 0.5
    with pytest.raises(ValueError, match="constant"):
        latent_stats(zc, "position")


def test_latent_norm_config_and_stale_latents_file(tmp_path):
    """``diffusion.latent_norm`` is validated; a ``latents.pt`` written with the other
    standardisation keeps its latents and gets its statistics re-computed."""
    from d2c_fast.train.diffusion import prepare_latents
    from d2c_fast.train.engine import load_checkpoint, save_checkpoint
    d = tiny_train_dict(diffusion_steps=1)
    assert TrainConfig.from_dict(d).diffusion.latent_norm == "channel"
    d["diffusion"]["latent_norm"] = "pixel"
    with pytest.raises(d2c_fast.ConfigError, match="latent_norm"):
        TrainConfig.from_dict(d)
    d["diffusion"]["latent_norm"] = "position"
    st = TrainConfig.from_dict(d).diffusion
    z = torch.randn(30, 4, 4, 4) * torch.rand(1, 4, 4, 4).add(0.1) + torch.randn(1, 4, 4, 4)
    m0, s0 = latent_stats(z)
    save_checkpoint(str(tmp_path / "latents.pt"), {"latents": z, "mean": m0, "std": s0})
    x, mean, std = prepare_latents(str(tmp_path), None, None, st, DistInfo(), progress=False)
    assert mean.shape == (1, 4, 4, 4)
    assert torch.allclose(x * std + mean, z, atol=1e-5)
    assert torch.allclose(x.std(dim=0, unbiased=False), torch.ones(4, 4, 4), atol=1e-4)
    saved = load_checkpoint(str(tmp_path / "latents.pt"))
    assert torch.equal(saved["latents"], z) and torch.equal(saved["std"], std)
    # and back: the per-channel config re-computes the official statistics
    st.latent_norm = "channel"
    _, mean, std = prepare_latents(str(tmp_path), None, None, st, DistInfo(), progress=False)
    assert torch.equal(mean, m0) and torch.equal(std, s0)


def test_diffusion_loss_decreases(tmp_path):
    d = tiny_train_dict(diffusion_steps=40)
    tc = TrainConfig.from_dict(d)
    lat = torch.randn(64, 4, 4, 4) * 0.3 + torch.linspace(-1, 1, 4).view(1, 4, 1, 1)
    tr = DiffusionTrainer(tc, tc.model_config(), lat, str(tmp_path), DistInfo())
    m = [tr.train_step(s)[0]["loss"] for s in range(40)]
    assert sum(m[-8:]) / 8 < 0.8 * sum(m[:8]) / 8, m
    # EMA moved away from the initial weights but lags the live ones
    p = dict(tr.unet.named_parameters())["conv_out.weight"]
    assert not torch.equal(tr.ema.shadow["conv_out.weight"], p)


def test_v_prediction_loss_target():
    """prediction="v": the target is v = sqrt(abar) e - sqrt(1 - abar) x0; a model returning
    exactly v has zero loss, one returning eps does not."""
    abar = alphas_cumprod(_cfg().schedule)
    x0, e = torch.randn(4, 4, 4, 4), torch.randn(4, 4, 4, 4)
    t = torch.tensor([0, 10, 500, 999])
    a = abar[t].view(-1, 1, 1, 1)
    v = a.sqrt() * e - (1 - a).sqrt() * x0
    assert noise_estimation_loss(lambda x, tt: v, x0, t, e, abar, "v").item() < 1e-10
    assert noise_estimation_loss(lambda x, tt: e, x0, t, e, abar, "v").item() > 1.0
    assert noise_estimation_loss(lambda x, tt: e, x0, t, e, abar, "eps").item() == 0.0


def test_v_prediction_training_loss_decreases(tmp_path):
    d = tiny_train_dict(diffusion_steps=40)
    d["model"]["diffusion"]["model"]["prediction"] = "v"
    tc = TrainConfig.from_dict(d)
    assert tc.model_config().unet.prediction == "v"
    lat = torch.randn(64, 4, 4, 4) * 0.3 + torch.linspace(-1, 1, 4).view(1, 4, 1, 1)
    tr = DiffusionTrainer(tc, tc.model_config(), lat, str(tmp_path), DistInfo())
    m = [tr.train_step(s)[0]["loss"] for s in range(40)]
    assert sum(m[-8:]) / 8 < 0.8 * sum(m[:8]) / 8, m


def test_min_snr_weighting():
    """min_snr_gamma: per-latent weights min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v), i.e.
    the x0-error weight capped at gamma; 0 leaves the official loss."""
    from d2c_fast.train.diffusion import min_snr_weight
    abar = alphas_cumprod(_cfg().schedule)
    x0, e = torch.randn(4, 4, 4, 4), torch.randn(4, 4, 4, 4)
    t = torch.tensor([0, 100, 500, 999])
    a = abar[t]
    snr = a / (1 - a)
    zero = lambda x, tt: torch.zeros_like(x)   # noqa: E731
    for pred, target in (("eps", e), ("v", a.sqrt().view(-1, 1, 1, 1) * e
                                      - (1 - a).sqrt().view(-1, 1, 1, 1) * x0)):
        per = target.square().sum(dim=(1, 2, 3))
        w = min_snr_weight(a, 5.0, pred)
        base = snr if pred == "eps" else snr + 1
        assert torch.allclose(w * base, snr.clamp(max=5.0))        # x0 weight min(SNR, 5)
        assert w[0] < 0.01            # t = 0: SNR ~ 1e4, capped at 5
        assert w[-1] == pytest.approx(1.0 if pred == "eps" else float(snr[-1] / (snr[-1] + 1)),
                                      rel=1e-4)
        got = noise_estimation_loss(zero, x0, t, e, abar, pred, 5.0)
        assert got.item() == pytest.approx(float((per * w).mean()), rel=1e-5)
        assert noise_estimation_loss(zero, x0, t, e, abar, pred, 0.0).item() == \
            pytest.approx(float(per.mean()), rel=1e-5)
    d = tiny_train_dict(diffusion_steps=1)
    d["diffusion"]["min_snr_gamma"] = -1.0
    with pytest.raises(d2c_fast.ConfigError, match="min_snr_gamma"):
        TrainConfig.from_dict(d)
