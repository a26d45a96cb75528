"""Checkpoints: the official ``model.ckpt`` / boundary ``.ckpt`` and our ``.safetensors``.

Official files are ``torch.save`` pickles. They are read only through
``torch.load(weights_only=True)`` (an explicit ``True`` that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
cannot override), and before that the pickle's opcodes are scanned without executing anything:
a reference to any global outside a small allow-list (tensor rebuilding, storages,
``OrderedDict``) is refused as an unsafe pickle.

The native format is one ``.safetensors`` file: tensors ``autoencoder.<key>``,
``diffusion.<key>``, ``latent_mod.mean``, ``latent_mod.std`` (the latent standardisation the
prior was trained in: ``(1, C, 1, 1)`` per channel as the official release, or ``(1, C, H, W)``
per latent position); metadata ``format=d2c_fast``,
``version``, ``config`` (the JSON config). Every problem is a :class:`CheckpointError` that
names the file and the cause.
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import zipfile

import torch

from ..config import ConfigError, ModelConfig, config_from_dict, load_config
from ..errors import AttributeFileError, CheckpointError
from ..images import IMAGE_EXTENSIONS
from ..models.autoencoder import AutoEncoder
from ..models.unet import UNet
from ..utils import atomic_write

NATIVE_FORMAT = "d2c_fast"
NATIVE_VERSION = "1"

_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.serialization", "_get_layout"),
}
_SAFE_STORAGES = {"FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage",
                  "LongStorage", "IntStorage", "ShortStorage", "CharStorage", "ByteStorage",
                  "BoolStorage", "UntypedStorage"}
_SAFE_DTYPES = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                "uint8", "bool", "float", "double", "half", "long", "int"}


def _global_ok(module: str, name: str) -> bool:
    if (module, name) in _SAFE_GLOBALS:
        return True
    if module == "torch" and (name in _SAFE_STORAGES or name in _SAFE_DTYPES):
        return True
    return False


_STRING_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8",
               "SHORT_BINSTRING", "BINSTRING", "STRING")
_MARK = object()  # a MARK on the simulated stack


def _scan_pickle(data: bytes, path) -> None:
    """Refuse pickles that reference anything but tensor-rebuilding globals. Executes nothing.

    The stack and the memo are simulated (strings kept, everything else opaque), so the module
    and name a ``STACK_GLOBAL`` really receives are checked, wherever they come from (a memo
    ``BINGET`` included); a name that is not a known string is refused."""
    stack: list = []
    memo: dict = {}

    def pop():
        if not stack or stack[-1] is _MARK:
            raise ValueError("stack underflow")
        return stack.pop()

    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                if not _global_ok(module, gname):
                    raise CheckpointError(path, f"unsafe pickle: references {module}.{gname}")
            elif name == "STACK_GLOBAL":
                ref = stack[-2:]
                if len(ref) < 2 or not all(isinstance(s, str) for s in ref) \
                        or not _global_ok(ref[0], ref[1]):
                    shown = (".".join(ref) if len(ref) == 2 and all(isinstance(s, str) for s in ref)
                             else "a global whose name is computed")
                    raise CheckpointError(path, f"unsafe pickle: references {shown}")
            elif name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                raise CheckpointError(path, f"unsafe pickle: uses opcode {name}")
            # Simulate the stack effect of the opcode.
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise ValueError(f"{name} with an empty stack")
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise ValueError(f"memo key {arg!r} read before it was written")
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(pop())
                stack.append(stack[-1])
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    while stack and stack[-1] is not _MARK:
                        stack.pop()
                    if not stack:
                        raise ValueError(f"{name} without a MARK")
                    stack.pop()
                    n = before.index(pickletools.markobject)
                else:
                    n = len(before)
                for _ in range(n):
                    pop()
                for t in op.stack_after:
                    stack.append(_MARK if t is pickletools.markobject
                                 else (str(arg) if name in _STRING_OPS else None))
    except CheckpointError:
        raise
    except Exception as e:  # malformed opcode stream
        raise CheckpointError(path, f"not a checkpoint (corrupt pickle: {e})") from e


def _check_file(path) -> int:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise CheckpointError(p, "no such file")
    if os.path.isdir(p):
        raise CheckpointError(p, "is a directory, not a checkpoint file")
    size = os.path.getsize(p)
    if size == 0:
        raise CheckpointError(p, "empty file")
    return size


def torch_load_safe(path) -> object:
    """Load a ``torch.save`` file without executing code (scan, then weights_only=True)."""
    _check_file(path)
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(p, f"cannot be read ({e.strerror or e})") from e
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as z:
                pkls = [n for n in z.namelist() if n.endswith("data.pkl")]
                if len(pkls) != 1:
                    raise CheckpointError(p, "not a checkpoint (zip without one data.pkl)")
                _scan_pickle(z.read(pkls[0]), p)
        except CheckpointError:
            raise
        except Exception as e:  # BadZipFile, EOFError, OSError, zlib.error, NotImplementedError
            raise CheckpointError(p, f"truncated or corrupt file ({e})") from e
    else:
        # Legacy (pre-1.6) format: consecutive pickles (magic number, protocol version, sys
        # info, the object itself, the storage keys), then the raw storage data.
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CheckpointError(p, f"cannot be read ({e.strerror or e})") from e
        if not data[:1] == b"\x80":
            raise CheckpointError(p, "not a checkpoint (neither a torch zip file nor a pickle)")
        buf = io.BytesIO(data)
        for _ in range(5):
            start = buf.tell()
            try:
                for _op in pickletools.genops(buf):
                    pass
            except Exception as e:
                raise CheckpointError(p, f"truncated or corrupt pickle ({e})") from e
            _scan_pickle(data[start:buf.tell()], p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # UnpicklingError, RuntimeError (truncated), ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(p, f"cannot be loaded safely or is corrupt: {msg}") from e


def is_alias_key(key: str) -> bool:
    """Whether an autoencoder state-dict key is a weight-norm alias (``*.weight_normalized``,
    a view of its weight: neither stored nor hashed)."""
    return key.endswith(".weight_normalized")


def official_autoencoder_keys(sd: dict, path) -> dict:
    """``encoder_q.*`` of a MoCo state dict, without the key encoder, queue and MLP heads."""
    out = {}
    for k, v in sd.items():
        k2 = k[7:] if k.startswith("module.") else k
        if k2.startswith("encoder_k.") or k2 in ("queue", "queue_ptr"):
            continue
        if not k2.startswith("encoder_q."):
            raise CheckpointError(path, f"unexpected key autoencoder[{k!r}] (expected encoder_q.*)")
        k3 = k2[len("encoder_q."):]
        if k3.startswith("fc."):
            continue  # MoCo projection head, unused at inference
        out[k3] = v
    return out


def _validate_tensors(section: str, got: dict, expected: dict, path) -> dict:
    """Check keys, shapes, dtypes and finiteness against a model's state dict."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing:
        raise CheckpointError(path, f"{section}: missing keys {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)")
    if unexpected:
        raise CheckpointError(path, f"{section}: unexpected keys {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)} in all)")
    out = {}
    for k, ref in expected.items():
        v = got[k]
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(path, f"{section}.{k}: expected a tensor, got {type(v).__name__}")
        if tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(path, f"{section}.{k}: shape {tuple(v.shape)}, the config "
                                  f"needs {tuple(ref.shape)}")
        if ref.is_floating_point():
            if not v.is_floating_point():
                raise CheckpointError(path, f"{section}.{k}: dtype {v.dtype}, expected a float")
            v = v.to(torch.float32)  # before the check: a finite float64 may overflow float32
            if not torch.isfinite(v).all():
                raise CheckpointError(path, f"{section}.{k}: contains NaN or Inf")
        elif v.dtype != ref.dtype:
            if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
                raise CheckpointError(path, f"{section}.{k}: dtype {v.dtype}, expected {ref.dtype}")
            v = v.to(ref.dtype)
        out[k] = v
    return out


