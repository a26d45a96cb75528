"""Tests of d2c_fast::se_residual (csrc/cpu/se_residual*.{cpp,h}, d2c_fast/ops/se_residual.py).

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

from d2c_fast.ops import (SE_RESIDUAL_SCHEMA, backend_info, has_compiled_kernel, se_residual,
                          se_residual_ref)
from d2c_fast.ops.dwconv_bias_swish import output_memory_format

from op_helpers import require_cpu_kernel

ROOT = Path(__file__).resolve().parents[1]
OP = "se_residual"
FP32_TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture
def cpu_kernel():
    """Skip without the compiled CPU kernel, unless D2C_FAST_REQUIRE_EXT=1 (then fail)."""
    require_cpu_kernel(OP)


def _params(C, seed=0):
    """The official SE: Linear(C, max(C // 16, 4)), ReLU, Linear(., C), Sigmoid."""
    torch.manual_seed(seed)
    Ch = max(C // 16, 4)
    fc1, fc2 = torch.nn.Linear(C, Ch), torch.nn.Linear(Ch, C)
    return [p.detach().clone() for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias)]


def _tensor(shape, dtype=torch.float32, layout="nchw", seed=1):
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":
        wide = torch.randn(shape[:3] + (2 * shape[3],), generator=g).to(dtype)
        return wide.contiguous(memory_format=torch.channels_last)[..., ::2]
    if layout == "transposed":
        return torch.randn(shape[:2] + (shape[3], shape[2]), generator=g).to(dtype).transpose(2, 3)
    x = torch.randn(shape, generator=g).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "cl" else x


SHAPES = [
    (1, 48, 128, 128), (1, 96, 64, 64), (1, 192, 32, 32), (1, 24, 256, 256),  # ARCH-256 SE inputs
    (1, 1, 7, 5), (3, 3, 7, 5), (1, 17, 7, 5), (3, 100, 7, 5), (1, 17, 1, 1), (3, 100, 2, 3),
    (2, 48, 33, 31), (1, 1152, 3, 4),
]
LAYOUTS = ["nchw", "cl", "strided", "transposed"]


def _sid(s):
    return "x".join(map(str, s))


def test_schema_single_source():
    text = (ROOT / "d2c_fast" / "ops" / "schemas.def").read_text()
    assert f'"{SE_RESIDUAL_SCHEMA}"' in text, "schema string differs between Python and C++"
    assert str(torch.ops.d2c_fast.se_residual.default._schema) == f"d2c_fast::{SE_RESIDUAL_SCHEMA}"


def test_backend_info_reports_cpp(cpu_kernel):
    assert backend_info("cpu")[OP]["kernel"] == "cpp-cpu"
    assert backend_info("meta")[OP]["kernel"] == "ref"


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_matches_reference(shape, layout):
    s = _tensor(shape, layout=layout)
    skip = _tensor(shape, layout="cl" if layout == "nchw" else "nchw", seed=2)  # mixed layouts
    w1, b1, w2, b2 = _params(shape[1])
    y = se_residual(s, skip, w1, b1, w2, b2, 0.1)
    assert y.shape == s.shape and y.dtype == s.dtype
    assert y.is_contiguous(memory_format=output_memory_format(s))
    torch.testing.assert_close(y, se_residual_ref(s, skip, w1, b1, w2, b2, 0.1), **FP32_TOL)


def test_matches_official_module_composition():
    s, skip = _tensor((2, 96, 9, 8), layout="cl"), _tensor((2, 96, 9, 8), layout="cl", seed=3)
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(96, 6), torch.nn.Linear(6, 96)
    with torch.no_grad():
        eager = skip + 0.1 * s * torch.sigmoid(fc2(torch.relu(fc1(s.mean((2, 3))))))[:, :, None, None]
        y = se_residual(s, skip, fc1.weight, fc1.bias, fc2.weight, fc2.bias, 0.1)
    torch.testing.assert_close(y, eager, **FP32_TOL)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -2.5])
def test_alpha(alpha):
    s, skip = _tensor((2, 20, 5, 6)), _tensor((2, 20, 5, 6), seed=4)
    p = _params(20)
    torch.testing.assert_close(se_residual(s, skip, *p, alpha), se_residual_ref(s, skip, *p, alpha), **FP32_TOL)


@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("layout", ["nchw", "cl", "strided"])
def test_bfloat16_rule(shape, layout):
    """bf16 error vs the fp32 reference (same bf16 inputs) <= 2x plain bf16 PyTorch's + floor."""
    s = _tensor(shape, torch.bfloat16, layout)
    skip = _tensor(shape, torch.bfloat16, layout, seed=2)
    w1, b1, w2, b2 = _params(shape[1])
    y = se_residual(s, skip, w1, b1, w2, b2, 0.1)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=output_memory_format(s))
    ref32 = se_residual_ref(s.float(), skip.float(), w1, b1, w2, b2, 0.1)
    bw = [t.bfloat16() for t in (w1, b1, w2, b2)]
    gate = torch.sigmoid(F.linear(torch.relu(F.linear(s.mean((2, 3)), bw[0], bw[1])), bw[2], bw[3]))
    low = skip + 0.1 * s * gate[:, :, None, None]
    err = (y.float() - ref32).abs().max().item()
    err_low = (low.float() - ref32).abs().max().item()
    assert err <= 2 * err_low + 1e-3, f"error {err} vs plain bf16 error {err_low}"


