"""Autoguidance (a second, weaker prior in the model file; Karras et al. 2024): config
validation, file round trip, the sampler's combination written out against the official
DDIM formula, and training the guide in the pipeline (tiny model)."""
import copy
import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from d2c_fast import Sampler
from d2c_fast.checkpoint import load_model, save_native
from d2c_fast.config import load_config
from d2c_fast.errors import CheckpointError, ConfigError
from d2c_fast.eval.metrics import rel_error
from d2c_fast.checkpoint.random_init import random_model
from d2c_fast.models.unet import UNet
from d2c_fast.train import TrainConfig, train
from d2c_fast.train.pipeline import export_run
from d2c_fast.train.testing import tiny_model_dict, tiny_train_dict


def guided_dict(weight=2.0, **guide_model):
    d = tiny_model_dict(16)
    g = copy.deepcopy(d["diffusion"]["model"])
    g.update({"ch": 8, "norm_groups": 4}, **guide_model)
    d["diffusion"]["guide"] = {"model": g, "weight": weight}
    return d


def with_guide(d, seed=7):
    """A random model for config dict ``d`` plus a random guide U-Net."""
    m = random_model(d, seed=1)
    torch.manual_seed(seed)
    g = UNet(m.config.guide)
    with torch.no_grad():
        for n, p in g.named_parameters():
            if n.endswith(".bias"):
                p.normal_(0, 0.1)
    m.guide = g.eval()
    return m


def test_config_guide_validated_and_absent_by_default():
    plain = load_config(tiny_model_dict(16))
    assert plain.guide is None and plain.guide_weight == 1.0
    assert "guide" not in plain.raw["diffusion"]
    c = load_config(guided_dict(2.5))
    assert c.guide.ch == 8 and c.guide.resolution == c.unet.resolution and c.guide_weight == 2.5
    with pytest.raises(ConfigError, match="diffusion.guide.model.in_channels"):
        load_config(guided_dict(in_channels=3))
    with pytest.raises(ConfigError, match="diffusion.guide.model.prediction"):
        load_config(guided_dict(prediction="v"))
    with pytest.raises(ConfigError, match="diffusion.guide.weight"):
        load_config(guided_dict(0.0))
    with pytest.raises(ConfigError, match="diffusion.guide.model"):
        load_config(guided_dict(bogus=1))
    d = guided_dict()
    del d["diffusion"]["guide"]["model"]
    with pytest.raises(ConfigError, match="diffusion.guide.model"):
        load_config(d)