def latent_norm_kind(t: torch.Tensor) -> str:
    """``"channel"`` for a latent standardisation tensor with one value per channel
    (``(1, C, 1, 1)`` / ``(C, 1, 1)``), ``"position"`` for one per latent position."""
    return "channel" if tuple(t.shape[-2:]) == (1, 1) else "position"


def _latent_mod(lm, shape, path) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(lm, dict) or set(lm) != {"mean", "std"}:
        keys = sorted(map(str, lm)) if isinstance(lm, dict) else type(lm).__name__
        raise CheckpointError(path, f"latent_mod must hold exactly 'mean' and 'std', got {keys}")
    out = []
    for k in ("mean", "std"):
        v = lm[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise CheckpointError(path, f"latent_mod.{k}: expected a float tensor")
        C, H, W = shape
        if tuple(v.shape) in ((1, C, 1, 1), (C,)):           # per channel (official)
            v = v.reshape(1, C, 1, 1).float()
        elif tuple(v.shape) in ((1, C, H, W), (C, H, W)):    # per latent position
            v = v.reshape(1, C, H, W).float()
        else:
            raise CheckpointError(path, f"latent_mod.{k}: shape {tuple(v.shape)}, expected "
                                  f"(1, {C}, 1, 1) (per channel) or (1, {C}, {H}, {W}) "
                                  "(per position)")
        if not torch.isfinite(v).all():
            raise CheckpointError(path, f"latent_mod.{k}: contains NaN or Inf")
        out.append(v)
    if out[0].shape != out[1].shape:
        raise CheckpointError(path, f"latent_mod.mean {tuple(out[0].shape)} and latent_mod.std "
                              f"{tuple(out[1].shape)}: both per channel or both per position")
    if (out[1] <= 0).any():
        raise CheckpointError(path, "latent_mod.std: must be positive")
    return out[0], out[1]


class LoadedModel:
    """What a checkpoint gives: the config, the reference modules (eval mode, CPU, fp32) and the
    latent standardisation."""

    def __init__(self, config: ModelConfig, autoencoder, unet, mean, std, source: str,
                 guide=None):
        self.config, self.autoencoder, self.unet = config, autoencoder, unet
        self.mean, self.std, self.source = mean, std, source
        self.guide = guide   # the autoguidance prior (config ``diffusion.guide``) or None


def _build(cfg: ModelConfig, ae_sd: dict, unet_sd: dict, lm, path,
           guide_sd: dict | None = None) -> LoadedModel:
    ae = AutoEncoder(cfg.autoencoder)
    unet = UNet(cfg.unet)
    ae_ref = {k: v for k, v in ae.state_dict().items() if not is_alias_key(k)}
    # Aliases (weight_normalized) must agree with their weight; the official load lets the
    # alias win, so we take it when present.
    ae_in = dict(ae_sd)
    for k in [k for k in ae_in if is_alias_key(k)]:
        base = k[: -len("_normalized")]
        alias = ae_in.pop(k)
        if base not in ae_in or not isinstance(alias, torch.Tensor):
            raise CheckpointError(path, f"autoencoder: unexpected key {k!r}")
        if not isinstance(ae_in[base], torch.Tensor):
            continue  # _validate_tensors reports the base ("expected a tensor")
        if alias.shape != ae_in[base].shape:
            raise CheckpointError(path, f"autoencoder.{k}: shape {tuple(alias.shape)} differs from "
                                  f"{base}")
        ae_in[base] = alias
    ae_ok = _validate_tensors("autoencoder", ae_in, ae_ref, path)
    unet_in = {(k[7:] if k.startswith("module.") else k): v for k, v in unet_sd.items()}
    unet_ok = _validate_tensors("diffusion", unet_in, unet.state_dict(), path)
    ae.load_state_dict(ae_ok, strict=False)  # aliases share storage with their weight
    unet.load_state_dict(unet_ok, strict=True)
    guide = None
    if cfg.guide is not None:
        guide = UNet(cfg.guide)
        guide.load_state_dict(_validate_tensors("guide", guide_sd or {}, guide.state_dict(), path),
                              strict=True)
        guide.eval()
    elif guide_sd:
        raise CheckpointError(path, "guide tensors but no 'diffusion.guide' in the config")
    mean, std = _latent_mod(lm, cfg.latent_shape, path)
    ae.eval()
    unet.eval()
    for p in list(ae.parameters()) + list(unet.parameters()) + \
            (list(guide.parameters()) if guide is not None else []):
        p.requires_grad_(False)
    return LoadedModel(cfg, ae, unet, mean, std, os.fspath(path), guide)


def load_official(path, config) -> LoadedModel:
    """An official ``model.ckpt`` (``{"autoencoder", "diffusion", "latent_mod"}``) + its config."""
    if config is None:
        raise ConfigError("<config>", "an official .ckpt needs its config (the official YAML): "
                          f"Sampler(ckpt, config='config.yml') ({MODEL_ARGUMENT})")
    cfg = load_config(config)
    obj = torch_load_safe(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"not a D2C checkpoint (top level is {type(obj).__name__})")
    for k in ("autoencoder", "diffusion", "latent_mod"):
        if k not in obj:
            if "boundary" in obj:
                raise CheckpointError(path, "this is an attribute (boundary) file, not a model")
            raise CheckpointError(path, f"not a D2C checkpoint: missing section {k!r} "
                                  f"(has {sorted(map(str, obj))[:6]})")
    extra = set(obj) - {"autoencoder", "diffusion", "latent_mod"}
    if extra:
        raise CheckpointError(path, f"unexpected top-level keys {sorted(map(str, extra))}")
    for k in ("autoencoder", "diffusion"):
        if not isinstance(obj[k], dict):
            raise CheckpointError(path, f"section {k!r} is not a state dict")
        bad = [key for key in obj[k] if not isinstance(key, str)]
        if bad:
            raise CheckpointError(path, f"section {k!r} is not a state dict (non-string keys "
                                  f"{bad[:5]!r})")
    ae_sd = official_autoencoder_keys(obj["autoencoder"], path)
    return _build(cfg, ae_sd, obj["diffusion"], obj["latent_mod"], path)


def read_safetensors(path, error) -> tuple[dict, dict]:
    """``(metadata, tensors)`` of a ``.safetensors`` file, tensors on the CPU; when it cannot
    be read (missing, truncated, corrupt), ``error(cause)`` is raised (``cause``: the first
    line of the reader's message)."""
    from safetensors import safe_open
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise error(str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def load_native(path) -> LoadedModel:
    """Our ``.safetensors`` file (config in its metadata)."""
    _check_file(path)
    p = os.fspath(path)
    meta, tensors = read_safetensors(p, lambda msg: CheckpointError(
        p, f"not a readable safetensors file (truncated or corrupt: {msg})"))
    if meta.get("format") != NATIVE_FORMAT:
        raise CheckpointError(p, f"safetensors file without d2c_fast metadata "
                              f"(format={meta.get('format')!r})")
    if meta.get("version") != NATIVE_VERSION:
        raise CheckpointError(p, f"unsupported d2c_fast format version {meta.get('version')!r}")
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(p, "metadata 'config' missing or not JSON") from e
    except ConfigError as e:
        raise CheckpointError(p, f"metadata 'config' is not a valid config: {e}") from e
    sections: dict[str, dict] = {"autoencoder": {}, "diffusion": {}, "latent_mod": {},
                                 "guide": {}}
    for k, v in tensors.items():
        sec, _, rest = k.partition(".")
        if sec not in sections or not rest:
            raise CheckpointError(p, f"unexpected tensor {k!r}")
        sections[sec][rest] = v
    return _build(cfg, sections["autoencoder"], sections["diffusion"], sections["latent_mod"], p,
                  sections["guide"])


#: What may be given as a model: said by every message that finds something else there.
MODEL_ARGUMENT = ("the model is 'builtin', a .safetensors file, or an official .ckpt with its "
                  "config (config=)")

# the first bytes of image files (unambiguous against pickles, zip archives and safetensors)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def refuse_image_as_model(path) -> None:
    """``CheckpointError`` when ``path``, given as a model, is an image (by its name, or by its
    first bytes): the usual slip of a forgotten model argument (``edit face0.png face1.png``,
    ``Sampler("face.png")``), which would otherwise be read as an official checkpoint and
    reported as one lacking its config."""
    p = os.fspath(path)
    image = os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS
    if not image and os.path.isfile(p):
        try:
            with open(p, "rb") as f:
                head = f.read(12)
        except OSError:
            return
        image = head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    if image:
        raise CheckpointError(p, f"an image, not a checkpoint, was given where the model goes: "
                              f"{MODEL_ARGUMENT}; the images come after it")


def load_model(ckpt, config=None) -> LoadedModel:
    """Dispatch on the file: ``.safetensors`` -> native; anything else -> official pickle
    (an image is refused first: :func:`refuse_image_as_model`)."""
    p = os.fspath(ckpt)
    refuse_image_as_model(p)
    _check_file(p)
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(p, f"cannot be read ({e.strerror or e})") from e
    if p.endswith(".safetensors") or (len(head) >= 9 and head[8:9] == b"{"):
        if config is not None:
            cfg = load_config(config)
            model = load_native(p)
            if cfg.raw != model.config.raw:
                raise ConfigError("<config>", f"the config given differs from the one stored in {p}")
            return model
        return load_native(p)
    return load_official(p, config)


UNET_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_native(path, config: ModelConfig, autoencoder, unet, mean, std, *,
                unet_dtype: str = "float32", guide=None) -> None:
    """Write the native ``.safetensors`` file atomically. ``unet_dtype``: how the U-Net's
    floating-point weights are stored (``"float16"`` halves the file; every loader upcasts to
    float32, so the model is the float32 U-Net with its weights rounded once to float16).
    ``guide``: the autoguidance U-Net, required exactly when ``config`` has
    ``diffusion.guide`` (stored as float32)."""
    from safetensors.torch import save_file
    if unet_dtype not in UNET_DTYPES:
        raise ValueError(f"unet_dtype must be one of {sorted(UNET_DTYPES)}, got {unet_dtype!r}")
    if (guide is None) != (config.guide is None):
        raise ValueError("pass guide= exactly when the config has a 'diffusion.guide' section")
    tensors = {}
    if guide is not None:
        for k, v in guide.state_dict().items():
            tensors[f"guide.{k}"] = v.detach().cpu().contiguous()
    for k, v in autoencoder.state_dict().items():
        if not is_alias_key(k):
            tensors[f"autoencoder.{k}"] = v.detach().cpu().contiguous()
    for k, v in unet.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(UNET_DTYPES[unet_dtype])
        tensors[f"diffusion.{k}"] = v.contiguous()
    tensors["latent_mod.mean"] = mean.detach().cpu().float().contiguous()
    tensors["latent_mod.std"] = std.detach().cpu().float().contiguous()
    meta = {"format": NATIVE_FORMAT, "version": NATIVE_VERSION, "config": config.to_json()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), to_path=True)


def convert(ckpt, config, out) -> LoadedModel:
    """Official ``model.ckpt`` + YAML -> native ``.safetensors``."""
    m = load_official(ckpt, config)
    save_native(out, m.config, m.autoencoder, m.unet, m.mean, m.std)
    return m


def load_boundary(path) -> torch.Tensor:
    """An official attribute file ``{"boundary": (1, C, H, W)}`` -> the direction tensor."""
    try:
        obj = torch_load_safe(path)
    except CheckpointError as e:
        raise AttributeFileError(str(e)) from e
    if isinstance(obj, dict) and "boundary" in obj:
        b = obj["boundary"]
    else:
        raise AttributeFileError(f"{os.fspath(path)}: not a boundary file (expected a dict with "
                                 f"'boundary')")
    if not isinstance(b, torch.Tensor) or not b.is_floating_point() or b.dim() not in (3, 4) \
            or (b.dim() == 4 and b.shape[0] != 1):
        got = (f"{b.dtype} shape {tuple(b.shape)}" if isinstance(b, torch.Tensor)
               else type(b).__name__)
        raise AttributeFileError(f"{os.fspath(path)}: 'boundary' must be a float tensor of shape "
                                 f"(1, C, H, W), got {got}")
    b = b.reshape(b.shape[-3:]).float()
    if not torch.isfinite(b).all():
        raise AttributeFileError(f"{os.fspath(path)}: 'boundary' contains NaN or Inf")
    return b


__all__ = ["LoadedModel", "load_model", "load_official", "load_native", "save_native", "convert",
           "load_boundary", "torch_load_safe", "latent_norm_kind", "official_autoencoder_keys",
           "is_alias_key", "read_safetensors", "UNET_DTYPES", "NATIVE_FORMAT", "NATIVE_VERSION",
           "refuse_image_as_model", "MODEL_ARGUMENT"]
