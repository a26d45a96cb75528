"""Checkpoint loading: malformed and malicious files are refused with a clear error (the file
and the cause), and nothing in them is ever executed.

Every bad file is built here (under tmp_path), mostly by modifying a valid official-format
checkpoint made from a random model with the official fixture's config. The official fixture
itself is only used by the tests that request ``fixture_dir`` (skipped when it is absent).
"""
from __future__ import annotations

import builtins
import json
import os
import pickle
import shlex
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

import d2c_fast
from d2c_fast.checkpoint import load as ckpt_mod
from d2c_fast.checkpoint import (convert, load_boundary, load_model, load_native, load_official,
                                 torch_load_safe)
from d2c_fast.config import load_config
from d2c_fast.errors import AttributeFileError, CheckpointError, ConfigError, D2CError
from d2c_fast.checkpoint.random_init import random_model

REPO_ROOT = Path(__file__).resolve().parents[1]
C, D = 4, 8  # latent channels and size of the tiny config


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def refused(exc_type, path, words, fn, *args, **kw):
    """``fn(*args)`` raises ``exc_type`` whose message names ``path`` and one of ``words``."""
    with pytest.raises(exc_type) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert Path(path).name in msg, f"message does not name the file: {msg!r}"
    assert any(w.lower() in msg.lower() for w in words), \
        f"message {msg!r} names none of the causes {words}"
    if isinstance(ei.value, CheckpointError):
        assert ei.value.path == os.fspath(path) and ei.value.cause
    return ei.value


def official_obj(model, *, key_encoder=True, queue=True) -> dict:
    """What the official release's ``torch.save`` writes for ``model`` (a LoadedModel)."""
    q = {k: v.detach().clone() for k, v in model.autoencoder.state_dict().items()}
    ae = {f"encoder_q.{k}": v for k, v in q.items()}
    if key_encoder:
        ae.update({f"encoder_k.{k}": v.clone() for k, v in q.items()})
    if queue:
        ae["queue"] = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
        ae["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"autoencoder": ae,
            "diffusion": {k: v.detach().clone() for k, v in model.unet.state_dict().items()},
            "latent_mod": {"mean": model.mean.clone(), "std": model.std.clone()}}


def fresh(obj: dict) -> dict:
    """A copy whose sections can be modified (tensors are shared: replace, never write into)."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in obj.items()}


def assert_same_weights(loaded, model):
    for mine, ref in ((loaded.autoencoder, model.autoencoder), (loaded.unet, model.unet)):
        a, b = mine.state_dict(), ref.state_dict()
        assert a.keys() == b.keys()
        for k in b:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)


def png_bytes() -> bytes:
    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"\x80\x40\x20" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def zip_member_offset(path, member_suffix) -> tuple[int, int]:
    """(offset of the data, size) of the first zip member whose name ends with member_suffix."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    raw = Path(path).read_bytes()
    h = info.header_offset
    assert raw[h:h + 4] == b"PK\x03\x04"
    n_name, n_extra = struct.unpack("<HH", raw[h + 26:h + 30])
    return h + 30 + n_name + n_extra, info.compress_size


def replace_zip_member(src, dst, member_suffix, data: bytes, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            body = data if info.filename.endswith(member_suffix) else zin.read(info)
            zout.writestr(info.filename, body,
                          compress_type=compress if info.filename.endswith(member_suffix)
                          else zipfile.ZIP_STORED)


class Payload:
    """Unpickling this runs code that creates ``marker`` (three ways of running code)."""

    def __init__(self, kind: str, marker):
        self.kind, self.marker = kind, os.fspath(marker)

    def __reduce__(self):
        if self.kind == "os_system":
            return os.system, (f"touch {shlex.quote(self.marker)}",)
        if self.kind == "exec":
            return builtins.exec, (f"open({self.marker!r}, 'w').close()",)
        if self.kind == "subprocess":
            return subprocess.call, (["touch", self.marker],)
        raise ValueError(self.kind)


def su(s: str) -> bytes:  # pickle SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def memo_trick_pickle(marker) -> bytes:
    """A hand-written pickle whose STACK_GLOBAL takes ``posix.system`` from the memo, while the
    last two strings written are a harmless ``torch.FloatStorage`` (fools a scanner that only
    looks at the last strings)."""
    return (b"\x80\x04" + su("posix") + b"\x94" + su("system") + b"\x94" + b"00"
            + su("torch") + su("FloatStorage") + b"00" + b"h\x00h\x01" + b"\x93"
            + su(f"touch {shlex.quote(os.fspath(marker))}") + b"\x85R.")


def write_malicious(fmt: str, kind: str, marker, path) -> Path:
    """A malicious file in format ``fmt``; ``marker`` appears if anything executes it."""
    path = Path(path)
    obj = Payload(kind, marker)
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif fmt == "raw_pickle":
        path.write_bytes(pickle.dumps(obj))
    elif fmt == "raw_pickle_p2":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    elif fmt == "raw_pickle_p0":
        path.write_bytes(pickle.dumps(obj, protocol=0))
    elif fmt == "memo_trick_zip":
        tmp = path.with_suffix(".tmp")
        torch.save({"x": torch.zeros(1)}, tmp)
        replace_zip_member(tmp, path, "data.pkl", memo_trick_pickle(marker))
        tmp.unlink()
    elif fmt == "memo_trick_raw":
        path.write_bytes(memo_trick_pickle(marker))
    else:
        raise ValueError(fmt)
    return path


MALICIOUS_FORMATS = ["zip", "legacy", "raw_pickle", "raw_pickle_p2", "raw_pickle_p0",
                     "memo_trick_zip", "memo_trick_raw"]
PAYLOAD_KINDS = ["os_system", "exec", "subprocess"]
UNSAFE_WORDS = ("unsafe",)


def unsafe_words(fmt):
    # A protocol-0 pickle does not even look like a torch file: refused before any scan.
    return ("unsafe", "not a checkpoint") if fmt == "raw_pickle_p0" else UNSAFE_WORDS


# --------------------------------------------------------------------------------------------
# a valid official-format checkpoint, built from a random model
# --------------------------------------------------------------------------------------------

class Base:
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory, make_tiny_config) -> Base:
    b = Base()
    d = tmp_path_factory.mktemp("base")
    b.cfg = make_tiny_config()
    b.cfg_path = d / "config.json"
    b.cfg_path.write_text(json.dumps(b.cfg))
    b.model = random_model(b.cfg, seed=3)
    b.obj = official_obj(b.model)                       # as the release writes it
    b.obj_q = official_obj(b.model, key_encoder=False, queue=False)  # smaller, for bad cases
    b.path = d / "model.ckpt"
    torch.save(b.obj, b.path)
    b.legacy_path = d / "model_legacy.ckpt"
    torch.save(b.obj_q, b.legacy_path, _use_new_zipfile_serialization=False)
    b.native = d / "model.safetensors"
    convert(b.path, b.cfg_path, b.native)
    from safetensors import safe_open
    with safe_open(os.fspath(b.native), framework="pt") as f:
        b.native_meta = dict(f.metadata())
        b.native_tensors = {k: f.get_tensor(k) for k in f.keys()}
    return b


