"""End to end on a tiny model: a run killed mid-way (in either stage) and resumed gives
bitwise the same weights as a straight run; the export loads in Sampler."""
import os

import pytest
import torch
from safetensors.torch import load_file

import d2c_fast
from d2c_fast.train import TrainConfig, train
from d2c_fast.train.autoencoder import AETrainer
from d2c_fast.train.diffusion import DiffusionTrainer
from d2c_fast.train.engine import load_checkpoint
from d2c_fast.train.testing import tiny_train_dict

N_AE, N_DIF = 6, 6


def _tc():
    d = tiny_train_dict(ae_steps=N_AE, diffusion_steps=N_DIF)
    d["checkpoint_every_steps"] = 3
    return TrainConfig.from_dict(d)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[prefix + k] = v
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                if isinstance(x, dict):
                    out.update(_flat(x, f"{prefix}{k}.{i}."))
                elif isinstance(x, torch.Tensor):
                    out[f"{prefix}{k}.{i}"] = x
    return out


def _assert_same(a, b):
    fa, fb = _flat(a), _flat(b)
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
