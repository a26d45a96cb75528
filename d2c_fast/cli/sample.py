"""``d2c-fast sample`` (unconditional) and ``sample-conditional`` (rejection sampling with
fitted attributes)."""
from __future__ import annotations

import os
import time

from ..images import check_output_dir, check_output_file, save_grid, save_png
from .options import add_model_args, add_prior_sampling_args, load_attributes, open_sampler


def cmd_sample(args) -> int:
    if args.output:
        if "{i" in args.output:
            check_output_file(args.output, "--output pattern")
        else:
            check_output_dir(args.output, "--output")
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = open_sampler(args)
    t = time.perf_counter()
    x = s.sample(args.n, skip=args.skip, eta=args.eta, seed=args.seed, mode=args.mode,
                 batch_size=args.batch_size, progress=True, eps_scale=args.eps_scale,
                 guidance=args.guidance)
    dt = time.perf_counter() - t
    if args.output:
        pattern = args.output if "{i" in args.output else os.path.join(args.output, "{i:05d}.png")
        save_png(x, pattern)
    if args.grid:
        save_grid(x, args.grid, nrow=min(8, args.n))
    print(f"{args.n} samples in {dt:.2f} s ({dt / args.n:.3f} s/image)")
    return 0


def cmd_sample_conditional(args) -> int:
    if args.output:
        check_output_dir(args.output, "--output")
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = open_sampler(args)
    attrs = load_attributes(args.attr, s)
    t = time.perf_counter()
    x, p, st = s.sample_conditional(attrs, args.n, seed=args.seed, batch_size=args.batch_size,
                                    max_draws=args.max_draws, threshold=args.threshold,
                                    skip=args.skip, mode=args.mode, return_probs=True,
                                    return_stats=True,
                                    progress=True, eps_scale=args.eps_scale,
                                    guidance=args.guidance, adapt_prior=args.adapt_prior)
    if args.output:
        save_png(x, os.path.join(args.output, "{i:05d}.png"))
    if args.grid:
        save_grid(x, args.grid, nrow=min(8, args.n))
    print(f"{args.n} samples in {time.perf_counter() - t:.1f} s, {st['draws']} draws "
          f"(acceptance rate {st['acceptance_rate']:.3f}), mean probability "
          f"{float(p.prod(1).mean()):.3f}")
    if "adapted_priors" in st:
        print("attribute rates among the model's samples (adapt-prior, "
              f"{st['pilot_draws']} pilot draws): "
              + ", ".join(f"{a.name or '?'} {r:.3f} (fit: {a.classifier.prior:.3f})"
                          for a, r in zip(attrs, st["adapted_priors"])))
    return 0


def add_conditional_args(p) -> None:
    """How conditional samples are drawn (``sample-conditional`` and its directory job):
    acceptance, prior adaptation, the prior's sampling settings, batch size and mode."""
    p.add_argument("--threshold", type=float, default=None,
                   help="accept a candidate only if every attribute's probability is >= this "
                        "(precision over diversity); default: the paper's rule, accept with "
                        "the probability itself")
    p.add_argument("--adapt-prior", type=int, default=0, metavar="N",
                   help="calibrate the classifiers to the model's samples first: the "
                        "attribute rate among N pilot prior samples (EM) replaces the fit's "
                        "prior (0: off; 512 is a good start; see docs/quality/README.md)")
    p.add_argument("--skip", type=int, default=100)
    add_prior_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="unconditional samples")
    add_model_args(p)
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--skip", type=int, default=100)
    p.add_argument("--eta", type=float, default=0.0)
    add_prior_sampling_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("-o", "--output", help="directory or pattern with {i}, e.g. out/{i:04d}.png")
    p.add_argument("--grid", help="also write a PNG grid here")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("sample-conditional", help="conditional samples (rejection sampling)")
    add_model_args(p)
    p.add_argument("--attr", nargs="+", required=True,
                   help="fitted attribute file(s); several = AND")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-draws", type=int, default=None)
    add_conditional_args(p)
    p.add_argument("-o", "--output", help="directory for PNGs")
    p.add_argument("--grid", help="PNG grid")
    p.set_defaults(fn=cmd_sample_conditional)
