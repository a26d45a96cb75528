"""The whole edit on a GPU: ``Sampler(impl="fast", device="cuda", dtype=torch.bfloat16)`` against
``impl="ref"`` (fp32) on the tiny random model; skipped without a CUDA device.

What is compared (relative L2, limit 1e-2 for bf16): the encoder latents, the edited latents
(official D2C edit: z - step * boundary, noise to t0 = 50, DDIM over range(0, 51, 50)), and the
decoder logits of the same latents. The fast decoder runs d2c_fast::se_residual (CUDA kernel when
the extension is built with CUDA) in every SE cell; TF32 is off so that the fp32 reference is
exact.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from d2c_fast import Sampler
from d2c_fast.eval.metrics import rel_error
from d2c_fast.checkpoint.random_init import random_model
from d2c_fast.ops import backend_info, has_compiled_kernel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CFG = str(Path(__file__).resolve().parents[1] / "d2c_fast" / "configs" / "tiny64.json")
LIMIT = 1e-2
REQUIRE_EXT = os.environ.get("D2C_FAST_REQUIRE_EXT", "") == "1"


@pytest.fixture(scope="module")
def loaded():
    return random_model(CFG, seed=0)


@pytest.fixture(scope="module")
def pair(loaded):
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    ref = Sampler(copy.deepcopy(loaded), impl="ref", device="cuda")
    fast = Sampler(copy.deepcopy(loaded), impl="fast", device="cuda", dtype=torch.bfloat16)
    yield ref, fast
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g)


def _direction(shape, seed=1):
    d = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


def test_decoder_kernels_registered():
    for op in ("se_residual", "dwconv_bias_swish"):
        if not has_compiled_kernel(op, "cuda"):
            msg = f"no CUDA kernel for d2c_fast::{op}: {backend_info('cuda')[op]['reason']}"
            if REQUIRE_EXT:
                pytest.fail(msg)
            pytest.skip(msg)


@pytest.mark.parametrize("n", [1, 4])
def test_edit_bf16_matches_reference(pair, n):
    ref, fast = pair
    imgs = _images(n)
    z_ref = ref.encode(imgs)
    z_fast = fast.encode(imgs)
    assert z_fast.dtype == torch.float32 and z_fast.shape == z_ref.shape
    assert rel_error(z_fast, z_ref) <= LIMIT, ("encoder latents", rel_error(z_fast, z_ref))

    attr = _direction(ref.latent_shape)
    noise = torch.randn(n, *ref.latent_shape, generator=torch.Generator().manual_seed(2)).cuda()
    # same input latents for both, so the comparison isolates the edit
    e_ref = ref.manipulate_latents(z_ref, attr, step=1.5, noise=noise)
    e_fast = fast.manipulate_latents(z_ref, attr, step=1.5, noise=noise)
    assert torch.isfinite(e_fast).all()
    assert rel_error(e_fast, e_ref) <= LIMIT, ("edited latents", rel_error(e_fast, e_ref))

    l_ref = ref.decode_logits(e_ref)
    l_fast = fast.decode_logits(e_ref)
    assert l_fast.dtype == torch.float32 and l_fast.shape == l_ref.shape
    assert torch.isfinite(l_fast).all()
    assert rel_error(l_fast, l_ref) <= LIMIT, ("logits", rel_error(l_fast, l_ref))


def test_edit_full_pipeline_and_seeds(pair):
    """manipulate(): encode, edit, decode with per-image seeds; the per-image draws do not depend
    on the batch (image 1 of a batch of 3 equals the same image alone, up to bf16 noise)."""
    _, fast = pair
    imgs = _images(3, seed=4)
    attr = _direction(fast.latent_shape, seed=5)
    full = fast.manipulate_latents(fast.encode(imgs), attr, step=1.0, seed=11)
    one = fast.manipulate_latents(fast.encode(imgs[1:2]), attr, step=1.0, seed=12)
    assert rel_error(one, full[1:2]) <= LIMIT
    out = fast.manipulate(imgs, attr, step=1.0, seed=11, mode="mode")
    assert out.shape == (3, 3, 64, 64) and out.device.type == "cuda"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
