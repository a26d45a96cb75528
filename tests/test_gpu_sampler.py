"""d2c_fast/gpu.py: the fast U-Net and the graph-captured DDIM loop.

CPU part (runs everywhere): the eager fallback in fp32 reproduces ``Sampler(impl="ref")``.
CUDA part (skipped without a GPU): bf16 + Triton + CUDA graphs against the fp32 reference with the
low-precision rule (error at most 2x that of plain PyTorch in the same precision, plus a floor),
graph replay vs eager, zero host synchronisations in the loop, batch-size independence.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from d2c_fast import Sampler
from d2c_fast.eval.metrics import rel_error
from d2c_fast.gpu import GRAPH_ERRORS, FastUNet, GpuSampler, UNetCallGraph
from d2c_fast.checkpoint.random_init import arch256_config_path, random_model

TINY = "d2c_fast/configs/tiny64.json"
HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.fixture(scope="module")
def tiny():
    from pathlib import Path
    return random_model(str(Path(__file__).resolve().parents[1] / TINY), seed=1)


@pytest.fixture(scope="module")
def cpu_pair(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sampler(copy.deepcopy(tiny), impl="ref"), GpuSampler(tiny, device="cpu")


# --- CPU: the eager fallback --------------------------------------------------------------------

def test_cpu_fallback_matches_reference_sampler(cpu_pair):
    ref, gs = cpu_pair
    assert gs.dtype == torch.float32 and not gs.use_graphs
    zT = torch.randn(3, *ref.latent_shape, generator=torch.Generator().manual_seed(0))
    want = ref.sample_latents(3, noise=zT)
    got = gs.sample_latents(3, noise=zT)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert rel_error(got, want) <= 1e-4
    torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(skip=200, eta=1.0, seed=5), dict(steps=4, seed=2),
                                dict(timesteps=[0, 30, 400, 999], eta=0.5, seed=9)],
                         ids=["skip200-eta1", "steps4", "timesteps-eta0.5"])
def test_cpu_fallback_sequences_and_eta(cpu_pair, kw):
    ref, gs = cpu_pair
    assert rel_error(gs.sample_latents(2, **kw), ref.sample_latents(2, **kw)) <= 1e-4


def test_cpu_unet_and_images(cpu_pair):
    ref, gs = cpu_pair
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, *ref.latent_shape, generator=g)
    t = torch.tensor([3.0, 871.0])
    assert rel_error(gs.unet_eps(x, t), ref.unet(x, t)) <= 1e-5
    img_ref = ref.sample(2, skip=250, seed=3, mode="mode")
    img = gs.sample(2, skip=250, seed=3, mode="mode")
    assert img.shape == img_ref.shape
    assert (img - img_ref).abs().max().item() <= 1e-3


def test_cpu_batch_independence(cpu_pair):
    ref, gs = cpu_pair
    zT = torch.randn(4, *ref.latent_shape, generator=torch.Generator().manual_seed(7))
    full = gs.sample_latents(4, noise=zT, skip=250)
    one = gs.sample_latents(1, noise=zT[2:3], skip=250)
    assert rel_error(one, full[2:3]) <= 1e-5


def test_fast_unet_keeps_fp32_norms_and_bias(tiny):
    fu = FastUNet(tiny.unet, dtype=torch.bfloat16, channels_last=True)
    assert fu.conv_in.weight.dtype == torch.bfloat16
    assert fu.temb.proj_w.dtype == torch.float32
    assert fu.down[0].block[0].gn.n1w.dtype == torch.float32
    fu.to(torch.float16)  # a later cast moves the convolutions only
    assert fu.conv_in.weight.dtype == torch.float16 and fu.norm_out.w.dtype == torch.float32
    assert fu.bias_width == sum(m.cout for m in fu.modules() if hasattr(m, "cout"))
    # the reference module is untouched
    assert next(tiny.unet.parameters()).dtype == torch.float32


def test_cpu_unet_call_graph_fallback(tiny):
    fu = FastUNet(tiny.unet, dtype=torch.float32, channels_last=False)
    call = UNetCallGraph(fu, 2, tiny.config.unet.in_channels)
    assert call.graph is None
    x = torch.randn(2, tiny.config.unet.in_channels, fu.resolution, fu.resolution)
    call.load(x, 250)
    want = tiny.unet(x, torch.full((2,), 250.0))
    assert rel_error(call(), want) <= 1e-5


# --- CUDA -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arch():
    return random_model(arch256_config_path(), seed=0)


@pytest.fixture
def no_tf32():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@cuda
@torch.inference_mode()
def test_cuda_fast_unet_bf16_low_precision_rule(arch, no_tf32):
    """ARCH-256 U-Net, batch 2: ours (bf16, Triton, SDPA, channels-last) vs the fp32 reference,
    at most 2x the error of the reference module itself run in bf16, plus a floor."""
    dev = "cuda"
    ref32 = copy.deepcopy(arch.unet).to(dev)
    ref16 = copy.deepcopy(arch.unet).to(dev, torch.bfloat16)
    ours = FastUNet(arch.unet, dtype=torch.bfloat16).to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *arch.config.latent_shape, generator=g).to(dev)
    t = torch.tensor([17.0, 640.0], device=dev)
    want = ref32(x, t)
    err_torch = rel_error(ref16(x.bfloat16(), t).float(), want)
    err_ours = rel_error(ours(x, t).float(), want)
    assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


@cuda
@torch.inference_mode()
def test_cuda_fp32_graph_matches_reference(tiny, no_tf32):
    ref = Sampler(copy.deepcopy(tiny), impl="ref", device="cuda")  # impl="ref" moves it in place
    gs = GpuSampler(tiny, device="cuda", dtype=torch.float32)
    assert gs.use_graphs
    zT = torch.randn(3, *ref.latent_shape, generator=torch.Generator().manual_seed(0)).cuda()
    assert rel_error(gs.sample_latents(3, noise=zT), ref.sample_latents(3, noise=zT)) <= 1e-4
    kw = dict(skip=200, eta=1.0, seed=5)
    assert rel_error(gs.sample_latents(2, **kw), ref.sample_latents(2, **kw)) <= 1e-4


@cuda
def test_cuda_fp32_graph_v_prediction_matches_reference(no_tf32):
    """A v-prediction U-Net (the built-in model's kind): the graph-captured loop converts v to
    eps from its device-resident step coefficients."""
    import json
    from pathlib import Path
    raw = json.loads((Path(__file__).resolve().parents[1] / TINY).read_text())
    raw["diffusion"]["model"].update(prediction="v", norm_groups=8)
    m = random_model(raw, seed=2)
    ref = Sampler(copy.deepcopy(m), impl="ref", device="cuda")
    gs = GpuSampler(m, device="cuda", dtype=torch.float32)
    assert gs.use_graphs and gs.predict_v
    zT = torch.randn(3, *ref.latent_shape, generator=torch.Generator().manual_seed(0)).cuda()
    assert rel_error(gs.sample_latents(3, noise=zT), ref.sample_latents(3, noise=zT)) <= 1e-4
    kw = dict(skip=200, eta=1.0, seed=5)
    assert rel_error(gs.sample_latents(2, **kw), ref.sample_latents(2, **kw)) <= 1e-4


@cuda
@torch.inference_mode()
def test_cuda_bf16_sampler_low_precision_rule(arch, no_tf32):
    """W-gen latents (skip 100, 11 U-Net calls) of ours in bf16 vs the fp32 reference, against
    the reference run in bf16."""
    ref32 = Sampler(copy.deepcopy(arch), impl="ref", device="cuda")
    ref16 = Sampler(copy.deepcopy(arch), impl="ref", device="cuda", dtype=torch.bfloat16)
    gs = GpuSampler(arch, device="cuda")
    zT = torch.randn(2, *ref32.latent_shape, generator=torch.Generator().manual_seed(1)).cuda()
    want = ref32.sample_latents(2, noise=zT)
    err_torch = rel_error(ref16.sample_latents(2, noise=zT), want)
    err_ours = rel_error(gs.sample_latents(2, noise=zT), want)
    assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


@cuda
@torch.inference_mode()
def test_cuda_graph_replay_equals_eager_and_new_sequence(tiny):
    eager = GpuSampler(tiny, device="cuda", use_graphs=False)
    graph = GpuSampler(tiny, device="cuda")
    zT = torch.randn(2, *eager.latent_shape, generator=torch.Generator().manual_seed(2)).cuda()
    for kw in (dict(skip=100), dict(timesteps=list(range(0, 999, 100)) + [990]),
               dict(skip=100, eta=0.7, seed=3)):
        a = graph.sample_latents(2, **({"noise": zT} if "seed" not in kw else {}), **kw)
        b = eager.sample_latents(2, **({"noise": zT} if "seed" not in kw else {}), **kw)
        assert rel_error(a, b) <= 1e-3, kw
    # the two 11-step sequences share one captured loop; nothing fell back to eager
    assert len(graph.executor.loops) == 2
    assert all(loop.graph is not None for loop in graph.executor.loops.values())
    assert not GRAPH_ERRORS, GRAPH_ERRORS


@cuda
@torch.inference_mode()
def test_cuda_no_host_sync_in_loop(tiny):
    gs = GpuSampler(tiny, device="cuda")
    zT = torch.randn(4, *gs.latent_shape, device="cuda")
    gs.sample_latents(4, noise=zT)  # capture + tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = gs.sample_latents(4, noise=zT)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (4, *gs.latent_shape)


@cuda
@torch.inference_mode()
def test_cuda_batch_independence(tiny):
    gs = GpuSampler(tiny, device="cuda")
    zT = torch.randn(8, *gs.latent_shape, generator=torch.Generator().manual_seed(3)).cuda()
    full = gs.sample_latents(8, noise=zT)
    one = gs.sample_latents(1, noise=zT[5:6])
    assert rel_error(one, full[5:6]) <= 1e-2


def test_executor_runs_the_one_loop_cpu(tiny, cpu_pair):
    """The CUDA-graph executor's static buffers, run eagerly on CPU, with the GPU U-Net as the
    noise prediction: the same numbers as the reference sampler's DDIM loop."""
    from d2c_fast import diffusion as D
    from d2c_fast.runtime.cuda import CudaGraphExecutor
    ref, _ = cpu_pair
    fu = FastUNet(copy.deepcopy(tiny).unet, dtype=torch.float32, channels_last=True)
    ex = CudaGraphExecutor(use_graphs=False)
    zT = torch.randn(2, *ref.latent_shape, generator=torch.Generator().manual_seed(11))
    seq = D.uncond_sequence(1000, skip=200)
    noises = torch.randn(len(seq), 2, *ref.latent_shape, generator=torch.Generator().manual_seed(12))
    for eta in (0.0, 1.0):
        steps = D.DDIMSteps(ref.schedule, seq, eta)
        with torch.inference_mode():
            x = ex.run(lambda xx, tt: fu(xx, tt).float(), ("fast", eta), zT, steps,
                       lambda i: noises[i])
        want = D.ddim(ref.prior_eps, zT, seq, ref.schedule, eta=eta, step_noise=lambda i: noises[i])
        assert rel_error(x, want) <= 1e-4
    assert len(ex.loops) == 2 and all(loop.graph is None for loop in ex.loops.values())


def test_cpu_fast_unet_with_fewer_norm_groups():
    """A U-Net with ``norm_groups`` != 32 (the built-in model's 8): the fast U-Net passes the
    group count to every fused GroupNorm."""
    import json
    from pathlib import Path
    raw = json.loads((Path(__file__).resolve().parents[1] / TINY).read_text())
    raw["diffusion"]["model"]["norm_groups"] = 8
    m = random_model(raw, seed=3)
    fu = FastUNet(m.unet, dtype=torch.float32, channels_last=False)
    call = UNetCallGraph(fu, 2, m.config.unet.in_channels)
    x = torch.randn(2, m.config.unet.in_channels, fu.resolution, fu.resolution)
    call.load(x, 600)
    want = m.unet(x, torch.full((2,), 600.0))
    assert rel_error(call(), want) <= 1e-5
    # with the default 32 groups the same weights give a different function
    raw["diffusion"]["model"]["norm_groups"] = 32
    m32 = random_model(raw, seed=3)
    assert rel_error(m32.unet(x, torch.full((2,), 600.0)), want) > 1e-3


def test_cpu_fallback_guided_model_samples_like_sampler():
    """A model with a guide prior: GpuSampler samples it as Sampler does (the recommended
    weight by default, eps_scale, guidance=1 for the prior alone), draws included."""
    from test_guide import guided_dict, with_guide
    m = with_guide(guided_dict(2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Sampler(copy.deepcopy(m), impl="fast")
        gs = GpuSampler(copy.deepcopy(m), device="cpu")
    zT = torch.randn(3, *ref.latent_shape, generator=torch.Generator().manual_seed(0))
    default = gs.sample_latents(3, skip=200, noise=zT)
    assert torch.equal(default, ref.sample_latents(3, skip=200, noise=zT))
    plain = gs.sample_latents(3, skip=200, noise=zT, guidance=1.0)
    assert rel_error(plain, ref.sample_latents(3, skip=200, noise=zT, guidance=1.0)) <= 1e-5
    assert rel_error(default, plain) > 1e-3          # the default is guided, not the prior alone
    for kw in (dict(guidance=0.5, eta=1.0, seed=4), dict(eps_scale=1.02, guidance=1.0, seed=2)):
        assert torch.equal(gs.sample_latents(2, skip=250, **kw),
                           ref.sample_latents(2, skip=250, **kw)), kw
    assert torch.equal(gs.sample(2, skip=250, seed=3, mode="mode"),
                       ref.sample(2, skip=250, seed=3, mode="mode"))
    # guided sampling runs the same loop as unguided: explicit step noise is taken too
    sn = torch.randn(5, 1, *ref.latent_shape, generator=torch.Generator().manual_seed(6))
    want = ref.unstandardise(ref.denoise(zT[:1], ref.sequence(250), 1.0, None, guidance=2.0,
                                         step_noise=lambda i: sn[i]))
    assert torch.equal(gs.sample_latents(1, skip=250, eta=1.0, guidance=2.0, noise=zT[:1],
                                         step_noise=sn), want)
    with pytest.raises(ValueError, match="step_noise"):
        gs.sample_latents(1, skip=250, eta=1.0, step_noise=torch.zeros(4, 1, *ref.latent_shape))
    with pytest.raises(ValueError, match="guidance"):
        gs.sample_latents(1, skip=250, guidance=-1.0)
    from d2c_fast.train.testing import tiny_model_dict
    unguided = GpuSampler(random_model(tiny_model_dict(16), seed=1), device="cpu")
    with pytest.raises(ValueError, match="guide prior"):
        unguided.sample_latents(1, skip=250, guidance=2.0)
