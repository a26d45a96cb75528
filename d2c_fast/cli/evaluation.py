"""``d2c-fast train-oracle``, ``evaluate`` and ``eval-attributes``: the built-in faces' oracle,
a model's quality targets, the few-shot attribute evaluation.

    d2c-fast train-oracle -o oracle.safetensors [--resolution 32] [--epochs 6]
    d2c-fast evaluate model.safetensors --oracle oracle.safetensors [--json out.json]
    d2c-fast eval-attributes MODEL --oracle oracle.safetensors -o eval_attrs/
    d2c-fast eval-edits builtin -o eval_edits/     (edits against the true counterfactual)
"""
from __future__ import annotations

import json
import os

from ..data import ATTRIBUTES
from ..demo import builtin_attributes
from ..edit import METHODS
from ..eval.attributes_eval import evaluate_attributes, markdown
from ..eval.counterfactual import evaluate_edits, markdown_table
from ..eval.oracle import Oracle, train_oracle
from ..utils import atomic_write_text
from ..eval.report import evaluate
from ..images import check_output_dir
from .options import (EDIT_GUIDANCE_HELP, add_guidance, add_model_args, add_overwrite,
                      add_prior_sampling_args, add_threads, apply_threads, check_counts,
                      check_new_file, new_output_dir, open_sampler, refuse_existing,
                      rescale_kwargs)

#: What eval-attributes writes into its folder.
EVAL_FILES = ("attributes_eval.json", "attributes_eval.md", "edits_grid.png",
              "conditional_grid.png")


def cmd_train_oracle(args) -> int:
    check_new_file(args, args.output)
    check_counts(n_train=args.n_train, n_val=args.n_val, epochs=args.epochs,
                 batch_size=args.batch_size, width=args.width)
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be > 0, got {args.max_minutes}")
    m = train_oracle(args.resolution, n_train=args.n_train, n_val=args.n_val,
                     epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     width=args.width, seed=args.seed, max_minutes=args.max_minutes,
                     threads=args.threads, workers=args.workers)
    m.save(args.output)
    print(json.dumps(m.metrics, indent=1))
    print(f"wrote {args.output}")
    return 0