def test_empty():
    p = _params(4)
    s = torch.empty(0, 4, 3, 3)
    assert se_residual(s, s, *p).shape == s.shape


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads, cpu_kernel):
    s, skip = _tensor((2, 40, 37, 35), layout="cl"), _tensor((2, 40, 37, 35), layout="cl", seed=5)
    p = _params(40)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base = se_residual(s, skip, *p)
        torch.set_num_threads(threads)
        assert torch.equal(se_residual(s, skip, *p), base)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_isa_copies_agree(capability, cpu_kernel):
    code = textwrap.dedent("""
        import torch
        from d2c_fast.ops import se_residual, se_residual_ref
        torch.manual_seed(0)
        for shape in [(2, 17, 9, 7), (1, 100, 5, 3), (3, 48, 16, 16)]:
            C, Ch = shape[1], max(shape[1] // 16, 4)
            p = [torch.randn(Ch, C) * 0.3, torch.randn(Ch) * 0.1, torch.randn(C, Ch) * 0.3, torch.randn(C) * 0.1]
            for dt in (torch.float32, torch.bfloat16):
                for cl in (False, True):
                    s, k = torch.randn(shape).to(dt), torch.randn(shape).to(dt)
                    if cl:
                        s = s.contiguous(memory_format=torch.channels_last)
                    tol = dict(rtol=1e-5, atol=1e-6) if dt == torch.float32 else dict(rtol=1.6e-2, atol=1e-2)
                    torch.testing.assert_close(se_residual(s, k, *p, 0.1), se_residual_ref(s, k, *p, 0.1), **tol)
        print(torch.backends.cpu.get_cpu_capability())
    """)
    env = dict(os.environ, D2C_FAST_CPU_ISA=capability)   # our copies only: ATen stays on its own
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_bad_inputs(impl):
    s = torch.randn(2, 8, 4, 4)
    w1, b1, w2, b2 = _params(8)
    with pytest.raises(RuntimeError, match="4-D"):
        se_residual(torch.randn(2, 8, 4), torch.randn(2, 8, 4), w1, b1, w2, b2, impl=impl)
    with pytest.raises(RuntimeError, match="skip must have s's shape"):
        se_residual(s, torch.randn(2, 8, 4, 5), w1, b1, w2, b2, impl=impl)
    with pytest.raises(RuntimeError, match="skip must have s's dtype"):
        se_residual(s, s.bfloat16(), w1, b1, w2, b2, impl=impl)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        se_residual(s.double(), s.double(), w1, b1, w2, b2, impl=impl)
    with pytest.raises(RuntimeError, match="w1 must be"):
        se_residual(s, s, w1[:, :5], b1, w2, b2, impl=impl)
    with pytest.raises(RuntimeError, match="b1 must be"):
        se_residual(s, s, w1, b1[:2], w2, b2, impl=impl)
    with pytest.raises(RuntimeError, match="w2 must be"):
        se_residual(s, s, w1, b1, w2.T.contiguous(), b2, impl=impl)
    with pytest.raises(RuntimeError, match="b2 must be"):
        se_residual(s, s, w1, b1, w2, b2[:3], impl=impl)
    with pytest.raises(RuntimeError, match="must be float32"):
        se_residual(s, s, w1.double(), b1, w2, b2, impl=impl)


def test_bad_impl():
    s = torch.randn(1, 4, 2, 2)
    with pytest.raises(ValueError, match="impl"):
        se_residual(s, s, *_params(4), impl="triton")


OPCHECK_CASES = [
    ((2, 5, 7, 6), torch.float32, "nchw"),
    ((2, 17, 7, 6), torch.float32, "cl"),
    ((1, 16, 9, 9), torch.bfloat16, "cl"),
    ((1, 6, 8, 7), torch.float32, "strided"),
]


@pytest.mark.parametrize("shape,dtype,layout", OPCHECK_CASES)
def test_opcheck(shape, dtype, layout, cpu_kernel):
    s, skip = _tensor(shape, dtype, layout), _tensor(shape, dtype, layout, seed=2)
    torch.library.opcheck(torch.ops.d2c_fast.se_residual.default, (s, skip, *_params(shape[1]), 0.1))


def test_torch_compile_fullgraph():
    p = _params(17)

    def f(s, skip):
        return se_residual(s * 2.0, skip, *p, 0.1) - 1.0

    compiled = torch.compile(f, fullgraph=True)
    for layout in ("nchw", "cl"):
        s, skip = _tensor((2, 17, 9, 7), layout=layout), _tensor((2, 17, 9, 7), layout=layout, seed=2)
        torch.testing.assert_close(compiled(s, skip), se_residual_ref(s * 2.0, skip, *p, 0.1) - 1.0, **FP32_TOL)


def test_disabled_extension_falls_back_to_reference():
    code = textwrap.dedent("""
        import json, warnings
        warnings.simplefilter("ignore")
        import torch
        import d2c_fast.ops as ops
        s = torch.randn(2, 8, 5, 3).contiguous(memory_format=torch.channels_last)
        k = torch.randn(2, 8, 5, 3)
        p = [torch.randn(4, 8), torch.randn(4), torch.randn(8, 4), torch.randn(8)]
        y = ops.se_residual(s, k, *p, 0.1)
        print(json.dumps({
            "same": torch.equal(y, ops.se_residual_ref(s, k, *p, 0.1)),
            "cl": y.is_contiguous(memory_format=torch.channels_last),
            "kernel": ops.backend_info()["se_residual"]["kernel"],
            "has_cpu": ops.has_compiled_kernel("se_residual", "cpu"),
        }))
    """)
    env = dict(os.environ, D2C_FAST_DISABLE_EXT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"same": True, "cl": True, "kernel": "ref", "has_cpu": False}


def test_require_ext_fails_without_kernel(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(Path(__file__)), "-k", "test_backend_info_reports_cpp"],
        env=dict(os.environ, D2C_FAST_DISABLE_EXT="1", D2C_FAST_REQUIRE_EXT="1"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode != 0 and "D2C_FAST_REQUIRE_EXT=1" in r.stdout, r.stdout[-2000:]
