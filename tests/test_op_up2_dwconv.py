"""Tests of d2c_fast::up2_dwconv_bias_swish: nearest x2 up-sampling + depthwise conv + bias
(+ Swish) without the up-sampled tensor (csrc/cpu/dwconv_kernel.h run_up2,
d2c_fast/ops/dwconv_bias_swish.py). Reference: F.interpolate then dwconv_bias_swish_ref.

    D2C_FAST_REQUIRE_EXT=1    fail (instead of skip) when the compiled CPU kernel is missing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from d2c_fast.ops import (UP2_DWCONV_BIAS_SWISH_SCHEMA, backend_info, has_compiled_kernel,
                          up2_dwconv_bias_swish, up2_dwconv_bias_swish_ref)
from d2c_fast.ops.dwconv_bias_swish import output_memory_format

from test_op_dwconv import FP32_TOL, LAYOUTS, _input, _params

from op_helpers import require_cpu_kernel

ROOT = Path(__file__).resolve().parents[1]
OP = "up2_dwconv_bias_swish"


@pytest.fixture
def cpu_kernel():
    require_cpu_kernel(OP)


def _naive(x, w, b, swish):
    """Independent float64 reference: materialise the up-sampled tensor by indexing."""
    H, W = x.shape[2:]
    u = x.double()[:, :, torch.arange(2 * H) // 2][:, :, :, torch.arange(2 * W) // 2]
    k = w.shape[2]
    v = F.conv2d(u, w.double(), b.double(), padding=(k - 1) // 2, groups=x.shape[1])
    return v * torch.sigmoid(v) if swish else v


# (shape, k): the ARCH-256 up cells (hidden 576 at 64 -> 128, 144 at 128 -> 256) scaled down,
# and awkward channel counts / sizes / kernel sizes.
CASES = [
    ((1, 576, 8, 8), 5), ((1, 144, 16, 16), 5),
    ((1, 1, 7, 5), 5), ((2, 17, 5, 7), 5), ((3, 100, 2, 3), 5),
    ((1, 17, 1, 1), 5),                     # 1x1 input: 2x2 output, padding everywhere
    ((1, 33, 4, 9), 3), ((1, 20, 6, 5), 7), ((2, 16, 13, 2), 9), ((1, 5, 3, 3), 1),
    ((1, 64, 3, 40), 5), ((2, 35, 7, 1), 3),
]


def _id(case):
    shape, k = case
    return f"{'x'.join(map(str, shape))}-k{k}"


def test_schema_single_source():
    text = (ROOT / "d2c_fast" / "ops" / "schemas.def").read_text()
    assert f'"{UP2_DWCONV_BIAS_SWISH_SCHEMA}"' in text
    assert str(torch.ops.d2c_fast.up2_dwconv_bias_swish.default._schema) == \
        f"d2c_fast::{UP2_DWCONV_BIAS_SWISH_SCHEMA}"


def test_backend_info_reports_cpp(cpu_kernel):
    assert backend_info("cpu")[OP]["kernel"] == "cpp-cpu"


def test_reference_is_interpolate_then_conv():
    x = _input((2, 7, 5, 6), layout="cl")
    w, b = _params(7, 5)
    torch.testing.assert_close(up2_dwconv_bias_swish_ref(x, w, b, True).double(),
                               _naive(x, w, b, True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("swish", [True, False])
def test_float32(case, layout, swish):
    shape, k = case
    x = _input(shape, layout=layout)
    w, b = _params(shape[1], k)
    y = up2_dwconv_bias_swish(x, w, b, swish)
    assert y.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3]) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=output_memory_format(x))
    torch.testing.assert_close(y, up2_dwconv_bias_swish_ref(x, w, b, swish), **FP32_TOL)
    torch.testing.assert_close(y.double(), _naive(x, w, b, swish), **FP32_TOL)


@pytest.mark.parametrize("case", CASES[:8], ids=_id)
def test_bfloat16_rule(case):
    """bf16 in/out, fp32 accumulation: error vs the fp32 reference at most 2x plain PyTorch's own
    bf16 error (up-sample + conv + SiLU in bf16), plus a small floor."""
    shape, k = case
    x = _input(shape, torch.bfloat16, "cl")
    w, b = _params(shape[1], k)
    y = up2_dwconv_bias_swish(x, w, b, True)
    assert y.dtype == torch.bfloat16
    ref32 = up2_dwconv_bias_swish_ref(x.float(), w, b, True)
    low = F.silu(F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w.bfloat16(),
                          b.bfloat16(), padding=(k - 1) // 2, groups=shape[1]))
    err = (y.float() - ref32).abs().max().item()
    err_low = (low.float() - ref32).abs().max().item()
    assert err <= 2 * err_low + 1e-3, (err, err_low)


def test_empty_batch():
    w, b = _params(4, 5)
    assert up2_dwconv_bias_swish(torch.empty(0, 4, 3, 5), w, b).shape == (0, 4, 6, 10)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads, cpu_kernel):
    x = _input((3, 24, 7, 9), layout="cl")
    w, b = _params(24, 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base = up2_dwconv_bias_swish(x, w, b)
        torch.set_num_threads(threads)
        assert torch.equal(up2_dwconv_bias_swish(x, w, b), base)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_isa_copies_agree(capability, cpu_kernel):
    code = textwrap.dedent("""
        import torch
        from d2c_fast.ops import up2_dwconv_bias_swish, up2_dwconv_bias_swish_ref
        g = torch.Generator().manual_seed(0)
        for shape, k in [((2, 17, 5, 7), 5), ((1, 40, 4, 3), 3), ((1, 33, 3, 6), 7), ((1, 20, 5, 4), 9)]:
            for dt in (torch.float32, torch.bfloat16):
                x = torch.randn(shape, generator=g).to(dt).contiguous(memory_format=torch.channels_last)
                w = torch.randn(shape[1], 1, k, k, generator=g) * 0.2
                b = torch.randn(shape[1], generator=g) * 0.5
                y = up2_dwconv_bias_swish(x, w, b, True)
                r = up2_dwconv_bias_swish_ref(x, w, b, True)
                tol = dict(rtol=1e-5, atol=1e-6) if dt == torch.float32 else dict(rtol=1.6e-2, atol=1e-2)
                torch.testing.assert_close(y, r, **tol)
    """)
    env = dict(os.environ, D2C_FAST_CPU_ISA=capability)   # our copies only: ATen stays on its own
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_bad_inputs(impl):
    w, b = _params(4, 5)
    x = torch.randn(2, 4, 6, 6)
    with pytest.raises(RuntimeError, match="up2_dwconv_bias_swish: weight must be"):
        up2_dwconv_bias_swish(torch.randn(2, 5, 6, 6), w, b, impl=impl)
    with pytest.raises(RuntimeError, match="4-D"):
        up2_dwconv_bias_swish(torch.randn(2, 4, 6), w, b, impl=impl)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        up2_dwconv_bias_swish(x.double(), w, b, impl=impl)
    with pytest.raises(RuntimeError, match="k must be odd"):
        up2_dwconv_bias_swish(x, torch.randn(4, 1, 4, 4), b, impl=impl)
    with pytest.raises(RuntimeError, match="bias must be 1-D"):
        up2_dwconv_bias_swish(x, w, b[:3], impl=impl)
    with pytest.raises(ValueError, match="impl"):
        up2_dwconv_bias_swish(x, w, b, impl="nope")


OPCHECK_CASES = [((2, 5, 7, 6), torch.float32, "nchw", 5), ((2, 17, 4, 6), torch.float32, "cl", 3),
                 ((1, 16, 5, 5), torch.bfloat16, "cl", 5), ((1, 6, 4, 7), torch.float32, "strided", 7)]


@pytest.mark.parametrize("shape,dtype,layout,k", OPCHECK_CASES)
def test_opcheck(shape, dtype, layout, k, cpu_kernel):
    x = _input(shape, dtype, layout)
    w, b = _params(shape[1], k)
    torch.library.opcheck(torch.ops.d2c_fast.up2_dwconv_bias_swish.default, (x, w, b, True))


def test_plan_uses_the_fused_op_in_up_cells():
    """ARCH-256's MBConv up cells: the plan has no separate up-sampling of the hidden tensor."""
    import torch.nn as nn
    from d2c_fast.models.plan import DWConvSwish, build_fast_autoencoder
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    from d2c_fast.models.layers import InvertedResidual
    ae = random_model(arch256_config_path(), seed=0).autoencoder
    want = sum(1 for m in ae.modules() if isinstance(m, InvertedResidual)
               and any(isinstance(c, nn.UpsamplingNearest2d) for c in m.conv))
    fa = build_fast_autoencoder(ae)
    ups = [m for m in fa.modules() if isinstance(m, DWConvSwish) and m.up2]
    assert want >= 1 and len(ups) == want
    assert not any(isinstance(m, nn.UpsamplingNearest2d) for m in fa.modules())