# --------------------------------------------------------------------------------------------
# files that are not checkpoints at all
# --------------------------------------------------------------------------------------------

def _mk_empty(tmp, b):
    p = tmp / "empty.ckpt"
    p.write_bytes(b"")
    return p


def _mk_text(tmp, b):
    p = tmp / "notes.ckpt"
    p.write_text("this is not a checkpoint\n")
    return p


def _mk_png(tmp, b):
    p = tmp / "image.ckpt"
    p.write_bytes(png_bytes())
    return p


def _mk_random(tmp, b):
    p = tmp / "random.ckpt"
    data = bytearray(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.uint8).numpy().tobytes())
    data[0] = 0x42
    p.write_bytes(bytes(data))
    return p


def _mk_random_pickle_magic(tmp, b):  # looks like a pickle (0x80) but is noise
    p = tmp / "random_pkl.ckpt"
    data = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(2),
                         dtype=torch.uint8).numpy().tobytes()
    p.write_bytes(b"\x80\x02" + data)
    return p


def _mk_random_zip_magic(tmp, b):  # starts like a zip but is noise
    p = tmp / "random_zip.ckpt"
    data = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3),
                         dtype=torch.uint8).numpy().tobytes()
    p.write_bytes(b"PK\x03\x04" + data)
    return p


def _mk_dir(tmp, b):
    p = tmp / "adir.ckpt"
    p.mkdir()
    return p


def _mk_missing(tmp, b):
    return tmp / "does_not_exist.ckpt"


def _mk_zip_without_pickle(tmp, b):
    p = tmp / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    return p


def _truncated(src_attr, frac=None, nbytes=None, name="trunc.ckpt"):
    def mk(tmp, b):
        data = Path(getattr(b, src_attr)).read_bytes()
        n = nbytes if nbytes is not None else int(len(data) * frac)
        p = tmp / name
        p.write_bytes(data[:n])
        return p
    return mk