def test_file_round_trip_and_mismatches(tmp_path):
    m = with_guide(guided_dict())
    p = str(tmp_path / "g.safetensors")
    save_native(p, m.config, m.autoencoder, m.unet, m.mean, m.std, guide=m.guide)
    back = load_model(p)
    for (k, a), (k2, b) in zip(m.guide.state_dict().items(), back.guide.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with pytest.raises(ValueError, match="guide"):
        save_native(str(tmp_path / "x.safetensors"), m.config, m.autoencoder, m.unet, m.mean,
                    m.std)
    plain = random_model(tiny_model_dict(16), seed=1)
    with pytest.raises(ValueError, match="guide"):
        save_native(str(tmp_path / "y.safetensors"), plain.config, plain.autoencoder,
                    plain.unet, plain.mean, plain.std, guide=m.guide)
    # a file whose guide tensors are missing one is refused with the key named
    t = load_file(p)
    from safetensors import safe_open
    with safe_open(p, "pt") as f:
        meta = f.metadata()
    gone = next(k for k in t if k.startswith("guide."))
    save_file({k: v for k, v in t.items() if k != gone}, str(tmp_path / "bad.safetensors"),
              metadata=meta)
    with pytest.raises(CheckpointError, match=gone.split(".", 1)[1].split(".")[0]):
        load_model(str(tmp_path / "bad.safetensors"))


def official_ddim(eps_fn, x, seq, abar):
    seq_next = [-1] + list(seq[:-1])
    for t, tn in zip(reversed(seq), reversed(seq_next)):
        at, an = abar[t + 1], abar[tn + 1]
        e = eps_fn(x, torch.full((x.shape[0],), float(t)))
        x0 = (x - e * (1 - at).sqrt()) / at.sqrt()
        x = an.sqrt() * x0 + (1 - an).sqrt() * e
    return x


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_guided_sampling_is_the_autoguidance_combination(impl):
    m = with_guide(guided_dict(2.0))
    s = Sampler(m, impl=impl)
    assert s.guidance == 2.0
    b = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()])
    abar = (1 - b).cumprod(0)
    zT = torch.randn(3, *s.latent_shape, generator=torch.Generator().manual_seed(0))
    seq = list(range(0, 999, 200)) + [999]
    with torch.no_grad():
        for w in (2.0, 0.5, 1.0):
            want = official_ddim(lambda x, t: m.guide(x, t) + w * (m.unet(x, t) - m.guide(x, t)),
                                 zT, seq, abar) * m.std + m.mean
            got = s.sample_latents(3, skip=200, noise=zT, guidance=w)
            assert rel_error(got, want) < 2e-5, w
        plain = official_ddim(m.unet, zT, seq, abar) * m.std + m.mean
    # default = the file's recommended weight (2), not the prior alone
    default = s.sample_latents(3, skip=200, noise=zT)
    assert torch.equal(default, s.sample_latents(3, skip=200, noise=zT, guidance=2.0))
    assert rel_error(default, plain) > 1e-3
    # images and conditional sampling take it too
    img2 = s.sample(2, skip=500, seed=3, mode="mode", guidance=2.0)
    img1 = s.sample(2, skip=500, seed=3, mode="mode", guidance=1.0)
    assert not torch.allclose(img1, img2, atol=1e-4)


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_guided_d2c_edit_is_the_autoguided_clean_up(impl):
    """``manipulate_latents(..., guidance=w)``: step, noise to t0, then DDIM with the
    autoguided noise prediction, written out; default = the file's weight; 1 = the prior
    alone (the official edit)."""
    from d2c_fast import Attribute
    m = with_guide(guided_dict(2.0))
    s = Sampler(m, impl=impl)
    b = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()])
    abar = (1 - b).cumprod(0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, *s.latent_shape, generator=g) * m.std + m.mean
    d = torch.randn(s.latent_shape, generator=g)
    n = torch.randn(3, *s.latent_shape, generator=g)
    seq = [0, 50, 100]                              # t0 = 100, skip 50
    x = ((z - 0.7 * d) - m.mean) / m.std
    xt = abar[101].sqrt() * x + (1 - abar[101]).sqrt() * n
    got = {}
    with torch.no_grad():
        for w in (2.0, 1.0, 3.5):
            want = official_ddim(lambda x, t: m.guide(x, t) + w * (m.unet(x, t) - m.guide(x, t)),
                                 xt, seq, abar) * m.std + m.mean
            got[w] = s.manipulate_latents(z, Attribute(d), step=0.7, t0=100, noise=n,
                                          guidance=w)
            assert rel_error(got[w], want) < 2e-5, w
    assert torch.equal(s.manipulate_latents(z, Attribute(d), step=0.7, t0=100, noise=n),
                       got[2.0])
    assert rel_error(got[2.0], got[1.0]) > 1e-3
    # images: manipulate and sweep take it, and differ with it
    imgs = s.decode(z[:2], mode="mode")
    e2 = s.manipulate(imgs, Attribute(d), step=0.7, seed=1, mode="mode")
    e1 = s.manipulate(imgs, Attribute(d), step=0.7, seed=1, mode="mode", guidance=1.0)
    assert torch.equal(e2, s.manipulate(imgs, Attribute(d), step=0.7, seed=1, mode="mode",
                                        guidance=2.0))
    assert not torch.allclose(e1, e2, atol=1e-4)
    from d2c_fast.edit import sweep
    with torch.no_grad():
        sw = sweep(s, imgs, Attribute(d), steps=[0.7], mode="mode", seed=1, guidance=1.0)
    assert torch.equal(sw[0], e1)


def test_edit_guidance_errors():
    from d2c_fast import Attribute
    s = Sampler(random_model(tiny_model_dict(16), seed=1), impl="ref")
    z = torch.randn(1, *s.latent_shape)
    a = Attribute(torch.zeros(s.latent_shape))
    s.manipulate_latents(z, a, step=0.0, seed=0, guidance=1.0)    # no guide: only 1
    with pytest.raises(ValueError, match="guide prior"):
        s.manipulate_latents(z, a, step=0.0, seed=0, guidance=2.0)
    g = Sampler(with_guide(guided_dict()), impl="ref")
    for m in ("nvae", "ddim"):                  # unguided methods: only unset or 1
        g.manipulate_latents(z, a, step=0.0, method=m, skip=500)
        g.manipulate_latents(z, a, step=0.0, method=m, skip=500, guidance=1)
        with pytest.raises(ValueError, match="d2c method's clean-up only"):
            g.manipulate_latents(z, a, step=0.0, method=m, guidance=2.0)
    with pytest.raises(ValueError, match="guidance"):
        g.manipulate_latents(z, a, step=0.0, seed=0, guidance=-1.0)


