"""End to end on a tiny model: a run killed mid-way (in either stage) and resumed gives
bitwise the same weights as a straight run; the export loads in Sampler."""
import os

import pytest
import torch
from safetensors.torch import load_file

import d2c_fast
from d2c_fast.eval.metrics import rel_error
from d2c_fast.train import TrainConfig, train
from d2c_fast.train.autoencoder import AETrainer
from d2c_fast.train.diffusion import DiffusionTrainer
from d2c_fast.train.engine import load_checkpoint
from d2c_fast.train.testing import state_tensors, tiny_train_dict

N_AE, N_DIF = 6, 6


def _tc(amp="none", latent_noise=0.0):
    d = tiny_train_dict(ae_steps=N_AE, diffusion_steps=N_DIF)
    d["checkpoint_every_steps"] = 3
    d["ae"]["amp"] = d["diffusion"]["amp"] = amp
    d["ae"]["latent_noise"] = latent_noise
    return TrainConfig.from_dict(d)


def _assert_same(a, b):
    fa, fb = state_tensors(a), state_tensors(b)
    assert fa.keys() == fb.keys()
    bad = [k for k in fa if not torch.equal(fa[k], fb[k])]
    assert not bad, bad[:10]


class Killed(Exception):
    pass


def _kill_at(monkeypatch, cls, at):
    orig = cls.train_step

    def step(self, s):
        if s == at:
            raise Killed()
        return orig(self, s)

    monkeypatch.setattr(cls, "train_step", step)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    path = train(_tc(), out, resume=False)
    return out, path


@pytest.mark.parametrize("cls,at", [(AETrainer, 4), (DiffusionTrainer, 4)])
def test_resume_is_bitwise(straight, tmp_path, monkeypatch, cls, at):
    ref, ref_path = straight
    with monkeypatch.context() as m:
        _kill_at(m, cls, at)
        with pytest.raises(Killed):
            train(_tc(), tmp_path, resume=False)
    ck = load_checkpoint(os.path.join(tmp_path, f"ckpt-{cls.stage}.pt"))
    assert ck["step"] == 3 and not ck["done"]
    # a resume without resume=True is refused
    with pytest.raises(FileExistsError):
        train(_tc(), tmp_path, resume=False)
    path = train(_tc(), tmp_path, resume=True)
    for f in ("ckpt-ae.pt", "ckpt-diffusion.pt"):
        a, b = load_checkpoint(ref / f), load_checkpoint(tmp_path / f)
        assert a["step"] == b["step"] == (N_AE if "ae" in f else N_DIF)
        _assert_same(a["state"], b["state"])
    _assert_same(load_checkpoint(ref / "autoencoder.pt"), load_checkpoint(tmp_path / "autoencoder.pt"))
    ta, tb = load_file(ref_path), load_file(path)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("cls", [AETrainer, DiffusionTrainer])
def test_bf16_autocast_resume_is_bitwise(straight, tmp_path, monkeypatch, cls):
    """``amp="bf16"``: resumable bitwise too, and really in mixed precision (the weights move
    away from the fp32 run's, by little)."""
    ref = tmp_path / "straight"
    train(_tc("bf16"), ref, resume=False)
    run = tmp_path / "killed"
    with monkeypatch.context() as m:
        _kill_at(m, cls, 4)
        with pytest.raises(Killed):
            train(_tc("bf16"), run, resume=False)
    train(_tc("bf16"), run, resume=True)
    for f in ("ckpt-ae.pt", "ckpt-diffusion.pt"):
        _assert_same(load_checkpoint(ref / f)["state"], load_checkpoint(run / f)["state"])
    fp32 = load_checkpoint(straight[0] / "autoencoder.pt")
    bf16 = load_checkpoint(ref / "autoencoder.pt")
    fa, fb = state_tensors(fp32), state_tensors(bf16)
    diff = [k for k in fa if fa[k].is_floating_point() and not torch.equal(fa[k], fb[k])]
    assert diff, "amp='bf16' left the weights bitwise equal to fp32 training"
    for k in diff:
        assert torch.allclose(fa[k], fb[k], rtol=0.05, atol=0.05), k


