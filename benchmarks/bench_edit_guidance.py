"""What the guided d2c clean-up costs, and what the channels-last U-Nets of the CPU fast plan
save: ``Sampler.manipulate`` (encode, edit, decode) with the model's autoguidance weight (the
default for a model with a guide prior) and with ``guidance=1`` (the official, unguided edit:
two U-Net calls); ``--layouts`` adds the same two with the U-Nets in the default (contiguous)
layout, the fast plan before 2026-11-28. Interleaved rounds, medians, ms per call.

    python benchmarks/bench_edit_guidance.py [--model builtin] [--batch 1,6] [--rounds 30]
        [--threads 2] [--layouts]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def contiguous_unets(s) -> None:
    """Undo the CPU fast plan's channels-last wrapping of ``s``'s U-Nets (prior and guide):
    the fast plan of before 2026-11-28 (also ``cpu_compare.py``'s ``fast-nocl``)."""
    s.unet_model = s.unet_model.unet.to(memory_format=torch.contiguous_format)
    if s.guide_model is not None:
        s.guide_model = s.guide_model.unet.to(memory_format=torch.contiguous_format)


def main(argv=None) -> int:
    from d2c_fast import Attribute, Sampler
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--batch", default="1,6")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layouts", action="store_true",
                    help="also time the fast plan with contiguous U-Nets")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Sampler(args.model)
    if s.guide_model is None:
        raise SystemExit(f"{args.model} has no guide prior: its edits are unguided")
    samplers = {"": s}
    if args.layouts:
        if type(s.unet_model).__name__ != "ChannelsLastUNet":
            raise SystemExit("--layouts: this sampler's U-Nets are not channels-last")
        samplers["contiguous "] = Sampler(args.model)
        contiguous_unets(samplers["contiguous "])
    w = s.guidance
    g = torch.Generator().manual_seed(0)
    attr = Attribute(torch.randn(s.latent_shape, generator=g))
    cols = [(k, gw) for k in samplers for gw in (1.0, w)]
    names = [f"{k}{'unguided' if gw == 1 else f'guided {gw:g}'}" for k, gw in cols]
    print(f"{args.model}: {args.threads} thread(s), {args.rounds} interleaved rounds, median "
          "ms per call (ratios: to the first column)")
    print("| batch | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---" for _ in names) + " |")
    for b in (int(v) for v in args.batch.split(",")):
        x = s.decode(s.sample_latents(b, skip=500, seed=0, guidance=1.0), mode="mode")
        t = {c: [] for c in cols}
        for k, gw in cols:                            # warm-up
            samplers[k].manipulate(x, attr, step=0.5, seed=0, guidance=gw)
        for _ in range(args.rounds):
            for k, gw in cols:
                t0 = time.perf_counter()
                samplers[k].manipulate(x, attr, step=0.5, seed=0, guidance=gw)
                t[k, gw].append(time.perf_counter() - t0)
        med = [1e3 * statistics.median(t[c]) for c in cols]
        print(f"| {b} | " + " | ".join(f"{m:.1f} ({m / med[0]:.2f}x)" for m in med) + " |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
