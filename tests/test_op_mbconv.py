"""Tests of d2c_fast::mbconv, the row-streamed stride-1 MBConv body (csrc/cpu/mbconv*.{cpp,h},
d2c_fast/ops/mbconv.py): expand 1x1 + Swish, depthwise k x k + Swish, project 1x1.

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

from d2c_fast.ops import MBCONV_SCHEMA, backend_info, has_compiled_kernel, mbconv, mbconv_ref
from d2c_fast.ops.dwconv_bias_swish import output_memory_format

from test_op_dwconv import LAYOUTS, _input

from op_helpers import require_cpu_kernel

ROOT = Path(__file__).resolve().parents[1]
OP = "mbconv"
FP32_TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def cpu_kernel():
    require_cpu_kernel(OP)


def _weights(C, E, C2, k, seed=0):
    """Folded-BN-like weights: activations stay O(1) through the cell."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(E, C, 1, 1, generator=g) / C ** 0.5, torch.randn(E, generator=g) * 0.3,
            torch.randn(E, 1, k, k, generator=g) / k, torch.randn(E, generator=g) * 0.3,
            torch.randn(C2, E, 1, 1, generator=g) / E ** 0.5, torch.randn(C2, generator=g) * 0.3)


def _float64(x, we, be, wd, bd, wp, bp):
    """Independent float64 reference."""
    h = F.silu(F.conv2d(x.double(), we.double(), be.double()))
    d = F.silu(F.conv2d(h, wd.double(), bd.double(), padding=wd.shape[2] // 2, groups=h.shape[1]))
    return F.conv2d(d, wp.double(), bp.double())


# (N, C, H, W, E, C2, k): ARCH-256 decoder cells scaled down in space, then awkward ones.
CASES = [
    (1, 48, 12, 16, 288, 48, 5), (1, 96, 8, 8, 576, 96, 5), (1, 192, 4, 4, 1152, 192, 5),
    (2, 17, 5, 7, 102, 19, 5),       # channel counts off the vector width, two images
    (1, 3, 1, 1, 18, 3, 5),          # 1x1 image: padding everywhere
    (1, 8, 9, 3, 20, 8, 3),          # narrow: many rows per GEMM block
    (3, 5, 40, 3, 30, 7, 7),         # blocks must not cross images
    (1, 16, 6, 6, 40, 16, 9),        # generic k
    (1, 4, 5, 5, 9, 4, 1),           # k = 1
    (1, 24, 2, 40, 144, 24, 5),      # H < k
    (2, 32, 3, 130, 64, 32, 5),      # W > 128: one row per block
]


def _id(c):
    return "N{}C{}H{}W{}E{}C2{}k{}".format(*c)


def test_schema_single_source():
    text = (ROOT / "d2c_fast" / "ops" / "schemas.def").read_text()
    assert f'"{MBCONV_SCHEMA}"' in text
    assert str(torch.ops.d2c_fast.mbconv.default._schema) == f"d2c_fast::{MBCONV_SCHEMA}"


def test_backend_info_reports_cpp(cpu_kernel):
    assert backend_info("cpu")[OP]["kernel"] == "cpp-cpu"


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32(case, layout):
    N, C, H, W, E, C2, k = case
    x = _input((N, C, H, W), layout=layout)
    w = _weights(C, E, C2, k)
    y = mbconv(x, *w)
    assert y.shape == (N, C2, H, W) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=output_memory_format(x))
    torch.testing.assert_close(y, mbconv_ref(x, *w), **FP32_TOL)
    torch.testing.assert_close(y.double(), _float64(x, *w), **FP32_TOL)


@pytest.mark.parametrize("case", CASES[:6], ids=_id)
def test_bfloat16_rule(case):
    """bf16 in/out: error vs the fp32 reference at most 2x plain PyTorch's bf16 error + floor."""
    N, C, H, W, E, C2, k = case
    x = _input((N, C, H, W), torch.bfloat16, "cl")
    w = _weights(C, E, C2, k)
    y = mbconv(x, *w)
    assert y.dtype == torch.bfloat16
    ref32 = mbconv_ref(x.float(), *w)
    wb = [t.bfloat16() for t in w]
    h = F.silu(F.conv2d(x, wb[0], wb[1]))
    d = F.silu(F.conv2d(h, wb[2], wb[3], padding=k // 2, groups=E))
    low = F.conv2d(d, wb[4], wb[5])
    err = (y.float() - ref32).abs().max().item()
    err_low = (low.float() - ref32).abs().max().item()
    assert err <= 2 * err_low + 1e-3, (err, err_low)


def test_empty_batch():
    w = _weights(4, 12, 5, 3)
    assert mbconv(torch.empty(0, 4, 3, 5), *w).shape == (0, 5, 3, 5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads, cpu_kernel):
    """Thread ranges cut the rows differently (ring rows recomputed at the edges): results
    must not change at all."""
    x = _input((3, 16, 11, 9), layout="cl")
    w = _weights(16, 48, 16, 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base = mbconv(x, *w)
        torch.set_num_threads(threads)
        assert torch.equal(mbconv(x, *w), base)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_isa_copies_agree(capability, cpu_kernel):
    code = textwrap.dedent("""
        import torch
        from d2c_fast.ops import mbconv, mbconv_ref
        g = torch.Generator().manual_seed(0)
        for N, C, H, W, E, C2, k in [(2, 17, 5, 7, 102, 19, 5), (1, 8, 9, 3, 20, 8, 3),
                                     (1, 16, 6, 6, 40, 16, 7)]:
            x = torch.randn(N, C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
            w = (torch.randn(E, C, 1, 1, generator=g) / C ** 0.5, torch.randn(E, generator=g),
                 torch.randn(E, 1, k, k, generator=g) / k, torch.randn(E, generator=g),
                 torch.randn(C2, E, 1, 1, generator=g) / E ** 0.5, torch.randn(C2, generator=g))
            torch.testing.assert_close(mbconv(x, *w), mbconv_ref(x, *w), rtol=1e-5, atol=1e-5)
    """)
    env = dict(os.environ, D2C_FAST_CPU_ISA=capability)   # our copies only: ATen stays on its own
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_bad_inputs(impl):
    x = torch.randn(2, 4, 6, 6)
    we, be, wd, bd, wp, bp = _weights(4, 12, 5, 3)
    with pytest.raises(RuntimeError, match="mbconv: w_expand must be"):
        mbconv(torch.randn(2, 5, 6, 6), we, be, wd, bd, wp, bp, impl=impl)
    with pytest.raises(RuntimeError, match="4-D"):
        mbconv(torch.randn(2, 4, 6), we, be, wd, bd, wp, bp, impl=impl)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        mbconv(x.double(), we, be, wd, bd, wp, bp, impl=impl)
    with pytest.raises(RuntimeError, match="odd k"):
        mbconv(x, we, be, torch.randn(12, 1, 4, 4), bd, wp, bp, impl=impl)
    with pytest.raises(RuntimeError, match="w_project must be"):
        mbconv(x, we, be, wd, bd, torch.randn(5, 11, 1, 1), bp, impl=impl)
    with pytest.raises(RuntimeError, match="b_dw must be 1-D"):
        mbconv(x, we, be, wd, bd[:3], wp, bp, impl=impl)
    with pytest.raises(RuntimeError, match="must be float32"):
        mbconv(x, we.double(), be, wd, bd, wp, bp, impl=impl)
    with pytest.raises(ValueError, match="impl"):
        mbconv(x, we, be, wd, bd, wp, bp, impl="nope")


OPCHECK_CASES = [((2, 5, 7, 6), torch.float32, "nchw", 12, 5, 5), ((1, 17, 4, 6), torch.float32, "cl", 40, 17, 3),
                 ((1, 16, 5, 5), torch.bfloat16, "cl", 32, 16, 5), ((1, 6, 4, 7), torch.float32, "strided", 18, 6, 7)]


@pytest.mark.parametrize("shape,dtype,layout,E,C2,k", OPCHECK_CASES)
def test_opcheck(shape, dtype, layout, E, C2, k, cpu_kernel):
    x = _input(shape, dtype, layout)
    torch.library.opcheck(torch.ops.d2c_fast.mbconv.default, (x, *_weights(shape[1], E, C2, k)))


def test_plan_fuses_every_stride1_mbconv_cell_and_keeps_bf16_on_the_unfused_path():
    from d2c_fast.models.layers import InvertedResidual
    from d2c_fast.models.plan import FusedMBConv, build_fast_autoencoder
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    ae = random_model(arch256_config_path(), seed=0).autoencoder
    stride1 = sum(1 for m in ae.modules() if isinstance(m, InvertedResidual)
                  and not isinstance(m.conv[0], torch.nn.UpsamplingNearest2d))
    fa = build_fast_autoencoder(ae)
    fused = [m for m in fa.modules() if isinstance(m, FusedMBConv)]
    assert stride1 > 0 and len(fused) == stride1
    cell = fused[0]
    x = torch.randn(1, cell.we.shape[1], 6, 5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(cell(x), cell.seq(x), rtol=1e-5, atol=1e-5)
        cell16 = cell.to(torch.bfloat16)      # convs cast, fused-op constants stay fp32
        assert cell16.we.dtype == torch.float32
        y16 = cell16(x.bfloat16())
        assert y16.dtype == torch.bfloat16
        torch.testing.assert_close(y16.float(), cell.seq(x.bfloat16()).float())
