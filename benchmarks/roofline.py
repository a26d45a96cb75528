"""How close the CPU workloads run to this machine's matrix-multiply peak (no timing
comparison between implementations: for those see cpu_compare.py and bench_train_step.py).

    python benchmarks/roofline.py --threads 2 [--json build/roofline.json]

Reports, on the CPU it runs on:
  peak    the best of 5 square 2048 matmuls, bf16 and fp32 (GFLOP/s): a practical ceiling;
  train   the built-in recipe's stage-2 step (batch 64, bf16 autocast, random latents):
          forward-convolution GFLOP per step (counted by hooks), the profiled self time of
          the forward and backward convolutions per step (backward = 2x the forward FLOPs),
          their rates and their share of the step;
  unet    the ARCH-256 latent U-Net, batch 1 (fp32 and bf16, impl="fast"): the same for one
          call;
  decoder the ARCH-256 decoder, batch 1 (fp32 and bf16, impl="fast"): the profiled self time
          of its top operators per call.
The rates say how much a faster kernel could still give: a workload at most of the matmul
peak can only get faster by doing less arithmetic (docs/quality/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402


def gemm_peak(dtype, n=2048, reps=5):
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def conv_flops(module, run):
    """Forward-convolution FLOPs (2 * MACs) of ``run()`` over ``module``'s Conv2d layers."""
    total = [0]

    def hook(m, inp, out):
        k = m.weight.shape
        total[0] += 2 * out.numel() * k[1] * k[2] * k[3]

    hs = [m.register_forward_hook(hook) for m in module.modules()
          if isinstance(m, torch.nn.Conv2d)]
    try:
        run()
    finally:
        for h in hs:
            h.remove()
    return total[0]


def profiled(run, n):
    """Per-call self CPU seconds by operator name over ``n`` calls, and the wall time."""
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(n):
            run()
    wall = (time.perf_counter() - t) / n
    return {e.key: e.self_cpu_time_total / 1e6 / n for e in p.key_averages()}, wall


def split_conv(ops):
    """(forward, backward) convolution self seconds from ``profiled``'s per-operator dict."""
    fwd = sum(v for k, v in ops.items() if "conv" in k.lower() and "backward" not in k.lower())
    bwd = sum(v for k, v in ops.items() if "convolution" in k.lower() and "backward" in k.lower())
    return fwd, bwd


def train_step(steps):
    from d2c_fast.train.diffusion import DiffusionTrainer
    from d2c_fast.train.engine import DistInfo
    from d2c_fast.train.config import TrainConfig
    tc = TrainConfig.load(os.path.join(os.path.dirname(__file__), "..", "d2c_fast", "configs",
                                       "builtin_train.json"))
    tc.diffusion.batch_size = 64
    mc = tc.model_config()
    torch.manual_seed(0)
    lat = torch.randn(4096, *mc.latent_shape)
    with tempfile.TemporaryDirectory() as out:
        tr = DiffusionTrainer(tc, mc, lat, out, DistInfo())
        x = torch.randn(64, *mc.latent_shape)
        with torch.no_grad():
            flops = conv_flops(tr.unet, lambda: tr.unet(x, torch.randint(0, 1000, (64,))))
        for s in range(5):
            tr.train_step(s)
        k = [5]

        def step():
            tr.train_step(k[0])
            k[0] += 1
        ops, wall = profiled(step, steps)
    fwd, bwd = split_conv(ops)
    return {"conv_gflop_fwd": flops / 1e9, "step_s": wall, "conv_fwd_s": fwd,
            "conv_bwd_s": bwd, "fwd_gflops": flops / 1e9 / fwd,
            "bwd_gflops": 2 * flops / 1e9 / bwd, "conv_share": (fwd + bwd) / wall}


def arch256(dtype, calls):
    from d2c_fast import Sampler
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    s = Sampler(random_model(arch256_config_path(), seed=0), impl="fast", dtype=dtype)
    z = torch.randn(1, *s.latent_shape)
    flops = conv_flops(s.unet_model, lambda: s.unet(z, 50))
    for _ in range(3):
        s.unet(z, 50)
        s.decode_logits(z)
    ops, wall = profiled(lambda: s.unet(z, 50), calls)
    fwd, _ = split_conv(ops)
    unet = {"conv_gflop": flops / 1e9, "call_s": wall, "conv_s": fwd,
            "conv_gflops": flops / 1e9 / fwd, "conv_share": fwd / wall}
    ops, wall = profiled(lambda: s.decode_logits(z), max(1, calls // 3))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:5]
    return unet, {"call_s": wall, "top_ops_s": dict(top)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"machine": machine_info(), "threads": args.threads,
           "peak_gflops": {"bf16": gemm_peak(torch.bfloat16), "fp32": gemm_peak(torch.float32)}}
    print(f"matmul peak: bf16 {out['peak_gflops']['bf16']:.0f} GFLOP/s, "
          f"fp32 {out['peak_gflops']['fp32']:.0f} GFLOP/s", flush=True)
    tr = out["train"] = train_step(args.train_steps)
    print(f"stage-2 step (batch 64, bf16): {tr['step_s'] * 1e3:.0f} ms; forward convs "
          f"{tr['conv_gflop_fwd']:.2f} GFLOP in {tr['conv_fwd_s'] * 1e3:.1f} ms "
          f"({tr['fwd_gflops']:.0f} GFLOP/s), backward {tr['conv_bwd_s'] * 1e3:.1f} ms "
          f"({tr['bwd_gflops']:.0f} GFLOP/s); convolutions {tr['conv_share']:.0%} of the step",
          flush=True)
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        u, d = arch256(dt, args.calls)
        out[f"unet_{name}"], out[f"decoder_{name}"] = u, d
        print(f"ARCH-256 U-Net {name}, batch 1: {u['call_s'] * 1e3:.1f} ms; convs "
              f"{u['conv_gflop']:.2f} GFLOP in {u['conv_s'] * 1e3:.1f} ms "
              f"({u['conv_gflops']:.0f} GFLOP/s, {u['conv_share']:.0%} of the call)", flush=True)
        tops = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in d["top_ops_s"].items())
        print(f"ARCH-256 decoder {name}, batch 1: {d['call_s'] * 1e3:.0f} ms; top ops (ms): "
              f"{tops}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
