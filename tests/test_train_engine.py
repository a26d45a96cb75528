"""Training engine pieces: config files, LR schedule, data order, EMA, RNG state, atomic
checkpoints."""
import json
import os
import random

import numpy as np
import pytest
import torch

from d2c_fast.errors import ConfigError
from d2c_fast.train.engine import (EMA, DataOrder, load_checkpoint, lr_at, make_adam, rng_state,
                                   save_checkpoint, set_rng_state)
from d2c_fast.train.config import TrainConfig
from d2c_fast.train.testing import tiny_train_dict


def test_train_config_roundtrip(tmp_path):
    tc = TrainConfig.from_dict(tiny_train_dict())
    p = tmp_path / "t.json"
    tc.save(p)
    tc2 = TrainConfig.load(p)
    assert tc2.to_dict() == tc.to_dict()
    assert tc2.ae.augment.crop_scale == [0.25, 1.0]
    assert tc2.model_config().latent_shape == (4, 4, 4)


def test_train_config_unknown_field():
    d = tiny_train_dict()
    d["ae"]["stepz"] = 3
    with pytest.raises(ConfigError, match="train.ae.stepz"):
        TrainConfig.from_dict(d)


def test_builtin_configs_load():
    here = os.path.join(os.path.dirname(__file__), "..", "d2c_fast", "configs")
    tc = TrainConfig.load(os.path.join(here, "builtin_train.json"))
    cfg = tc.model_config()
    assert cfg.resolution in (32, 64) and tc.data.kind == "faces"


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, warmup=10) == pytest.approx(0.0)
    assert lr_at(55, 100, 1.0, warmup=10) == pytest.approx(0.5)
    assert lr_at(70, 100, 2.0, cosine=False) == 2.0


def test_data_order_shards_and_determinism():
    o = DataOrder(20, 8, seed=3, stage="ae")
    seen = torch.cat([o.indices(s) for s in range(2)])
    assert len(set(seen.tolist())) == 16          # no repeats within an epoch
    assert torch.equal(o.indices(5), DataOrder(20, 8, 3, "ae").indices(5))
    r0, r1 = DataOrder(20, 8, 3, "ae", 0, 2), DataOrder(20, 8, 3, "ae", 1, 2)
    for s in range(4):
        a, b = r0.indices(s), r1.indices(s)
        assert len(a) == len(b) == 4 and not set(a.tolist()) & set(b.tolist())
        assert sorted(torch.cat([a, b]).tolist()) == sorted(o.indices(s).tolist())


def test_ema_math():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = EMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)                    # 0.9 * 1 + 0.1 * 3
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1.2))
    ema.update(lin)                    # 0.9 * 1.2 + 0.1 * 3
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1.38))
    w = EMA(lin, 0.999, warmup=True)
    assert w.rate() == pytest.approx(0.1)
    sd = ema.state_dict()
    e2 = EMA(lin, 0.9)
    e2.load_state_dict(sd)
    assert torch.equal(e2.shadow["weight"], ema.shadow["weight"]) and e2.num_updates == 2
    e2.copy_to(lin)
    assert torch.equal(lin.weight, ema.shadow["weight"])


def test_ema_update_equals_per_tensor_loop():
    """The multi-tensor update is the per-tensor ``shadow * mu + p * (1 - mu)``, bit for
    bit, over tensors of several shapes (frozen parameters left out)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.GroupNorm(5, 5),
                              torch.nn.Linear(7, 2))
    net[1].weight.requires_grad_(False)
    ema = EMA(net, 0.99, warmup=True)
    ref = {n: t.clone() for n, t in ema.shadow.items()}
    assert "1.weight" not in ref
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        mu = ema.rate()
        for n, p in net.named_parameters():
            if n in ref:
                ref[n].mul_(mu).add_(p.detach(), alpha=1 - mu)
        ema.update(net)
    assert all(torch.equal(ema.shadow[n], ref[n]) for n in ref)
    assert not torch.equal(ref["0.weight"], net[0].weight)      # it did not just copy


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_make_adam_matches_default_and_resumes(cls):
    """The fused optimizer takes the default implementation's steps (to rounding), and a
    state saved by either continues in the other."""
    torch.manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (17, 5), (1,)]
    p0 = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-2)

    def run(make, steps, start=None):
        ps = [torch.nn.Parameter(t.clone()) for t in (p0 if start is None else start[0])]
        opt = make(ps)
        if start is not None:
            opt.load_state_dict(start[1])
        for g in steps:
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
        return [p.detach().clone() for p in ps], opt.state_dict()

    fast = run(lambda ps: make_adam(cls, ps, **kw), grads)
    assert fast[1]["param_groups"][0]["fused"]       # this build has the CPU kernel
    slow = run(lambda ps: cls(ps, **kw), grads)
    moved = max((a - b).abs().max().item() for a, b in zip(slow[0], p0))
    assert moved > 1e-2
    for a, b in zip(fast[0], slow[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # a saved state carries its implementation flag, which load_state_dict restores
    for first, then, flag in ((lambda ps: cls(ps, **kw), lambda ps: make_adam(cls, ps, **kw),
                               None),
                              (lambda ps: make_adam(cls, ps, **kw), lambda ps: cls(ps, **kw),
                               True)):
        resumed = run(then, grads[3:], start=run(first, grads[:3]))
        assert resumed[1]["param_groups"][0]["fused"] == flag
        for a, b in zip(resumed[0], slow[0]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_make_adam_falls_back_without_a_fused_kernel():
    class NoFused(torch.optim.Adam):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("fused=True is not supported here")
            super().__init__(params, **kw)

    opt = make_adam(NoFused, [torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert isinstance(opt, NoFused) and not opt.param_groups[0]["fused"]


def test_rng_state_roundtrip(tmp_path):
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    st = rng_state()
    save_checkpoint(tmp_path / "r.pt", {"rng": st})
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_atomic_checkpoint_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"x": torch.ones(2)})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        save_checkpoint(p, {"x": Boom()})
    assert torch.equal(load_checkpoint(p)["x"], torch.ones(2))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []
