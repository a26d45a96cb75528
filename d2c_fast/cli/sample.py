"""``d2c-fast sample`` (unconditional) and ``sample-conditional`` (rejection sampling with
fitted attributes). Both write their images: into ``-o`` (a folder, ``000000.png``,
``000001.png``, ... as the directory jobs name them; one ``.png`` file for ``-n 1``; or a
pattern with ``{i}``), only the ``--grid`` when that alone is given, or else into a new
folder ``sample-NNN`` / ``sample-conditional-NNN`` (:func:`.options.image_outputs`)."""
from __future__ import annotations

import argparse
import time

from ..conditional import DEFAULT_THRESHOLD, PAPER_RULE
from ..images import save_grid, save_png
from .options import (add_image_output, add_mode, add_model_args, add_prior_sampling_args,
                      check_grid, image_outputs, load_attributes, open_sampler,
                      plural, wrote)

#: How sample files are named in a folder: the same as the directory jobs' (d2c_fast.jobs).
SAMPLE_NAME = "{i:06d}.png"


def _outputs(args, command: str) -> tuple[list[str], str]:
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    paths, where = image_outputs(args, [SAMPLE_NAME.format(i=i) for i in range(args.n)],
                                 command)
    check_grid(args)
    return paths, where


def _save(args, x, paths, where) -> None:
    for p, img in zip(paths, x):
        save_png(img, p)
    if args.grid:
        save_grid(x, args.grid, nrow=min(8, args.n))
    for line in (wrote(paths, where, args.output is None),
                 f"wrote the grid {args.grid}" if args.grid else ""):
        if line:
            print(line)


def cmd_sample(args) -> int:
    paths, where = _outputs(args, "sample")
    s = open_sampler(args)
    t = time.perf_counter()
    x = s.sample(args.n, skip=args.skip, eta=args.eta, seed=args.seed, mode=args.mode,
                 batch_size=args.batch_size, progress=True, eps_scale=args.eps_scale,
                 guidance=args.guidance)
    dt = time.perf_counter() - t
    print(f"{plural(args.n, 'sample')} in {dt:.2f} s ({dt / args.n:.3f} s/image)")
    _save(args, x, paths, where)
    return 0


def cmd_sample_conditional(args) -> int:
    paths, where = _outputs(args, "sample-conditional")
    s = open_sampler(args)
    attrs = load_attributes(args.attr, s)
    t = time.perf_counter()
    x, p, st = s.sample_conditional(attrs, args.n, seed=args.seed, batch_size=args.batch_size,
                                    max_draws=args.max_draws, threshold=args.threshold,
                                    skip=args.skip, mode=args.mode, return_probs=True,
                                    return_stats=True,
                                    progress=True, eps_scale=args.eps_scale,
                                    guidance=args.guidance, adapt_prior=args.adapt_prior)
    print(f"{plural(args.n, 'sample')} in {time.perf_counter() - t:.1f} s, "
          f"{plural(st['draws'], 'draw')} (acceptance rate {st['acceptance_rate']:.3f}), mean "
          f"probability {float(p.prod(1).mean()):.3f}")
    if "adapted_priors" in st:
        print("attribute rates among the model's samples (adapt-prior, "
              f"{st['pilot_draws']} pilot draws): "
              + ", ".join(f"{a.name or '?'} {r:.3f} (fit: {a.classifier.prior:.3f})"
                          for a, r in zip(attrs, st["adapted_priors"])))
    _save(args, x, paths, where)
    return 0


def _threshold(v: str):
    if v == PAPER_RULE:
        return v
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a probability or '{PAPER_RULE}', got {v!r}") from None


def add_conditional_args(p) -> None:
    """How conditional samples are drawn (``sample-conditional`` and its directory job):
    acceptance, prior adaptation, the prior's sampling settings, batch size and mode."""
    p.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD,
                   help="accept a candidate only if every attribute's probability is >= this "
                        f"(default {DEFAULT_THRESHOLD}: precision, docs/quality/README.md); "
                        f"'{PAPER_RULE}': the paper's rule, accept with the probability itself")
    p.add_argument("--adapt-prior", type=int, default=0, metavar="N",
                   help="calibrate the classifiers to the model's samples first: the "
                        "attribute rate among N pilot prior samples (EM) replaces the fit's "
                        "prior (0: off; 512 is a good start; see docs/quality/README.md)")
    p.add_argument("--skip", type=int, default=100)
    add_prior_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    add_mode(p)


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="unconditional samples")
    add_model_args(p)
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--skip", type=int, default=100)
    p.add_argument("--eta", type=float, default=0.0)
    add_prior_sampling_args(p)
    p.add_argument("--seed", type=int, default=0)
    add_mode(p)
    p.add_argument("--batch-size", type=int, default=None)
    add_image_output(p, help="a folder (created; 000000.png, 000001.png, ...), one .png file "
                     "(-n 1), or a pattern with {i}, e.g. out/{i:04d}.png; default: a new "
                     "folder sample-NNN under the current directory (the first number not "
                     "taken), printed at the end; only --grid given: just the grid")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("sample-conditional", help="conditional samples (rejection sampling)")
    add_model_args(p)
    p.add_argument("--attr", nargs="+", required=True,
                   help="fitted attribute file(s); several = AND")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-draws", type=int, default=None)
    add_conditional_args(p)
    add_image_output(p, help="a folder (created; 000000.png, 000001.png, ...) or one .png file "
                     "(-n 1); default: a new folder sample-conditional-NNN under the current "
                     "directory (the first number not taken), printed at the end; only --grid "
                     "given: just the grid")
    p.set_defaults(fn=cmd_sample_conditional)
