"""Interleaved same-run comparison on CPU (A B A B ..., medians): the numbers RESULTS.md quotes.

    python benchmarks/cpu_compare.py --workload decoder,encoder,wedit,wgen --batch 1,4 \
        --rounds 5 --out build/cpu_compare.json

Candidates: B0 = impl="ref" fp32 (the official cost model), B1 = torch.compile of the reference
modules (fp32, default mode; compile time reported separately), ours = impl="fast" in fp32 and
bf16 (fast-nocl: fp32 with the U-Nets in the default layout, the fast plan before
2026-11-28); with ``--official-src DIR`` also B0-official = the public release's own autoencoder and
U-Net modules (not shipped; see official_b0.py), the B0 the CPU issue's checker uses. Workloads (ARCH-256, random weights): decoder, encoder, unet, wedit, wgen.
Accuracy gate first: fast vs ref relative L2 (latents and logits).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402

from d2c_fast.eval.metrics import rel_error  # noqa: E402


class CompiledModules:
    """B1: the reference modules under torch.compile, behind the Sampler's module interface."""

    def __init__(self, ae, unet, mode="default"):
        self.bernoulli = ae.bernoulli
        self.encode = torch.compile(ae.encode, mode=mode)
        self.decode_logits = torch.compile(ae.decode_logits, mode=mode)
        self._unet = torch.compile(unet, mode=mode)

    def __call__(self, x, t):
        return self._unet(x, t)


def make_samplers(model, which, official_src=None):
    from d2c_fast import Sampler
    out = {}
    if "B0-official" in which:
        if not official_src:
            raise SystemExit("candidate B0-official needs --official-src (a jiamings/d2c checkout)")
        from official_b0 import official_sampler
        out["B0-official"] = official_sampler(model, official_src)
    if "B0" in which:
        out["B0"] = Sampler(model, impl="ref")
    if "B1" in which:
        s = Sampler(model, impl="ref")
        cm = CompiledModules(s.autoencoder, s.unet_model)
        s.autoencoder, s.unet_model = cm, cm
        out["B1"] = s
    if "fast" in which:
        out["fast"] = Sampler(model, impl="fast")
    if "fast-nocl" in which:   # the fast plan with contiguous U-Nets (before 2026-11-28)
        from bench_edit_guidance import contiguous_unets
        s = Sampler(model, impl="fast")
        contiguous_unets(s)
        out["fast-nocl"] = s
    if "fast-bf16" in which:
        out["fast-bf16"] = Sampler(model, impl="fast", dtype=torch.bfloat16)
    return out


def workload(name, s, x, z, attr):
    if name == "decoder":
        return lambda: s.decode_logits(z)
    if name == "encoder":
        return lambda: s.encode(x)
    if name == "unet":
        return lambda: s.unet(z, 50)
    if name == "wedit":
        return lambda: s.manipulate(x, attr, step=1.0, seed=0)
    if name == "wgen":
        return lambda: s.sample(x.shape[0], skip=100, seed=0)
    raise ValueError(name)


def _memory_child(args):
    import resource
    from d2c_fast import Attribute
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    model = random_model(arch256_config_path(), seed=0)
    s = make_samplers(model, [args._child], args.official_src)[args._child]
    del model  # as with Sampler(path): only what the sampler keeps stays alive
    import gc
    gc.collect()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(int(args.batch), 3, s.resolution, s.resolution, generator=g)
    attr = Attribute(torch.randn(s.latent_shape, generator=g))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = workload(args.workload, s, x, s.encode(x), attr)
    fn()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"candidate": args._child, "peak_rss_mb": peak / 1024,
                      "after_load_mb": base / 1024}))


