"""Small helpers every layer may use: atomic file writes, the ``torchrun`` environment, and
the type and number checks of configs and arguments.

Base layer: imports nothing of d2c_fast but :mod:`d2c_fast.errors`.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from typing import Callable, NamedTuple

from .errors import ConfigError

__all__ = ["file_mode", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "TorchrunEnv", "torchrun_env", "finite_number", "check_type"]


# --------------------------------------------------------------------------- atomic files
def file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` gives a new file (0o666 less the umask),
    which is what :func:`atomic_write` gives its files."""
    m = os.umask(0)
    os.umask(m)
    return 0o666 & ~m


def atomic_write(path, write: Callable, *, to_path: bool = False) -> str:
    """Write ``path`` so that a reader sees the old file or the complete new one, never a part.

    The data goes to a new temporary file in ``path``'s directory (created there if missing),
    is flushed and fsynced, and the file is moved into place with :func:`os.replace`. It is
    created like a plain ``open(path, "w")`` would create it (mode 0o666 less the umask).
    ``write(f)`` gets the temporary file open for binary writing; with ``to_path=True``,
    ``write(tmp_path)`` gets its name instead (for writers that only take a file name, such
    as ``safetensors.torch.save_file``). On any error the temporary file is removed and the
    old ``path`` is left as it was. Returns ``path``."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(path)[-120:]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path} ({e.strerror})") from e
    try:
        if to_path:
            os.close(fd)
            write(tmp)
            os.chmod(tmp, file_mode())   # such writers may replace the file (0o600)
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> str:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> str:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- torchrun
class TorchrunEnv(NamedTuple):
    """This process's place in a ``torchrun`` launch (``0, 1, 0`` without one)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def torchrun_env(environ=None) -> TorchrunEnv:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment (``environ``, default
    ``os.environ``), each defaulting to a single process; ``ValueError`` when one is not an
    integer or they do not fit together."""
    env = os.environ if environ is None else environ
    vals = {}
    for key, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = env.get(key, "")
        try:
            vals[key] = int(raw) if raw.strip() else default
        except ValueError:
            raise ValueError(f"{key}={raw!r} in the environment is not an integer") from None
    rank, world, local = vals["RANK"], vals["WORLD_SIZE"], vals["LOCAL_RANK"]
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} must be >= 1")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} outside WORLD_SIZE={world}")
    if local < 0:
        raise ValueError(f"LOCAL_RANK={local} must be >= 0")
    return TorchrunEnv(rank, world, local)


# --------------------------------------------------------------------------- checks
def finite_number(name: str, v, bound: str) -> float:
    """``v`` as a float if it is a real number (not a bool), finite, and ``> 0`` or ``>= 0``
    (``bound``); otherwise ``ValueError`` naming ``name``."""
    ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
          and (v > 0 if bound == "> 0" else v >= 0))
    if not ok:
        raise ValueError(f"{name} must be a finite number {bound}, got {v!r}")
    return float(v)


_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", tuple: "a list", dict: "a mapping"}


def check_type(name: str, value, kind: type, *, optional: bool = False,
               numeric_strings: bool = False):
    """``value`` checked against a config field's ``kind`` (``bool``, ``int``, ``float``,
    ``str``, ``list``, ``tuple``, ``dict``) and returned normalised: a ``float`` field gives a
    float (ints are accepted), a ``list`` or ``tuple`` field a list. A bool is never a number.
    ``optional``: ``None`` is accepted (and returned). ``numeric_strings``: a string that
    parses as a number is one for a ``float`` field (PyYAML reads ``1e-4``, without a dot, as
    a string). Anything else is a :class:`ConfigError` naming ``name``."""
    if value is None and optional:
        return None
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if numeric_strings and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind in (list, tuple):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        got = (json.dumps(value) if value is None or isinstance(value, (str, int, float, bool))
               else type(value).__name__)
        want = _KIND_WORDS.get(kind, f"a {kind.__name__}")
        raise ConfigError(name, f"must be {want}{' or null' if optional else ''}, got {got}")
    return value
