"""Throughput of one stage-2 training step by batch size and thread count: the real
``DiffusionTrainer.train_step`` of `d2c-fast train` (data order, antithetic timesteps, the
configured loss weighting and autocast, clipping, Adam, EMA), on random latents.

    python benchmarks/bench_train_step.py [--config d2c_fast/configs/builtin_train.json]
        [--threads 1,2] [--batch 64,128,256] [--seconds 12]

Prints latents/s per setting, and each setting's ratio to the first thread count at the same
batch (same run). It answers "does a second core help stage 2?" for a given recipe; the cost
does not depend on the latents' values.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch


def step_rate(tc, batch: int, seconds: float) -> float:
    from d2c_fast.train.diffusion import DiffusionTrainer
    from d2c_fast.train.engine import DistInfo
    tc = copy.deepcopy(tc)
    tc.diffusion.batch_size = batch
    model_cfg = tc.model_config()
    torch.manual_seed(0)
    latents = torch.randn(max(4096, 4 * batch), *model_cfg.latent_shape)
    with tempfile.TemporaryDirectory() as out:   # train_step writes nothing; the ctor wants one
        tr = DiffusionTrainer(tc, model_cfg, latents, out, DistInfo())
        for s in range(3):
            tr.train_step(s)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            tr.train_step(3 + n)
            n += 1
        return n * batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    from d2c_fast.train.engine import TrainConfig
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="d2c_fast/configs/builtin_train.json",
                    help="training config JSON (its model and diffusion settings are used)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="64,128,256")
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args(argv)
    tc = TrainConfig.load(args.config)
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
            rate[b, t] = step_rate(tc, b, args.seconds)
            r = rate[b, t] / rate[b, threads[0]]
            cells.append(f"{rate[b, t]:.0f} latents/s ({r:.2f}x)")
        print(f"| {b} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