def _memory(args):
    import subprocess
    out = {}
    for c in args.candidates.split(","):
        extra = ["--official-src", args.official_src] if args.official_src else []
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--workload", args.workload,
                            "--batch", str(args.batch), "--_child", c] + extra,
                           capture_output=True, text=True, check=True)
        out[c] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {c:10s} peak RSS {out[c]['peak_rss_mb']:8.0f} MB "
              f"(after model load {out[c]['after_load_mb']:.0f} MB)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"workload": args.workload, "batch": args.batch, "memory": out,
                       "machine": machine_info()}, f, indent=1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="wedit",
                    help="comma list of decoder, encoder, unet, wedit, wgen")
    ap.add_argument("--batch", default="1", help="comma list of batch sizes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--candidates", default="B0,B1,fast,fast-bf16",
                    help="comma list of B0, B0-official, B1, fast, fast-bf16 (B0-official: the "
                         "release's own modules, see official_b0.py; added by --official-src)")
    ap.add_argument("--official-src", default=None,
                    help="a checkout of github.com/jiamings/d2c (the folder holding the d2c "
                         "package): adds candidate B0-official")
    ap.add_argument("--out", default=None)
    ap.add_argument("--memory", action="store_true",
                    help="instead of timing: peak resident memory of each candidate, each in a "
                         "fresh process (model load + 2 runs of the workload)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        return _memory_child(args)
    if args.memory:
        return _memory(args)
    from d2c_fast import Attribute
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    model = random_model(arch256_config_path(), seed=0)
    cands = args.candidates.split(",")
    if args.official_src and "B0-official" not in cands:
        cands.insert(0, "B0-official")
    ss = make_samplers(model, cands, args.official_src)
    ref = ss.get("B0") or make_samplers(model, ["B0"])["B0"]
    batches = [int(b) for b in str(args.batch).split(",")]
    g = torch.Generator().manual_seed(0)
    xall = torch.rand(max(batches), 3, ref.resolution, ref.resolution, generator=g)
    attr = Attribute(torch.randn(ref.latent_shape, generator=g))
    noise = torch.randn(1, *ref.latent_shape, generator=g)

    # accuracy gate (and warm-up / compilation) on one image
    accuracy, warm = {}, {}
    z1 = ref.encode(xall[:1])
    zr = ref.manipulate_latents(z1, attr, step=1.0, noise=noise)
    lr = ref.decode_logits(zr)
    for k, s in ss.items():
        t = time.perf_counter()
        zk = s.manipulate_latents(s.encode(xall[:1]), attr, step=1.0, noise=noise)
        lk = s.decode_logits(zr)
        warm[k] = time.perf_counter() - t
        accuracy[k] = {"latents_rel_l2": rel_error(zk, zr), "logits_rel_l2": rel_error(lk, lr)}
    results = []
    for name in args.workload.split(","):
        for batch in batches:
            x = xall[:batch]
            z = ref.encode(x)
            fns = {k: workload(name, s, x, z, attr) for k, s in ss.items()}
            for fn in fns.values():  # warm-up at this shape
                fn()
            times = {k: [] for k in ss}
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
            res = {"workload": name, "batch": batch, "rounds": args.rounds, "median_s": med,
                   "all_s": times,
                   "ratios_vs": {b: {k: med[b] / med[k] for k in med}
                                 for b in ("B0-official", "B0", "B1") if b in med}}
            results.append(res)
            print(f"{name} batch {batch} ({args.rounds} interleaved rounds, medians)", flush=True)
            for k in med:
                r = "  ".join(f"{b}/{k} {res['ratios_vs'][b][k]:.2f}x" for b in res["ratios_vs"])
                print(f"  {k:10s} {med[k]:8.3f} s   {r}", flush=True)
    print("accuracy vs B0 (W-edit latents, decoder logits) and warm-up incl. compile:")
    for k in ss:
        a = accuracy[k]
        print(f"  {k:10s} latents {a['latents_rel_l2']:.1e}  logits {a['logits_rel_l2']:.1e}  "
              f"warm-up {warm[k]:.1f} s")
    out = {"machine": machine_info(), "results": results, "accuracy": accuracy,
           "warmup_incl_compile_s": warm}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
