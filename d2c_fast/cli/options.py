"""The options several subcommands share, each defined once, and the helpers that read them:
the model (path, ``--config``, ``--device``, ``--impl``), ``--threads``, guidance and its
rescale, ``--eps-scale``, ``--mode``, image outputs (``-o``, ``--grid``, ``--overwrite``) and
opening a :class:`~d2c_fast.Sampler` from them; the parser class every subcommand uses
(:class:`Parser`: unknown flags reported by the subcommand, with the closest flag) and the
one table that turns the library's Python spellings into flags (:func:`cli_message`)."""
from __future__ import annotations

import argparse
import difflib
import os
import re

import torch

from ..attributes import resolve_attribute
from ..images import IMAGE_EXTENSIONS, check_output_dir, check_output_file
from ..jobs import list_images
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
    p.add_argument("ckpt", metavar="MODEL", help="the model, always the first argument: "
                   "'builtin' (the model shipped with d2c_fast), a native .safetensors file, or "
                   "an official model.ckpt with --config")
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


# --------------------------------------------------------------------------------------------
# messages: the library's Python spellings as the command line's flags
# --------------------------------------------------------------------------------------------

#: Keyword arguments of the Python API that the command line spells as a flag. Library errors
#: and warnings name the keyword (``use step=``); :func:`cli_message` prints the flag
#: (``use --step``). tests/test_cli_ux.py checks that every flag here exists.
PYTHON_FLAGS = {
    "step": "--step", "strength": "--strength", "target": "--target", "sweep": "--sweep",
    "preserve": "--preserve", "method": "--method", "t0": "--t0", "skip": "--skip",
    "seed": "--seed", "mode": "--mode", "resize": "--resize", "batch_size": "--batch-size",
    "guidance": "--guidance", "eps_scale": "--eps-scale", "threshold": "--threshold",
    "adapt_prior": "--adapt-prior", "max_draws": "--max-draws", "positives": "--positives",
    "negatives": "--negatives", "unlabelled": "--unlabelled", "prior": "--prior",
    "folds": "--folds", "flip": "--no-flip", "config": "--config", "device": "--device",
    "impl": "--impl", "guidance_rescale": "--guidance-rescale",
    "guidance_rescale_t": "--guidance-rescale-t", "eta": "--eta",
}

#: Whole phrases of Python (calls, methods) and their command-line form, applied before the
#: keywords of :data:`PYTHON_FLAGS`.
PYTHON_PHRASES = (
    (r"Sampler\(ckpt, config='config\.yml'\)", "--config config.yml"),
    (r"(?:fit-attribute / )?Sampler\.fit_attribute", "d2c-fast fit-attribute"),
    (r"Sampler\(\.\.\., impl='ref'\)", "--impl ref"),
    (r"resize=True \(command line: --resize\)", "--resize"),
    (r" \(a str input is taken as a file path\)", ""),
    (r"leave guidance unset", "leave --guidance out"),
    (r"flip=None / False", "--no-flip"),
)

_KEYWORD = re.compile(r"(?<![\w.\-])(" + "|".join(sorted(PYTHON_FLAGS, key=len, reverse=True))
                      + r")=('[^']*'|\"[^\"]*\"|[^\s,;)]*)")


def _flag(m: re.Match) -> str:
    name, value = m.group(1), m.group(2).strip("'\"")
    flag = PYTHON_FLAGS[name]
    if name == "flip":              # the flag turns flipping off
        return flag if value == "False" else "without --no-flip"
    if value in ("True", ""):
        return flag
    return f"{flag} {value}"


def cli_message(message: str) -> str:
    """A library message as the command line prints it: Python keywords (``step=``,
    ``negatives=``, ``guidance=2``) become their flags (``--step``, ``--negatives``,
    ``--guidance 2``), Python calls their command (:data:`PYTHON_PHRASES`). One table for
    every error and warning ``d2c-fast`` prints; Python callers keep the Python names."""
    for pat, rep in PYTHON_PHRASES:
        message = re.sub(pat, rep, message)
    return _KEYWORD.sub(_flag, message)


