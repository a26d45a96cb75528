"""Benchmark of d2c_fast::mbconv (the row-streamed stride-1 MBConv body) vs the unfused fast
plan and the PyTorch reference, on the ARCH-256 decoder's three cell shapes (batch 1, fp32 and
bf16, channels-last).

    pytest benchmarks/bench_op_mbconv.py --benchmark-only -q

Entries:
  ref      mbconv_ref (F.conv2d expand + SiLU, depthwise F.conv2d + SiLU, F.conv2d project)
  unfused  oneDNN 1x1 conv with a Swish post-op, d2c_fast::dwconv_bias_swish, oneDNN 1x1 conv
           (bf16: bf16 weights; what the plan ran before the fused op, and still runs for bf16
           cells below 128x128)
  fast     torch.ops.d2c_fast.mbconv (C++: the hidden tensor stays in cache)
extra_info: the hidden tensor's size (what the unfused path writes and reads twice) and GFLOP/s.
"""
from __future__ import annotations

import pytest
import torch

from d2c_fast.ops import backend_info, dwconv_bias_swish, mbconv, mbconv_ref

from machine import machine_info

# (C, H, E): 48 -> 288 at 128x128, 96 -> 576 at 64x64, 192 -> 1152 at 32x32; k = 5
SHAPES = [(48, 128, 288), (96, 64, 576), (192, 32, 1152)]
K = 5


@pytest.mark.parametrize("impl", ["ref", "unfused", "fast"])
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"C{s[0]}-{s[1]}x{s[1]}-E{s[2]}")
def test_mbconv(benchmark, pedantic, shape, dtype_name, impl):
    C, H, E = shape
    dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, C, H, H, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    we, be = torch.randn(E, C, 1, 1, generator=g) / C ** 0.5, torch.randn(E, generator=g) * 0.3
    wd, bd = torch.randn(E, 1, K, K, generator=g) / K, torch.randn(E, generator=g) * 0.3
    wp, bp = torch.randn(C, E, 1, 1, generator=g) / E ** 0.5, torch.randn(C, generator=g) * 0.3
    conv = torch.ops.mkldnn._convolution_pointwise
    if impl == "ref":
        def run():
            return mbconv_ref(x, we, be, wd, bd, wp, bp)
    elif impl == "unfused":
        wec, bec, wpc, bpc = (t.to(dtype) for t in (we, be, wp, bp))

        def run():
            h = conv(x, wec, bec, [0, 0], [1, 1], [1, 1], 1, "swish", [], "")
            d = dwconv_bias_swish(h, wd, bd, 1, K // 2, 1, True)
            return conv(d, wpc, bpc, [0, 0], [1, 1], [1, 1], 1, "none", [], "")
    else:
        def run():
            return mbconv(x, we, be, wd, bd, wp, bp)
    benchmark.group = f"mbconv C{C} {H}x{H} E{E} {dtype_name} cl k{K}"
    with torch.inference_mode():
        pedantic(benchmark, run, rounds=20, warmup_rounds=3)
    flops = 2 * H * H * (C * E + K * K * E + E * C)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "impl": impl,
        "kernel": backend_info("cpu")["mbconv"]["kernel"] if impl == "fast" else impl,
        "dtype": str(dtype), "shape": [1, C, H, H], "hidden_MB": H * H * E * x.element_size() / 1e6,
        "GFLOP_per_s": flops / median_s / 1e9, **machine_info("cpu"),
    })
