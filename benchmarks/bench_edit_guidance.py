"""What the guided d2c clean-up costs: ``Sampler.manipulate`` (encode, edit, decode) with the
model's autoguidance weight (the default for a model with a guide prior) against
``guidance=1`` (the official, unguided edit: two U-Net calls), interleaved rounds, medians.

    python benchmarks/bench_edit_guidance.py [--model builtin] [--batch 1,6] [--rounds 30]
        [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> int:
    from d2c_fast import Attribute, Sampler
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--batch", default="1,6")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Sampler(args.model)
    if s.guide_model is None:
        raise SystemExit(f"{args.model} has no guide prior: its edits are unguided")
    g = torch.Generator().manual_seed(0)
    attr = Attribute(torch.randn(s.latent_shape, generator=g))
    print(f"{args.model}: guidance {s.guidance:g} vs 1, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds, median ms per call")
    print("| batch | unguided (guidance 1) | guided | guided / unguided |")
    print("| --- | --- | --- | --- |")
    for b in (int(v) for v in args.batch.split(",")):
        x = s.decode(s.sample_latents(b, skip=500, seed=0, guidance=1.0), mode="mode")
        t = {1.0: [], s.guidance: []}
        for w in t:                                   # warm-up
            s.manipulate(x, attr, step=0.5, seed=0, guidance=w)
        for _ in range(args.rounds):
            for w in t:
                t0 = time.perf_counter()
                s.manipulate(x, attr, step=0.5, seed=0, guidance=w)
                t[w].append(time.perf_counter() - t0)
        u, gd = (1e3 * statistics.median(t[w]) for w in t)
        print(f"| {b} | {u:.1f} | {gd:.1f} | {gd / u:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
