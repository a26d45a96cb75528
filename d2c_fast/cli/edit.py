"""``d2c-fast edit``: edit images along attributes, official boundary files (a raw ``--step``)
or fitted attributes (``--strength``, ``--target``, ``--sweep``, ``--preserve``, methods).

    d2c-fast edit MODEL a.png b.png --attr blond.ckpt --step 1.5 -o edits/
    d2c-fast edit MODEL a.png b.png --attr blond.safetensors --strength 4 -o edits/
    d2c-fast edit MODEL a.png --attr blond.safetensors --sweep -4 0 4 8 -o sweep/ --grid s.png

``manipulate`` is the same command under its first name, with the flags it always had: one
``--attr`` and one (required) ``--step``, which take exactly one value so that images may
follow them (``manipulate MODEL --attr blond.ckpt --step 1.5 a.png b.png -o edits/``). Its
outputs are the same files; two things of its own are kept: the grid labels the edited row
``step S`` (``edit``: the method) and its summary line counts edits and seconds per image."""
from __future__ import annotations

import argparse
import time

from ..edit import edit_guidance, sweep
from ..images import check_output_file, load_images, output_paths, save_grid, save_png
from .options import (EDIT_GUIDANCE_HELP, add_guidance, add_model_args, load_attributes,
                      one_or_many, open_sampler)


def edit_kwargs(args) -> dict:
    """The edit flags (:func:`add_edit_args`) as keywords of ``Sampler.manipulate``."""
    kw = dict(method=args.method, t0=args.t0, skip=args.skip, guidance=args.guidance)
    for k in ("strength", "step", "target"):
        if getattr(args, k) is not None:
            kw[k] = one_or_many(getattr(args, k))
    return kw


def _target_value(v: str):
    if v == "typical":
        return v
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a logit or 'typical', got {v!r}") from None


def add_edit_args(p, *, sweeps: bool = True, official: bool = False) -> None:
    """The edit flags: what to edit along and how far, the method and its settings.
    ``sweeps``: also ``--sweep`` (a grid of strengths); ``official``: ``manipulate``'s
    flags, one ``--attr`` and one ``--step`` (no strengths, targets, sweeps, preservation or
    methods)."""
    if official:
        p.add_argument("--attr", nargs=1, required=True, help="boundary .ckpt (or a fitted "
                       "attribute .safetensors)")
        p.add_argument("--step", type=float, nargs=1, required=True,
                       help="official raw step: z - step * boundary")
        p.set_defaults(strength=None, target=None, sweep=None, preserve=None, method="d2c")
    else:
        p.add_argument("--attr", nargs="+", required=True, help="attribute file(s) "
                       "(.safetensors fitted, or official boundary .ckpt)")
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--strength", type=float, nargs="+", help="calibrated strength(s): "
                       "logit change, > 0 adds the attribute (fitted attributes)")
        g.add_argument("--step", type=float, nargs="+",
                       help="official raw step(s): z - step * boundary")
        g.add_argument("--target", nargs="+", type=_target_value,
                       help="per-image edit: take each image's classifier logit to this value "
                       "('typical': the fit's median positive logit; >= 0 adds, < 0 removes)")
        if sweeps:
            g.add_argument("--sweep", type=float, nargs="+",
                           help="strengths of an interpolation grid")
        p.add_argument("--preserve", nargs="+", help="fitted attributes to keep unchanged")
        p.add_argument("--method", default="d2c", choices=["d2c", "nvae", "ddim"])
    p.add_argument("--t0", type=int, default=50)
    p.add_argument("--skip", type=int, default=None, help="d2c: 50, ddim: 100 by default")
    add_guidance(p, help=EDIT_GUIDANCE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--resize", action="store_true", help="resize inputs to the model resolution")
    p.add_argument("--batch-size", type=int, default=None)


def _edit(args, official: bool) -> int:
    sfx = [f"_s{v:g}.png" for v in args.sweep] if args.sweep else [".png"]
    outs = output_paths(args.images, args.output, sfx)
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = open_sampler(args)
    attrs = load_attributes(args.attr, s)
    pres = load_attributes(args.preserve or [], s) or None
    attr = one_or_many(attrs)
    t = time.perf_counter()
    if args.sweep:
        g = sweep(s, args.images, attr, args.sweep, method=args.method, t0=args.t0,
                  skip=args.skip, preserve=pres, mode=args.mode, seed=args.seed,
                  resize=args.resize, batch_size=args.batch_size, guidance=args.guidance)
        for k in range(len(args.sweep)):
            for out, img in zip(outs[k], g[k]):
                save_png(img, out)
        if args.grid:
            save_grid(list(g), args.grid, labels=[f"s={v:g}" for v in args.sweep])
    else:
        x = s.manipulate(args.images, attr, preserve=pres, mode=args.mode, seed=args.seed,
                         resize=args.resize, batch_size=args.batch_size, **edit_kwargs(args))
        for out, img in zip(outs[0], x):
            save_png(img, out)
        if args.grid:
            orig = load_images(args.images, size=s.resolution, resize=args.resize,
                               channels=s.image_channels)
            label = f"step {args.step[0]:g}" if official else args.method
            save_grid([orig, x], args.grid, labels=["input", label])
    dt = time.perf_counter() - t
    n = len(args.images)
    w = edit_guidance(s, "d2c", args.guidance) if args.method == "d2c" else None
    if official:        # method d2c
        print(f"{n} edits in {dt:.2f} s ({dt / n:.3f} s/image) -> {args.output} "
              f"(guidance {w:g})")
    else:
        how = args.method if w is None else f"d2c, guidance {w:g}"
        print(f"{n} images in {dt:.2f} s -> {args.output} ({how})")
    return 0


def cmd_edit(args) -> int:
    return _edit(args, official=False)


def cmd_manipulate(args) -> int:
    return _edit(args, official=True)


def add_parser(sub) -> None:
    for name, official, text in (
            ("edit", False, "edit images along attributes: fitted (strength, target, methods, "
             "preservation, sweeps) or official boundary files (raw step)"),
            ("manipulate", True, "edit images along an attribute (official boundary file; "
             "the edit command with one --attr and one --step)")):
        p = sub.add_parser(name, help=text)
        add_model_args(p)
        p.add_argument("images", nargs="+")
        add_edit_args(p, official=official)
        p.add_argument("-o", "--output", required=True, help="output directory")
        p.add_argument("--grid", help="also write a before/after PNG grid here"
                       + ("" if official else " (--sweep: a row per strength)"))
        p.set_defaults(fn=cmd_manipulate if official else cmd_edit)