def cmd_evaluate(args) -> int:
    if args.json:
        check_new_file(args, args.json, "--json")
    check_counts(n_probe=args.n_probe, n_samples=args.n_samples, steps=args.steps)
    if args.n_heldout < args.n_probe + 100:
        raise ValueError(f"--n-heldout must be at least --n-probe + 100 (the probe is fitted on "
                         f"the first --n-probe held-out faces and scored on the rest), got "
                         f"{args.n_heldout} with --n-probe {args.n_probe}")
    apply_threads(args)
    r = evaluate(args.model, args.oracle, n_heldout=args.n_heldout, n_probe=args.n_probe,
                 n_samples=args.n_samples, sample_steps=args.steps, seed=args.seed,
                 eps_scale=args.eps_scale, guidance=args.guidance,
                 **rescale_kwargs(args))
    text = json.dumps(r, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


def cmd_eval_attributes(args) -> int:
    if args.output is None:
        args.output = new_output_dir("eval-attributes")
    check_output_dir(args.output, "-o")
    refuse_existing([os.path.join(args.output, f) for f in EVAL_FILES], args.overwrite)
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
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise ValueError(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    if not 0.0 <= args.cond_threshold <= 1.0:
        raise ValueError(f"--cond-threshold must be in [0, 1], got {args.cond_threshold}")
    s = open_sampler(args)
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
        projector_model=open_sampler(args, impl="ref") if args.projector_steps else None)
    r["model"] = args.ckpt
    with open(os.path.join(args.output, "attributes_eval.json"), "w") as f:
        json.dump(r, f, indent=1)
    print(markdown(r))
    print(f"wrote {args.output}/attributes_eval.{{md,json}}, edits_grid.png, conditional_grid.png")
    return 0


def cmd_eval_edits(args) -> int:
    check_output_dir(args.output, "-o")
    check_counts(faces=args.faces)
    bad = [a for a in args.attributes if a not in ATTRIBUTES]
    if bad:
        raise ValueError(f"--attributes: unknown {bad}; the built-in faces have "
                         f"{', '.join(ATTRIBUTES)}")
    bad = [m for m in args.methods if m != "default" and m not in METHODS]
    if bad:
        raise ValueError(f"--methods: unknown {bad}; choose from default, {', '.join(METHODS)}")
    apply_threads(args)
    s = open_sampler(args)
    attrs = builtin_attributes(s, args.attributes, refit=args.refit)
    settings = {m: ({} if m == "default" else {"method": m}) for m in args.methods}
    oracle = Oracle.load(args.oracle) if args.oracle else None
    os.makedirs(args.output, exist_ok=True)
    grid = os.path.join(args.output, "edits_grid.png")
    rows = evaluate_edits(s, attrs, settings, n=args.faces, seed=args.seed, oracle=oracle,
                          grid=grid, progress=True)
    table = markdown_table(rows)
    atomic_write_text(os.path.join(args.output, "edits.md"), table + "\n")
    atomic_write_text(os.path.join(args.output, "edits.json"),
                      json.dumps({"model": args.ckpt, "faces": args.faces, "seed": args.seed,
                                  "rows": rows}, indent=1) + "\n")
    print(table)
    print(f"wrote {args.output}/edits.md, edits.json, edits_grid.png")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train-oracle", help="train the attribute oracle of the built-in "
                       "faces (classifier + FD_oracle features)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    add_overwrite(p)
    add_threads(p)
    p.add_argument("--workers", type=int, default=0, help="rendering worker processes")
    p.set_defaults(fn=cmd_train_oracle)

    p = sub.add_parser("evaluate", help="quality targets of a model on the built-in faces "
                       "(PSNR, latent probe, sample attribute rates, FD_oracle)")
    p.add_argument("model", help="native .safetensors")
    p.add_argument("--oracle", required=True, help="oracle .safetensors (d2c-fast train-oracle)")
    p.add_argument("--n-heldout", type=int, default=1000)
    p.add_argument("--n-probe", type=int, default=100)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps per sample")
    add_prior_sampling_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    add_overwrite(p)
    add_threads(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("eval-attributes", help="few-shot attribute evaluation on the built-in "
                       "faces with the oracle (edits by method, conditional generation, latency)")
    add_model_args(p)
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
    add_guidance(p, "--edit-guidance", EDIT_GUIDANCE_HELP)
    add_guidance(p, "--cond-guidance", "autoguidance weight of the prior samples (conditional "
                 "and naive rows; default: the model's recommended weight)")
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
    p.add_argument("-o", "--output", default=None, help="output folder (default: a new folder "
                   "eval-attributes-NNN under the current directory, the first number not "
                   "taken)")
    add_overwrite(p)
    p.set_defaults(fn=cmd_eval_attributes)

    p = sub.add_parser("eval-edits", help="edits judged against the true counterfactual of "
                       "each built-in face (progress in the attribute's pixels, change "
                       "outside them, distance to the counterfactual; definitions in "
                       "d2c_fast/eval/counterfactual.py)")
    add_model_args(p)
    p.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES))
    p.add_argument("--methods", nargs="+", default=["default", "d2c", "nvae"],
                   help="edit settings to compare: 'default' (manipulate's defaults) or a "
                   f"method ({', '.join(METHODS)})")
    p.add_argument("--faces", type=int, default=48, help="held-out faces per attribute and "
                   "direction")
    p.add_argument("--refit", action="store_true", help="fit each attribute from 100 labelled "
                   "faces now instead of using the built-in model's shipped files")
    p.add_argument("--oracle", default=None, help="also report the distance to the "
                   "counterfactual in this oracle's features (d2c-fast train-oracle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="eval_edits", help="output directory")
    p.set_defaults(fn=cmd_eval_edits)
