"""``d2c-fast fit-attribute``: a few-shot attribute (linear classifier on latents) from
labelled, or positive + unlabelled, images: your own files and folders or the built-in faces.

    d2c-fast fit-attribute MODEL --positives pos/ --negatives neg/ -o blond.safetensors
    d2c-fast fit-attribute MODEL --positives pos/ --unlabelled faces/ -o blond.safetensors
    d2c-fast fit-attribute MODEL --faces blond_hair -n 100 -o blond.safetensors
"""
from __future__ import annotations

import os
import time

import torch

from ..data import ATTRIBUTES, FacesDataset
from .options import (add_model_args, add_overwrite, check_new_file, expand_images,
                      open_sampler, plural)


def _faces(args, resolution):
    """``--faces``: rendered built-in faces -> ``(positives, negatives, unlabelled)``."""
    col = ATTRIBUTES.index(args.faces)
    ds = FacesDataset(max(4000, 40 * args.n), resolution=resolution, seed=args.data_seed,
                      split="val")
    y = ds.all_labels()[:, col]
    start = args.n_unlabelled if args.positive_only else 0
    pos = (torch.nonzero(y[start:] == 1).flatten() + start).tolist()
    neg = (torch.nonzero(y[start:] == 0).flatten() + start).tolist()

    def render(idx):
        return torch.stack([ds[i][0] for i in idx])
    if args.positive_only:
        return render(pos[:args.n]), None, render(list(range(args.n_unlabelled)))
    return render(pos[:args.n // 2]), render(neg[:args.n - args.n // 2]), None


def cmd_fit_attribute(args) -> int:
    check_new_file(args, args.output)
    if args.faces and (args.positives or args.negatives or args.unlabelled):
        raise ValueError("--faces fits on rendered built-in faces; give it alone, or your own "
                         "--positives with --negatives / --unlabelled")
    if args.positive_only and not args.faces:
        raise ValueError("--positive-only is for --faces; with your own images give "
                         "--positives and --unlabelled")
    if args.faces and args.n < 2:
        raise ValueError(f"-n must be >= 2 (labelled or positive faces), got {args.n}")
    if args.faces and args.positive_only and args.n_unlabelled < 1:
        raise ValueError(f"--n-unlabelled must be >= 1, got {args.n_unlabelled}")
    s = open_sampler(args)
    if args.faces:
        if args.faces not in ATTRIBUTES:
            raise ValueError(f"--faces must be one of {ATTRIBUTES}")
        positives, negatives, unl = _faces(args, s.resolution)
        name = args.name or args.faces
    else:
        positives = expand_images(args.positives)
        negatives, unl = expand_images(args.negatives), expand_images(args.unlabelled)
        if positives is None:
            raise ValueError("give --positives (files or directories) or --faces ATTRIBUTE")
        name = args.name or os.path.splitext(os.path.basename(args.output))[0]
    t = time.perf_counter()
    a = s.fit_attribute(positives, negatives, unlabelled=unl, name=name, prior=args.prior,
                        folds=args.folds, seed=args.seed, flip=False if args.no_flip else None,
                        resize=args.resize)
    a.save(args.output)
    i = a.info
    print(f"{name}: {i['mode']} fit in {time.perf_counter() - t:.1f} s, CV accuracy "
          f"{i['cv_accuracy']:.3f} (L2 {i['l2']:g}, {i['folds']} folds), prior {i['prior']:.3f}, "
          f"recommended strength {i['recommended_strength'][0]:.2f}.."
          f"{i['recommended_strength'][1]:.2f}"
          + (f", {plural(i['n_mirrored'], 'mirrored image')}" if i["n_mirrored"] else ""))
    if i.get("prior_source") == "labelled set rate":
        print(f"note: prior {i['prior']:.3f} is the labelled set's rate; conditional sampling "
              "wants the attribute's real rate: pass --prior, or sample with --adapt-prior 512 "
              "(the rate among the model's own samples)")
    print(f"wrote {args.output} (model {a.fingerprint})")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("fit-attribute", help="fit an attribute (linear classifier on latents) "
                       "from labelled or positive + unlabelled images")
    add_model_args(p)
    p.add_argument("--positives", nargs="+", help="image files or directories")
    p.add_argument("--negatives", nargs="+")
    p.add_argument("--unlabelled", nargs="+", help="positive-unlabelled mode")
    p.add_argument("--faces", help="fit from the built-in faces (val split): an attribute name")
    p.add_argument("-n", type=int, default=100, help="--faces: number of labels")
    p.add_argument("--positive-only", action="store_true", help="--faces: n positives + "
                   "--n-unlabelled unlabelled")
    p.add_argument("--n-unlabelled", type=int, default=500)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--prior", type=float, default=None, help="population rate of the attribute")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--no-flip", action="store_true", help="do not also train on the mirrored "
                   "images (for attributes a mirror changes)")
    p.add_argument("--resize", action="store_true", help="resize images to the model resolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None)
    p.add_argument("-o", "--output", required=True, help="attribute .safetensors")
    add_overwrite(p)
    p.set_defaults(fn=cmd_fit_attribute)
