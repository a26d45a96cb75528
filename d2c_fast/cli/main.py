"""The ``d2c-fast`` parser (every subcommand, in the order of its help) and :func:`main`."""
from __future__ import annotations

import os
import sys
import warnings

from ..errors import D2CError
from . import edit, evaluation, fit, jobs, model, sample, serve, train
from .options import Parser, cli_message

DESCRIPTION = ("D2C models from the command line: convert, sample, edit, train, evaluate, "
               "few-shot attributes.")


def build_parser() -> Parser:
    ap = Parser(prog="d2c-fast", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="command", required=True)
    for m in (model, sample, edit, fit, jobs, train, evaluation, serve):
        m.add_parser(sub)
    return ap


def main(argv=None) -> int:
    """Run a subcommand. Errors of the library's family (:class:`D2CError`) and bad argument
    values (``ValueError``, e.g. a guidance weight for a model without a guide prior) and
    file-system errors (``OSError``: an output path that cannot be written) end with one line
    on stderr and exit status 2; ``D2C_FAST_TRACEBACK=1`` re-raises them. Errors and warnings
    name flags, not the Python API's keywords (:func:`.options.cli_message`). A closed
    stdout (``d2c-fast info builtin | head -3``) ends the command quietly, as a Unix tool
    killed by SIGPIPE: exit status 141."""
    args = build_parser().parse_args(argv)
    fmt = warnings.formatwarning
    if os.environ.get("D2C_FAST_TRACEBACK") != "1":   # warnings in one line, no source line
        warnings.formatwarning = \
            lambda msg, *a, **k: f"d2c-fast: warning: {cli_message(str(msg))}\n"
    try:
        rc = args.fn(args)
        sys.stdout.flush()      # a closed pipe shows here, not at interpreter exit
        return rc
    except BrokenPipeError:
        try:    # further writes (the interpreter's own flush at exit) go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except (D2CError, ValueError, OSError) as e:
        if os.environ.get("D2C_FAST_TRACEBACK") == "1":
            raise
        print(f"d2c-fast: error: {cli_message(str(e))}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = fmt
