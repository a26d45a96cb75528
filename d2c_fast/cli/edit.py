"""``d2c-fast edit``: edit images along attributes, official boundary files (a raw ``--step``)
or fitted attributes (``--strength``, ``--target``, ``--sweep``, ``--preserve``, methods).

    d2c-fast edit builtin a.png --attr blond_hair -o blond.png
    d2c-fast edit MODEL a.png b.png --attr blond.ckpt --step 1.5 -o edits/
    d2c-fast edit MODEL a.png b.png --attr blond.safetensors --strength 4 -o edits/
    d2c-fast edit MODEL a.png --attr blond.safetensors --sweep -4 0 4 8 -o sweep/ --grid s.png

``manipulate`` is the same command under its first name, with the flags it always had: one
``--attr`` and one (required) ``--step``, which take exactly one value so that images may
follow them (``manipulate MODEL --attr blond.ckpt --step 1.5 a.png b.png -o edits/``). Its
outputs are the same files; its summary line counts edits and seconds per image.

Inputs are image files and folders (``d2c-fast edit MODEL photos/ ...``: their images,
recursively, as ``fit-attribute --positives`` reads folders); outputs as every image command
writes them (:func:`.options.image_outputs`): ``-o`` a folder or one ``.png``, by default a new
folder ``edit-NNN``, never over an existing file without ``--overwrite``. Grids have the
inputs as their first row and label each edited row by attribute and amount."""
from __future__ import annotations

import argparse
import os
import time

import torch

from ..edit import METHODS, default_method, edit_guidance, sweep
from ..images import (IMAGE_EXTENSIONS, is_gray, output_paths, save_grid, save_png,
                      to_channels)
from .options import (EDIT_GUIDANCE_HELP, add_guidance, add_image_output, add_mode,
                      add_model_args, check_grid, check_one_file, expand_images, is_image_file,
                      load_attributes, new_output_dir, one_or_many, open_sampler, plural,
                      refuse_existing, wrote)


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
        g = p.add_mutually_exclusive_group()
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
        p.add_argument("--method", default=None, choices=METHODS,
                       help="local (default without --step): the clean-up confined to where "
                       "the edit lives, the classifier holding the target; d2c (default with "
                       "--step): the paper's edit; nvae: the raw step only; ddim: inversion. "
                       "With none of --strength/--step/--target a fitted attribute is added "
                       "up to --target typical")
    p.add_argument("--t0", type=int, default=None, help="noise level of the clean-up "
                   "(local: 300, d2c: 50 by default)")
    p.add_argument("--skip", type=int, default=None, help="DDIM stride (local: 150, d2c: 50, "
                   "ddim: 100 by default)")
    add_guidance(p, help=EDIT_GUIDANCE_HELP)
    p.add_argument("--seed", type=int, default=0)
    add_mode(p)
    p.add_argument("--resize", action="store_true", help="resize inputs to the model resolution")
    p.add_argument("--batch-size", type=int, default=None)


def _outputs(args, inputs, command: str) -> tuple[list[list[str]], str]:
    """``result[j][i]``: where edit ``j`` (sweep value) of input ``i`` goes: ``-o`` a folder
    (the input's name, ``.png``; ``_s<value>.png`` for sweeps), one ``.png`` file (one
    output), or a new folder ``{command}-NNN`` without ``-o``; existing files refused
    without ``--overwrite``."""
    sfx = [f"_s{v:g}.png" for v in args.sweep] if args.sweep else [".png"]
    if args.output is not None and is_image_file(args.output):
        check_one_file(args.output, len(inputs) * len(sfx))
        if os.path.realpath(args.output) in {os.path.realpath(p) for p in inputs}:
            raise ValueError(f"-o {args.output} would overwrite an input image; choose another "
                             f"output name")
        outs, where = [[args.output]], args.output
    else:
        where = args.output or new_output_dir(command)
        outs = output_paths(inputs, where, sfx)
    refuse_existing([q for row in outs for q in row], args.overwrite)
    check_grid(args)
    return outs, where


