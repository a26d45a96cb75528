"""``d2c-fast train-oracle`` and ``d2c-fast evaluate`` (wired in by ``add_parser``).

    d2c-fast train-oracle -o oracle.safetensors [--resolution 32] [--epochs 6]
    d2c-fast evaluate model.safetensors --oracle oracle.safetensors [--json out.json]
"""
from __future__ import annotations

import json

from ..cli import apply_threads, check_counts


def cmd_train_oracle(args) -> int:
    from ..images import check_output_file
    from .oracle import train_oracle
    check_output_file(args.output)
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


def add_rescale_args(p) -> None:
    p.add_argument("--guidance-rescale", type=float, default=None, metavar="PHI",
                   help="guidance rescale phi in [0, 1] (with guidance != 1; default: the "
                        "model's recommendation; 0: off)")
    p.add_argument("--guidance-rescale-t", type=int, nargs=2, default=None,
                   metavar=("LO", "HI"), help="timesteps where --guidance-rescale applies "
                   "(inclusive; default: all)")


def rescale_kwargs(args) -> dict:
    """``--guidance-rescale[-t]`` as ``guidance_rescale=, guidance_rescale_t=`` (empty when
    not given: the model's recommendation)."""
    if args.guidance_rescale is None:
        if args.guidance_rescale_t is not None:
            raise ValueError("--guidance-rescale-t needs --guidance-rescale")
        return {}
    return {"guidance_rescale": args.guidance_rescale,
            "guidance_rescale_t": args.guidance_rescale_t}


def apply_rescale_args(s, args) -> None:
    """Set a Sampler's guidance rescale from ``--guidance-rescale[-t]`` when given."""
    r = rescale_kwargs(args)
    if r:
        s.set_guidance_rescale(r["guidance_rescale"], r["guidance_rescale_t"])


def cmd_evaluate(args) -> int:
    from .report import evaluate
    if args.json:
        from ..images import check_output_file
        check_output_file(args.json, "--json")
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train-oracle", help="train the attribute oracle of the built-in "
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
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=0, help="rendering worker processes")
    p.set_defaults(fn=cmd_train_oracle)

    p = subparsers.add_parser("evaluate", help="quality targets of a model on the built-in faces "
                              "(PSNR, latent probe, sample attribute rates, FD_oracle)")
    p.add_argument("model", help="native .safetensors")
    p.add_argument("--oracle", required=True, help="oracle .safetensors (d2c-fast train-oracle)")
    p.add_argument("--n-heldout", type=int, default=1000)
    p.add_argument("--n-probe", type=int, default=100)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps per sample")
    p.add_argument("--eps-scale", type=float, default=1.0,
                   help="sampler's epsilon scaling (Sampler.sample eps_scale; 1: official)")
    p.add_argument("--guidance", type=float, default=None,
                   help="autoguidance weight (Sampler.sample guidance; default: the model's "
                        "recommended weight; 1: the prior alone)")
    add_rescale_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.set_defaults(fn=cmd_evaluate)
