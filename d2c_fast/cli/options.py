"""The options several subcommands share, each defined once, and the helpers that read them:
the model (path, ``--config``, ``--device``, ``--impl``), ``--threads``, guidance and its
rescale, ``--eps-scale``, and opening a :class:`~d2c_fast.Sampler` from them."""
from __future__ import annotations

import torch

from ..attributes import resolve_attribute
from ..sampler import Sampler

THREADS_HELP = "torch threads (default: all)"
GUIDANCE_HELP = ("autoguidance weight (models with a guide prior; default: the model's "
                 "recommended weight; 1: the prior alone, official)")
EDIT_GUIDANCE_HELP = ("d2c clean-up: autoguidance weight (models with a guide prior; default: "
                      "the model's recommended weight, as in sampling; 1: the unguided, "
                      "official edit)")
EPS_SCALE_HELP = ("divide each noise prediction by this (1: official; ~1.02: epsilon scaling "
                  "against exposure bias, docs/quality/README.md)")


def check_counts(minimum: int = 1, **counts) -> None:
    """``ValueError`` for the first count below ``minimum``; names are flags without the
    leading dashes, underscores for hyphens (``n_train=...`` -> ``--n-train``)."""
    for name, v in counts.items():
        if v is not None and v < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {v}")


def add_threads(p, help: str = THREADS_HELP) -> None:
    p.add_argument("--threads", type=int, default=None, help=help)


def apply_threads(args) -> None:
    """``--threads N`` of any subcommand: torch threads for this process (absent: torch's
    default, all cores); ``N < 1`` is an error."""
    n = getattr(args, "threads", None)
    if n is None:
        return
    check_counts(threads=n)
    torch.set_num_threads(n)


def add_device_args(p) -> None:
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default="fast", choices=["ref", "fast"])


def add_model_args(p) -> None:
    """The model to open (positional ``ckpt``, ``--config``), where it runs (``--device``,
    ``--impl``) and ``--threads``: what :func:`open_sampler` reads."""
    p.add_argument("ckpt", help="official model.ckpt (with --config), native .safetensors, or "
                   "'builtin'")
    p.add_argument("--config", help="official YAML / our JSON config (needed for .ckpt)")
    add_device_args(p)
    add_threads(p)


def add_guidance(p, flag: str = "--guidance", help: str = GUIDANCE_HELP) -> None:
    p.add_argument(flag, type=float, default=None, help=help)


def add_rescale_args(p) -> None:
    p.add_argument("--guidance-rescale", type=float, default=None, metavar="PHI",
                   help="guidance rescale phi in [0, 1] (with guidance != 1; default: the "
                        "model's recommendation; 0: off)")
    p.add_argument("--guidance-rescale-t", type=int, nargs=2, default=None,
                   metavar=("LO", "HI"), help="timesteps where --guidance-rescale applies "
                   "(inclusive; default: all)")


def add_prior_sampling_args(p) -> None:
    """How the prior samples: ``--eps-scale``, ``--guidance``, ``--guidance-rescale[-t]``."""
    p.add_argument("--eps-scale", type=float, default=1.0, help=EPS_SCALE_HELP)
    add_guidance(p)
    add_rescale_args(p)


def rescale_kwargs(args) -> dict:
    """``--guidance-rescale[-t]`` as ``guidance_rescale=, guidance_rescale_t=`` (empty when
    not given: the model's recommendation)."""
    if args.guidance_rescale is None:
        if args.guidance_rescale_t is not None:
            raise ValueError("--guidance-rescale-t needs --guidance-rescale")
        return {}
    return {"guidance_rescale": args.guidance_rescale,
            "guidance_rescale_t": args.guidance_rescale_t}


def open_sampler(args, impl: str | None = None) -> Sampler:
    """The command's model (:func:`add_model_args`) after ``--threads``; ``impl`` overrides
    ``--impl``. Commands with the rescale flags (:func:`add_rescale_args`) get them set."""
    apply_threads(args)
    s = Sampler(args.ckpt, config=args.config, device=args.device, impl=impl or args.impl)
    if "guidance_rescale" in vars(args):
        r = rescale_kwargs(args)
        if r:
            s.set_guidance_rescale(r["guidance_rescale"], r["guidance_rescale_t"])
    return s


def load_attributes(paths, s: Sampler) -> list:
    """Attribute files or built-in attribute names, each checked against the model ``s``
    (shape, fingerprint)."""
    return [resolve_attribute(p, s) for p in paths]


def one_or_many(values: list):
    """A flag's ``nargs="+"`` values as the library takes them: one value, or the list."""
    return values if len(values) > 1 else values[0]