# --------------------------------------------------------------------------------------------
# the parser: unknown flags reported by the subcommand that got them, with a suggestion
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^-\d|^-\.\d|^-inf$|^-nan$", re.I)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` for ``d2c-fast`` and each subcommand. A subcommand checks
    its arguments for flags it does not define before anything else (argparse would first
    report a missing required option, or hand the flag up to the top-level parser, whose usage
    is not the subcommand's) and says which flag was meant (``difflib``)."""

    def __init__(self, *a, **kw):
        self.flags: set[str] = set()
        self.has_subcommands = False
        super().__init__(*a, **kw)

    def add_argument(self, *a, **kw):
        action = super().add_argument(*a, **kw)
        self.flags.update(action.option_strings)
        return action

    def _recording(self, group):
        """``group`` (of arguments, or mutually exclusive) with its flags recorded here."""
        add, nest = group.add_argument, getattr(group, "add_mutually_exclusive_group", None)

        def add_argument(*a, **k):
            action = add(*a, **k)
            self.flags.update(action.option_strings)
            return action
        group.add_argument = add_argument
        if nest is not None:
            group.add_mutually_exclusive_group = lambda **k: self._recording(nest(**k))
        return group

    def add_mutually_exclusive_group(self, **kw):
        return self._recording(super().add_mutually_exclusive_group(**kw))

    def add_argument_group(self, *a, **kw):
        return self._recording(super().add_argument_group(*a, **kw))

    def add_subparsers(self, **kw):
        self.has_subcommands = True
        return super().add_subparsers(**kw)

    def unknown_flag(self, token: str) -> str | None:
        """``None`` when ``token`` is a value or a flag of this parser (or an unambiguous
        abbreviation of one); else the error message, with the closest flag if one is near."""
        if not token.startswith("-") or token == "-" or _NUMBER.match(token):
            return None
        name = token.split("=", 1)[0]
        if name in self.flags or (name.startswith("--") and
                                  any(f.startswith(name) for f in self.flags)):
            return None
        if not name.startswith("--") and token[:2] in self.flags:    # -n4: a short flag's value
            return None
        near = difflib.get_close_matches(name, sorted(self.flags), n=1, cutoff=0.6)
        return (f"unrecognized argument {name}"
                + (f"; did you mean {near[0]}?" if near else f"; see {self.prog} --help"))

    def parse_known_args(self, args=None, namespace=None):
        if not self.has_subcommands and args is not None:
            for token in args:
                if token == "--":
                    break
                msg = self.unknown_flag(token)
                if msg:
                    self.error(msg)
        ns, extra = super().parse_known_args(args, namespace)
        if extra and not self.has_subcommands:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns, extra


# --------------------------------------------------------------------------------------------
# image outputs: -o, --grid, --overwrite, the default folder
# --------------------------------------------------------------------------------------------

OUTPUT_HELP = ("a folder (created; one PNG per image), or one file name ending in .png when "
               "the command writes one image; default: a new folder COMMAND-NNN under the "
               "current directory (the first number not taken), printed at the end")
OVERWRITE_HELP = ("replace existing output files (default: refuse before any work when an "
                  "output file already exists)")
GRID_HELP = "also write a PNG grid of the images here"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 image``, ``2 images`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def add_image_output(p, help: str = OUTPUT_HELP, grid: str | None = GRID_HELP) -> None:
    """``-o/--output`` (optional: :func:`new_output_dir`), ``--overwrite`` and, unless
    ``grid`` is None, ``--grid``: what :func:`image_outputs` and :func:`check_grid` read."""
    p.add_argument("-o", "--output", default=None, help=help)
    if grid is not None:
        p.add_argument("--grid", default=None, help=grid)
    add_overwrite(p)


def add_overwrite(p) -> None:
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def new_output_dir(command: str, root: str = ".") -> str:
    """The default output folder of an image command: ``{command}-001``, ``-002``, ...: the
    first that does not exist under ``root`` (so a run never writes into an earlier one's)."""
    k = 1
    while os.path.lexists(os.path.join(root, f"{command}-{k:03d}")):
        k += 1
    return os.path.join(root, f"{command}-{k:03d}") if root != "." else f"{command}-{k:03d}"


def is_image_file(path: str) -> bool:
    """Whether ``path`` names one image file (its extension is an image format's)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def check_one_file(path: str, count: int, flag: str = "-o") -> str:
    """``path`` (an image file name) as the output of ``count`` images: refused unless one,
    and unless it is a ``.png`` (the outputs are PNG files)."""
    if count != 1:
        raise ValueError(f"{flag} {path} names one image file, but this command writes "
                         f"{plural(count, 'image')}; give a folder (e.g. {flag} "
                         f"{os.path.splitext(path)[0]}/)")
    if not path.lower().endswith(".png"):
        raise ValueError(f"{flag} {path}: the outputs are PNG files; give a name ending in .png")
    return check_output_file(path, flag)


def refuse_existing(paths, overwrite: bool, flag: str = "-o") -> None:
    """``ValueError`` when an output file exists already and ``--overwrite`` was not given."""
    if overwrite:
        return
    there = [p for p in paths if os.path.lexists(p)]
    if there:
        more = f" (and {plural(len(there) - 1, 'other')})" if len(there) > 1 else ""
        raise ValueError(f"{there[0]} exists{more}; pass --overwrite to replace, or choose "
                         f"another {flag}")


def image_outputs(args, names, command: str) -> tuple[list[str], str]:
    """The output paths of a command writing ``len(names)`` images named ``names`` (in a
    folder), from ``-o`` (a folder, one ``.png`` file, or ``sample``'s ``{i}`` pattern) or,
    with neither ``-o`` nor ``--grid``, a new folder (:func:`new_output_dir`); checked
    before any work, existing files refused without ``--overwrite``. Returns ``(paths, where
    to report)``; no paths when only ``--grid`` was asked for."""
    out = args.output
    if out is None:
        if getattr(args, "grid", None):
            return [], ""
        out = new_output_dir(command)
        paths = [os.path.join(out, n) for n in names]
    elif "{i" in out:
        check_output_file(out, "-o pattern")
        try:
            paths = [out.format(i=i) for i in range(len(names))]
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"-o {out}: a bad pattern ({e!r}); only the field {{i}} is "
                             f"allowed, e.g. out/{{i:04d}}.png") from None
        if len(set(paths)) != len(paths):
            raise ValueError(f"-o {out}: the pattern does not give distinct file names")
    elif is_image_file(out):
        paths = [check_one_file(out, len(names))]
    else:
        check_output_dir(out, "-o")
        paths = [os.path.join(out, n) for n in names]
    refuse_existing(paths, args.overwrite)
    return paths, out


def check_new_file(args, path: str, flag: str = "-o") -> str:
    """An output file, checked before any work: not a folder, its folder possible, and not
    already there unless ``--overwrite`` (:func:`add_overwrite`)."""
    check_output_file(path, flag)
    refuse_existing([path], args.overwrite, flag)
    return path


def check_grid(args) -> None:
    """``--grid``: a file, checked before any work (an existing one needs ``--overwrite``)."""
    if args.grid:
        check_output_file(args.grid, "--grid")
        refuse_existing([args.grid], args.overwrite, "--grid")


def wrote(paths, where: str, default: bool) -> str:
    """The line saying where the images went (``default``: -o was not given)."""
    if not paths:
        return ""
    if len(paths) == 1 and where == paths[0]:
        return f"wrote {where}"
    if "{i" in where:
        return f"wrote {plural(len(paths), 'image')} as {where}"
    return (f"wrote {plural(len(paths), 'image')} to {where}/"
            + (" (a new folder: no -o given)" if default else ""))


# --------------------------------------------------------------------------------------------
# inputs and decoding
# --------------------------------------------------------------------------------------------

def expand_images(paths) -> list[str] | None:
    """Image files and folders (their images, sorted, recursively) -> image paths, in the
    order given (``None`` for none)."""
    if not paths:
        return None
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += [os.path.join(p, f) for f in list_images(p)]
        else:
            out.append(p)
    return out


MODE_HELP = ("how latents become pixels: 'mode' (default) takes each pixel's most probable "
             "value, deterministic and clean; 'sample' draws each pixel from the decoder's "
             "distribution, as the official code and the Python API's default do, which adds "
             "per-pixel speckle (built-in model, 200 test faces: reconstruction MSE 0.0012 "
             "with 'mode', 0.0021 with 'sample')")


def add_mode(p) -> None:
    p.add_argument("--mode", default="mode", choices=["mode", "sample"], help=MODE_HELP)
