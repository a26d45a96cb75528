"""The ``d2c-fast`` parser (every subcommand, in the order of its help) and :func:`main`."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..errors import D2CError
from . import edit, evaluation, fit, jobs, model, sample, serve, train

DESCRIPTION = ("D2C models from the command line: convert, sample, edit, train, evaluate, "
               "few-shot attributes.")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="d2c-fast", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="command", required=True)
    for m in (model, sample, edit, fit, jobs, train, evaluation, serve):
        m.add_parser(sub)
    return ap


def main(argv=None) -> int:
    """Run a subcommand. Errors of the library's family (:class:`D2CError`) and bad argument
    values (``ValueError``, e.g. a guidance weight for a model without a guide prior) and
    file-system errors (``OSError``: an output path that cannot be written) end with one line
    on stderr and exit status 2; ``D2C_FAST_TRACEBACK=1`` re-raises them."""
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