def _mk_zip_bad_crc(tmp, b):
    data = bytearray(b.path.read_bytes())
    off, size = zip_member_offset(b.path, "data.pkl")
    data[off + size // 2] ^= 0xFF
    p = tmp / "bad_crc.ckpt"
    p.write_bytes(bytes(data))
    return p


def _mk_zip_bad_deflate(tmp, b):
    good = tmp / "deflated.ckpt"
    with zipfile.ZipFile(b.path) as z:
        pkl_name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        pkl = z.read(pkl_name)
    replace_zip_member(b.path, good, "data.pkl", pkl, compress=zipfile.ZIP_DEFLATED)
    data = bytearray(good.read_bytes())
    off, size = zip_member_offset(good, "data.pkl")
    for i in range(off + 2, off + min(size, 64)):
        data[i] = 0xFF
    p = tmp / "bad_deflate.ckpt"
    p.write_bytes(bytes(data))
    return p


def _mk_zip_unknown_method(tmp, b):
    data = bytearray(b.path.read_bytes())
    with zipfile.ZipFile(b.path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    h = info.header_offset
    data[h + 8:h + 10] = struct.pack("<H", 99)             # local header: method
    name = info.filename.encode()
    cd = data.index(b"PK\x01\x02")
    while True:
        n_name = struct.unpack("<H", data[cd + 28:cd + 30])[0]
        if bytes(data[cd + 46:cd + 46 + n_name]) == name:
            break
        n_extra, n_comment = struct.unpack("<HH", data[cd + 30:cd + 34])
        cd += 46 + n_name + n_extra + n_comment
    data[cd + 10:cd + 12] = struct.pack("<H", 99)           # central directory: method
    p = tmp / "unknown_method.ckpt"
    p.write_bytes(bytes(data))
    return p


def _mk_safetensors_as_official(tmp, b):
    p = tmp / "model.bin"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a":1}' + b" " * 9)
    return p


NOT_CHECKPOINTS = {
    "empty_file": (_mk_empty, ("empty",)),
    "text_file": (_mk_text, ("not a checkpoint",)),
    "png": (_mk_png, ("not a checkpoint",)),
    "random_bytes": (_mk_random, ("not a checkpoint",)),
    "random_bytes_pickle_magic": (_mk_random_pickle_magic, ("corrupt", "unsafe")),
    "random_bytes_zip_magic": (_mk_random_zip_magic, ("corrupt", "truncated")),
    "directory": (_mk_dir, ("directory",)),
    "missing_path": (_mk_missing, ("no such file",)),
    "zip_without_data_pkl": (_mk_zip_without_pickle, ("not a checkpoint",)),
    "truncated_zip_50pct": (_truncated("path", frac=0.5), ("truncated", "corrupt")),
    "truncated_zip_10_bytes": (_truncated("path", nbytes=10), ("truncated", "corrupt")),
    "truncated_legacy_50pct": (_truncated("legacy_path", frac=0.5), ("truncated", "corrupt")),
    "truncated_legacy_10_bytes": (_truncated("legacy_path", nbytes=10), ("truncated", "corrupt")),
    "zip_bad_crc": (_mk_zip_bad_crc, ("corrupt",)),
    "zip_bad_deflate_stream": (_mk_zip_bad_deflate, ("corrupt",)),
    "zip_unknown_compression": (_mk_zip_unknown_method, ("corrupt",)),
    "safetensors_header_as_official": (_mk_safetensors_as_official, ("not a checkpoint",)),
}


@pytest.mark.parametrize("case", list(NOT_CHECKPOINTS))
def test_not_a_checkpoint_is_refused(case, base, tmp_path):
    make, words = NOT_CHECKPOINTS[case]
    p = make(tmp_path, base)
    refused(CheckpointError, p, words, torch_load_safe, p)
    refused(CheckpointError, p, words, load_official, p, base.cfg)
    if case != "safetensors_header_as_official":  # load_model sends that one to the native path
        refused(CheckpointError, p, words, load_model, p, base.cfg_path)


def test_checkpoint_error_is_a_d2c_and_value_error(tmp_path):
    p = tmp_path / "missing.ckpt"
    e = refused(CheckpointError, p, ("no such file",), load_model, p, None)
    assert isinstance(e, D2CError) and isinstance(e, ValueError)


def test_official_checkpoint_needs_a_config(base):
    with pytest.raises(ConfigError):
        load_official(base.path, None)
    with pytest.raises(ConfigError):
        load_model(base.path)


# --------------------------------------------------------------------------------------------
# malicious pickles: refused, and nothing runs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@pytest.mark.parametrize("fmt", MALICIOUS_FORMATS)
def test_malicious_pickle_is_refused_and_not_run(fmt, kind, base, tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    p = write_malicious(fmt, kind, marker, tmp_path / f"evil_{fmt}.ckpt")
    words = unsafe_words(fmt)
    refused(CheckpointError, p, words, torch_load_safe, p)
    refused(CheckpointError, p, words, load_model, p, base.cfg_path)
    refused(AttributeFileError, p, words, load_boundary, p)
    # The environment switch that turns torch.load's weights_only off changes nothing.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    refused(CheckpointError, p, words, load_official, p, base.cfg)
    refused(AttributeFileError, p, words, d2c_fast.Attribute.load, p)
    assert not marker.exists(), "the payload ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw_pickle", "memo_trick_zip"])
def test_second_line_of_defence_without_the_scan(fmt, tmp_path, monkeypatch):
    """Even if the opcode scan missed something, torch.load(weights_only=True) still refuses
    (and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn that off)."""
    marker = tmp_path / "PWNED"
    p = write_malicious(fmt, "exec", marker, tmp_path / f"evil_{fmt}.ckpt")
    monkeypatch.setattr(ckpt_mod, "_scan_pickle", lambda data, path: None)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    refused(CheckpointError, p, ("cannot be loaded safely", "corrupt"), torch_load_safe, p)
    assert not marker.exists(), "the payload ran"


def _nested(where):
    def mutate(obj, marker):
        obj = fresh(obj)
        evil = Payload("exec", marker)
        if where == "diffusion_value":
            obj["diffusion"]["conv_in.weight"] = evil
        elif where == "autoencoder_value":
            obj["autoencoder"]["encoder_q.stem.weight"] = evil
        elif where == "latent_mod_value":
            obj["latent_mod"]["std"] = evil
        elif where == "extra_top_level_key":
            obj["optimizer"] = {"state": evil}
        elif where == "inside_a_list":
            obj["diffusion"]["extra"] = [torch.zeros(1), {"a": evil}]
        return obj
    return mutate


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["diffusion_value", "autoencoder_value", "latent_mod_value",
                                   "extra_top_level_key", "inside_a_list"])
