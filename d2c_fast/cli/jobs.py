"""``d2c-fast manipulate-dir`` and ``sample-conditional-dir``: the resumable directory jobs,
sharded under ``torchrun --nproc_per_node=K -m d2c_fast ...`` (see :mod:`d2c_fast.jobs`).

    d2c-fast manipulate-dir MODEL in/ -o out/ --attr blond.safetensors --strength 4
    d2c-fast sample-conditional-dir MODEL -o out/ --attr blond.safetensors -n 1000

Inputs and outputs are spelled as ``edit`` spells them (a positional input folder, ``-o``);
``--input-dir`` / ``--output-dir``, their first names, still work and warn. Directory jobs
never overwrite: an output that exists counts as done (that is how they resume), and a folder
holding a job with other settings is refused.
"""
from __future__ import annotations

import json
import warnings

from ..jobs import manipulate_dir, sample_conditional_dir
from .edit import add_edit_args, edit_kwargs
from .options import add_model_args, apply_threads, one_or_many, rescale_kwargs
from .sample import add_conditional_args

JOB_OUTPUT_HELP = ("output folder (required: a rerun with the same settings resumes there; "
                   "existing outputs are kept, never overwritten)")


def _renamed(args, new: str, old: str, new_flag: str, old_flag: str) -> str:
    """The value of ``new`` or of its deprecated spelling ``old`` (which warns)."""
    a, b = getattr(args, new), getattr(args, old)
    if a is not None and b is not None:
        raise ValueError(f"give {new_flag} or {old_flag}, not both ({old_flag} is its old name)")
    if b is not None:
        warnings.warn(f"{old_flag} is deprecated; give {new_flag} (as in edit)", FutureWarning,
                      stacklevel=2)
        return b
    if a is None:
        raise ValueError(f"give {new_flag}")
    return a


def cmd_manipulate_dir(args) -> int:
    inp = _renamed(args, "input", "input_dir", "the input folder (positional)", "--input-dir")
    out = _renamed(args, "output", "output_dir", "-o", "--output-dir")
    apply_threads(args)
    r = manipulate_dir(args.ckpt, inp, out, one_or_many(args.attr),
                       preserve=args.preserve or None, seed=args.seed,
                       batch_size=16 if args.batch_size is None else args.batch_size,
                       mode=args.mode, resize=args.resize,
                       progress=not args.quiet, config=args.config, device=args.device,
                       impl=args.impl, **edit_kwargs(args))
    print(json.dumps(r))
    return 0


def cmd_sample_conditional_dir(args) -> int:
    out = _renamed(args, "output", "output_dir", "-o", "--output-dir")
    apply_threads(args)
    r = sample_conditional_dir(args.ckpt, out, one_or_many(args.attr), args.n,
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
    p.add_argument("input", nargs="?", default=None, metavar="INPUT_FOLDER",
                   help="folder of images (recursively), as edit takes folders")
    p.add_argument("-o", "--output", default=None, help=JOB_OUTPUT_HELP)
    p.add_argument("--input-dir", default=None, help="deprecated: the input folder's old flag")
    p.add_argument("--output-dir", default=None, help="deprecated: -o's old name")
    add_edit_args(p, sweeps=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_manipulate_dir)

    p = sub.add_parser("sample-conditional-dir", help="write conditional samples to a "
                       "directory (resumable; sharded under torchrun)")
    add_model_args(p)
    p.add_argument("-o", "--output", default=None, help=JOB_OUTPUT_HELP + "; files "
                   "000000.png (+ .json), 000001.png, ...")
    p.add_argument("--output-dir", default=None, help="deprecated: -o's old name")
    p.add_argument("--attr", nargs="+", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-draws-per-image", type=int, default=100)
    add_conditional_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_sample_conditional_dir)
