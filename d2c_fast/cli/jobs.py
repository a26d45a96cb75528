"""``d2c-fast manipulate-dir`` and ``sample-conditional-dir``: the resumable directory jobs,
sharded under ``torchrun --nproc_per_node=K -m d2c_fast ...`` (see :mod:`d2c_fast.jobs`).

    d2c-fast manipulate-dir MODEL --input-dir in/ --output-dir out/ --attr blond.safetensors --strength 4
    d2c-fast sample-conditional-dir MODEL --output-dir out/ --attr blond.safetensors -n 1000
"""
from __future__ import annotations

import json

from ..jobs import manipulate_dir, sample_conditional_dir
from .edit import add_edit_args, edit_kwargs
from .options import add_model_args, apply_threads, one_or_many, rescale_kwargs
from .sample import add_conditional_args


def cmd_manipulate_dir(args) -> int:
    apply_threads(args)
    r = manipulate_dir(args.ckpt, args.input_dir, args.output_dir, one_or_many(args.attr),
                       preserve=args.preserve or None, seed=args.seed,
                       batch_size=16 if args.batch_size is None else args.batch_size,
                       mode=args.mode, resize=args.resize,
                       progress=not args.quiet, config=args.config, device=args.device,
                       impl=args.impl, **edit_kwargs(args))
    print(json.dumps(r))
    return 0


def cmd_sample_conditional_dir(args) -> int:
    apply_threads(args)
    r = sample_conditional_dir(args.ckpt, args.output_dir, one_or_many(args.attr), args.n,
                               seed=args.seed, batch_size=args.batch_size,
                               threshold=args.threshold,
                               max_draws_per_image=args.max_draws_per_image, skip=args.skip,
                               mode=args.mode, progress=not args.quiet,
                               eps_scale=args.eps_scale, guidance=args.guidance,
                               adapt_prior=args.adapt_prior,
                               **rescale_kwargs(args), config=args.config,
                               device=args.device, impl=args.impl)
    print(json.dumps(r))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("manipulate-dir", help="edit a directory of images (resumable; "
                       "sharded under torchrun)")
    add_model_args(p)
    p.add_argument("--input-dir", required=True)
    p.add_argument("--output-dir", required=True)
    add_edit_args(p, sweeps=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_manipulate_dir)

    p = sub.add_parser("sample-conditional-dir", help="write conditional samples to a "
                       "directory (resumable; sharded under torchrun)")
    add_model_args(p)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--attr", nargs="+", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-draws-per-image", type=int, default=100)
    add_conditional_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_sample_conditional_dir)
