"""Does compiled stage 2 learn like eager? Paired runs of the real ``DiffusionTrainer``
(the recipe's model, loss, Adam, EMA) on the same latents, with identical batches,
timesteps and noise per step, eager and with ``diffusion.compile``, under the recipe's
autocast; prints each run's mean loss per window of steps and its step rate.

    python benchmarks/train_compile_paired.py --latents runs/builtin/latents.pt \\
        [--config d2c_fast/configs/builtin_train.json] [--steps 400] [--threads 2] \\
        [--amp bf16] [--window 50]

``--latents``: a stage-2 ``latents.pt`` (written by `d2c-fast train`); without it, unit
Gaussian latents of the model's shape (the losses then say less). Compilation (the first
three steps) is timed apart from the rate.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch


def run(tc, latents, steps: int, compiled: bool) -> tuple[list[float], float, float]:
    """(losses, latents/s after step 3, seconds of the first three steps)."""
    from d2c_fast.train.diffusion import DiffusionTrainer
    from d2c_fast.train.engine import DistInfo
    tc = copy.deepcopy(tc)
    tc.diffusion.compile = compiled
    with tempfile.TemporaryDirectory() as out:
        tr = DiffusionTrainer(tc, tc.model_config(), latents, out, DistInfo())
        losses, t0 = [], time.perf_counter()
        for s in range(steps):
            losses.append(tr.train_step(s)[0]["loss"])
            if s == 2:
                warm, t1 = time.perf_counter() - t0, time.perf_counter()
        rate = (steps - 3) * tr.batch_size / (time.perf_counter() - t1)
    return losses, rate, warm


def main(argv=None) -> int:
    from d2c_fast.train.engine import load_checkpoint
    from d2c_fast.train.config import TrainConfig
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="d2c_fast/configs/builtin_train.json")
    ap.add_argument("--latents", default=None, help="a stage-2 latents.pt")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", default=None, choices=("none", "bf16"),
                    help="default: the config's diffusion.amp")
    ap.add_argument("--window", type=int, default=50)
    args = ap.parse_args(argv)
    if args.steps < 4 or args.window < 1:
        ap.error("--steps must be >= 4 and --window >= 1")
    torch.set_num_threads(args.threads)
    tc = TrainConfig.load(args.config)
    if args.amp is not None:
        tc.diffusion.amp = args.amp
    shape = tc.model_config().latent_shape
    if args.latents:
        d = load_checkpoint(args.latents)
        z = ((d["latents"] - d["mean"]) / d["std"]).float().contiguous()
    else:
        z = torch.randn(4096, *shape, generator=torch.Generator().manual_seed(0))
    res = {m: run(tc, z, args.steps, m == "compiled") for m in ("eager", "compiled")}
    w = args.window
    print(f"amp {tc.diffusion.amp}, {args.threads} thread(s), batch {tc.diffusion.batch_size}")
    print("| steps | eager | compiled |")
    print("| --- | --- | --- |")
    for i in range(0, args.steps, w):
        cells = [sum(res[m][0][i:i + w]) / len(res[m][0][i:i + w]) for m in res]
        print(f"| {i}-{min(i + w, args.steps) - 1} | {cells[0]:.1f} | {cells[1]:.1f} |")
    e, c = res["eager"], res["compiled"]
    print(f"| latents/s | {e[1]:.0f} | {c[1]:.0f} ({c[1] / e[1]:.2f}x) |")
    print(f"first three steps: eager {e[2]:.1f} s, compiled {c[2]:.1f} s (compilation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
