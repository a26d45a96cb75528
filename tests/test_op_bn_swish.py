"""Tests of d2c_fast::bn_swish (csrc/cpu/bn_swish.cpp, d2c_fast/ops/bn_swish.py).

Environment switches (CI sets the first two):
    D2C_FAST_REQUIRE_EXT=1    fail (instead of skip) when the compiled CPU kernel is missing.
    D2C_FAST_REQUIRE_CMAKE=1  fail when the CMake library (build/cmake/libd2c_fast_ops.so or
                              $D2C_FAST_CMAKE_LIB) is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from d2c_fast.ops import BN_SWISH_SCHEMA, backend_info, bn_swish, bn_swish_ref, fold_bn, has_compiled_kernel

from op_helpers import require_cpu_kernel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cpu_kernel():
    """Skip without the compiled CPU kernel, unless D2C_FAST_REQUIRE_EXT=1 (then fail)."""
    require_cpu_kernel("bn_swish")


def _params(C, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(C, generator=g) * 2 + 0.1
    shift = torch.randn(C, generator=g)
    return scale, shift


def _input(shape, dtype=torch.float32, channels_last=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


SHAPES_4D = [
    (1, 1, 7, 5), (5, 1, 64, 64), (1, 3, 7, 5), (5, 3, 1, 1), (1, 17, 7, 5), (5, 17, 64, 64),
    (1, 96, 1, 1), (5, 96, 7, 5), (1, 100, 64, 64), (5, 100, 1, 1), (2, 48, 33, 31),
]
SHAPES_2D = [(1, 1), (5, 3), (5, 17), (1, 96), (5, 100), (3, 4099)]  # 4099: per-row fallback path


def _layouts(shape):
    return [False, True] if len(shape) == 4 else [False]


CASES = [(s, cl) for s in SHAPES_4D + SHAPES_2D for cl in _layouts(s)]
CASE_IDS = [f"{'x'.join(map(str, s))}{'-cl' if cl else ''}" for s, cl in CASES]


# --- schema / registration ----------------------------------------------------------------------

def test_schema_single_source():
    text = (ROOT / "d2c_fast" / "ops" / "schemas.def").read_text()
    assert f'"{BN_SWISH_SCHEMA}"' in text, "schema string differs between Python and C++"
    assert str(torch.ops.d2c_fast.bn_swish.default._schema) == f"d2c_fast::{BN_SWISH_SCHEMA}"


def test_backend_info_reports_cpp(cpu_kernel):
    info = backend_info("cpu")
    assert info["bn_swish"]["kernel"] == "cpp-cpu"
    assert backend_info(torch.device("cpu")) == info
    assert backend_info("meta")["bn_swish"]["kernel"] == "ref"


# --- numerics --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,channels_last", CASES, ids=CASE_IDS)
def test_float32_matches_reference(shape, channels_last):
    x = _input(shape, channels_last=channels_last)
    scale, shift = _params(shape[1])
    y = bn_swish(x, scale, shift)
    ref = bn_swish_ref(x, scale, shift)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.stride() == torch.empty_like(x).stride()
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)


def test_float32_against_numpy():
    x = _input((2, 5, 6, 7))
    scale, shift = _params(5)
    v = x.double().numpy() * scale.double().numpy()[None, :, None, None] + shift.double().numpy()[None, :, None, None]
    expect = v / (1.0 + np.exp(-v))
    np.testing.assert_allclose(bn_swish(x, scale, shift).numpy(), expect, rtol=2e-6, atol=1e-5)


def _bf16_rule(y, x, scale, shift, floor=1e-4):
    """Error of `y` vs the fp32 reference is at most 2x the error of the op computed entirely in
    bf16 arithmetic, plus a small floor."""
    ref32 = bn_swish_ref(x.float(), scale, shift)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    ref_low = F.silu(x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape))
    err = (y.float() - ref32).abs().max().item()
    err_low = (ref_low.float() - ref32).abs().max().item()
    assert err <= 2 * err_low + floor, f"error {err} vs bf16-arith error {err_low}"


@pytest.mark.parametrize("shape,channels_last", CASES, ids=CASE_IDS)
def test_bfloat16_rule(shape, channels_last):
    x = _input(shape, torch.bfloat16, channels_last)
    scale, shift = _params(shape[1])
    y = bn_swish(x, scale, shift)
    assert y.dtype == torch.bfloat16 and y.stride() == torch.empty_like(x).stride()
    _bf16_rule(y, x, scale, shift)
    # computed in fp32 and rounded once: at most one bf16 ulp from the rounded fp32 reference
    torch.testing.assert_close(y, bn_swish_ref(x, scale, shift), rtol=8e-3, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_float16(channels_last):
    x = _input((3, 17, 9, 11), torch.float16, channels_last)
    scale, shift = _params(17)
    y = bn_swish(x, scale, shift)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y, bn_swish_ref(x, scale, shift), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", ["sliced", "sliced-cl", "permuted-dense", "expanded-batch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_non_contiguous(kind, dtype):
    if kind == "sliced":
        x = _input((3, 17, 20, 13), dtype)[:, :, ::2, 1:]
    elif kind == "sliced-cl":
        x = _input((3, 17, 20, 13), dtype, channels_last=True)[:, :, 1:, ::3]
    elif kind == "permuted-dense":
        x = _input((3, 20, 17, 13), dtype).permute(0, 2, 1, 3)  # dense, neither NCHW nor NHWC
    else:
        x = _input((1, 17, 6, 5), dtype).expand(4, 17, 6, 5)
    scale, shift = _params(17)
    y = bn_swish(x, scale, shift)
    assert y.stride() == torch.empty_like(x).stride()
    torch.testing.assert_close(y, bn_swish_ref(x, scale, shift), rtol=1e-6 if dtype == torch.float32 else 8e-3, atol=1e-5)


def test_special_values():
    x = torch.tensor([[0.0, 1e-30, -1e-30, 30.0, -30.0, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30,
                       float("inf"), float("-inf"), float("nan")]]).T.contiguous()  # (14, 1)
    scale, shift = torch.ones(1), torch.zeros(1)
    y, ref = bn_swish(x, scale, shift), bn_swish_ref(x, scale, shift)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5, equal_nan=True)
    assert torch.isnan(y[-1]).all() and y[-3].item() == float("inf")


def test_special_values_bf16():
    """bf16 (its cheaper Swish with AVX-512): the same special values within bf16 rounding."""
    x = torch.tensor([[0.0, 1e-30, -1e-30, 30.0, -30.0, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30,
                       float("inf"), float("-inf"), float("nan")]]).T.contiguous()
    scale, shift = torch.ones(1), torch.zeros(1)
    y = bn_swish(x.bfloat16(), scale, shift).float()
    ref = bn_swish_ref(x, scale, shift).bfloat16().float()
    torch.testing.assert_close(y, ref, rtol=8e-3, atol=1e-5, equal_nan=True)
    assert torch.isnan(y[-1]).all() and torch.isnan(y[-2]).all() and y[-3].item() == float("inf")


def test_empty():
    x = torch.empty(0, 4, 3, 3)
    assert bn_swish(x, *_params(4)).shape == x.shape


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_isa_copies_agree(capability, cpu_kernel):
    """Every compiled copy (generic / AVX2 / AVX-512) matches the reference; a capability the CPU
    lacks simply falls back to a lower one (D2C_FAST_CPU_ISA is capped by the hardware)."""
    code = textwrap.dedent("""
        import torch
        from d2c_fast.ops import bn_swish, bn_swish_ref
        for shape, cl in [((2, 17, 7, 5), False), ((2, 17, 7, 5), True), ((3, 100), False),
                          ((1, 48, 32, 32), True), ((2, 3, 16, 16), False)]:
            for dt in (torch.float32, torch.bfloat16, torch.float16):
                x = (torch.randn(shape) * 3).to(dt)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                s, b = torch.rand(shape[1]) + 0.1, torch.randn(shape[1])
                tol = dict(rtol=1e-6, atol=1e-5) if dt == torch.float32 else dict(rtol=8e-3, atol=1e-3)
                torch.testing.assert_close(bn_swish(x, s, b), bn_swish_ref(x, s, b), **tol)
        print(torch.backends.cpu.get_cpu_capability())
    """)
    env = dict(os.environ, D2C_FAST_CPU_ISA=capability)   # our copies only: ATen stays on its own
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


# --- bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_bad_inputs(impl):
    scale, shift = _params(4)
    with pytest.raises(RuntimeError, match="channels but x has C=5"):
        bn_swish(torch.randn(2, 5, 3, 3), scale, shift, impl=impl)
    with pytest.raises(RuntimeError, match="4-D .* or 2-D"):
        bn_swish(torch.randn(2, 4, 3), scale, shift, impl=impl)
    with pytest.raises(RuntimeError, match="4-D .* or 2-D"):
        bn_swish(torch.randn(2, 4, 3, 3, 1), scale, shift, impl=impl)
    with pytest.raises(RuntimeError, match="must be float32"):
        bn_swish(torch.randn(2, 4, 3, 3), scale.double(), shift, impl=impl)
    with pytest.raises(RuntimeError, match="must be 1-D"):
        bn_swish(torch.randn(2, 4, 3, 3), scale.view(2, 2), shift, impl=impl)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        bn_swish(torch.randn(2, 4, 3, 3, dtype=torch.float64), scale, shift, impl=impl)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        bn_swish(torch.ones(2, 4, 3, 3, dtype=torch.int32), scale, shift, impl=impl)


def test_bad_impl():
    with pytest.raises(ValueError, match="impl"):
        bn_swish(torch.randn(1, 4, 2, 2), *_params(4), impl="triton")


# --- dispatcher integration ------------------------------------------------------------------------

OPCHECK_CASES = [
    ((2, 5, 7, 3), torch.float32, False, False),
    ((2, 5, 7, 3), torch.bfloat16, True, False),
    ((3, 17), torch.float32, False, False),
    ((1, 4, 5, 5), torch.float32, True, True),   # requires_grad: autograd registration + formula
    ((2, 3, 4, 4), torch.float16, False, False),
]


@pytest.mark.parametrize("shape,dtype,channels_last,grad", OPCHECK_CASES)
def test_opcheck(shape, dtype, channels_last, grad, cpu_kernel):
    x = _input(shape, dtype, channels_last)
    scale, shift = _params(shape[1])
    if grad:
        x.requires_grad_(True)
        scale.requires_grad_(True)
        shift.requires_grad_(True)
    torch.library.opcheck(torch.ops.d2c_fast.bn_swish.default, (x, scale, shift))


def test_autograd_matches_reference():
    x = _input((2, 6, 5, 4)).requires_grad_(True)
    scale, shift = (t.requires_grad_(True) for t in _params(6))
    g = torch.randn(2, 6, 5, 4)
    got = torch.autograd.grad(bn_swish(x, scale, shift), (x, scale, shift), g)
    want = torch.autograd.grad(bn_swish_ref(x, scale, shift), (x, scale, shift), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph():
    scale, shift = _params(17)

    def f(x):
        return bn_swish(x * 2.0, scale, shift) + 1.0

    compiled = torch.compile(f, fullgraph=True)
    for x in (_input((2, 17, 9, 7)), _input((2, 17, 9, 7), channels_last=True)):
        torch.testing.assert_close(compiled(x), bn_swish_ref(x * 2.0, scale, shift) + 1.0, rtol=1e-6, atol=1e-5)


def test_fold_bn_matches_batchnorm():
    bn = torch.nn.BatchNorm2d(7, eps=1e-4).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    scale, shift = fold_bn(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    assert scale.dtype == torch.float32 and shift.dtype == torch.float32
    x = _input((2, 7, 6, 5))
    with torch.no_grad():
        torch.testing.assert_close(bn_swish(x, scale, shift), F.silu(bn(x)), rtol=1e-5, atol=1e-5)
    s2, b2 = fold_bn(bn.running_mean, bn.running_var, None, None, 1e-5)
    torch.testing.assert_close(s2, 1 / torch.sqrt(bn.running_var + 1e-5))


# --- fallback and standalone library (fresh interpreters) ------------------------------------------

def test_disabled_extension_falls_back_to_reference():
    code = textwrap.dedent("""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import d2c_fast.ops as ops
            import d2c_fast.ops  # a second import must not warn again
        import torch
        x = torch.randn(2, 5, 7, 3)
        s, b = torch.rand(5) + 0.1, torch.randn(5)
        same = torch.equal(ops.bn_swish(x, s, b, impl="fast"), ops.bn_swish_ref(x, s, b))
        print(json.dumps({
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught
                         if "d2c_fast" in str(w.message)],
            "same": same,
            "info": ops.backend_info(),
            "has_cpu": ops.has_compiled_kernel("bn_swish", "cpu"),
        }))
    """)
    env = dict(os.environ, D2C_FAST_DISABLE_EXT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["warnings"]) == 1, out["warnings"]
    assert out["warnings"][0].startswith("RuntimeWarning") and "reference" in out["warnings"][0]
    assert out["same"] is True
    assert out["info"]["bn_swish"]["kernel"] == "ref" and out["has_cpu"] is False


def _cmake_lib() -> Path | None:
    p = Path(os.environ.get("D2C_FAST_CMAKE_LIB", ROOT / "build" / "cmake" / "libd2c_fast_ops.so"))
    return p if p.is_file() else None


def test_cmake_library_standalone():
    lib = _cmake_lib()
    if lib is None:
        msg = "CMake library not built (cmake -S . -B build/cmake ...; see CMakeLists.txt)"
        if os.environ.get("D2C_FAST_REQUIRE_CMAKE", "") == "1":
            pytest.fail(msg + " (D2C_FAST_REQUIRE_CMAKE=1)")
        pytest.skip(msg)
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import torch
        torch.ops.load_library({str(lib)!r})
        assert "d2c_fast" not in sys.modules and not any(m.startswith("d2c_fast") for m in sys.modules)
        rng = np.random.default_rng(0)
        for shape, cl in [((2, 5, 7, 3), False), ((2, 5, 7, 3), True), ((4, 17), False)]:
            xn = (rng.standard_normal(shape) * 3).astype(np.float32)
            sn = (rng.random(shape[1]) + 0.1).astype(np.float32)
            bn = rng.standard_normal(shape[1]).astype(np.float32)
            x = torch.from_numpy(xn)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.ops.d2c_fast.bn_swish(x, torch.from_numpy(sn), torch.from_numpy(bn)).numpy()
            cs = (1, -1) + (1,) * (len(shape) - 2)
            v = xn.astype(np.float64) * sn.reshape(cs) + bn.reshape(cs)
            np.testing.assert_allclose(y, v / (1 + np.exp(-v)), rtol=2e-6, atol=1e-5)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd="/")  # not the repo root: nothing from the tree on sys.path
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_import_without_compiled_library_warns_once_and_works():
    """With d2c_fast._C unimportable (as when it was never built), `import d2c_fast` emits
    exactly one warning, a Sampler still runs, and backend_info reports the reference."""
    code = textwrap.dedent("""
        import sys, warnings
        class NoExt:
            def find_spec(self, name, path=None, target=None):
                if name == "d2c_fast._C":
                    raise ImportError("simulated: d2c_fast._C was not built")
        sys.meta_path.insert(0, NoExt())
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import d2c_fast
        msgs = [str(x.message) for x in w if "d2c_fast._C" in str(x.message)]
        assert len(msgs) == 1, msgs
        import os, torch
        from d2c_fast.checkpoint.random_init import random_model
        cfg = os.path.join(os.path.dirname(d2c_fast.__file__), "configs", "tiny64.json")
        s = d2c_fast.Sampler(random_model(cfg), impl="fast")
        assert s.encode(torch.rand(1, 3, 64, 64)).shape == (1, 4, 8, 8)
        assert d2c_fast.backend_info()["bn_swish"]["kernel"] == "ref"
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != "D2C_FAST_DISABLE_EXT"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-2000:]
