"""Benchmark of d2c_fast::dwconv_bias_swish: ours vs oneDNN's fused depthwise conv + Swish vs the
PyTorch reference, with a plain copy of the input as the memory-bandwidth yardstick.

    pytest benchmarks/bench_op_dwconv.py --benchmark-only -q

One benchmark group per (shape, dtype): the depthwise 5x5 activations of the ARCH-256 decoder
(batch 1, channels-last). Entries:
  ref     dwconv_bias_swish_ref (F.conv2d(groups=C) + SiLU in float32, the eager baseline)
  onednn  torch.ops.mkldnn._convolution_pointwise(..., "swish") (bf16: bf16 weights/bias, as
          oneDNN requires one dtype)
  fast    torch.ops.d2c_fast.dwconv_bias_swish (the C++ kernel when d2c_fast._C is built)
  clone   x.clone() (one read + one write of the same number of bytes: the bandwidth yardstick)
extra_info: bytes moved (read x + write y), GB/s and, for every entry, `frac_of_clone_bw`
(clone's median time / this entry's median time, both measured in this test run).
"""
from __future__ import annotations


import pytest
import torch

from d2c_fast.ops import backend_info, dwconv_bias_swish, dwconv_bias_swish_ref

from machine import clone_median, machine_info

SHAPES = [(1, 288, 128, 128), (1, 576, 64, 64), (1, 1152, 32, 32), (1, 144, 256, 256)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
K, STRIDE, PAD, DIL = 5, 1, 2, 1


def _inputs(shape, dtype):
    """Channels-last activations, folded-BN-like k x k depthwise weights and bias (fp32)."""
    C = shape[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    return x, torch.randn(C, 1, K, K, generator=g) * 0.2, torch.randn(C, generator=g) * 0.5


@pytest.mark.parametrize("impl", ["ref", "onednn", "fast", "clone"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dwconv_bias_swish(benchmark, pedantic, shape, dtype_name, impl):
    dtype = DTYPES[dtype_name]
    C = shape[1]
    x, w, b = _inputs(shape, dtype)
    wd, bd = w.to(dtype), b.to(dtype)

    if impl == "ref":
        def run():
            return dwconv_bias_swish_ref(x, w, b, STRIDE, PAD, DIL, True)
    elif impl == "onednn":
        def run():
            return torch.ops.mkldnn._convolution_pointwise(
                x, wd, bd, [PAD, PAD], [STRIDE, STRIDE], [DIL, DIL], C, "swish", [], "")
    elif impl == "fast":
        def run():
            return dwconv_bias_swish(x, w, b, STRIDE, PAD, DIL, True)
    else:
        def run():
            return x.clone()

    benchmark.group = f"dwconv_bias_swish {'x'.join(map(str, shape))} {dtype_name} cl k{K}"
    with torch.inference_mode():
        pedantic(benchmark, run, rounds=25, warmup_rounds=3)
        clone_s = clone_median(x)
    nbytes = 2 * x.numel() * x.element_size()  # stride 1, same padding: |y| == |x|
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "impl": impl,
        "kernel": backend_info("cpu")["dwconv_bias_swish"]["kernel"] if impl == "fast" else impl,
        "dtype": str(dtype),
        "shape": list(shape),
        "layout": "channels_last",
        "bytes_moved": nbytes,
        "GB_per_s": nbytes / median_s / 1e9,
        "frac_of_clone_bw": clone_s / median_s,
        **machine_info("cpu"),
    })


# --- up cells: nearest x2 up-sampling + dwconv ---------------------------------------------------
# The ARCH-256 decoder's two big MBConv up cells (hidden 576 at 64 -> 128, 144 at 128 -> 256).
# Entries:
#   ref       up2_dwconv_bias_swish_ref (F.interpolate, then the conv + SiLU reference)
#   unfused   F.interpolate + the fast dwconv_bias_swish op (the plan before the fused op)
#   fast      torch.ops.d2c_fast.up2_dwconv_bias_swish (C++; the up-sampled tensor is never built)
UP_SHAPES = [(1, 576, 64, 64), (1, 144, 128, 128)]


@pytest.mark.parametrize("impl", ["ref", "unfused", "fast"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", UP_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_up2_dwconv_bias_swish(benchmark, pedantic, shape, dtype_name, impl):
    import torch.nn.functional as F

    from d2c_fast.ops import up2_dwconv_bias_swish, up2_dwconv_bias_swish_ref
    dtype = DTYPES[dtype_name]
    x, w, b = _inputs(shape, dtype)
    if impl == "ref":
        def run():
            return up2_dwconv_bias_swish_ref(x, w, b, True)
    elif impl == "unfused":
        def run():
            return dwconv_bias_swish(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b,
                                     1, PAD, 1, True)
    else:
        def run():
            return up2_dwconv_bias_swish(x, w, b, True)
    benchmark.group = f"up2_dwconv_bias_swish {'x'.join(map(str, shape))} {dtype_name} cl k{K}"
    with torch.inference_mode():
        pedantic(benchmark, run, rounds=15, warmup_rounds=3)
    nbytes = 5 * x.numel() * x.element_size()  # read x, write the 4x larger y
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "impl": impl,
        "kernel": backend_info("cpu")["up2_dwconv_bias_swish"]["kernel"] if impl == "fast" else impl,
        "dtype": str(dtype), "shape": list(shape), "layout": "channels_last",
        "bytes_moved": nbytes, "GB_per_s": nbytes / median_s / 1e9, **machine_info("cpu"),
    })
