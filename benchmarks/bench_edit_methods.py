"""What the default edit costs against the paper's: ``Sampler.manipulate`` (encode, edit,
decode) of built-in faces with a shipped attribute to ``target="typical"``, by method:
``local`` (the default without ``step=``: three guided DDIM steps from t0 300, masked, the
classifier holding the target, and a second decode, the input's, for the paste), ``d2c``
(the paper's: two guided steps from t0 50; the default before 2026-12-07) and ``nvae`` (no
clean-up). Interleaved rounds in one process, medians, ms per call and the ratio to ``d2c``.

    python benchmarks/bench_edit_methods.py [--batch 1,32] [--rounds 15] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> int:
    from d2c_fast import Sampler
    from d2c_fast.attributes import resolve_attribute
    from d2c_fast.eval.counterfactual import counterfactual_pairs
    from machine import machine_info
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--attr", default="smiling")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Sampler(args.model)
    attr = resolve_attribute(args.attr, s)
    batches = [int(b) for b in args.batch.split(",")]
    x, _ = counterfactual_pairs(args.attr, "add", max(batches), s.resolution)
    methods = ("local", "d2c", "nvae")
    print(machine_info())
    for b in batches:
        xb = x[:b]
        calls = {m: (lambda m=m: s.manipulate(xb, attr, target="typical", method=m, seed=0))
                 for m in methods}
        for fn in calls.values():       # warm-up
            fn()
        times = {m: [] for m in methods}
        for _ in range(args.rounds):
            for m, fn in calls.items():
                t = time.perf_counter()
                fn()
                times[m].append(time.perf_counter() - t)
        med = {m: statistics.median(v) * 1000 for m, v in times.items()}
        print(f"batch {b}, {args.rounds} interleaved rounds, {args.threads} threads: " + ", ".join(
            f"{m} {med[m]:.1f} ms ({med[m] / b:.1f} ms/image, {med[m] / med['d2c']:.2f}x d2c)"
            for m in methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