def test_guidance_errors():
    s = Sampler(random_model(tiny_model_dict(16), seed=1), impl="ref")
    assert s.guidance == 1.0 and s.guide_model is None
    s.sample_latents(1, skip=500, seed=0, guidance=1.0)
    with pytest.raises(ValueError, match="guide prior"):
        s.sample_latents(1, skip=500, seed=0, guidance=2.0)
    g = Sampler(with_guide(guided_dict()), impl="ref")
    for bad in (-1.0, math.nan, True, "2"):
        with pytest.raises(ValueError, match="guidance"):
            g.sample(1, skip=500, seed=0, guidance=bad)


def test_pipeline_trains_guide_and_exports_it(tmp_path):
    d = tiny_train_dict(ae_steps=3, diffusion_steps=3)
    d["model"] = guided_dict(1.5)
    out = tmp_path / "run"
    path = train(TrainConfig.from_dict(d), str(out))
    assert os.path.exists(out / "ckpt-guide.pt") and os.path.exists(out / "log-guide.jsonl")
    m = load_model(path)
    assert m.guide is not None and m.config.guide_weight == 1.5
    # the guide trained (differs from its initialisation) and export_run rebuilds the file
    again = export_run(str(out), str(tmp_path / "again.safetensors"))
    a, b = load_file(path), load_file(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    init = UNet(m.config.guide).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in m.guide.state_dict().items()
               if v.is_floating_point())
    s = Sampler(path)
    assert s.guidance == 1.5
    assert torch.isfinite(s.sample(2, skip=500, seed=0)).all()


def test_stage_guide_needs_guide_config_and_finished_prior(tmp_path):
    d = tiny_train_dict(ae_steps=2, diffusion_steps=2)
    with pytest.raises(ConfigError, match="guide"):
        train(TrainConfig.from_dict(d), str(tmp_path / "a"), stage="guide")
    d["model"] = guided_dict()
    train(TrainConfig.from_dict(d), str(tmp_path / "b"), stage="ae")
    with pytest.raises(FileNotFoundError, match="stage 2"):
        train(TrainConfig.from_dict(d), str(tmp_path / "b"), stage="guide", resume=False)


def test_stage_guide_adds_a_guide_to_a_finished_run_without_resume(tmp_path):
    """A run trained without a guide gets one with ``stage="guide"`` (no resume flag needed:
    only the guide's own checkpoint would conflict); the prior and autoencoder stay bitwise."""
    d = tiny_train_dict(ae_steps=2, diffusion_steps=2)
    out = str(tmp_path / "run")
    plain = load_file(train(TrainConfig.from_dict(d), out))
    d["model"] = guided_dict()
    d["diffusion"]["steps"] = 3
    g = load_file(train(TrainConfig.from_dict(d), out, stage="guide", resume=False))
    assert any(k.startswith("guide.") for k in g)
    assert all(torch.equal(plain[k], g[k]) for k in plain)
    with pytest.raises(FileExistsError, match="ckpt-guide"):
        train(TrainConfig.from_dict(d), out, stage="guide", resume=False)
    # a stage-2 checkpoint that has not finished is refused (the prior is still training)
    from d2c_fast.train.engine import load_checkpoint, save_checkpoint
    ck_path = os.path.join(out, "ckpt-diffusion.pt")
    ck = load_checkpoint(ck_path)
    ck["done"] = False
    save_checkpoint(ck_path, ck)
    os.remove(os.path.join(out, "ckpt-guide.pt"))
    with pytest.raises(FileNotFoundError, match="unfinished"):
        train(TrainConfig.from_dict(d), out, stage="guide", resume=False)