def test_latent_noise_resume_is_bitwise(straight, tmp_path, monkeypatch):
    """Stage 1 with ``latent_noise``: its per-step draws resume bitwise too, and they change
    the trained weights."""
    ref = tmp_path / "straight"
    train(_tc(latent_noise=0.3), ref, resume=False)
    run = tmp_path / "killed"
    with monkeypatch.context() as m:
        _kill_at(m, AETrainer, 4)
        with pytest.raises(Killed):
            train(_tc(latent_noise=0.3), run, resume=False)
    train(_tc(latent_noise=0.3), run, resume=True)
    _assert_same(load_checkpoint(ref / "ckpt-ae.pt")["state"],
                 load_checkpoint(run / "ckpt-ae.pt")["state"])
    plain = state_tensors(load_checkpoint(straight[0] / "autoencoder.pt"))
    noisy = state_tensors(load_checkpoint(ref / "autoencoder.pt"))
    assert any(v.is_floating_point() and not torch.equal(v, noisy[k]) for k, v in plain.items())


def test_amp_value_checked():
    d = tiny_train_dict(ae_steps=1, diffusion_steps=1)
    d["diffusion"]["amp"] = "fp16"
    with pytest.raises(d2c_fast.ConfigError, match="train.diffusion.amp"):
        TrainConfig.from_dict(d)


def test_export_loads_in_sampler(straight):
    out, path = straight
    s = d2c_fast.Sampler(path, impl="ref")
    assert s.latent_shape == (4, 4, 4) and s.resolution == 16
    from d2c_fast.train.autoencoder import load_trained_autoencoder
    from d2c_fast.train.data import SyntheticShapes
    x = torch.stack([SyntheticShapes(4, resolution=16)[i][0] for i in range(4)])
    z = s.encode(x)
    ae = load_trained_autoencoder(out, s.config)
    with torch.no_grad():
        assert torch.allclose(z, ae.encode(x), atol=1e-5)
    st = load_file(path)
    assert not any(k.startswith("autoencoder.fc") or "encoder_k" in k for k in st)
    lat = load_checkpoint(out / "latents.pt")
    assert torch.equal(st["latent_mod.mean"], lat["mean"])
    ck = load_checkpoint(out / "ckpt-diffusion.pt")["state"]
    assert torch.equal(st["diffusion.conv_out.weight"], ck["ema"]["shadow"]["conv_out.weight"])
    fast = d2c_fast.Sampler(path)
    imgs = fast.sample(2, steps=3, seed=0)
    assert imgs.shape == (2, 3, 16, 16) and torch.isfinite(imgs).all()


def test_export_float16_unet(straight, tmp_path):
    """export_run(unet_dtype="float16"): U-Net weights stored as float16 (smaller file), the
    autoencoder and latent statistics untouched; it loads as the float32 U-Net with its
    weights rounded once to float16."""
    from d2c_fast.train.pipeline import export_run
    out, path32 = straight
    path16 = export_run(out, str(tmp_path / "m16.safetensors"), unet_dtype="float16")
    a, b = load_file(path32), load_file(path16)
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith("diffusion.") and a[k].is_floating_point():
            assert b[k].dtype == torch.float16 and torch.equal(b[k], a[k].half()), k
        else:
            assert torch.equal(a[k], b[k]), k
    assert os.path.getsize(path16) < os.path.getsize(path32)
    s32, s16 = d2c_fast.Sampler(path32, impl="ref"), d2c_fast.Sampler(path16, impl="ref")
    for (n, p32), (_, p16) in zip(s32.unet_model.named_parameters(), s16.unet_model.named_parameters()):
        assert p16.dtype == torch.float32 and torch.equal(p16, p32.half().float()), n
    z = torch.randn(2, *s32.latent_shape)
    e32, e16 = s32.unet(z, 10), s16.unet(z, 10)
    assert rel_error(e16, e32) < 1e-2
    with pytest.raises(ValueError, match="unet_dtype"):
        export_run(out, str(tmp_path / "x.safetensors"), unet_dtype="int8")


def test_export_unet_dtype_config_checked():
    d = tiny_train_dict(ae_steps=1, diffusion_steps=1)
    d["export_unet_dtype"] = "fp8"
    with pytest.raises(d2c_fast.ConfigError, match="export_unet_dtype"):
        TrainConfig.from_dict(d)
