"""The inference plan (impl="fast") against the reference modules, for every official cell
type: folding weight norm / BatchNorm and the fused ops must not change the function."""
import copy

import pytest
import torch

from d2c_fast import Sampler
from d2c_fast.config import _ARCH_INSTANCES
from d2c_fast.eval.metrics import rel_error
from d2c_fast.models.plan import build_fast_autoencoder
from d2c_fast.checkpoint.random_init import random_model


def tiny_config(arch, **ae_over):
    ae = dict(dataset="celeba_32", arch_instance=arch, num_x_bits=5, num_latent_scales=2,
              num_groups_per_scale=2, num_latent_per_group=4, num_channels_enc=16,
              num_preprocess_blocks=1, num_preprocess_cells=2, num_cell_per_cond_enc=1,
              num_channels_dec=16, num_postprocess_blocks=1, num_postprocess_cells=2,
              num_cell_per_cond_dec=1, use_se=True, latent_dim=8, resolution=32)
    ae.update(ae_over)
    d = ae["latent_dim"]
    return {"autoencoder": ae, "diffusion": {
        "data": {"image_size": d, "channels": ae["num_latent_per_group"]},
        "model": {"in_channels": ae["num_latent_per_group"], "out_ch": ae["num_latent_per_group"],
                  "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4],
                  "resamp_with_conv": True},
        "diffusion": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                      "num_diffusion_timesteps": 1000}}}


@pytest.mark.parametrize("arch", sorted(_ARCH_INSTANCES))
def test_fast_plan_matches_reference(arch):
    m = random_model(tiny_config(arch), seed=1)
    ref = Sampler(m, impl="ref")
    fast = Sampler(m, impl="fast")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    z = ref.encode(x)
    assert rel_error(fast.encode(x), z) < 1e-5
    assert rel_error(fast.decode_logits(z), ref.decode_logits(z)) < 1e-5
    zt = torch.randn(3, *ref.latent_shape)
    t = torch.tensor([0.0, 421.0, 999.0])
    assert rel_error(fast.unet(zt, t), ref.unet(zt, t)) < 1e-5


def test_fast_plan_channels_last_input_and_no_side_effects():
    m = random_model(tiny_config("res_mbconv"), seed=2)
    before = copy.deepcopy(m.autoencoder.state_dict())
    fast = build_fast_autoencoder(m.autoencoder)
    for k, v in m.autoencoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = fast.encode(x)
        b = fast.encode(x.contiguous(memory_format=torch.channels_last))
        r = m.autoencoder.encode(x)
    assert rel_error(a, r) < 1e-5 and rel_error(b, r) < 1e-5


def test_fast_plan_unet_channels_last_on_cpu():
    """The CPU fast plan's U-Net runs channels-last (oneDNN also at batch 1) with the
    reference's values, takes and returns the default layout, and leaves the loaded model's
    U-Net as it was; the reference sampler keeps the plain module."""
    from d2c_fast.models.plan import ChannelsLastUNet
    m = random_model(tiny_config("res_mbconv"), seed=4)
    w0 = next(m.unet.parameters()).detach().clone()
    ref, fast = Sampler(m, impl="ref"), Sampler(m, impl="fast")
    assert isinstance(fast.unet_model, ChannelsLastUNet)
    assert not isinstance(ref.unet_model, ChannelsLastUNet)
    conv = next(c for c in fast.unet_model.modules() if isinstance(c, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert next(m.unet.parameters()).is_contiguous() and torch.equal(next(m.unet.parameters()), w0)
    for b in (1, 2):
        zt = torch.randn(b, *ref.latent_shape, generator=torch.Generator().manual_seed(b))
        t = torch.full((b,), 421.0)
        with torch.no_grad():
            out = fast.unet_model(zt, t)
            assert out.is_contiguous()
            assert rel_error(out, ref.unet_model(zt, t)) < 1e-5


def test_fast_plan_bfloat16_close_to_fp32():
    m = random_model(tiny_config("res_mbconv"), seed=3)
    ref = Sampler(m, impl="ref")
    fast = Sampler(m, impl="fast", dtype=torch.bfloat16)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    z = ref.encode(x)
    assert rel_error(fast.encode(x), z) < 5e-2
    assert rel_error(fast.decode_logits(z), ref.decode_logits(z)) < 5e-2