def test_config_guidance_rescale_validated_and_left_out_at_default():
    c = load_config(guided_dict())
    assert c.guide_rescale == 0.0 and c.guide_rescale_t is None
    assert "rescale" not in c.raw["diffusion"]["guide"]   # JSON of older files unchanged
    d = guided_dict(3.0)
    d["diffusion"]["guide"].update(rescale=0.7, rescale_t=[300, 800])
    c2 = load_config(d)
    assert c2.guide_weight == 3.0 and c2.guide_rescale == 0.7 and c2.guide_rescale_t == (300, 800)
    for bad in ({"rescale": 1.5}, {"rescale": -0.1}, {"rescale_t": [800, 300]},
                {"rescale_t": [0, 1000]}, {"rescale_t": [1]}, {"rescale_t": [0.5, 10]}):
        d = guided_dict()
        d["diffusion"]["guide"].update(bad)
        with pytest.raises(ConfigError, match="diffusion.guide.rescale"):
            load_config(d)
    # sampling recommendations, not the model's identity: fitted attributes keep loading
    from d2c_fast.checkpoint import model_fingerprint
    m = with_guide(guided_dict())
    m2 = with_guide(guided_dict())
    m2.config = c2
    assert model_fingerprint(m) == model_fingerprint(m2)
    m2.config = load_config(tiny_model_dict(16))   # the config hash does see the rest
    assert model_fingerprint(m).split("-")[0] != model_fingerprint(m2).split("-")[0]


def rescaled_eps(m, w, phi, t_range, abar):
    """Guidance rescale written out from Lin et al. (2024, eq. 15-16) on x0 predictions."""
    def eps(x, t):
        e, eg = m.unet(x, t), m.guide(x, t)
        g = eg + w * (e - eg)
        ti = int(t[0])
        if t_range is not None and not t_range[0] <= ti <= t_range[1]:
            return g
        a = abar[ti + 1]
        x0g = (x - (1 - a).sqrt() * g) / a.sqrt()
        x0p = (x - (1 - a).sqrt() * e) / a.sqrt()
        out = []
        for i in range(x.shape[0]):
            r = x0g[i] * x0p[i].std() / x0g[i].std()
            out.append(phi * r + (1 - phi) * x0g[i])
        return (x - a.sqrt() * torch.stack(out)) / (1 - a).sqrt()
    return eps


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_guidance_rescale_is_lin_et_al_on_x0(impl):
    m = with_guide(guided_dict(2.0))
    s = Sampler(m, impl=impl)
    b = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()])
    abar = (1 - b).cumprod(0)
    zT = torch.randn(3, *s.latent_shape, generator=torch.Generator().manual_seed(0))
    seq = list(range(0, 999, 200)) + [999]
    plain = s.sample_latents(3, skip=200, noise=zT)
    with torch.no_grad():
        for w, phi, tr in ((2.5, 1.0, None), (2.0, 0.7, (300, 800)), (3.0, 0.5, (0, 200))):
            s.guidance_rescale, s.guidance_rescale_t = phi, tr
            want = official_ddim(rescaled_eps(m, w, phi, tr, abar), zT, seq, abar) * m.std + m.mean
            got = s.sample_latents(3, skip=200, noise=zT, guidance=w)
            assert rel_error(got, want) < 2e-5, (w, phi, tr)
        # it changes the samples; a range missing every step of the grid changes nothing;
        # guidance 1 (the prior alone) ignores it
        s.guidance_rescale, s.guidance_rescale_t = 1.0, None
        assert rel_error(s.sample_latents(3, skip=200, noise=zT), plain) > 1e-3
        s.guidance_rescale_t = (900, 990)
        # (float rounding only: with 2 threads the two runs differ by ~9e-8 relative)
        assert ((s.sample_latents(3, skip=200, noise=zT) - plain).norm()
                / plain.norm()).item() < 1e-6
        s.guidance_rescale_t = None
        assert torch.equal(s.sample_latents(3, skip=200, noise=zT, guidance=1.0),
                           Sampler(m, impl=impl).sample_latents(3, skip=200, noise=zT,
                                                                 guidance=1.0))


def test_guidance_rescale_errors_and_file_default(tmp_path):
    d = guided_dict()
    d["diffusion"]["guide"].update(rescale=0.7, rescale_t=[300, 800])
    m = with_guide(d)
    p = str(tmp_path / "r.safetensors")
    save_native(p, m.config, m.autoencoder, m.unet, m.mean, m.std, guide=m.guide)
    s = Sampler(p, impl="ref")
    assert s.guidance_rescale == 0.7 and s.guidance_rescale_t == (300, 800)
    for phi, tr in ((2.0, None), (math.nan, None), (0.5, (10, 5)), (0.5, "all")):
        s.guidance_rescale, s.guidance_rescale_t = phi, tr
        with pytest.raises(ValueError, match="Sampler.guidance_rescale"):
            s.sample_latents(1, skip=500, seed=0)


