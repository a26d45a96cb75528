"""``d2c-fast`` subcommands for few-shot attributes (wired in by :func:`add_parser`):

    d2c-fast fit-attribute MODEL --positives pos/ --negatives neg/ -o blond.safetensors
    d2c-fast fit-attribute MODEL --positives pos/ --unlabelled faces/ -o blond.safetensors
    d2c-fast fit-attribute MODEL --faces blond_hair -n 100 -o blond.safetensors   # built-in data
    d2c-fast edit MODEL --attr blond.safetensors --strength 4 a.png b.png -o edits/ [--sweep -4 0 4 8]
    d2c-fast sample-conditional MODEL --attr blond.safetensors -n 16 --grid blond.png
    d2c-fast eval-attributes MODEL --oracle oracle.safetensors -o eval_attrs/
    d2c-fast manipulate-dir MODEL --input-dir in/ --output-dir out/ --attr blond.safetensors --strength 4
    d2c-fast sample-conditional-dir MODEL --output-dir out/ --attr blond.safetensors -n 1000

``manipulate-dir`` and ``sample-conditional-dir`` are resumable and run sharded under
``torchrun --nproc_per_node=K -m d2c_fast ...`` (see :mod:`d2c_fast.jobs`).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from .cli import apply_threads


def _expand(paths):
    """Files and directories (their images, sorted) -> list of image paths."""
    if not paths:
        return None
    from .jobs import list_images
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += [os.path.join(p, f) for f in list_images(p)]
        else:
            out.append(p)
    return out


def _sampler(args):
    from .sampler import Sampler
    apply_threads(args)
    return Sampler(args.ckpt, config=args.config, device=args.device, impl=args.impl)


def _attrs(paths, s):
    from .attributes import Attribute
    return [Attribute.load(p, model=s) for p in paths]


def cmd_fit_attribute(args) -> int:
    from .images import check_output_file
    check_output_file(args.output)
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
    s = _sampler(args)
    if args.faces:
        from .data import ATTRIBUTES, FacesDataset
        if args.faces not in ATTRIBUTES:
            raise ValueError(f"--faces must be one of {ATTRIBUTES}")
        col = ATTRIBUTES.index(args.faces)
        ds = FacesDataset(max(4000, 40 * args.n), resolution=s.resolution, seed=args.data_seed,
                          split="val")
        y = ds.all_labels()[:, col]
        import torch
        start = args.n_unlabelled if args.positive_only else 0
        pos = (torch.nonzero(y[start:] == 1).flatten() + start).tolist()
        neg = (torch.nonzero(y[start:] == 0).flatten() + start).tolist()
        render = (lambda idx: torch.stack([ds[i][0] for i in idx]))
        if args.positive_only:
            positives = render(pos[:args.n])
            unl = render(list(range(args.n_unlabelled)))
            negatives = None
        else:
            positives = render(pos[:args.n // 2])
            negatives, unl = render(neg[:args.n - args.n // 2]), None
        name = args.name or args.faces
    else:
        positives = _expand(args.positives)
        negatives, unl = _expand(args.negatives), _expand(args.unlabelled)
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
          + (f", {i['n_mirrored']} mirrored images" if i["n_mirrored"] else ""))
    if i.get("prior_source") == "labelled set rate":
        print(f"note: prior {i['prior']:.3f} is the labelled set's rate; conditional sampling "
              "wants the attribute's real rate: pass --prior, or sample with --adapt-prior 512 "
              "(the rate among the model's own samples)")
    print(f"wrote {args.output} (model {a.fingerprint})")
    return 0


def _edit_kwargs(args):
    kw = dict(method=args.method, t0=args.t0, skip=args.skip, guidance=args.guidance)
    if args.strength is not None:
        kw["strength"] = args.strength if len(args.strength) > 1 else args.strength[0]
    if args.step is not None:
        kw["step"] = args.step if len(args.step) > 1 else args.step[0]
    if args.target is not None:
        kw["target"] = args.target if len(args.target) > 1 else args.target[0]
    return kw


def cmd_edit(args) -> int:
    from .images import check_output_file, load_images, output_paths, save_grid, save_png
    sfx = [f"_s{v:g}.png" for v in args.sweep] if args.sweep else [".png"]
    outs = output_paths(args.images, args.output, sfx)
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = _sampler(args)
    attrs = _attrs(args.attr, s)
    pres = _attrs(args.preserve or [], s) or None
    attr = attrs if len(attrs) > 1 else attrs[0]
    t = time.perf_counter()
    if args.sweep:
        from .edit import sweep
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
                         resize=args.resize, batch_size=args.batch_size, **_edit_kwargs(args))
        for out, img in zip(outs[0], x):
            save_png(img, out)
        if args.grid:
            orig = load_images(args.images, size=s.resolution, resize=args.resize,
                               channels=s.image_channels)
            save_grid([orig, x], args.grid, labels=["input", args.method])
    from .edit import edit_guidance
    how = args.method if args.method != "d2c" else \
        f"d2c, guidance {edit_guidance(s, 'd2c', args.guidance):g}"
    print(f"{len(args.images)} images in {time.perf_counter() - t:.2f} s -> {args.output} ({how})")
    return 0


def cmd_sample_conditional(args) -> int:
    from .eval.cli import apply_rescale_args
    from .images import check_output_dir, check_output_file, save_grid, save_png
    if args.output:
        check_output_dir(args.output, "--output")
    if args.grid:
        check_output_file(args.grid, "--grid")
    s = _sampler(args)
    apply_rescale_args(s, args)
    attrs = _attrs(args.attr, s)
    t = time.perf_counter()
    x, p, st = s.sample_conditional(attrs, args.n, seed=args.seed, batch_size=args.batch_size,
                                    max_draws=args.max_draws, threshold=args.threshold,
                                    skip=args.skip, mode=args.mode, return_stats=True,
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


def cmd_eval_attributes(args) -> int:
    from .cli import check_counts
    from .data import ATTRIBUTES
    from .images import check_output_dir
    check_output_dir(args.output, "-o")
    check_counts(n_eval=args.n_eval, n_real=args.n_real, n_naive=args.n_naive,
                 n_population=args.n_population, batch_size=args.batch_size,
                 d2c_skip=args.d2c_skip, ddim_skip=args.ddim_skip, cond_skip=args.cond_skip)
    check_counts(4, n_fit=args.n_fit)
    check_counts(0, n_cond=args.n_cond, cond_adapt_prior=args.cond_adapt_prior,
                 projector_steps=args.projector_steps)
    if not args.no_positive_only:
        check_counts(2, n_unlabelled=args.n_unlabelled)
    bad = [a for a in args.attributes if a not in ATTRIBUTES]
    if bad:
        raise ValueError(f"--attributes: unknown {bad}; the built-in faces have {list(ATTRIBUTES)}")
    bad = [m for m in args.methods if m not in ("d2c", "nvae", "ddim")]
    if bad:
        raise ValueError(f"--methods: unknown {bad}; choose from d2c, nvae, ddim")
    if not 0.0 <= args.cond_threshold <= 1.0:
        raise ValueError(f"--cond-threshold must be in [0, 1], got {args.cond_threshold}")
    apply_threads(args)
    from .eval.attributes_eval import evaluate_attributes
    from .sampler import Sampler
    s = Sampler(args.ckpt, config=args.config, device=args.device, impl=args.impl)
    if not 0 < args.t0 < s.num_timesteps:
        raise ValueError(f"--t0 must be in [1, {s.num_timesteps - 1}], got {args.t0}")
    r = evaluate_attributes(
        s, args.oracle, attributes=tuple(args.attributes), n_fit=args.n_fit,
        n_unlabelled=args.n_unlabelled, n_eval=args.n_eval, n_real=args.n_real,
        strength_factors=tuple(args.strength_factors), strengths=args.strengths,
        target_offsets=tuple(args.target_offsets),
        methods=tuple(args.methods), t0=args.t0, d2c_skip=args.d2c_skip,
        ddim_skip=args.ddim_skip, n_cond=args.n_cond, n_naive=args.n_naive,
        cond_skip=args.cond_skip, cond_eps_scale=args.cond_eps_scale,
        cond_guidance=args.cond_guidance, cond_adapt_prior=args.cond_adapt_prior,
        cond_threshold=args.cond_threshold if args.cond_threshold > 0 else None,
        n_population=args.n_population, projector_steps=args.projector_steps,
        positive_only=not args.no_positive_only, preserve_others=not args.no_preserve,
        fit_flip=False if args.fit_no_flip else None, seed=args.seed, data_seed=args.data_seed,
        edit_guidance=args.edit_guidance,
        batch_size=args.batch_size, out_dir=args.output,
        projector_model=(Sampler(args.ckpt, config=args.config, device=args.device, impl="ref")
                         if args.projector_steps else None))
    r["model"] = args.ckpt
    from .eval.attributes_eval import markdown
    with open(os.path.join(args.output, "attributes_eval.json"), "w") as f:
        json.dump(r, f, indent=1)
    print(markdown(r))
    print(f"wrote {args.output}/attributes_eval.{{md,json}}, edits_grid.png, conditional_grid.png")
    return 0


def cmd_manipulate_dir(args) -> int:
    from .jobs import manipulate_dir
    apply_threads(args)
    kw = _edit_kwargs(args)
    r = manipulate_dir(args.ckpt, args.input_dir, args.output_dir,
                       args.attr if len(args.attr) > 1 else args.attr[0],
                       preserve=args.preserve or None, seed=args.seed,
                       batch_size=16 if args.batch_size is None else args.batch_size,
                       mode=args.mode, resize=args.resize,
                       progress=not args.quiet, config=args.config, device=args.device,
                       impl=args.impl, **kw)
    print(json.dumps(r))
    return 0


def cmd_sample_conditional_dir(args) -> int:
    from .eval.cli import rescale_kwargs
    from .jobs import sample_conditional_dir
    apply_threads(args)
    r = sample_conditional_dir(args.ckpt, args.output_dir,
                               args.attr if len(args.attr) > 1 else args.attr[0], args.n,
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


def _target_value(v: str):
    if v == "typical":
        return v
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a logit or 'typical', got {v!r}") from None


EDIT_GUIDANCE_HELP = ("d2c clean-up: autoguidance weight (models with a guide prior; default: "
                      "the model's recommended weight, as in sampling; 1: the unguided, "
                      "official edit)")


def _edit_args(p, images=True):
    p.add_argument("--attr", nargs="+", required=True, help="attribute file(s) (.safetensors "
                   "fitted, or official boundary .ckpt)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--strength", type=float, nargs="+", help="calibrated strength(s): logit "
                   "change, > 0 adds the attribute (fitted attributes)")
    g.add_argument("--step", type=float, nargs="+", help="official raw step(s): z - step * boundary")
    g.add_argument("--target", nargs="+", type=_target_value,
                   help="per-image edit: take each image's classifier logit to this value "
                   "('typical': the fit's median positive logit; >= 0 adds, < 0 removes)")
    if images:
        g.add_argument("--sweep", type=float, nargs="+", help="strengths of an interpolation grid")
    p.add_argument("--preserve", nargs="+", help="fitted attributes to keep unchanged")
    p.add_argument("--method", default="d2c", choices=["d2c", "nvae", "ddim"])
    p.add_argument("--t0", type=int, default=50)
    p.add_argument("--skip", type=int, default=None, help="d2c: 50, ddim: 100 by default")
    p.add_argument("--guidance", type=float, default=None, help=EDIT_GUIDANCE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--resize", action="store_true")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)


def _adapt_prior_arg(p) -> None:
    p.add_argument("--adapt-prior", type=int, default=0, metavar="N",
                   help="calibrate the classifiers to the model's samples first: the "
                        "attribute rate among N pilot prior samples (EM) replaces the fit's "
                        "prior (0: off; 512 is a good start; see docs/quality/README.md)")


def add_parser(sub) -> None:
    from .eval.cli import add_rescale_args
    from .cli import _add_model_args

    p = sub.add_parser("fit-attribute", help="fit an attribute (linear classifier on latents) "
                       "from labelled or positive + unlabelled images")
    _add_model_args(p)
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
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", required=True, help="attribute .safetensors")
    p.set_defaults(fn=cmd_fit_attribute)

    p = sub.add_parser("edit", help="edit images with fitted attributes (strength, methods, "
                       "preservation, sweeps)")
    _add_model_args(p)
    p.add_argument("images", nargs="+")
    _edit_args(p)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--grid", help="also write a PNG grid here")
    p.set_defaults(fn=cmd_edit)

    p = sub.add_parser("sample-conditional", help="conditional samples (rejection sampling)")
    _add_model_args(p)
    p.add_argument("--attr", nargs="+", required=True, help="fitted attribute file(s); several = AND")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None,
                   help="accept a candidate only if every attribute's probability is >= this "
                        "(precision over diversity); default: the paper's rule, accept with "
                        "the probability itself")
    p.add_argument("--max-draws", type=int, default=None)
    _adapt_prior_arg(p)
    p.add_argument("--skip", type=int, default=100)
    p.add_argument("--eps-scale", type=float, default=1.0,
                   help="prior sampler's epsilon scaling (1: official; "
                        "see docs/quality/README.md)")
    p.add_argument("--guidance", type=float, default=None,
                   help="autoguidance weight (models with a guide prior; default: the model's "
                        "recommended weight; 1: the prior alone, official)")
    add_rescale_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", help="directory for PNGs")
    p.add_argument("--grid", help="PNG grid")
    p.set_defaults(fn=cmd_sample_conditional)

    p = sub.add_parser("eval-attributes", help="few-shot attribute evaluation on the built-in "
                       "faces with the oracle (edits by method, conditional generation, latency)")
    _add_model_args(p)
    p.add_argument("--oracle", required=True)
    p.add_argument("--attributes", nargs="+", default=["blond_hair", "red_lipstick", "beard"])
    p.add_argument("--n-fit", type=int, default=100)
    p.add_argument("--n-unlabelled", type=int, default=500)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--n-real", type=int, default=300)
    p.add_argument("--strength-factors", type=float, nargs="+", default=[1.0, 2.0, 3.0],
                   help="strengths as multiples of each attribute's logit gap")
    p.add_argument("--strengths", type=float, nargs="+", default=None,
                   help="absolute calibrated strengths (instead of factors)")
    p.add_argument("--target-offsets", type=float, nargs="*", default=[0.0, 0.5, 1.0],
                   help="per-image edit rows: targets at the typical positive logit + offset * "
                   "logit gap (none: skip them)")
    p.add_argument("--methods", nargs="+", default=["d2c", "nvae", "ddim"])
    p.add_argument("--t0", type=int, default=50)
    p.add_argument("--d2c-skip", type=int, default=50)
    p.add_argument("--ddim-skip", type=int, default=100)
    p.add_argument("--n-cond", type=int, default=100)
    p.add_argument("--n-naive", type=int, default=200)
    p.add_argument("--cond-skip", type=int, default=100)
    p.add_argument("--cond-adapt-prior", type=int, default=512, metavar="N",
                   help="pilot samples for the 'prior adapted' conditional row (0: skip it)")
    p.add_argument("--cond-eps-scale", type=float, default=1.0,
                   help="epsilon scaling of the prior samples (conditional and naive rows)")
    p.add_argument("--edit-guidance", type=float, default=None, help=EDIT_GUIDANCE_HELP)
    p.add_argument("--cond-guidance", type=float, default=None,
                   help="autoguidance weight of the prior samples (conditional and naive rows; "
                        "default: the model's recommended weight)")
    p.add_argument("--cond-threshold", type=float, default=0.9,
                   help="also report conditional samples accepted when p >= this (<= 0: off)")
    p.add_argument("--n-population", type=int, default=1000,
                   help="real test images (both classes) on which the conditional rules' "
                        "precision with a perfect prior is measured (0: skip)")
    p.add_argument("--projector-steps", type=int, default=1000)
    p.add_argument("--no-positive-only", action="store_true")
    p.add_argument("--no-preserve", action="store_true", help="skip the d2c + preserve rows")
    p.add_argument("--fit-no-flip", action="store_true",
                   help="labelled fits without the mirrored images (default: with them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", default="eval_attributes", help="output directory")
    p.set_defaults(fn=cmd_eval_attributes)

    p = sub.add_parser("manipulate-dir", help="edit a directory of images (resumable; "
                       "sharded under torchrun)")
    _add_model_args(p)
    p.add_argument("--input-dir", required=True)
    p.add_argument("--output-dir", required=True)
    _edit_args(p, images=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_manipulate_dir)

    p = sub.add_parser("sample-conditional-dir", help="write conditional samples to a "
                       "directory (resumable; sharded under torchrun)")
    _add_model_args(p)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--attr", nargs="+", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None,
                   help="accept a candidate only if every attribute's probability is >= this "
                        "(precision over diversity); default: the paper's rule, accept with "
                        "the probability itself")
    p.add_argument("--max-draws-per-image", type=int, default=100)
    _adapt_prior_arg(p)
    p.add_argument("--skip", type=int, default=100)
    p.add_argument("--eps-scale", type=float, default=1.0,
                   help="prior sampler's epsilon scaling (1: official; "
                        "see docs/quality/README.md)")
    p.add_argument("--guidance", type=float, default=None,
                   help="autoguidance weight (models with a guide prior; default: the model's "
                        "recommended weight; 1: the prior alone, official)")
    add_rescale_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mode", default="sample", choices=["sample", "mode"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_sample_conditional_dir)


__all__ = ["add_parser"]
