"""Throughput of one stage-2 training step by batch size and thread count: the real
``DiffusionTrainer.train_step`` of `d2c-fast train` (data order, antithetic timesteps, the
configured loss weighting and autocast, clipping, Adam, EMA), on random latents.

    python benchmarks/bench_train_step.py [--config d2c_fast/configs/builtin_train.json]
        [--threads 1,2] [--batch 64,128,256] [--seconds 12] [--compile]

Prints latents/s per setting, and each setting's ratio to the first thread count at the same
batch (same run). ``--compile`` adds, per setting, the step with ``diffusion.compile`` (the
U-Net under ``torch.compile``) and its ratio to the eager step of the same run; compile time
(the first three steps) is printed apart and not in the rate. It answers "does a second
core help stage 2?" for a given recipe; the cost does not depend on the latents' values.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch


def step_rate(tc, batch: int, seconds: float, compiled: bool = False) -> tuple[float, float]:
    """(latents/s over ``seconds`` after three warm-up steps, warm-up seconds)."""
    from d2c_fast.train.diffusion import DiffusionTrainer
    from d2c_fast.train.engine import DistInfo
    tc = copy.deepcopy(tc)
    tc.diffusion.batch_size = batch
    tc.diffusion.compile = compiled
    model_cfg = tc.model_config()
    torch.manual_seed(0)
    latents = torch.randn(max(4096, 4 * batch), *model_cfg.latent_shape)
    with tempfile.TemporaryDirectory() as out:   # train_step writes nothing; the ctor wants one
        tr = DiffusionTrainer(tc, model_cfg, latents, out, DistInfo())
        t0 = time.perf_counter()
        for s in range(3):
            tr.train_step(s)
        warm = time.perf_counter() - t0
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            tr.train_step(3 + n)
            n += 1
        return n * batch / (time.perf_counter() - t0), warm


def main(argv=None) -> int:
    from d2c_fast.train.engine import TrainConfig
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="d2c_fast/configs/builtin_train.json",
                    help="training config JSON (its model and diffusion settings are used)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="64,128,256")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--compile", action="store_true",
                    help="also time the step with diffusion.compile (torch.compile)")
    args = ap.parse_args(argv)
    tc = TrainConfig.load(args.config)
    threads = [int(v) for v in args.threads.split(",")]
    batches = [int(v) for v in args.batch.split(",")]
    if min(threads) < 1 or min(batches) < 1:
        ap.error("--threads and --batch values must be >= 1")
    rate = {}
    cols = [f"{t} thread(s)" for t in threads]
    if args.compile:
        cols += [f"{t} thread(s), compiled" for t in threads]
    print("| batch | " + " | ".join(cols) + " |")
    print("| --- | " + " | ".join("---" for _ in cols) + " |")
    warm = []
    for b in batches:
        cells, comp = [], []
        for t in threads:
            torch.set_num_threads(t)
            rate[b, t] = step_rate(tc, b, args.seconds)[0]
            r = rate[b, t] / rate[b, threads[0]]
            cells.append(f"{rate[b, t]:.0f} latents/s ({r:.2f}x)")
            if args.compile:
                rc, w = step_rate(tc, b, args.seconds, compiled=True)
                warm.append(w)
                comp.append(f"{rc:.0f} latents/s ({rc / rate[b, t]:.2f}x eager)")
        print(f"| {b} | " + " | ".join(cells + comp) + " |", flush=True)
    if warm:
        print(f"compiled: first three steps (compilation) {min(warm):.0f}-{max(warm):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
