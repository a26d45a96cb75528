"""``diffusion.compile``: stage 2 with the U-Net under ``torch.compile`` (inductor) trains
the same model as eager (fp32, no dropout: to rounding), and resumes bitwise like eager."""
import copy
import tempfile

import pytest
import torch

from d2c_fast.eval.metrics import rel_error
from d2c_fast.train import TrainConfig
from d2c_fast.train.diffusion import DiffusionTrainer
from d2c_fast.train.engine import DistInfo
from d2c_fast.train.testing import state_tensors, tiny_train_dict

STEPS = 6


def _tc(compiled):
    d = tiny_train_dict(diffusion_steps=STEPS)
    d["model"]["diffusion"]["model"]["dropout"] = 0.0
    d["diffusion"]["compile"] = compiled
    return TrainConfig.from_dict(d)


def _run(tc, lat, stop, state=None, start=0):
    with tempfile.TemporaryDirectory() as out:
        tr = DiffusionTrainer(tc, tc.model_config(), lat, out, DistInfo())
        if state is not None:
            tr.load_state_dict(state)
        losses = [tr.train_step(s)[0]["loss"] for s in range(start, stop)]
        return copy.deepcopy(tr.state_dict()), losses, tr


def test_compiled_stage2_matches_eager_and_resumes_bitwise():
    pytest.importorskip("torch._inductor")
    torch.set_num_threads(1)
    tc_e, tc_c = _tc(False), _tc(True)
    lat = torch.randn(64, *tc_e.model_config().latent_shape,
                      generator=torch.Generator().manual_seed(0))
    sd_e, loss_e, tr_e = _run(tc_e, lat, STEPS)
    sd_c, loss_c, tr_c = _run(tc_c, lat, STEPS)
    assert tr_c.ddp is not tr_c.unet and tr_e.ddp is tr_e.unet   # really compiled
    for a, b in zip(loss_e, loss_c):
        assert abs(a - b) <= 1e-5 * abs(a), (loss_e, loss_c)
    # Adam turns rounding-level gradient differences of near-zero gradients into lr-sized
    # steps, so compare the runs' distance with the distance training moved the weights
    _, _, fresh = _run(tc_e, lat, 0)
    w0 = fresh.unet.state_dict()
    moved = sum((v - w0[k]).pow(2).sum() for k, v in sd_e["unet"].items()).sqrt()
    apart = sum((v - sd_c["unet"][k]).pow(2).sum() for k, v in sd_e["unet"].items()).sqrt()
    print(f"compiled vs eager: {float(apart / moved):.2e} of the training's movement")
    assert moved > 0 and apart / moved < 1e-2
    # checkpoints hold the plain module's keys (no "_orig_mod." prefix)
    assert sd_c["unet"].keys() == sd_e["unet"].keys()
    # killed after 3 steps and resumed from its state: bitwise the straight compiled run
    half, _, _ = _run(tc_c, lat, 3)
    sd_r, _, _ = _run(tc_c, lat, STEPS, state=half, start=3)
    a, b = state_tensors(sd_c), state_tensors(sd_r)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def test_compiled_bf16_backward_reaches_every_layer():
    """Compiled under bf16 autocast, a U-Net with an upsampling level gets the gradients of
    eager fp32 to bf16 rounding in every tensor. With ``F.interpolate`` in the compiled
    graph, inductor returned exact zeros for every tensor below the first upsampling (67 of
    this U-Net's 114), which is why compiled bf16 training once learnt a much worse prior."""
    pytest.importorskip("torch._inductor")
    from d2c_fast.train.diffusion import noise_estimation_loss
    from d2c_fast.train.engine import autocast
    torch.set_num_threads(1)
    d = tiny_train_dict(diffusion_steps=STEPS)
    d["model"]["diffusion"]["model"].update(dropout=0.0, ch_mult=[1, 2], num_res_blocks=1,
                                            attn_resolutions=[])
    tc = TrainConfig.from_dict(d)
    mc = tc.model_config()
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(16, *mc.latent_shape, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    e = torch.randn(lat.shape, generator=g)
    with tempfile.TemporaryDirectory() as out:
        tr = DiffusionTrainer(tc, mc, lat, out, DistInfo())
    unet = tr.unet
    assert any(isinstance(m, torch.nn.Conv2d) and n.endswith("upsample.conv")
               for n, m in unet.named_modules())

    def grads(model, amp):
        unet.zero_grad(set_to_none=True)
        with autocast(torch.device("cpu"), amp):
            loss = noise_estimation_loss(model, lat, t, e, tr.abar, mc.unet.prediction, 0.0)
        loss.backward()
        return {n: p.grad.detach().clone() for n, p in unet.named_parameters()}

    ref = grads(unet, "none")
    comp = grads(torch.compile(unet), "bf16")
    lost = [n for n, v in ref.items() if v.abs().max() > 1e-6 and comp[n].abs().max() == 0]
    assert not lost, f"{len(lost)} of {len(ref)} tensors without gradient: {lost[:4]}"
    a = torch.cat([v.flatten() for v in comp.values()])
    b = torch.cat([v.flatten() for v in ref.values()])
    err = rel_error(a, b)
    print(f"compiled bf16 vs eager fp32 gradients: {err:.2e} relative")
    assert err < 0.05


def test_compile_value_checked():
    from d2c_fast import ConfigError
    d = tiny_train_dict()
    d["diffusion"]["compile"] = "yes"
    with pytest.raises(ConfigError, match="train.diffusion.compile"):
        TrainConfig.from_dict(d)
    for amp in ("none", "bf16"):
        d["diffusion"].update(compile=True, amp=amp)
        assert TrainConfig.from_dict(d).diffusion.compile is True
