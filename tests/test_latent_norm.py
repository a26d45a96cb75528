"""Per-position latent standardisation (``latent_mod`` of shape ``(1, C, H, W)``, training option
``diffusion.latent_norm = "position"``): checkpoints, the sampler, fitted attributes and edits
handle it the same way as the official per-channel ``(1, C, 1, 1)``."""
import os

import pytest
import torch

from d2c_fast import Attribute, Sampler
from d2c_fast.checkpoint import LoadedModel, load_native, save_native
from d2c_fast.edit import edit_delta
from d2c_fast.errors import AttributeFileError, CheckpointError
from d2c_fast.checkpoint.random_init import random_model

CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "d2c_fast", "configs", "tiny64.json")


def _per_position(m: LoadedModel, seed=5) -> LoadedModel:
    C, H, W = m.config.latent_shape
    g = torch.Generator().manual_seed(seed)
    mean = 0.3 * torch.randn(1, C, H, W, generator=g)
    std = 0.2 + torch.rand(1, C, H, W, generator=g)     # a 6x spread of scales
    return LoadedModel(m.config, m.autoencoder, m.unet, mean, std, "per-position", m.guide)


@pytest.fixture(scope="module")
def pp(tmp_path_factory):
    torch.set_num_threads(1)
    m = _per_position(random_model(CFG, seed=3))
    p = tmp_path_factory.mktemp("pp") / "pp.safetensors"
    save_native(p, m.config, m.autoencoder, m.unet, m.mean, m.std)
    return p, m


def test_per_position_checkpoint_round_trip(pp, tmp_path):
    p, m = pp
    back = load_native(p)
    assert back.mean.shape == back.std.shape == (1, *m.config.latent_shape)
    assert torch.equal(back.mean, m.mean) and torch.equal(back.std, m.std)
    # mixing the two kinds, or a wrong spatial size, is refused with the expected shapes named
    C, H, W = m.config.latent_shape
    for mean, std, what in ((m.mean, torch.ones(1, C, 1, 1), "both per channel"),
                            (torch.zeros(1, C, H + 1, W), m.std, f"(1, {C}, {H}, {W})")):
        q = tmp_path / "bad.safetensors"
        save_native(q, m.config, m.autoencoder, m.unet, mean, std)
        with pytest.raises(CheckpointError, match=r"per position|both per channel") as e:
            load_native(q)
        assert what in str(e.value)


def test_sampler_standardises_per_position(pp):
    p, m = pp
    s = Sampler(p)
    z = torch.randn(3, *s.latent_shape)
    x = s.standardise(z)
    assert torch.allclose(x, (z - m.mean) / m.std)
    assert torch.allclose(s.unstandardise(x), z, atol=1e-6)


def test_fit_and_edit_on_a_per_position_model(pp, tmp_path):
    p, m = pp
    s = Sampler(p)
    D = int(torch.tensor(s.latent_shape).prod())
    g = torch.Generator().manual_seed(0)
    u = torch.randn(D, generator=g, dtype=torch.float64)
    u /= u.norm()
    n = 160
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = (torch.arange(n) % 2).double()
    x = x - (x @ u)[:, None] * u + (3.0 * (2 * y - 1))[:, None] * u
    z = x.float().reshape(n, *s.latent_shape) * s.std + s.mean
    a = s.fit_attribute(z[y > 0], z[y < 1], name="planted")
    assert a.classifier.std.shape == tuple(s.latent_shape)
    # the classifier works in the model's per-position units: its normal is the planted u
    assert float(a.normal_std @ u / a.normal_std.norm()) > 0.8
    assert float(((a.probability(z) > 0.5).double() == y).double().mean()) > 0.95
    # strength is in logit units: z + delta raises the logit by exactly the strength
    d = edit_delta(s, a, strength=1.5)
    assert torch.allclose(a.logit(z + d.cpu()) - a.logit(z), torch.full((n,), 1.5,
                          dtype=torch.float64), atol=1e-3)
    # the edit direction is std * W / |w|^2 with the per-position std (not a channel average)
    w = a.classifier.weight.reshape(s.latent_shape)
    want = (a.classifier.std.double() * w / w.square().sum()).float()
    assert torch.allclose(a.edit_direction, want, atol=1e-7)
    # preserving a second attribute keeps its logit while the first one moves
    v = torch.randn(D, generator=g, dtype=torch.float64)
    v -= (v @ u) * u
    v /= v.norm()
    x2 = x - (x @ v)[:, None] * v + (3.0 * (2 * (torch.arange(n) // 2 % 2) - 1.0))[:, None] * v
    y2 = (torch.arange(n) // 2 % 2).double()
    z2 = x2.float().reshape(n, *s.latent_shape) * s.std + s.mean
    b = s.fit_attribute(z2[y2 > 0], z2[y2 < 1], name="kept")
    d = edit_delta(s, a, strength=1.0, preserve=b)
    assert torch.allclose(b.logit(z + d.cpu()), b.logit(z), atol=1e-3)
    assert torch.allclose(a.logit(z + d.cpu()) - a.logit(z), torch.ones(n, dtype=torch.float64),
                          atol=1e-3)
    # the attribute file keeps the per-position standardisation and loads on this model only
    f = a.save(tmp_path / "planted.safetensors")
    back = Attribute.load(f, model=s)
    assert torch.equal(back.classifier.std, a.classifier.std)
    assert torch.equal(back.probability(z), a.probability(z))
    other = Sampler(random_model(CFG, seed=3))   # same weights, per-channel standardisation
    assert other.fingerprint != s.fingerprint
    with pytest.raises(AttributeFileError, match="refit"):
        Attribute.load(f, model=other)


def test_classifier_standardisation_shapes_are_checked():
    from d2c_fast.attributes import LinearClassifier
    w = torch.randn(16)
    c = LinearClassifier(w, 0.0, torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2))
    assert c.mean.shape == (4, 2, 2)
    assert LinearClassifier(w, 0.0, torch.zeros(4), torch.ones(4)).std.shape == (4, 1, 1)
    for mean, std, weight in ((torch.zeros(4, 2, 2), torch.ones(4, 1, 1), w),   # mixed kinds
                              (torch.zeros(4, 2, 2), torch.ones(4, 2, 2), torch.randn(15)),
                              (torch.zeros(3), torch.ones(3), w)):               # 16 % 3 != 0
        with pytest.raises(AttributeFileError):
            LinearClassifier(weight, 0.0, mean, std)


def test_tiny_training_run_exports_a_per_position_model(tmp_path):
    """``diffusion.latent_norm = "position"`` end to end: the run's export carries the
    per-position statistics of its latents, and a Sampler loads and samples it."""
    from d2c_fast.train.engine import load_checkpoint
    from d2c_fast.train.config import TrainConfig
    from d2c_fast.train.pipeline import train
    from d2c_fast.train.testing import tiny_train_dict
    d = tiny_train_dict(ae_steps=2, diffusion_steps=2)
    d["diffusion"]["latent_norm"] = "position"
    path = train(TrainConfig.from_dict(d), str(tmp_path / "run"))
    lat = load_checkpoint(str(tmp_path / "run" / "latents.pt"))
    s = Sampler(path)
    assert s.std.shape == (1, *s.latent_shape)
    assert torch.equal(s.mean.cpu(), lat["mean"]) and torch.equal(s.std.cpu(), lat["std"])
    z = s.sample_latents(2, steps=3, seed=0)
    assert z.shape == (2, *s.latent_shape) and torch.isfinite(z).all()
