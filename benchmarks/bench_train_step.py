"""Throughput of one stage-2 training step (the latent U-Net's forward + backward + Adam) by
batch size and thread count, as `d2c-fast train` runs it (bf16 autocast on CPU, v-prediction
loss, gradient clipping).

    python benchmarks/bench_train_step.py [--config d2c_fast/configs/builtin.json]
        [--threads 1,2] [--batch 64,128,256] [--seconds 12]

Prints latents/s per setting, and each setting's ratio to the first thread count at the same
batch (same run). It answers "does a second core help stage 2?" for a given U-Net; random
weights and latents (the cost does not depend on the values).
"""
from __future__ import annotations

import argparse
import time

import torch


def step_rate(cfg, batch: int, seconds: float, amp: bool = True) -> float:
    from d2c_fast.models.unet import UNet
    from d2c_fast.train.diffusion import alphas_cumprod, noise_estimation_loss
    torch.manual_seed(0)
    unet = UNet(cfg.unet)
    abar = alphas_cumprod(cfg.schedule)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-4)
    c, h, w = cfg.latent_shape
    T = cfg.schedule.num_diffusion_timesteps

    def one():
        x0 = torch.randn(batch, c, h, w)
        t = torch.randint(0, T, (batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = noise_estimation_loss(unet, x0, t, torch.randn_like(x0), abar,
                                         cfg.unet.prediction)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        one()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        one()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    from d2c_fast.config import load_config
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="d2c_fast/configs/builtin.json")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="64,128,256")
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    threads = [int(v) for v in args.threads.split(",")]
    batches = [int(v) for v in args.batch.split(",")]
    if min(threads) < 1 or min(batches) < 1:
        ap.error("--threads and --batch values must be >= 1")
    rate = {}
    print("| batch | " + " | ".join(f"{t} thread(s)" for t in threads) + " |")
    print("| --- | " + " | ".join("---" for _ in threads) + " |")
    for b in batches:
        cells = []
        for t in threads:
            torch.set_num_threads(t)
            rate[b, t] = step_rate(cfg, b, args.seconds)
            r = rate[b, t] / rate[b, threads[0]]
            cells.append(f"{rate[b, t]:.0f} latents/s ({r:.2f}x)")
        print(f"| {b} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
