"""This tree against a checkout of an older main, same run: W-edit, decoder and W-gen speed.

    git worktree add /work/oldmain 8f3115b
    (cd /work/oldmain && /work/main/.venv/bin/python setup.py build_ext --inplace)
    .venv/bin/python benchmarks/paired_main.py --old /work/oldmain --rounds 3 \
        --out build/paired_main.json

Each round runs one worker process per tree (old and new alternate, and the tree that goes
first alternates from round to round). A worker imports d2c_fast from its tree only (the venv's
editable install is taken off the import path), builds the ARCH-256 random model (seed 0),
opens ``Sampler(model, impl="fast", dtype=...)`` for each dtype and times, with
``torch.set_num_threads(--threads)``, one warm-up call and then ``--reps`` calls of each
workload: decoder = ``decode_logits`` of encoded latents; wedit = ``manipulate(x, attr,
step=1.0, seed=0)`` with a random Attribute direction; wgen = ``sample(batch, skip=100,
seed=0)``. Only public Sampler calls, so both trees run the same code. A round's value is the
median of its reps; the table gives the median over rounds per tree, new/old, the range of the
per-round ratios (old and new of one round ran next to each other) and each tree's spread
across rounds ((max - min) / median). ``--quick``: one round at batch 1, a dry run. A workload
that raises in one tree is reported as failed, not timed: 8f3115b's bf16 fast plan stops on CPUs
without AVX512-BW/VL/DQ or AVX-NE-CONVERT (fixed by 24aee66; apply that commit's plan.py change
to the old checkout to compare bf16 there).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_TREE = os.path.dirname(HERE)
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _use_tree(tree: str) -> None:
    """Import d2c_fast (and d2c_fast.kernels, which lives in <tree>/kernels) from ``tree`` only."""
    import importlib.machinery

    class _Kernels:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "d2c_fast.kernels":
                return importlib.machinery.PathFinder.find_spec(name, [tree])
            return None

    sys.meta_path[:] = [_Kernels] + [f for f in sys.meta_path
                                     if not getattr(f, "__module__", "").startswith("__editable__")]
    sys.path.insert(0, tree)


def _worker(args) -> None:
    tree = os.path.abspath(args._worker)
    _use_tree(tree)
    import torch
    torch.set_num_threads(args.threads)
    import d2c_fast
    from d2c_fast import Attribute, Sampler
    where = os.path.dirname(os.path.abspath(d2c_fast.__file__))
    if where != os.path.join(tree, "d2c_fast"):
        raise SystemExit(f"d2c_fast imported from {where}, not from {tree}")
    try:
        from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    except ImportError:   # main before the checkpoint/ package
        from d2c_fast.models.random_init import arch256_config_path, random_model
    model = random_model(arch256_config_path(), seed=0)
    batches = [int(b) for b in args.batch.split(",")]
    times, errors, inputs = {}, {}, None
    for dt in args.dtype.split(","):
        s = Sampler(model, impl="fast", dtype=getattr(torch, DTYPES[dt]))
        if inputs is None:
            g = torch.Generator().manual_seed(0)
            inputs = (torch.rand(max(batches), 3, s.resolution, s.resolution, generator=g),
                      Attribute(torch.randn(s.latent_shape, generator=g)))
        xall, attr = inputs
        for b in batches:
            x = xall[:b]
            fns = {"decoder": lambda: s.decode_logits(z),
                   "wedit": lambda: s.manipulate(x, attr, step=1.0, seed=0),
                   "wgen": lambda: s.sample(b, skip=100, seed=0)}
            for name in args.workload.split(","):
                key = f"{name}/{b}/{dt}"
                try:
                    if name == "decoder":
                        z = s.encode(x)
                    fns[name]()   # warm-up at this shape
                    times[key] = []
                    for _ in range(args.reps):
                        t = time.perf_counter()
                        fns[name]()
                        times[key].append(time.perf_counter() - t)
                except RuntimeError as exc:   # e.g. a dtype this CPU cannot run in one tree
                    times.pop(key, None)
                    errors[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        del s
    print(json.dumps({"tree": tree, "d2c_fast": where, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "backend": d2c_fast.backend_info(),
                      "times": times, "errors": errors}))


def _run_worker(tree: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", tree, "--batch", args.batch,
           "--dtype", args.dtype, "--workload", args.workload, "--reps", str(args.reps),
           "--threads", str(args.threads)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if r.returncode != 0:
        raise SystemExit(f"worker for {tree} failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", help="checkout of the old main, extension built in place (required)")
    ap.add_argument("--new", default=NEW_TREE, help="this tree (default: the one holding this file)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1, help="timed calls per workload per worker")
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--dtype", default="fp32,bf16", help="comma list of fp32, bf16")
    ap.add_argument("--workload", default="decoder,wedit,wgen")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round at batch 1 (a dry run)")
    ap.add_argument("--out", default=None, help="write every time and both trees' facts as JSON")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        return _worker(args)
    if not args.old:
        ap.error("--old is required")
    if args.quick:
        args.rounds, args.batch = 1, "1"
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    rounds = {"old": [], "new": []}
    started = time.perf_counter()
    for r in range(args.rounds):
        for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
            t = time.perf_counter()
            rounds[which].append(_run_worker(trees[which], args))
            print(f"round {r + 1}/{args.rounds} {which}: {time.perf_counter() - t:.0f} s",
                  flush=True)
    facts = {k: {f: v[0][f] for f in ("d2c_fast", "torch", "threads", "backend")}
             for k, v in rounds.items()}
    for k, f in facts.items():
        print(f"{k}: {f['d2c_fast']} (torch {f['torch']}, {f['threads']} threads)")
    print(f"{args.rounds} round(s), {args.reps} rep(s) each, medians; total "
          f"{time.perf_counter() - started:.0f} s")
    print(f"{'workload':8s} {'batch':>5s} {'dtype':5s} {'old s':>8s} {'new s':>8s} "
          f"{'new/old':>7s} {'per-round new/old':>17s} {'spread old':>10s} {'spread new':>10s}")
    table = []
    keys = list(dict.fromkeys(k for v in rounds.values() for w in v
                              for k in list(w["times"]) + list(w["errors"])))
    for key in keys:
        name, batch, dt = key.split("/")
        failed = {k: next((w["errors"][key] for w in v if key in w["errors"]), None)
                  for k, v in rounds.items()}
        if any(failed.values()):
            table.append({"workload": name, "batch": int(batch), "dtype": dt, "errors": failed})
            print(f"{name:8s} {batch:>5s} {dt:5s} failed: "
                  + "; ".join(f"{k}: {e}" for k, e in failed.items() if e))
            continue
        per = {k: [statistics.median(w["times"][key]) for w in v] for k, v in rounds.items()}
        med = {k: statistics.median(v) for k, v in per.items()}
        ratios = [n / o for o, n in zip(per["old"], per["new"])]
        row = {"workload": name, "batch": int(batch), "dtype": dt, "old_s": med["old"],
               "new_s": med["new"], "ratio": med["new"] / med["old"], "round_ratios": ratios,
               "spread_old": _spread(per["old"]), "spread_new": _spread(per["new"]),
               "rounds_s": per}
        table.append(row)
        print(f"{name:8s} {batch:>5s} {dt:5s} {med['old']:8.3f} {med['new']:8.3f} "
              f"{row['ratio']:7.3f} {min(ratios):8.3f}-{max(ratios):.3f} "
              f"{row['spread_old']:9.1%} {row['spread_new']:9.1%}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"trees": facts, "rounds": args.rounds, "reps": args.reps,
                       "table": table, "workers": rounds}, f, indent=1)
    return table


if __name__ == "__main__":
    main()
