"""D2C models from the command line: convert, sample, edit, train, evaluate, few-shot attributes.

This module holds convert, info, sample, manipulate and demo; train/cli.py, eval/cli.py and
attr_cli.py add the training, evaluation and attribute commands.

    d2c-fast convert model.ckpt --config config.yml -o model.safetensors
    d2c-fast info model.safetensors
    d2c-fast sample model.safetensors -n 16 --seed 0 --grid samples.png
    d2c-fast manipulate model.safetensors --attr blond.ckpt --step 1.5 img1.png img2.png -o edits/
    d2c-fast demo -o demo.png
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .errors import D2CError


def _sampler(args):
    from .sampler import Sampler
    apply_threads(args)
    return Sampler(args.ckpt, config=args.config, device=args.device, impl=args.impl)


def _add_model_args(p):
    p.add_argument("ckpt", help="official model.ckpt (with --config), native .safetensors, or 'builtin'")
    p.add_argument("--config", help="official YAML / our JSON config (needed for .ckpt)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default="fast", choices=["ref", "fast"])


def cmd_convert(args) -> int:
    from .checkpoint import convert
    from .images import check_output_file
    check_output_file(args.output)
    m = convert(args.ckpt, args.config, args.output)
    print(f"wrote {args.output} (latent {tuple(m.config.latent_shape)}, "
          f"resolution {m.config.resolution})")
    return 0


def cmd_info(args) -> int:
    from . import backend_info
    s = _sampler(args)
    ae = s.config.autoencoder
    n_ae = sum(p.numel() for p in s.autoencoder.parameters())
    n_un = sum(p.numel() for p in s.unet_model.parameters())
    print(f"model: {args.ckpt}")
    print(f"  resolution {ae.resolution}, arch {ae.arch_instance}, num_x_bits {ae.num_x_bits}")
    print(f"  latent {s.latent_shape}, U-Net ch {s.config.unet.ch} x {s.config.unet.ch_mult}")
    print(f"  parameters: autoencoder {n_ae / 1e6:.2f} M, U-Net {n_un / 1e6:.2f} M")
    from .checkpoint import latent_norm_kind
    print(f"  latent standardisation: per {latent_norm_kind(s.std)} {tuple(s.std.shape)}")
    if s.guide_model is not None:
        n_g = sum(p.numel() for p in s.guide_model.parameters())
        print(f"  guide prior (autoguidance): U-Net ch {s.config.guide.ch}, {n_g / 1e6:.2f} M, "
              f"default guidance {s.guidance:g}")
        if s.guidance_rescale > 0:
            tr = s.guidance_rescale_t
            print(f"  guidance rescale {s.guidance_rescale:g} at "
                  f"{'t in [%d, %d]' % tr if tr is not None else 'every t'}")
    print(f"kernels on {args.device}:")
    for op, info in backend_info(args.device).items():
        print(f"  {op}: {info['kernel']} ({info['reason']})")
    return 0


def cmd_sample(args) -> int:
    from .eval.cli import apply_rescale_args
    from .images import check_output_dir, check_output_file, save_grid, save_png
    if args.output:
        if "{i" in args.output:
            check_output_file(args.output, "--output pattern")
        else:
            check_output_dir(args.output, "--output")
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = _sampler(args)
    apply_rescale_args(s, args)
    t = time.perf_counter()
    x = s.sample(args.n, skip=args.skip, eta=args.eta, seed=args.seed, mode=args.mode,
                 batch_size=args.batch_size, progress=True, eps_scale=args.eps_scale,
                 guidance=args.guidance)
    dt = time.perf_counter() - t
    if args.output:
        save_png(x, args.output if "{i" in args.output else os.path.join(args.output, "{i:05d}.png"))
    if args.grid:
        save_grid(x, args.grid, nrow=min(8, args.n))
    print(f"{args.n} samples in {dt:.2f} s ({dt / args.n:.3f} s/image)")
    return 0


def cmd_manipulate(args) -> int:
    from .attributes import Attribute
    from .images import check_output_file, output_paths, save_grid, save_png
    outs = output_paths(args.images, args.output)[0]
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = _sampler(args)
    attr = Attribute.load(args.attr)
    t = time.perf_counter()
    x = s.manipulate(args.images, attr, step=args.step, t0=args.t0, skip=args.skip,
                     seed=args.seed, mode=args.mode, resize=args.resize,
                     batch_size=args.batch_size, guidance=args.guidance)
    dt = time.perf_counter() - t
    for out, img in zip(outs, x):
        save_png(img, out)
    if args.grid:
        from .images import load_images
        orig = load_images(args.images, size=s.resolution, resize=args.resize,
                           channels=s.image_channels)
        save_grid([orig, x], args.grid, labels=["input", f"step {args.step:g}"])
    from .edit import edit_guidance
    print(f"{len(outs)} edits in {dt:.2f} s ({dt / len(outs):.3f} s/image) -> {args.output} "
          f"(guidance {edit_guidance(s, 'd2c', args.guidance):g})")
    return 0


def check_counts(minimum: int = 1, **counts) -> None:
    """``ValueError`` for the first count below ``minimum``; names are flags without the
    leading dashes, underscores for hyphens (``n_train=...`` -> ``--n-train``)."""
    for name, v in counts.items():
        if v is not None and v < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {v}")


def apply_threads(args) -> None:
    """``--threads N`` of any subcommand: torch threads for this process (absent: torch's
    default, all cores); ``N < 1`` is an error."""
    n = getattr(args, "threads", None)
    if n is None:
        return
    check_counts(threads=n)
    import torch
    torch.set_num_threads(n)


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .images import check_output_file
    check_output_file(args.output)
    apply_threads(args)
    return run_demo(args.output, device=args.device, impl=args.impl)


def build_parser() -> argparse.ArgumentParser:
    from .attr_cli import EDIT_GUIDANCE_HELP
    from .eval.cli import add_rescale_args
    ap = argparse.ArgumentParser(prog="d2c-fast", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="official model.ckpt + YAML -> native .safetensors")
    p.add_argument("ckpt")
    p.add_argument("--config", required=True)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("info", help="describe a model and the kernels that will serve it")
    _add_model_args(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("sample", help="unconditional samples")
    _add_model_args(p)
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--skip", type=int, default=100)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--eps-scale", type=float, default=1.0,
                   help="divide each noise prediction by this (1: official; ~1.02: epsilon "
                        "scaling against exposure bias, docs/quality/README.md)")
    p.add_argument("--guidance", type=float, default=None,
                   help="autoguidance weight (models with a guide prior; default: the model's "
                        "recommended weight; 1: the prior alone, official)")
    add_rescale_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("-o", "--output", help="directory or pattern with {i}, e.g. out/{i:04d}.png")
    p.add_argument("--grid", help="also write a PNG grid here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("manipulate", help="edit images along an attribute (official boundary file)")
    _add_model_args(p)
    p.add_argument("images", nargs="+")
    p.add_argument("--attr", required=True, help="boundary .ckpt")
    p.add_argument("--step", type=float, required=True)
    p.add_argument("--t0", type=int, default=50)
    p.add_argument("--skip", type=int, default=50)
    p.add_argument("--guidance", type=float, default=None, help=EDIT_GUIDANCE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--resize", action="store_true", help="resize inputs to the model resolution")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--grid", help="also write a before/after PNG grid here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.set_defaults(fn=cmd_manipulate)

    p = sub.add_parser("demo", help="the README's first command: a PNG of encodes, edits, samples")
    p.add_argument("-o", "--output", default="demo.png")
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default="fast", choices=["ref", "fast"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.set_defaults(fn=cmd_demo)

    from .eval.cli import add_parser as add_eval
    from .train.cli import add_parser as add_train
    add_train(sub)   # train, export
    add_eval(sub)    # train-oracle, evaluate
    from .attr_cli import add_parser as add_attr
    add_attr(sub)    # fit-attribute, edit, sample-conditional, eval-attributes, *-dir jobs
    return ap


def main(argv=None) -> int:
    """Run a subcommand. Errors of the library's family (:class:`D2CError`) and bad argument
    values (``ValueError``, e.g. a guidance weight for a model without a guide prior) and
    file-system errors (``OSError``: an output path that cannot be written) end with one line
    on stderr and exit status 2; ``D2C_FAST_TRACEBACK=1`` re-raises them."""
    import warnings
    args = build_parser().parse_args(argv)
    fmt = warnings.formatwarning
    if os.environ.get("D2C_FAST_TRACEBACK") != "1":   # warnings in one line, no source line
        warnings.formatwarning = lambda msg, *a, **k: f"d2c-fast: warning: {msg}\n"
    try:
        return args.fn(args)
    except (D2CError, ValueError, OSError) as e:
        if os.environ.get("D2C_FAST_TRACEBACK") == "1":
            raise
        print(f"d2c-fast: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = fmt


if __name__ == "__main__":
    sys.exit(main())
