"""The Triton GroupNorm+SiLU kernel (kernels/group_norm_silu.py) and the d2c_fast::group_norm_silu op.

Default (CI, CPU): the kernel runs under the Triton interpreter on CPU tensors, fp32 and fp16.
``D2C_FAST_TRITON_NATIVE=1`` (set by benchmarks/gpu_check.py on a GPU): the same cases run the
compiled kernel on CUDA tensors, bf16 included.

The interpreter must be on when triton is first imported, so this module sets
``TRITON_INTERPRET=1`` before importing it. When another test module of the same pytest process
already imported triton natively (a GPU box running ``pytest tests``), the kernel cases are
skipped here and run in a fresh CPU-only process instead (``test_kernel_cases_in_subprocess``).
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
from op_helpers import import_triton_or_skip, in_subprocess_only

ROOT = Path(__file__).resolve().parents[1]
NATIVE = os.environ.get("D2C_FAST_TRITON_NATIVE", "") == "1"
IN_SUBPROCESS = os.environ.get("D2C_FAST_TRITON_SUBPROCESS", "") == "1"

if NATIVE and not torch.cuda.is_available():
    pytest.skip("D2C_FAST_TRITON_NATIVE=1 needs CUDA", allow_module_level=True)


def _setup_triton(interpret: bool):
    """Import triton; for the interpreter, TRITON_INTERPRET=1 must be set before triton is
    first imported (its own @jit helpers such as tl.sum are decorated then, and submodules load
    lazily later), so it stays set for this process. Returns the kernel module, or None when
    triton was already imported the other way by another test module."""
    if interpret and "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    triton = import_triton_or_skip()
    interpreted = type(triton.language.standard.sum).__name__ == "InterpretedFunction"
    if interpreted != interpret:
        return None
    from d2c_fast.ops.group_norm_silu import import_kernel_module
    mod = import_kernel_module(KERNEL)
    if (type(getattr(mod, KERNEL_FN)).__name__ == "InterpretedFunction") != interpret:
        return None
    return mod


KERNEL, KERNEL_FN = "group_norm_silu", "_group_norm_silu_fwd_kernel"
K = _setup_triton(interpret=not NATIVE)
IN_PROCESS = K is not None
# Triton already imported natively by another module (e.g. on a GPU box): the kernel cases run
# in a fresh interpreter process instead (test_kernel_cases_in_subprocess).
needs_kernel = in_subprocess_only(not IN_PROCESS)
DEVICE = "cuda" if NATIVE else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if NATIVE else [])
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}

from d2c_fast.ops import backend_info  # noqa: E402
from d2c_fast.ops.group_norm_silu import (  # noqa: E402
    GROUP_NORM_SILU_SCHEMA, group_norm_silu, group_norm_silu_ref)


def _dtype_id(dt):
    return str(dt).replace("torch.", "").replace("float", "fp").replace("bfp", "bf")


def _make(shape, dtype, layout="nchw", add="none", seed=0):
    """x in the requested layout plus weight, bias and the optional pre-norm bias."""
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    x = torch.randn(shape, generator=g) * 2 + 0.5
    w = 1 + 0.3 * torch.randn(C, generator=g)
    b = 0.2 * torch.randn(C, generator=g)
    a = None
    if add == "nc":
        a = torch.randn(N, C, generator=g)
    elif add == "c":
        a = torch.randn(C, generator=g)
    x = x.to(DEVICE, dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "batch-slice":     # every other image of a larger batch
        x = torch.stack([x, x], dim=1)[:, 0]
    elif layout == "chan-slice":      # channels [C, 2C) of a 3C tensor
        x = torch.cat([x, x, x], dim=1)[:, C:2 * C]
    elif layout == "hw-transposed":   # H and W strides do not merge: the launcher copies
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    return x, w.to(DEVICE), b.to(DEVICE), (a.to(DEVICE) if a is not None else None)


# (N, C, H, W, layout, add): real ARCH-256 U-Net shapes (latent 8x32x32, ch 128, ch_mult
# [1,2,2,2,2]: 128..512 channels at 32..2 px), then awkward ones.
UNET_CASES = [
    ((1, 128, 32, 32), "nchw", "nc"),     # down[0] norm1/norm2
    ((1, 384, 32, 32), "cl", "nc"),       # up[0] concat (largest single-tile group: 12 x 1024)
    ((2, 256, 32, 32), "cl", "none"),     # up[0] norm1
    ((1, 256, 16, 16), "cl", "c"),        # attention level, step bias broadcast over the batch
    ((1, 512, 16, 16), "nchw", "nc"),
    ((1, 768, 8, 8), "cl", "nc"),
    ((1, 512, 4, 4), "nchw", "none"),
    ((2, 256, 2, 2), "cl", "nc"),         # mid level
    ((1, 128, 32, 32), "cl", "none"),     # norm_out
]
AWKWARD_CASES = [
    ((1, 32, 7, 5), "nchw", "nc"),        # groups == channels, odd spatial
    ((2, 32, 1, 1), "cl", "none"),        # one element per group
    ((2, 96, 7, 5), "cl", "nc"),          # 3 channels per group (not a power of two)
    ((1, 160, 9, 9), "nchw", "c"),        # 5 channels per group
    ((3, 96, 1, 1), "nchw", "nc"),
    ((8, 64, 3, 3), "cl", "nc"),          # larger batch, tiny groups
    ((2, 64, 6, 6), "batch-slice", "nc"),
    ((2, 64, 5, 7), "chan-slice", "none"),
    ((1, 64, 6, 5), "hw-transposed", "nc"),
]
CASES = [(s, lay, add, dt) for s, lay, add in UNET_CASES + AWKWARD_CASES for dt in DTYPES]


def _case_id(case):
    shape, layout, add, dt = case
    return f"{'x'.join(map(str, shape))}-{layout}-add_{add}-{_dtype_id(dt)}"


def _truth(x, w, b, a, silu=True):
    """float64 GroupNorm(+SiLU) of the same inputs, rounded to x's dtype (the fp32 reference
    itself is off by ~1e-4 when a group's variance is ~0 and rstd ~ 1/sqrt(eps) = 1e3)."""
    v = x.double()
    if a is not None:
        v = v + a.double().reshape(-1, x.shape[1])[:, :, None, None]
    y = F.group_norm(v, 32, w.double(), b.double(), 1e-6)
    return (F.silu(y) if silu else y).to(x.dtype)