def test_malicious_object_nested_in_a_valid_state_dict(where, legacy, base, tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "nested.ckpt"
    torch.save(_nested(where)(base.obj_q, marker), p, _use_new_zipfile_serialization=not legacy)
    refused(CheckpointError, p, UNSAFE_WORDS, load_official, p, base.cfg_path)
    refused(CheckpointError, p, UNSAFE_WORDS, load_model, p, base.cfg)
    assert not marker.exists(), "the payload ran"


SUBPROCESS_SCRIPT = r"""
import json, os, sys
import torch
from d2c_fast.checkpoint import load_boundary, load_model, torch_load_safe
cfg, control = sys.argv[1], sys.argv[4]
files, markers = json.loads(sys.argv[2]), json.loads(sys.argv[3])
loaders = (("load_model", lambda p: load_model(p, cfg)), ("torch_load_safe", torch_load_safe),
           ("load_boundary", load_boundary))
out = {}
for p in files:
    for name, fn in loaders:
        try:
            fn(p)
            out[f"{name}:{p}"] = "LOADED"
        except Exception as e:
            out[f"{name}:{p}"] = f"{type(e).__name__}: {e}"
ran = [m for m in markers if os.path.exists(m)]
# Positive control, only once nothing ran: with the switch set, a plain torch.load would run it.
if not ran:
    try:
        torch.load(control)
    except Exception:
        pass
print(json.dumps({"results": out, "ran": ran}))
"""


def test_malicious_pickles_in_a_subprocess_with_weights_only_forced_off(base, tmp_path):
    files, markers = [], []
    for fmt in ("zip", "legacy", "raw_pickle", "memo_trick_zip"):
        for kind in PAYLOAD_KINDS:
            m = tmp_path / f"ran_{fmt}_{kind}"
            files.append(os.fspath(write_malicious(fmt, kind, m, tmp_path / f"{fmt}_{kind}.ckpt")))
            markers.append(os.fspath(m))
    control_marker = tmp_path / "control_ran"
    control = write_malicious("zip", "exec", control_marker, tmp_path / "control.ckpt")
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    r = subprocess.run([sys.executable, "-c", SUBPROCESS_SCRIPT, os.fspath(base.cfg_path),
                        json.dumps(files), json.dumps(markers), os.fspath(control)],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ran"] == [] and not any(os.path.exists(m) for m in markers)
    for key, res in report["results"].items():
        exc = "AttributeFileError" if key.startswith("load_boundary:") else "CheckpointError"
        assert res.startswith(f"{exc}: ") and "unsafe" in res, (key, res)
        assert os.path.basename(key.split(":", 1)[1]) in res
    # The control shows the payloads are live: the switch really makes torch.load execute them.
    assert control_marker.exists(), "positive control: a plain torch.load should have run it"


# --------------------------------------------------------------------------------------------
# structurally wrong checkpoints (official format)
# --------------------------------------------------------------------------------------------

ALIAS = "dec_tower.0._ops.0.conv.1.conv.0.weight_normalized"  # a weight-norm alias key


def _set(section, key, value_fn):
    def mutate(obj):
        obj = fresh(obj)
        obj[section][key] = value_fn(obj[section].get(key))
        return obj
    return mutate


def _del(section, key):
    def mutate(obj):
        obj = fresh(obj)
        del obj[section][key]
        return obj
    return mutate


def _with_value(t, idx, value):
    t = t.clone()
    t.view(-1)[idx] = value
    return t


STRUCTURAL = {
    "missing_key_encoder_q": (_del("autoencoder", "encoder_q.stem.bias"), ("missing",)),
    "missing_key_diffusion": (_del("diffusion", "conv_in.weight"), ("missing",)),
    "unexpected_key_encoder_q": (_set("autoencoder", "encoder_q.extra.weight",
                                      lambda _: torch.zeros(3)), ("unexpected",)),
    "unexpected_key_diffusion": (_set("diffusion", "extra.weight", lambda _: torch.zeros(3)),
                                 ("unexpected",)),
    "unexpected_key_autoencoder_not_moco": (_set("autoencoder", "decoder.weight",
                                                 lambda _: torch.zeros(3)), ("unexpected",)),
    "alias_without_its_weight": (_set("autoencoder", "encoder_q.extra.weight_normalized",
                                      lambda _: torch.zeros(3)), ("unexpected",)),
    "wrong_shape_encoder_q": (_set("autoencoder", "encoder_q.stem.weight",
                                   lambda t: torch.zeros(t.shape[0] + 1, *t.shape[1:])),
                              ("shape",)),
    "wrong_shape_diffusion": (_set("diffusion", "conv_in.weight",
                                   lambda t: t.reshape(t.shape[0], -1)), ("shape",)),
    "wrong_shape_alias": (_set("autoencoder", f"encoder_q.{ALIAS}", lambda t: t.reshape(-1)),
                          ("shape", "differs")),
    "int_dtype_for_float_weight": (_set("autoencoder", "encoder_q.stem.weight",
                                        lambda t: t.to(torch.int64)), ("dtype",)),
    "int_dtype_for_float_weight_diffusion": (_set("diffusion", "conv_in.weight",
                                                  lambda t: t.to(torch.int32)), ("dtype",)),
    "bool_dtype_for_int_buffer": (_set("autoencoder",
                                       "encoder_q.pre_process.0._ops.0.bn_act.num_batches_tracked",
                                       lambda t: torch.ones((), dtype=torch.bool)), ("dtype",)),
    "nan_weight_encoder_q": (_set("autoencoder", "encoder_q.stem.weight",
                                  lambda t: _with_value(t, 0, float("nan"))), ("NaN",)),
    "nan_weight_alias": (_set("autoencoder", f"encoder_q.{ALIAS}",
                              lambda t: _with_value(t, 1, float("nan"))), ("NaN",)),
    "nan_weight_diffusion": (_set("diffusion", "conv_out.weight",
                                  lambda t: _with_value(t, 3, float("nan"))), ("NaN",)),
    "inf_weight_diffusion": (_set("diffusion", "conv_in.bias",
                                  lambda t: _with_value(t, 0, float("inf"))), ("Inf",)),
    "neg_inf_running_var": (_set("autoencoder",
                                 "encoder_q.pre_process.0._ops.0.bn_act.running_var",
                                 lambda t: _with_value(t, 0, float("-inf"))), ("Inf",)),
    "float64_overflowing_float32": (_set("diffusion", "conv_in.bias",
                                         lambda t: _with_value(t.double(), 0, 1e300)),
                                    ("Inf",)),
    "tensor_replaced_by_int": (_set("diffusion", "conv_in.weight", lambda _: 3), ("tensor",)),
    "weight_replaced_by_str_alias_kept": (_set("autoencoder",
                                               "encoder_q." + ALIAS[:-len("_normalized")],
                                               lambda _: "w"), ("tensor",)),
    "non_string_key_autoencoder": (_set("autoencoder", 3, lambda _: torch.zeros(1)),
                                   ("non-string", "key")),
    "non_string_key_diffusion": (_set("diffusion", ("a", 1), lambda _: torch.zeros(1)),
                                 ("non-string", "key")),
    "latent_mod_missing": (lambda o: {k: v for k, v in fresh(o).items() if k != "latent_mod"},
                           ("missing",)),
    "latent_mod_wrong_channels": (_set("latent_mod", "mean", lambda _: torch.zeros(1, C + 1, 1, 1)),
                                  ("shape",)),
    "latent_mod_wrong_spatial": (_set("latent_mod", "std", lambda _: torch.ones(1, C, 2, 2)),
                                 ("shape",)),
    "latent_mod_std_zero": (_set("latent_mod", "std", lambda t: _with_value(t, 1, 0.0)),
                            ("positive",)),
    "latent_mod_std_negative": (_set("latent_mod", "std", lambda t: -t), ("positive",)),
    "latent_mod_nan": (_set("latent_mod", "mean", lambda t: _with_value(t, 0, float("nan"))),
                       ("NaN",)),
    "latent_mod_inf_std": (_set("latent_mod", "std", lambda t: _with_value(t, 0, float("inf"))),
                           ("Inf",)),
    "latent_mod_int_dtype": (_set("latent_mod", "mean", lambda t: t.to(torch.int64)),
                             ("float",)),
    "latent_mod_extra_key": (_set("latent_mod", "var", lambda _: torch.ones(1, C, 1, 1)),
                             ("exactly",)),
    "latent_mod_mixed_key_types": (_set("latent_mod", 7, lambda _: torch.ones(1)),
                                   ("exactly",)),
    "latent_mod_not_a_dict": (lambda o: {**fresh(o), "latent_mod": torch.ones(1, C, 1, 1)},
                              ("exactly",)),
    "missing_section_diffusion": (lambda o: {k: v for k, v in fresh(o).items()
                                             if k != "diffusion"}, ("missing",)),
    "missing_section_autoencoder": (lambda o: {k: v for k, v in fresh(o).items()
                                               if k != "autoencoder"}, ("missing",)),
    "empty_dict": (lambda o: {}, ("missing",)),
    "extra_top_level_key": (lambda o: {**fresh(o), "optimizer": {"lr": 1.0}}, ("unexpected",)),
    "section_not_a_dict": (lambda o: {**fresh(o), "diffusion": [torch.zeros(1)]},
                           ("not a state dict",)),
    "top_level_list": (lambda o: [o["autoencoder"], o["diffusion"]], ("top level is list",)),
    "top_level_tensor": (lambda o: torch.zeros(3), ("top level is Tensor",)),
    "boundary_file_as_model": (lambda o: {"boundary": torch.zeros(1, C, D, D)},
                               ("boundary",)),
}


@pytest.mark.parametrize("case", list(STRUCTURAL))
def test_structurally_bad_checkpoint_is_refused(case, base, tmp_path):
    mutate, words = STRUCTURAL[case]
    p = tmp_path / "model.ckpt"
    torch.save(mutate(base.obj_q), p)
    refused(CheckpointError, p, words, load_official, p, base.cfg)


def test_checkpoint_of_another_config_is_refused(base, make_tiny_config):
    other = make_tiny_config()
    other["autoencoder"]["num_channels_enc"] = 16
    refused(CheckpointError, base.path, ("shape",), load_model, base.path, other)
    other = make_tiny_config()
    other["autoencoder"]["num_groups_per_scale"] = 1
    refused(CheckpointError, base.path, ("missing", "unexpected"), load_model, base.path, other)


# --------------------------------------------------------------------------------------------
# accepted variants of the official format
# --------------------------------------------------------------------------------------------

def _variant(name, obj):
    obj = fresh(obj)
    ae = obj["autoencoder"]
    if name == "as_released":
        pass
    elif name == "no_key_encoder_no_queue":
        obj["autoencoder"] = {k: v for k, v in ae.items() if k.startswith("encoder_q.")}
    elif name == "key_encoder_without_queue":
        obj["autoencoder"] = {k: v for k, v in ae.items() if k not in ("queue", "queue_ptr")}
    elif name == "queue_without_key_encoder":
        obj["autoencoder"] = {k: v for k, v in ae.items() if not k.startswith("encoder_k.")}
    elif name == "moco_fc_head":
        for enc in ("encoder_q", "encoder_k"):
            ae[f"{enc}.fc.0.weight"] = torch.randn(32, 32)
            ae[f"{enc}.fc.0.bias"] = torch.randn(32)
            ae[f"{enc}.fc.2.weight"] = torch.randn(16, 32)
            ae[f"{enc}.fc.2.bias"] = torch.randn(16)
    elif name == "module_prefixes":  # saved from a DataParallel model
        obj["autoencoder"] = {f"module.{k}": v for k, v in ae.items()}
        obj["diffusion"] = {f"module.{k}": v for k, v in obj["diffusion"].items()}
    elif name == "without_weight_norm_aliases":
        obj["autoencoder"] = {k: v for k, v in ae.items() if not k.endswith("weight_normalized")}
    elif name == "float64_weights":
        obj["diffusion"] = {k: (v.double() if v.is_floating_point() else v)
                            for k, v in obj["diffusion"].items()}
        obj["latent_mod"] = {k: v.double() for k, v in obj["latent_mod"].items()}
    elif name == "int32_counters":
        obj["autoencoder"] = {k: (v.int() if k.endswith("num_batches_tracked") else v)
                              for k, v in ae.items()}
    else:
        raise ValueError(name)
    return obj


VARIANTS = ["as_released", "no_key_encoder_no_queue", "key_encoder_without_queue",
            "queue_without_key_encoder", "moco_fc_head", "module_prefixes",
            "without_weight_norm_aliases", "float64_weights", "int32_counters"]


@pytest.mark.parametrize("name", VARIANTS)
def test_accepted_official_variants(name, base, tmp_path):
    p = tmp_path / "model.ckpt"
    torch.save(_variant(name, base.obj), p)
    m = load_official(p, base.cfg)
    assert_same_weights(m, base.model)
    assert m.config.raw == load_config(base.cfg).raw and m.source == os.fspath(p)
    assert not m.autoencoder.training and not m.unet.training


@pytest.mark.parametrize("config_as", ["dict", "json_path", "model_config", "yaml_path"])
def test_official_loads_with_config_in_every_form(config_as, base, tmp_path):
    import yaml
    cfg = {"dict": base.cfg, "json_path": base.cfg_path,
           "model_config": load_config(base.cfg)}.get(config_as)
    if config_as == "yaml_path":
        cfg = tmp_path / "config.yml"
        cfg.write_text(yaml.safe_dump(base.cfg))
    m = load_model(base.path, cfg)
    assert_same_weights(m, base.model)


def test_legacy_format_loads(base):
    assert_same_weights(load_official(base.legacy_path, base.cfg), base.model)


def test_weight_norm_alias_wins_over_its_weight(base, tmp_path):
    obj = fresh(base.obj_q)
    key = f"encoder_q.{ALIAS}"
    obj["autoencoder"][key] = obj["autoencoder"][key] * 2 + 1
    p = tmp_path / "model.ckpt"
    torch.save(obj, p)
    m = load_official(p, base.cfg)
    w = m.autoencoder.state_dict()[ALIAS[:-len("_normalized")]]
    assert torch.equal(w, obj["autoencoder"][key])


# --------------------------------------------------------------------------------------------
# the native .safetensors format
# --------------------------------------------------------------------------------------------

def test_convert_round_trip(base, tmp_path):
    m = load_native(base.native)
    assert_same_weights(m, base.model)
    assert m.config.raw == load_config(base.cfg).raw
    assert base.native_meta["format"] == "d2c_fast"
    assert json.loads(base.native_meta["config"]) == load_config(base.cfg).raw
    # dispatch: by extension, and by content under another name
    assert_same_weights(load_model(base.native), base.model)
    assert_same_weights(load_model(base.native, base.cfg), base.model)
    other_name = tmp_path / "weights.bin"
    other_name.write_bytes(base.native.read_bytes())
    assert_same_weights(load_model(other_name), base.model)
    # converting again gives the same tensors
    out2 = tmp_path / "again.safetensors"
    convert(base.path, base.cfg, out2)
    assert_same_weights(load_native(out2), base.model)


def test_native_refuses_a_different_config(base, make_tiny_config):
    other = make_tiny_config()
    other["diffusion"]["diffusion"]["num_diffusion_timesteps"] = 500
    with pytest.raises(ConfigError) as ei:
        load_model(base.native, other)
    assert base.native.name in str(ei.value)


def _st_case(tensors_fn=None, meta_fn=None):
    def mk(b, path):
        from safetensors.torch import save_file
        tensors = dict(b.native_tensors)
        meta = dict(b.native_meta)
        if tensors_fn:
            tensors = tensors_fn(tensors)
        if meta_fn:
            meta = meta_fn(meta)
        save_file(tensors, os.fspath(path), metadata=meta)
        return path
    return mk


def _st_raw(fn):
    def mk(b, path):
        path.write_bytes(fn(b.native.read_bytes()))
        return path
    return mk


def _st_tensor(key, fn):
    return _st_case(tensors_fn=lambda t: {**t, key: fn(t[key])})


def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


def _bad_config_json(meta):
    cfg = json.loads(meta["config"])
    cfg["autoencoder"]["unknown_field"] = 1
    return {**meta, "config": json.dumps(cfg)}


def _other_model_config_json(meta):
    cfg = json.loads(meta["config"])
    cfg["autoencoder"]["num_channels_enc"] = 16
    return {**meta, "config": json.dumps(cfg)}


NATIVE_BAD = {
    "no_metadata": (_st_case(meta_fn=lambda m: None), ("metadata",)),
    "wrong_format": (_st_case(meta_fn=lambda m: {**m, "format": "pt"}), ("format",)),
    "bad_version": (_st_case(meta_fn=lambda m: {**m, "version": "99"}), ("version",)),
    "version_missing": (_st_case(meta_fn=lambda m: _drop(m, "version")), ("version",)),
    "config_missing": (_st_case(meta_fn=lambda m: _drop(m, "config")), ("config",)),
    "config_not_json": (_st_case(meta_fn=lambda m: {**m, "config": "{not json"}),
                        ("JSON",)),
    "config_json_invalid_config": (_st_case(meta_fn=_bad_config_json), ("config",)),
    "config_json_a_list": (_st_case(meta_fn=lambda m: {**m, "config": "[1, 2]"}), ("config",)),
    "config_of_another_model": (_st_case(meta_fn=_other_model_config_json), ("shape",)),
    "nan_tensor": (_st_tensor("diffusion.conv_in.weight",
                              lambda t: _with_value(t, 0, float("nan"))), ("NaN",)),
    "inf_std": (_st_tensor("latent_mod.std", lambda t: _with_value(t, 0, float("inf"))),
                ("Inf",)),
    "std_not_positive": (_st_tensor("latent_mod.std", lambda t: -t), ("positive",)),
    "int_dtype": (_st_tensor("autoencoder.stem.weight", lambda t: t.to(torch.int32)),
                  ("dtype",)),
    "wrong_shape": (_st_tensor("diffusion.conv_in.weight", lambda t: t[:1].contiguous()),
                    ("shape",)),
    "extra_tensor_in_section": (_st_case(tensors_fn=lambda t: {**t, "autoencoder.extra":
                                                                  torch.zeros(1)}),
                                ("unexpected",)),
    "extra_tensor_unknown_section": (_st_case(tensors_fn=lambda t: {**t, "optim.lr":
                                                                       torch.zeros(1)}),
                                     ("unexpected",)),
    "extra_tensor_no_section": (_st_case(tensors_fn=lambda t: {**t, "stray": torch.zeros(1)}),
                                ("unexpected",)),
    "extra_latent_mod_tensor": (_st_case(tensors_fn=lambda t: {**t, "latent_mod.var":
                                                                  torch.ones(1, C, 1, 1)}),
                                ("exactly",)),
    "missing_tensor": (_st_case(tensors_fn=lambda t: _drop(t, "diffusion.conv_out.bias")),
                       ("missing",)),
    "missing_latent_mod": (_st_case(tensors_fn=lambda t: _drop(t, "latent_mod.mean")),
                           ("exactly",)),
    "truncated_50pct": (_st_raw(lambda d: d[:len(d) // 2]), ("truncated", "corrupt")),
    "truncated_10_bytes": (_st_raw(lambda d: d[:10]), ("truncated", "corrupt")),
    "truncated_in_header": (_st_raw(lambda d: d[:8 + int.from_bytes(d[:8], "little") // 2]),
                            ("truncated", "corrupt")),
    "header_length_huge": (_st_raw(lambda d: (2 ** 62).to_bytes(8, "little") + d[8:]),
                           ("truncated", "corrupt")),
    "empty": (_st_raw(lambda d: b""), ("empty",)),
    "a_torch_zip_named_safetensors": (lambda b, p: (p.write_bytes(b.path.read_bytes()), p)[1],
                                      ("truncated", "corrupt")),
}


@pytest.mark.parametrize("case", list(NATIVE_BAD))
def test_bad_native_file_is_refused(case, base, tmp_path):
    make, words = NATIVE_BAD[case]
    p = make(base, tmp_path / "model.safetensors")
    refused(CheckpointError, p, words, load_model, p)  # -> load_native


@pytest.mark.parametrize("case", ["no_metadata", "config_json_invalid_config", "nan_tensor",
                                  "truncated_50pct"])
def test_bad_native_file_is_refused_by_load_native(case, base, tmp_path):
    make, words = NATIVE_BAD[case]
    p = make(base, tmp_path / "model.safetensors")
    refused(CheckpointError, p, words, load_native, p)


# --------------------------------------------------------------------------------------------
# attribute (boundary) files
# --------------------------------------------------------------------------------------------

def _boundary(tmp_path, obj, name="blond.ckpt", **save_kw):
    p = tmp_path / name
    torch.save(obj, p, **save_kw)
    return p


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_valid_boundary_loads(legacy, tmp_path):
    b = torch.randn(1, C, D, D, generator=torch.Generator().manual_seed(4))
    p = _boundary(tmp_path, {"boundary": b}, _use_new_zipfile_serialization=not legacy)
    t = load_boundary(p)
    assert t.shape == (C, D, D) and t.dtype == torch.float32 and torch.equal(t, b[0])
    a = d2c_fast.Attribute.load(p)
    assert a.shape == (C, D, D) and a.name == "blond" and a.source == os.fspath(p)
    assert torch.equal(a.direction, b[0])
    a.check_latent_shape((C, D, D))


def test_attribute_for_another_latent_shape_is_refused(tmp_path):
    p = _boundary(tmp_path, {"boundary": torch.randn(1, C, D, D)}, name="smile.ckpt")
    a = d2c_fast.Attribute.load(p)
    for other in ((C, 2 * D, 2 * D), (C + 4, D, D)):
        with pytest.raises(AttributeFileError) as ei:
            a.check_latent_shape(other)
        assert "smile" in str(ei.value) and "shape" in str(ei.value)


BOUNDARY_BAD = {
    "not_a_dict": (lambda: torch.zeros(1, C, D, D), ("not a boundary",)),
    "a_list": (lambda: [torch.zeros(1, C, D, D)], ("not a boundary",)),
    "dict_without_boundary": (lambda: {"direction": torch.zeros(1, C, D, D)},
                              ("not a boundary",)),
    "model_checkpoint": (lambda: {"autoencoder": {}, "diffusion": {}, "latent_mod": {}},
                         ("not a boundary",)),
    "batch_of_two": (lambda: {"boundary": torch.zeros(2, C, D, D)}, ("shape",)),
    "two_dims": (lambda: {"boundary": torch.zeros(D, D)}, ("shape",)),
    "five_dims": (lambda: {"boundary": torch.zeros(1, 1, C, D, D)}, ("shape",)),
    "int_dtype": (lambda: {"boundary": torch.zeros(1, C, D, D, dtype=torch.int64)},
                  ("float",)),
    "not_a_tensor": (lambda: {"boundary": [1.0, 2.0]}, ("float tensor",)),
    "nan": (lambda: {"boundary": _with_value(torch.zeros(1, C, D, D), 5, float("nan"))},
            ("NaN",)),
    "inf": (lambda: {"boundary": _with_value(torch.zeros(1, C, D, D), 5, float("-inf"))},
            ("Inf",)),
    "float64_overflow": (lambda: {"boundary": _with_value(torch.zeros(1, C, D, D,
                                                                      dtype=torch.float64),
                                                          0, 1e300)}, ("Inf",)),
}


@pytest.mark.parametrize("loader", ["load_boundary", "Attribute.load"])
@pytest.mark.parametrize("case", list(BOUNDARY_BAD))
def test_bad_boundary_file_is_refused(case, loader, tmp_path):
    make, words = BOUNDARY_BAD[case]
    p = _boundary(tmp_path, make())
    fn = load_boundary if loader == "load_boundary" else d2c_fast.Attribute.load
    refused(AttributeFileError, p, words, fn, p)


@pytest.mark.parametrize("case", ["empty_file", "text_file", "missing_path", "directory",
                                  "truncated_zip_50pct"])
def test_unreadable_boundary_file_is_refused(case, base, tmp_path):
    make, words = NOT_CHECKPOINTS[case]
    p = make(tmp_path, base)
    refused(AttributeFileError, p, words, load_boundary, p)
    refused(AttributeFileError, p, words, d2c_fast.Attribute.load, p)


def test_truncated_boundary_is_refused(tmp_path):
    p = _boundary(tmp_path, {"boundary": torch.randn(1, C, D, D)})
    data = p.read_bytes()
    for n in (len(data) // 2, 10):
        p.write_bytes(data[:n])
        refused(AttributeFileError, p, ("truncated", "corrupt"), load_boundary, p)


# --------------------------------------------------------------------------------------------
# the official fixture (skipped when it is not there)
# --------------------------------------------------------------------------------------------

def test_fixture_checkpoint_and_boundary_load(fixture_dir):
    m = load_model(fixture_dir / "model.ckpt", fixture_dir / "config.yml")
    assert m.config.latent_shape == (C, D, D)
    b = load_boundary(fixture_dir / "boundary.ckpt")
    assert b.shape == m.config.latent_shape
    d2c_fast.Attribute.load(fixture_dir / "boundary.ckpt").check_latent_shape(m.config.latent_shape)
    refused(CheckpointError, fixture_dir / "boundary.ckpt", ("boundary",), load_official,
            fixture_dir / "boundary.ckpt", fixture_dir / "config.yml")


@pytest.mark.parametrize("case", ["nan_in_diffusion", "missing_key", "nested_payload",
                                  "truncated"])
def test_modified_fixture_is_refused(case, fixture_dir, tmp_path):
    src = fixture_dir / "model.ckpt"
    p = tmp_path / "model.ckpt"
    marker = tmp_path / "PWNED"
    if case == "truncated":
        p.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
        words = ("truncated", "corrupt")
    else:
        obj = torch_load_safe(src)
        if case == "nan_in_diffusion":
            k = next(iter(obj["diffusion"]))
            obj["diffusion"][k] = _with_value(obj["diffusion"][k], 0, float("nan"))
            words = ("NaN",)
        elif case == "missing_key":
            del obj["autoencoder"]["encoder_q.stem.bias"]
            words = ("missing",)
        else:
            obj["diffusion"]["conv_in.weight"] = Payload("os_system", marker)
            words = UNSAFE_WORDS
        torch.save(obj, p)
    refused(CheckpointError, p, words, load_model, p, fixture_dir / "config.yml")
    assert not marker.exists()


def _exact_tensors(loaded) -> None:
    """Overwrite every floating-point tensor of ``loaded`` (autoencoder, prior, latent mean
    and std) with values made by exact arithmetic from the tensor's position: the same bits on
    every machine, which ``random_model`` is not (its docstring says why)."""
    tensors = [v for _, v in list(loaded.autoencoder.state_dict().items())
               + list(loaded.unet.state_dict().items()) if v.is_floating_point()]
    with torch.no_grad():
        for j, t in enumerate(tensors + [loaded.mean, loaded.std]):
            k = torch.arange(t.numel(), dtype=torch.int64) * 7919 + 104729 * j
            vals = ((k % 2003) - 1001).to(torch.float32) / 1024   # exact in float32
            t.copy_(vals.view(t.shape).to(t.dtype))


def test_model_fingerprint_values_are_stable():
    """Fitted attribute files record their model's fingerprint, so its value for a given model
    must never change (or existing files stop loading on their model). The model here has
    every tensor made by exact arithmetic (``_exact_tensors``), so the values pinned below are
    the same on every machine; they were computed by the fingerprint code as it stands since
    it was first pinned (cdc7263), in the current and in the pre-2026-11-29 (six-tensor) form.
    The shipped model's own value is checked against its attribute files in
    tests/test_builtin_attributes.py."""
    from d2c_fast.checkpoint import arch256_config_path, model_fingerprint
    m = random_model(os.path.join(os.path.dirname(arch256_config_path()), "tiny64.json"), seed=0)
    _exact_tensors(m)
    assert model_fingerprint(m) == "256990432892-65003a15d4143bc9"
    assert model_fingerprint(m, legacy=True) == "256990432892-f0265a91ff15"
    # the fingerprint sees the weights: one changed value changes it
    with torch.no_grad():
        next(iter(m.unet.parameters())).view(-1)[0] += 1
    assert model_fingerprint(m) != "256990432892-65003a15d4143bc9"

