"""The Triton kernels on a GPU, through the dispatcher (skipped without CUDA).

Low-precision rule: in bf16/fp16 the kernel's error against an fp32 reference of the same inputs
is at most twice the error of plain PyTorch run in that precision, plus a small floor.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d2c_fast import diffusion as D
from d2c_fast.ops import backend_info
from d2c_fast.ops.ddim_step import ddim_step, ddim_step_ref
from d2c_fast.ops.group_norm_silu import group_norm_silu

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# ARCH-256 U-Net GroupNorm shapes (C, H=W) and where they occur.
UNET_SHAPES = [(128, 32), (256, 32), (384, 32), (256, 16), (512, 16), (384, 16), (256, 8),
               (512, 8), (256, 4), (512, 4), (256, 2), (512, 2), (32, 7), (96, 5)]
LP_DTYPES = [torch.bfloat16, torch.float16]


def _max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


def _inputs(N, C, S, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    h = (torch.randn(N, C, S, S, device="cuda", generator=g) * 2 + 0.3)
    h = h.to(dtype).contiguous(memory_format=torch.channels_last)
    temb = torch.randn(N, C, device="cuda", generator=g).to(dtype)
    w = 1 + 0.2 * torch.randn(C, device="cuda", generator=g)
    b = 0.1 * torch.randn(C, device="cuda", generator=g)
    return h, temb, w, b


def test_triton_registered():
    info = backend_info("cuda")
    assert info["group_norm_silu"]["kernel"] == "triton", info
    assert info["ddim_step"]["kernel"] == "triton", info


@pytest.mark.parametrize("N", [1, 64])
@pytest.mark.parametrize("C,S", UNET_SHAPES, ids=[f"C{c}-{s}x{s}" for c, s in UNET_SHAPES])
@pytest.mark.parametrize("dtype", LP_DTYPES, ids=["bf16", "fp16"])
def test_group_norm_silu_low_precision_rule(N, C, S, dtype):
    """The ResNet norm2 pattern: silu(GN(h + temb[:, :, None, None]))."""
    h, temb, w, b = _inputs(N, C, S, dtype)
    want = F.silu(F.group_norm(h.float() + temb.float()[:, :, None, None], 32, w, b, 1e-6))
    torch_lp = F.silu(F.group_norm(h + temb[:, :, None, None], 32, w.to(dtype), b.to(dtype), 1e-6))
    ours = group_norm_silu(h, w, b, temb)
    assert ours.dtype == dtype and ours.is_contiguous(memory_format=torch.channels_last)
    assert _max_err(ours, want) <= 2 * _max_err(torch_lp, want) + 1e-3


@pytest.mark.parametrize("C,S", [(128, 32), (384, 32), (512, 8), (32, 7)])
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_group_norm_silu_fp32(C, S, layout):
    h, temb, w, b = _inputs(2, C, S, torch.float32)
    if layout == "nchw":
        h = h.contiguous()
    want = F.silu(F.group_norm(h.double() + temb.double()[:, :, None, None], 32, w.double(),
                               b.double(), 1e-6))
    torch.testing.assert_close(group_norm_silu(h, w, b, temb).double(), want, atol=1e-5, rtol=1e-5)
    plain = F.group_norm(h.double(), 32, w.double(), b.double(), 1e-6)
    torch.testing.assert_close(group_norm_silu(h, w, b, silu=False).double(), plain,
                               atol=1e-5, rtol=1e-5)


def test_group_norm_silu_large_group_multi_tile():
    h, temb, w, b = _inputs(2, 64, 200, torch.bfloat16)  # 2 x 40000 elements per group
    want = F.silu(F.group_norm(h.float() + temb.float()[:, :, None, None], 32, w, b, 1e-6))
    torch_lp = F.silu(F.group_norm(h + temb[:, :, None, None], 32, w.bfloat16(), b.bfloat16(), 1e-6))
    assert _max_err(group_norm_silu(h, w, b, temb), want) <= 2 * _max_err(torch_lp, want) + 1e-3


@pytest.mark.parametrize("eps_dtype", [torch.bfloat16, torch.float16, torch.float32],
                         ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("N", [1, 64])
def test_ddim_step_fp32_arithmetic(eps_dtype, N):
    sched = D.Schedule(D.beta_schedule("linear", beta_start=1e-4, beta_end=0.02, num_timesteps=1000))
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(N, 8, 32, 32, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    e = torch.randn(N, 8, 32, 32, device="cuda", generator=g).to(eps_dtype)
    z = torch.randn_like(x)
    for t, tn, eta in [(999, 900, 0.0), (600, 500, 1.0), (0, -1, 0.0)]:
        c = D.ddim_step_coeffs(sched, t, tn, eta)
        ct = torch.tensor(c, device="cuda")
        noise = z if eta > 0 else None
        want = ddim_step_ref(x, e, c, noise)
        torch.testing.assert_close(ddim_step(x, e, ct, noise), want, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(torch.ops.d2c_fast.ddim_step(x, e, ct, noise), want,
                                   atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(ddim_step(x, e.contiguous(), c, noise), want, atol=1e-5, rtol=1e-6)


def test_opcheck_cuda():
    h, temb, w, b = _inputs(2, 64, 5, torch.bfloat16)
    torch.library.opcheck(torch.ops.d2c_fast.group_norm_silu.default, (h, w, b, temb, 1e-6, 32, True))
    x = torch.randn(2, 4, 5, 5, device="cuda")
    torch.library.opcheck(torch.ops.d2c_fast.ddim_step.default,
                          (x, x.bfloat16(), torch.tensor([0.9, 0.4, 0.95, 0.1, 0.2], device="cuda"),
                           torch.randn_like(x)))


def test_kernels_under_cuda_graph():
    """Both kernels captured in a CUDA graph, replayed on new inputs and another step's
    coefficients (a row of a device table)."""
    h, temb, w, b = _inputs(4, 256, 16, torch.bfloat16)
    x = torch.randn(4, 8, 8, 8, device="cuda")
    table = torch.tensor([[0.9, 0.4, 0.95, 0.0, 0.3], [0.5, 0.8, 0.7, 0.0, 0.7]], device="cuda")
    coeffs = table[0].clone()
    eps = torch.randn_like(x).bfloat16()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        group_norm_silu(h, w, b, temb)
        ddim_step(x.clone(), eps, coeffs)
    torch.cuda.current_stream().wait_stream(s)
    xs = x.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = group_norm_silu(h, w, b, temb)
        ddim_step(xs, eps, coeffs, out=xs)
    h.copy_(torch.randn_like(h))
    xs.copy_(x)
    coeffs.copy_(table[1])
    graph.replay()
    torch.testing.assert_close(y, group_norm_silu(h, w, b, temb, impl="ref"), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(xs, ddim_step_ref(x, eps, table[1].tolist()), atol=1e-5, rtol=1e-6)