def _check(y, x, w, b, a, silu=True):
    ref = _truth(x, w, b, a, silu)
    atol, rtol = TOL[x.dtype]
    assert y.dtype == x.dtype and y.shape == x.shape
    assert not torch.isnan(y).any()
    torch.testing.assert_close(y.float(), ref.float(), atol=atol, rtol=rtol)


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_kernel_matches_reference(case):
    shape, layout, add, dtype = case
    x, w, b, a = _make(shape, dtype, layout, add)
    y = K.group_norm_silu_triton(x, w, b, add=a)
    _check(y, x, w, b, a)
    if layout == "cl":
        assert y.is_contiguous(memory_format=torch.channels_last)
    elif layout == "nchw":
        assert y.is_contiguous()


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 64, 5, 7), (2, 96, 7, 5)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_plain_group_norm_no_silu(shape, layout):
    x, w, b, _ = _make(shape, torch.float32, layout)
    _check(K.group_norm_silu_triton(x, w, b, silu=False), x, w, b, None, silu=False)


MULTI_CASES = [((2, 96, 7, 5), "nchw", "nc"), ((1, 64, 9, 9), "cl", "c"), ((1, 32, 5, 3), "nchw", "none")]


@needs_kernel
@pytest.mark.parametrize("case", MULTI_CASES,
                         ids=[f"{'x'.join(map(str, s))}-{lay}-add_{a}" for s, lay, a in MULTI_CASES])
def test_multi_tile_path(case, monkeypatch):
    """The looped path (groups larger than one register tile), forced on small shapes by
    shrinking the tile: several chunks, a masked tail."""
    shape, layout, add = case
    monkeypatch.setattr(K, "MAX_TILE_ELEMS", 64)
    x, w, b, a = _make(shape, torch.float32, layout, add)
    _check(K.group_norm_silu_triton(x, w, b, add=a), x, w, b, a)


