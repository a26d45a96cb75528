"""Tests of d2c_fast::dwconv_bias_swish (csrc/cpu/dwconv*.{cpp,h}, d2c_fast/ops/dwconv_bias_swish.py).

Environment switch (CI sets it):
    D2C_FAST_REQUIRE_EXT=1    fail (instead of skip) when the compiled CPU kernel is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from d2c_fast.ops import (DWCONV_BIAS_SWISH_SCHEMA, backend_info, dwconv_bias_swish,
                          dwconv_bias_swish_ref, has_compiled_kernel)
from d2c_fast.ops.dwconv_bias_swish import output_memory_format

from op_helpers import require_cpu_kernel

ROOT = Path(__file__).resolve().parents[1]
OP = "dwconv_bias_swish"
FP32_TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture
def cpu_kernel():
    """Skip without the compiled CPU kernel, unless D2C_FAST_REQUIRE_EXT=1 (then fail)."""
    require_cpu_kernel(OP)


def _params(C, k, seed=0):
    """Folded-BN-like depthwise weights (|w| ~ 0.2) and a bias."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, 1, k, k, generator=g) * 0.2, torch.randn(C, generator=g) * 0.5


def _input(shape, dtype=torch.float32, layout="nchw", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # non-contiguous: every other column of a wider channels-last tensor
        wide = torch.randn(shape[:3] + (2 * shape[3],), generator=g).to(dtype)
        x = wide.contiguous(memory_format=torch.channels_last)[..., ::2]
        x.copy_(torch.randn(shape, generator=g).to(dtype))
        if shape[3] > 1:
            assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":  # dense but neither NCHW- nor NHWC-contiguous
        x = torch.randn(shape[:2] + (shape[3], shape[2]), generator=g).to(dtype).transpose(2, 3)
    return x


def _check_layout(y, x):
    fmt = output_memory_format(x)
    assert y.is_contiguous(memory_format=fmt), (y.stride(), fmt)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert fmt == torch.channels_last
    if x.is_contiguous():
        assert fmt == torch.contiguous_format


# (shape, k, stride, padding, dilation)
ARCH256 = [
    ((1, 288, 128, 128), 5, 1, 2, 1),
    ((1, 576, 64, 64), 5, 1, 2, 1),
    ((1, 1152, 32, 32), 5, 1, 2, 1),
    ((1, 144, 256, 256), 5, 1, 2, 1),
]
AWKWARD = [
    ((1, 1, 7, 5), 5, 1, 2, 1),
    ((3, 3, 7, 5), 3, 1, 1, 1),
    ((1, 17, 7, 5), 5, 1, 2, 1),
    ((3, 100, 7, 5), 5, 1, 2, 1),
    ((1, 17, 1, 1), 5, 1, 2, 1),      # padding bigger than the image
    ((3, 100, 2, 3), 5, 1, 2, 1),
    ((1, 17, 2, 3), 7, 1, 3, 1),
    ((1, 48, 9, 7), 5, 2, 2, 1),      # stride 2, odd sizes
    ((3, 17, 7, 5), 3, 2, 1, 1),
    ((1, 33, 8, 8), 7, 2, 3, 1),
    ((1, 24, 11, 9), 5, 1, 4, 2),     # dilation 2
    ((3, 17, 7, 6), 3, 2, 2, 2),      # dilation 2 + stride 2
    ((1, 20, 12, 13), 9, 1, 4, 1),
    ((1, 16, 13, 12), 11, 1, 5, 1),
    ((1, 19, 10, 9), 11, 2, 5, 1),
    ((2, 32, 9, 10), 5, 1, 0, 1),     # no padding
    ((2, 32, 9, 10), 4, 1, 1, 1),     # even kernel (generic path)
    ((2, 32, 9, 10), 5, 3, 2, 1),     # stride 3 (generic path)
    ((2, 35, 6, 6), 3, 1, 3, 1),      # padding > k // 2
    ((1, 64, 3, 40), 5, 1, 2, 1),
]
LAYOUTS = ["nchw", "cl", "strided", "transposed"]


def _id(case):
    shape, k, s, p, d = case
    return f"{'x'.join(map(str, shape))}-k{k}s{s}p{p}d{d}"


# --- schema / registration ----------------------------------------------------------------------

def test_schema_single_source():
    text = (ROOT / "d2c_fast" / "ops" / "schemas.def").read_text()
    assert f'"{DWCONV_BIAS_SWISH_SCHEMA}"' in text, "schema string differs between Python and C++"
    assert str(torch.ops.d2c_fast.dwconv_bias_swish.default._schema) == f"d2c_fast::{DWCONV_BIAS_SWISH_SCHEMA}"


def test_backend_info_reports_cpp(cpu_kernel):
    assert backend_info("cpu")[OP]["kernel"] == "cpp-cpu"
    assert backend_info("meta")[OP]["kernel"] == "ref"


# --- numerics --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", AWKWARD, ids=_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("swish", [True, False])
def test_float32_awkward(case, layout, swish):
    shape, k, s, p, d = case
    x = _input(shape, layout=layout)
    w, b = _params(shape[1], k)
    y = dwconv_bias_swish(x, w, b, s, p, d, swish)
    ref = dwconv_bias_swish_ref(x, w, b, s, p, d, swish)
    assert y.shape == ref.shape and y.dtype == torch.float32
    _check_layout(y, x)
    torch.testing.assert_close(y, ref, **FP32_TOL)


@pytest.mark.parametrize("case", ARCH256, ids=_id)
@pytest.mark.parametrize("layout", ["cl", "nchw"])
def test_float32_arch256(case, layout):
    shape, k, s, p, d = case
    x = _input(shape, layout=layout)
    w, b = _params(shape[1], k)
    y = dwconv_bias_swish(x, w, b, s, p, d, True)
    _check_layout(y, x)
    torch.testing.assert_close(y, dwconv_bias_swish_ref(x, w, b, s, p, d, True), **FP32_TOL)


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("k,s", [(3, 1), (5, 1), (5, 2), (7, 1), (7, 2), (3, 2)])
def test_float32_batches_and_kernels(N, k, s):
    # Row pairs cross image boundaries within one thread's range; odd Ho.
    x = _input((N, 40, 13, 11), layout="cl")
    w, b = _params(40, k)
    y = dwconv_bias_swish(x, w, b, s, k // 2, 1, True)
    torch.testing.assert_close(y, dwconv_bias_swish_ref(x, w, b, s, k // 2, 1, True), **FP32_TOL)


def test_float32_against_float64():
    x = _input((2, 21, 9, 8), layout="cl")
    w, b = _params(21, 5)
    v = F.conv2d(x.double(), w.double(), b.double(), padding=2, groups=21)
    expect = (v * torch.sigmoid(v)).float()
    torch.testing.assert_close(dwconv_bias_swish(x, w, b, 1, 2, 1, True), expect, **FP32_TOL)


def _bf16_rule(y, x, w, b, s, p, d, swish, floor=1e-3):
    """Error of bf16 `y` vs the fp32 reference on the same (bf16) input is at most 2x the error of
    plain PyTorch computing the op in bfloat16, plus a small floor."""
    ref32 = dwconv_bias_swish_ref(x.float(), w, b, s, p, d, swish)
    low = F.conv2d(x, w.bfloat16(), b.bfloat16(), stride=s, padding=p, dilation=d, groups=x.shape[1])
    if swish:
        low = F.silu(low)
    err = (y.float() - ref32).abs().max().item()
    err_low = (low.float() - ref32).abs().max().item()
    assert err <= 2 * err_low + floor, f"error {err} vs plain bf16 error {err_low}"


@pytest.mark.parametrize("case", AWKWARD[:14] + ARCH256[1:3], ids=_id)
@pytest.mark.parametrize("layout", ["nchw", "cl", "strided"])
def test_bfloat16_rule(case, layout):
    shape, k, s, p, d = case
    x = _input(shape, torch.bfloat16, layout)
    w, b = _params(shape[1], k)
    y = dwconv_bias_swish(x, w, b, s, p, d, True)
    assert y.dtype == torch.bfloat16
    _check_layout(y, x)
    _bf16_rule(y, x, w, b, s, p, d, True)


def test_bfloat16_no_swish_rounds_once():
    x = _input((2, 37, 9, 7), torch.bfloat16, "cl")
    w, b = _params(37, 5)
    y = dwconv_bias_swish(x, w, b, 1, 2, 1, False)
    # fp32 accumulation, one rounding: equal to the fp32 reference rounded to bf16 (ties aside).
    ref = dwconv_bias_swish_ref(x.float(), w, b, 1, 2, 1, False)
    torch.testing.assert_close(y.float(), ref.bfloat16().float(), rtol=8e-3, atol=1e-5)


def test_special_values():
    x = torch.zeros(1, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    w = torch.zeros(16, 1, 3, 3)
    b = torch.tensor([0.0, 1e-30, -1e-30, 30.0, -30.0, 86.0, -86.0, 100.0, -100.0, 1e30, -1e30,
                      float("inf"), 5.0, float("nan"), -3.0, 3.0])
    y = dwconv_bias_swish(x, w, b, 1, 1, 1, True)
    ref = dwconv_bias_swish_ref(x, w, b, 1, 1, 1, True)
    torch.testing.assert_close(y, ref, **FP32_TOL, equal_nan=True)
    assert torch.isnan(y[:, 13]).all() and (y[:, 11] == float("inf")).all()


def test_special_values_bf16():
    """The bf16 path's cheaper Swish (vec_math.h swish_lanes_lp): same special values, within
    bf16 rounding of the float32 reference; -inf -> NaN like PyTorch's SiLU."""
    x = torch.zeros(1, 17, 5, 5, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.zeros(17, 1, 3, 3)
    b = torch.tensor([0.0, 1e-30, -1e-30, 30.0, -30.0, 86.0, -86.0, 100.0, -100.0, 1e30, -1e30,
                      float("inf"), 5.0, float("nan"), -3.0, 3.0, float("-inf")])
    y = dwconv_bias_swish(x, w, b, 1, 1, 1, True).float()
    ref = F.silu(b).view(1, 17, 1, 1).expand_as(y).bfloat16().float()
    torch.testing.assert_close(y, ref, rtol=8e-3, atol=1e-5, equal_nan=True)
    assert torch.isnan(y[:, 13]).all() and torch.isnan(y[:, 16]).all()
    assert (y[:, 11] == float("inf")).all()


def test_empty():
    x = torch.empty(0, 4, 5, 5)
    w, b = _params(4, 3)
    assert dwconv_bias_swish(x, w, b, 1, 1, 1, True).shape == (0, 4, 5, 5)
    x = torch.empty(2, 0, 5, 5)
    assert dwconv_bias_swish(x, torch.empty(0, 1, 3, 3), torch.empty(0), 2, 1, 1, True).shape == (2, 0, 3, 3)


def test_default_padding_is_same():
    x = _input((1, 8, 6, 7), layout="cl")
    w, b = _params(8, 5)
    assert dwconv_bias_swish(x, w, b).shape == x.shape
    assert dwconv_bias_swish(x, w, b, dilation=2).shape == x.shape


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_isa_copies_agree(capability, cpu_kernel):
    """Every compiled copy (generic / AVX2 / AVX-512) matches the reference."""
    code = textwrap.dedent("""
        import torch
        import torch.nn.functional as F
        from d2c_fast.ops import dwconv_bias_swish, dwconv_bias_swish_ref
        g = torch.Generator().manual_seed(0)
        for shape, k, s, p, d in [((2, 17, 9, 7), 5, 1, 2, 1), ((1, 40, 8, 9), 3, 2, 1, 1),
                                  ((1, 33, 7, 6), 7, 1, 3, 1), ((2, 9, 6, 5), 3, 1, 2, 2),
                                  ((1, 20, 5, 6), 9, 1, 4, 1)]:
            for dt in (torch.float32, torch.bfloat16):
                for cl in (False, True):
                    x = torch.randn(shape, generator=g).to(dt)
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    w = torch.randn(shape[1], 1, k, k, generator=g) * 0.2
                    b = torch.randn(shape[1], generator=g) * 0.5
                    y = dwconv_bias_swish(x, w, b, s, p, d, True)
                    r = dwconv_bias_swish_ref(x, w, b, s, p, d, True)
                    tol = dict(rtol=1e-5, atol=1e-6) if dt == torch.float32 else dict(rtol=1.6e-2, atol=1e-2)
                    torch.testing.assert_close(y, r, **tol)
        print(torch.backends.cpu.get_cpu_capability())
    """)
    env = dict(os.environ, D2C_FAST_CPU_ISA=capability)   # our copies only: ATen stays on its own
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads, cpu_kernel):
    # Thread ranges split row pairs and images differently; results must not change at all.
    x = _input((3, 24, 11, 9), layout="cl")
    w, b = _params(24, 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base = dwconv_bias_swish(x, w, b, 1, 2, 1, True)
        torch.set_num_threads(threads)
        assert torch.equal(dwconv_bias_swish(x, w, b, 1, 2, 1, True), base)
    finally:
        torch.set_num_threads(before)


# --- bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_bad_inputs(impl):
    w, b = _params(4, 3)
    x = torch.randn(2, 4, 6, 6)
    with pytest.raises(RuntimeError, match="weight must be"):
        dwconv_bias_swish(torch.randn(2, 5, 6, 6), w, b, 1, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="4-D"):
        dwconv_bias_swish(torch.randn(2, 4, 6), w, b, 1, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        dwconv_bias_swish(x.double(), w, b, 1, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="weight must be float32"):
        dwconv_bias_swish(x, w.double(), b, 1, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="bias must be 1-D"):
        dwconv_bias_swish(x, w, b[:3], 1, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="weight must be"):
        dwconv_bias_swish(x, torch.randn(4, 1, 3, 5), b, 1, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="stride must be"):
        dwconv_bias_swish(x, w, b, 0, 1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="padding must be"):
        dwconv_bias_swish(x, w, b, 1, -1, 1, True, impl=impl)
    with pytest.raises(RuntimeError, match="dilation must be"):
        dwconv_bias_swish(x, w, b, 1, 1, 0, True, impl=impl)
    with pytest.raises(RuntimeError, match="output size is too small"):
        dwconv_bias_swish(torch.randn(1, 4, 2, 2), w, b, 1, 0, 1, True, impl=impl)


def test_bad_impl():
    with pytest.raises(ValueError, match="impl"):
        dwconv_bias_swish(torch.randn(1, 4, 4, 4), *_params(4, 3), impl="triton")


# --- dispatcher integration ------------------------------------------------------------------------

OPCHECK_CASES = [
    ((2, 5, 7, 6), torch.float32, "nchw", 5, 1, 2, 1),
    ((2, 17, 7, 6), torch.float32, "cl", 3, 2, 1, 1),
    ((1, 16, 9, 9), torch.bfloat16, "cl", 5, 1, 2, 1),
    ((1, 6, 8, 7), torch.float32, "strided", 3, 1, 2, 2),
]


@pytest.mark.parametrize("shape,dtype,layout,k,s,p,d", OPCHECK_CASES)
def test_opcheck(shape, dtype, layout, k, s, p, d, cpu_kernel):
    x = _input(shape, dtype, layout)
    w, b = _params(shape[1], k)
    torch.library.opcheck(torch.ops.d2c_fast.dwconv_bias_swish.default, (x, w, b, s, p, d, True))


def test_torch_compile_fullgraph():
    w, b = _params(17, 5)

    def f(x):
        return dwconv_bias_swish(x * 2.0, w, b, 1, 2, 1, True) + 1.0

    compiled = torch.compile(f, fullgraph=True)
    for x in (_input((2, 17, 9, 7)), _input((2, 17, 9, 7), layout="cl")):
        got = compiled(x)
        torch.testing.assert_close(got, dwconv_bias_swish_ref(x * 2.0, w, b, 1, 2, 1, True) + 1.0, **FP32_TOL)


def test_disabled_extension_falls_back_to_reference():
    code = textwrap.dedent("""
        import json, warnings
        warnings.simplefilter("ignore")
        import torch
        import d2c_fast.ops as ops
        x = torch.randn(2, 5, 7, 3).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(5, 1, 3, 3), torch.randn(5)
        y = ops.dwconv_bias_swish(x, w, b, 1, 1, 1, True)
        print(json.dumps({
            "same": torch.equal(y, ops.dwconv_bias_swish_ref(x, w, b, 1, 1, 1, True)),
            "cl": y.is_contiguous(memory_format=torch.channels_last),
            "kernel": ops.backend_info()["dwconv_bias_swish"]["kernel"],
            "has_cpu": ops.has_compiled_kernel("dwconv_bias_swish", "cpu"),
        }))
    """)
    env = dict(os.environ, D2C_FAST_DISABLE_EXT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"same": True, "cl": True, "kernel": "ref", "has_cpu": False}


def test_require_ext_fails_without_kernel(tmp_path):
    """With D2C_FAST_REQUIRE_EXT=1 and the library disabled, the kernel-dependent tests fail."""
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(Path(__file__)), "-k", "test_backend_info_reports_cpp"],
        env=dict(os.environ, D2C_FAST_DISABLE_EXT="1", D2C_FAST_REQUIRE_EXT="1"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode != 0 and "D2C_FAST_REQUIRE_EXT=1" in r.stdout, r.stdout[-2000:]