def test_cli_guidance_rescale_options(tmp_path, capsys):
    from PIL import Image
    from d2c_fast.cli import main
    d = guided_dict()
    d["diffusion"]["guide"].update(rescale=1.0)
    m = with_guide(d)
    p = str(tmp_path / "r.safetensors")
    save_native(p, m.config, m.autoencoder, m.unet, m.mean, m.std, guide=m.guide)
    assert main(["info", p]) == 0
    assert "guidance rescale 1 at every t" in capsys.readouterr().out
    grids = {}
    for name, extra in (("file", []), ("off", ["--guidance-rescale", "0"]),
                        ("none_hit", ["--guidance-rescale", "1", "--guidance-rescale-t", "990",
                                      "995"])):
        g = str(tmp_path / f"{name}.png")
        assert main(["sample", p, "-n", "2", "--skip", "200", "--mode", "mode", "--impl", "ref",
                     "--grid", g] + extra) == 0
        grids[name] = np.asarray(Image.open(g))
    # the file's rescale is used by default; off and a range missing the grid agree
    assert not np.array_equal(grids["file"], grids["off"])
    assert np.array_equal(grids["off"], grids["none_hit"])
    assert main(["sample", p, "-n", "1", "--guidance-rescale-t", "0", "10"]) == 2
    assert "needs --guidance-rescale" in capsys.readouterr().err


def test_set_guidance_rescale_and_sampling_record():
    s = Sampler(with_guide(guided_dict(2.0)), impl="ref")
    s.set_guidance_rescale(0.7, (300, 800))
    assert (s.guidance_rescale, s.guidance_rescale_t) == (0.7, (300, 800))
    assert s.sampling_record(2.5) == {"guidance": 2.5, "guidance_rescale": 0.7,
                                      "guidance_rescale_t": [300, 800]}
    # guidance 1 samples the prior alone: nothing is rescaled, and the record says so
    assert s.sampling_record(1.0) == {"guidance": 1.0, "guidance_rescale": 0.0,
                                      "guidance_rescale_t": None}
    # a bad value is refused at once and leaves the setting as it was
    for phi, tr in ((1.5, None), (0.5, (800, 300)), (0.5, (0, 5000))):
        with pytest.raises(ValueError, match="Sampler.guidance_rescale"):
            s.set_guidance_rescale(phi, tr)
        assert (s.guidance_rescale, s.guidance_rescale_t) == (0.7, (300, 800))


def test_sample_conditional_dir_guidance_rescale(tmp_path):
    """The directory job's ``guidance_rescale`` override samples what the Sampler samples with
    that setting, records it per image, and leaves a Sampler passed in unchanged."""
    import json

    from PIL import Image

    from d2c_fast import Attribute
    from d2c_fast.attributes import LinearClassifier
    from d2c_fast.jobs import sample_conditional_dir
    s = Sampler(with_guide(guided_dict(2.0)), impl="ref")
    D = int(np.prod(s.latent_shape))
    w = torch.randn(D, generator=torch.Generator().manual_seed(0))
    attr = Attribute(None, name="planted", classifier=LinearClassifier(
        0.5 * w / w.norm(), 0.0, s.mean, s.std, prior=0.5), fingerprint=s.fingerprint,
        latent_shape=s.latent_shape)
    kw = dict(seed=5, batch_size=8, skip=500, mode="mode")
    before = (s.guidance_rescale, s.guidance_rescale_t)
    sample_conditional_dir(s, tmp_path / "r", attr, 2, progress=False, guidance_rescale=1.0,
                           guidance_rescale_t=(0, 600), **kw)
    assert (s.guidance_rescale, s.guidance_rescale_t) == before
    plain = s.sample_conditional(attr, 2, return_probs=False, **kw)
    s.set_guidance_rescale(1.0, (0, 600))
    want = s.sample_conditional(attr, 2, return_probs=False, **kw)
    assert not torch.allclose(want, plain, atol=1e-3)   # the override matters here
    for k in range(2):
        img = np.asarray(Image.open(tmp_path / "r" / f"{k:06d}.png"), dtype=np.int16)
        ref = np.round(want[k].clamp(0, 1).numpy() * 255).astype(np.int16)
        assert np.abs(img.transpose(2, 0, 1) - ref).max() <= 1, k
        meta = json.load(open(tmp_path / "r" / f"{k:06d}.json"))
        assert (meta["guidance"], meta["guidance_rescale"], meta["guidance_rescale_t"]) == \
            (2.0, 1.0, [0, 600])
    with pytest.raises(ValueError, match="guidance_rescale_t needs"):
        sample_conditional_dir(s, tmp_path / "bad", attr, 1, progress=False,
                               guidance_rescale_t=(0, 10), **kw)