@needs_kernel
def test_multi_tile_real_size():
    """A group of 130x130 (> MAX_TILE_ELEMS) with a large mean: Chan's merge keeps it stable."""
    x, w, b, a = _make((1, 32, 130, 130), torch.float32, "nchw", "nc")
    x = x + 100.0
    _check(K.group_norm_silu_triton(x, w, b, add=a), x, w, b, a)


@needs_kernel
def test_out_argument_and_errors():
    x, w, b, a = _make((1, 64, 4, 4), torch.float32, "cl", "nc")
    out = torch.empty_like(x)
    assert K.group_norm_silu_triton(x, w, b, add=a, out=out) is out
    _check(out, x, w, b, a)
    with pytest.raises(ValueError, match="divisible"):
        K.group_norm_silu_triton(x[:, :48], w[:48], b[:48])
    with pytest.raises(ValueError, match="4-D"):
        K.group_norm_silu_triton(x[0], w, b)
    with pytest.raises(ValueError, match="add"):
        K.group_norm_silu_triton(x, w, b, add=a[:, :10])


# --- the dispatcher op --------------------------------------------------------------------------

def test_schema_and_namespace():
    assert str(torch.ops.d2c_fast.group_norm_silu.default._schema) == \
        f"d2c_fast::{GROUP_NORM_SILU_SCHEMA}".replace("1e-06", "9.9999999999999995e-07")
    assert hasattr(torch.ops.d2c_fast, "bn_swish")  # defining ours left the C++/DEF schema alone


OPCHECK_CASES = [((2, 64, 5, 7), "nchw", "nc", torch.float32), ((1, 96, 4, 4), "cl", "c", torch.float16),
                 ((2, 32, 3, 3), "cl", "none", torch.float32)]


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=[_case_id(c) for c in OPCHECK_CASES])
def test_opcheck(case):
    shape, layout, add, dtype = case
    x, w, b, a = _make(shape, dtype, layout, add)
    torch.library.opcheck(torch.ops.d2c_fast.group_norm_silu.default, (x, w, b, a, 1e-6, 32, True))
    y = group_norm_silu(x, w, b, a)
    _check(y, x, w, b, a)
    assert y.stride() == torch.empty_like(x).stride()


def test_op_input_errors():
    x, w, b, a = _make((1, 64, 4, 4), torch.float32)
    with pytest.raises(RuntimeError, match="divisible"):
        group_norm_silu(x, w, b, num_groups=48)
    with pytest.raises(RuntimeError, match="weight"):
        group_norm_silu(x, w[:32], b)
    with pytest.raises(RuntimeError, match="4-D"):
        group_norm_silu(x[0], w, b)
    with pytest.raises(ValueError, match="impl"):
        group_norm_silu(x, w, b, impl="nope")


def test_backend_info():
    info = backend_info(DEVICE)["group_norm_silu"]
    assert info["kernel"] == ("triton" if NATIVE else "ref"), info


def test_schemas_without_extension():
    """With d2c_fast._C absent, bn_swish.py defines the namespace (DEF) and our FRAGMENT
    schemas still register: all three ops run in a fresh process."""
    code = textwrap.dedent("""
        import warnings, torch
        warnings.simplefilter("ignore")
        import d2c_fast.ops as ops
        x = torch.randn(1, 32, 3, 3)
        c = torch.ones(32)
        torch.ops.d2c_fast.bn_swish(x, c, c)
        torch.ops.d2c_fast.group_norm_silu(x, c, c)
        torch.ops.d2c_fast.ddim_step(x, x, torch.tensor([1.0, 0.5, 1.0, 0.0, 0.5]), None)
        print(sorted(ops.OPS))
    """)
    env = dict(os.environ, D2C_FAST_DISABLE_EXT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "group_norm_silu" in r.stdout


@in_subprocess_only(IN_PROCESS or IN_SUBPROCESS)   # the kernel cases ran in this process
def test_kernel_cases_in_subprocess():
    """The interpreter cases of this file in a fresh CPU-only process (triton was imported
    natively here, and the interpreter must be on when triton is first imported)."""
    env = dict(os.environ, TRITON_INTERPRET="1", D2C_FAST_TRITON_SUBPROCESS="1",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    env.pop("D2C_FAST_TRITON_NATIVE", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                        __file__], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