def grid_label(attrs, args, k: int | None = None) -> str:
    """A grid row's label: the attribute(s) and how far (``blond_hair +6``, ``beard step
    1.5``, ``smiling to typical``); ``k``: the ``--sweep`` value's index."""
    names = [a.name or "attribute" for a in attrs]
    amounts = ["to typical"] * len(names)     # the default amount
    if k is not None:
        amounts = [f"{args.sweep[k]:+g}"] * len(names)
    else:
        for flag, fmt in (("strength", "{:+g}"), ("step", "step {:g}"), ("target", "to {}")):
            vals = getattr(args, flag)
            if vals is not None:
                vals = vals if len(vals) == len(names) else vals * len(names)
                amounts = [fmt.format(v) for v in vals]
                break
    return ", ".join(f"{n} {a}" for n, a in zip(names, amounts))


def _edit(args, official: bool) -> int:
    command = "manipulate" if official else "edit"
    inputs = expand_images(args.images)
    if not inputs:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                         f"{' '.join(args.images)}")
    outs, where = _outputs(args, inputs, command)
    s = open_sampler(args)
    attrs = load_attributes(args.attr, s)
    pres = load_attributes(args.preserve or [], s) or None
    attr = one_or_many(attrs)
    x0 = s.load_images(inputs, resize=args.resize)
    gray = is_gray(x0) if x0.shape[1] == 3 else None

    def look(x):   # grayscale inputs come out gray: no colour the input did not have
        if gray is None or not bool(gray.any()):
            return x
        g = to_channels(x, 1).expand(-1, 3, -1, -1)
        return torch.where(gray.to(x.device)[:, None, None, None], g, x)
    t = time.perf_counter()
    if args.sweep:
        g = sweep(s, x0, attr, args.sweep, method=args.method, t0=args.t0,
                  skip=args.skip, preserve=pres, mode=args.mode, seed=args.seed,
                  batch_size=args.batch_size, guidance=args.guidance)
        rows = [look(r) for r in g]
        for k in range(len(args.sweep)):
            for out, img in zip(outs[k], rows[k]):
                save_png(img, out)
        if args.grid:
            save_grid([x0, *rows], args.grid, labels=["input"] + [
                grid_label(attrs, args, k) for k in range(len(args.sweep))])
    else:
        x = look(s.manipulate(x0, attr, preserve=pres, mode=args.mode, seed=args.seed,
                              batch_size=args.batch_size, **edit_kwargs(args)))
        for out, img in zip(outs[0], x):
            save_png(img, out)
        if args.grid:
            save_grid([x0, x], args.grid, labels=["input", grid_label(attrs, args)])
    dt = time.perf_counter() - t
    n = len(inputs)
    method = default_method(args.method, args.step)
    w = edit_guidance(s, method, args.guidance) if method in ("d2c", "local") else None
    if official:        # method d2c
        print(f"{plural(n, 'edit')} in {dt:.2f} s ({dt / n:.3f} s/image) -> {where} "
              f"(guidance {w:g})")
    else:
        how = method if w is None else f"{method}, guidance {w:g}"
        print(f"{plural(n, 'image')} in {dt:.2f} s -> {where} ({how})")
    paths = [q for row in outs for q in row]
    n_gray = int(gray.sum()) if gray is not None else 0
    print(wrote(paths, where, args.output is None)
          + (f"; {plural(n_gray, 'grayscale input')} written in grayscale" if n_gray else ""))
    if args.grid:
        print(f"wrote the grid {args.grid}")
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
        p.add_argument("images", nargs="+", help="image files and folders (their images, "
                       "recursively): what to edit; the first argument is the model")
        add_edit_args(p, official=official)
        add_image_output(p, help="a folder (created; each input's name as .png, "
                         "name_s<value>.png for --sweep), or one file name ending in .png "
                         "for one input (and no --sweep); default: a new folder "
                         f"{name}-NNN under the current directory (the first number not "
                         "taken), printed at the end",
                         grid="also write a PNG grid here: the inputs, then the edits, rows "
                         "labelled by attribute and amount"
                         + ("" if official else " (--sweep: a row per strength)"))
        p.set_defaults(fn=cmd_manipulate if official else cmd_edit)
