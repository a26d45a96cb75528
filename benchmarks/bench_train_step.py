"""Throughput of one stage-2 training step by batch size and thread count: the real
``DiffusionTrainer.train_step`` of `d2c-fast train` (data order, antithetic timesteps, the
configured loss weighting and autocast, clipping, Adam, EMA), on random latents.

    python benchmarks/bench_train_step.py [--config d2c_fast/configs/builtin_train.json]
        [--threads 1,2] [--batch 64,128,256] [--seconds 12] [--compile] [--per-tensor]

Prints latents/s per setting, and each setting's ratio to the first thread count at the same
batch (same run). ``--compile`` adds, per setting, the step with ``diffusion.compile`` (the
U-Net under ``torch.compile``) and its ratio to the eager step of the same run; compile time
(the first three steps) is printed apart and not in the rate. ``--per-tensor`` adds, per
setting, the step with the optimizer and EMA of before 2026-11-28 (PyTorch's default,
per-tensor Adam and a per-tensor EMA loop; now fused Adam and multi-tensor EMA) and the
current step's ratio to it. It answers "does a second
core help stage 2?" for a given recipe; the cost does not depend on the latents' values.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch


def _per_tensor(tr) -> None:
    """Give trainer ``tr`` the optimizer and EMA update of before 2026-11-28: PyTorch's
    default Adam (per tensor on the CPU) and ``shadow.mul_(mu).add_(p, 1 - mu)`` per tensor."""
    g = tr.opt.param_groups[0]
    tr.opt = torch.optim.Adam(tr.unet.parameters(), lr=g["lr"], betas=g["betas"],
                              eps=g["eps"], weight_decay=g["weight_decay"],
                              amsgrad=g["amsgrad"])
    ema = tr.ema

    @torch.no_grad()
    def update(module):
        mu = ema.rate()
        for n, p in module.named_parameters():
            if n in ema.shadow:
                ema.shadow[n].mul_(mu).add_(p.detach(), alpha=1 - mu)
        ema.num_updates += 1
    if ema is not None:
        ema.update = update


def _timed(obj, name: str, acc: list) -> None:
    """Wrap ``obj.name`` so that its seconds add up in ``acc[0]``."""
    f = getattr(obj, name)

    def wrapped(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            acc[0] += time.perf_counter() - t0
    setattr(obj, name, wrapped)


def step_rate(tc, batch: int, seconds: float, compiled: bool = False,
              per_tensor: bool = False, parts: dict | None = None) -> tuple[float, float]:
    """(latents/s over ``seconds`` after three warm-up steps, warm-up seconds). ``parts``: a
    dict that receives the mean milliseconds per step of the optimizer step and the EMA
    update (``"adam_ms"``, ``"ema_ms"``)."""
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
        if per_tensor:
            _per_tensor(tr)
        adam, ema = [0.0], [0.0]
        _timed(tr.opt, "step", adam)
        if tr.ema is not None:
            _timed(tr.ema, "update", ema)
        t0 = time.perf_counter()
        for s in range(3):
            tr.train_step(s)
        warm = time.perf_counter() - t0
        adam[0] = ema[0] = 0.0
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            tr.train_step(3 + n)
            n += 1
        if parts is not None:
            parts.update(adam_ms=1e3 * adam[0] / n, ema_ms=1e3 * ema[0] / n)
        return n * batch / (time.perf_counter() - t0), warm


def main(argv=None) -> int:
    from d2c_fast.train.config import TrainConfig
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="d2c_fast/configs/builtin_train.json",
                    help="training config JSON (its model and diffusion settings are used)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="64,128,256")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--compile", action="store_true",
                    help="also time the step with diffusion.compile (torch.compile)")
    ap.add_argument("--per-tensor", action="store_true",
                    help="also time the step with the per-tensor Adam and EMA of before "
                    "2026-11-28")
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
    if args.per_tensor:
        cols += [f"{t} thread(s), per-tensor Adam + EMA" for t in threads]
    print("| batch | " + " | ".join(cols) + " |")
    print("| --- | " + " | ".join("---" for _ in cols) + " |")
    warm = []
    for b in batches:
        cells, comp, per = [], [], []
        for t in threads:
            torch.set_num_threads(t)
            cur = {}
            rate[b, t] = step_rate(tc, b, args.seconds, parts=cur)[0]
            r = rate[b, t] / rate[b, threads[0]]
            cells.append(f"{rate[b, t]:.0f} latents/s ({r:.2f}x)")
            if args.compile:
                rc, w = step_rate(tc, b, args.seconds, compiled=True)
                warm.append(w)
                comp.append(f"{rc:.0f} latents/s ({rc / rate[b, t]:.2f}x eager)")
            if args.per_tensor:
                old = {}
                rp = step_rate(tc, b, args.seconds, per_tensor=True, parts=old)[0]
                per.append(f"{rp:.0f} latents/s (current {rate[b, t] / rp:.2f}x; Adam + EMA "
                           f"{old['adam_ms']:.1f} + {old['ema_ms']:.1f} ms per step, current "
                           f"{cur['adam_ms']:.1f} + {cur['ema_ms']:.1f})")
        print(f"| {b} | " + " | ".join(cells + comp + per) + " |", flush=True)
    if warm:
        print(f"compiled: first three steps (compilation) {min(warm):.0f}-{max(warm):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
