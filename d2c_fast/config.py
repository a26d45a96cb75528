"""Model config: the official D2C YAML layout and our JSON (the same layout).

A config has two sections, exactly like the release's ``configs/ffhq_256.yml``::

    autoencoder: {dataset, arch_instance, num_x_bits, num_latent_scales, ...}
    diffusion:   {data: {...}, model: {...}, diffusion: {...}, training/sampling/optim: {...}}

Every field of the official files is known here. Fields the inference engine needs are
required; training-only fields are optional with the official defaults. A field we do not
know, a missing required field, or a value of the wrong type is a :class:`ConfigError`
naming the field (``autoencoder.num_x_bits``, ``diffusion.model.ch_mult`` ...).
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .utils import atomic_write_text, check_type

_REQ = object()  # marker: field is required

# name -> (type(s), default or _REQ). bool is checked before int (bool is an int subclass).
_AE_FIELDS: dict[str, tuple[Any, Any]] = {
    "dataset": (str, _REQ),
    "arch_instance": (str, _REQ),
    "num_nf": (int, 0),
    "num_x_bits": (int, _REQ),
    "num_latent_scales": (int, _REQ),
    "num_groups_per_scale": (int, _REQ),
    "num_latent_per_group": (int, _REQ),
    "ada_groups": (bool, False),
    "min_groups_per_scale": (int, 1),
    "num_channels_enc": (int, _REQ),
    "num_preprocess_blocks": (int, _REQ),
    "num_preprocess_cells": (int, _REQ),
    "num_cell_per_cond_enc": (int, _REQ),
    "num_channels_dec": (int, _REQ),
    "num_postprocess_blocks": (int, _REQ),
    "num_postprocess_cells": (int, _REQ),
    "num_cell_per_cond_dec": (int, _REQ),
    "use_se": (bool, _REQ),
    "res_dist": (bool, True),
    "moco_dim": (int, 128),
    "moco_k": (int, 65536),
    "moco_m": (float, 0.999),
    "moco_t": (float, 0.07),
    "latent_dim": (int, _REQ),
    "resolution": (int, _REQ),
    "kl_anneal_portion": (float, 0.3),
    "kl_const_portion": (float, 0.0001),
    "kl_const_coeff": (float, 0.0001),
}

_DATA_FIELDS = {
    "dataset": (str, "latent"),
    "image_size": (int, _REQ),
    "channels": (int, _REQ),
    "logit_transform": (bool, False),
    "uniform_dequantization": (bool, False),
    "gaussian_dequantization": (bool, False),
    "random_flip": (bool, False),
    "rescaled": (bool, False),
    "num_workers": (int, 4),
}
_MODEL_FIELDS = {
    "type": (str, "simple"),
    "in_channels": (int, _REQ),
    "out_ch": (int, _REQ),
    "ch": (int, _REQ),
    "ch_mult": (list, _REQ),
    "num_res_blocks": (int, _REQ),
    "attn_resolutions": (list, _REQ),
    "dropout": (float, 0.0),
    "var_type": (str, "fixedlarge"),
    "ema_rate": (float, 0.9999),
    "ema": (bool, True),
    "resamp_with_conv": (bool, _REQ),
    # Not an official field: the official U-Net always uses GroupNorm(32). With ch = 32 that is
    # one channel per group, an instance norm that removes every channel's per-image mean, so
    # the U-Net cannot predict the spatial mean of epsilon (see docs/DESIGN.md). Small U-Nets
    # (the built-in model) set fewer groups.
    "norm_groups": (int, 32),
    # Not an official field either: what the U-Net predicts. "eps" (the official noise
    # prediction) or "v" = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022); a "v" model's
    # output is turned into eps before the (unchanged) DDIM update. See docs/DESIGN.md.
    "prediction": (str, "eps"),
}
# Not official: an optional second, weaker prior for autoguidance (Karras et al. 2024).
# Sampling then uses eps_guide + weight * (eps - eps_guide); see docs/DESIGN.md. "rescale"
# (phi in [0, 1]) and "rescale_t" ([lo, hi] timesteps, inclusive; null: all): guidance rescale
# (Lin et al. 2024) in x0 space, the guided x0 prediction's per-sample std pulled to the
# prior's by phi at timesteps in rescale_t; 0 (default): off.
_GUIDE_FIELDS = {"model": (dict, _REQ), "weight": (float, 2.0), "rescale": (float, 0.0),
                 "rescale_t": (list, None)}
_SCHED_FIELDS = {
    "beta_schedule": (str, _REQ),
    "beta_start": (float, _REQ),
    "beta_end": (float, _REQ),
    "num_diffusion_timesteps": (int, _REQ),
}
# Training-only sections: any of the official fields, all optional.
_TRAINING_FIELDS = {
    "batch_size": (int, 128), "n_epochs": (int, 10000), "n_iters": (int, 5000000),
    "snapshot_freq": (int, 5000), "validation_freq": (int, 20000),
}
_SAMPLING_FIELDS = {"batch_size": (int, 32), "last_only": (bool, True)}
_OPTIM_FIELDS = {
    "weight_decay": (float, 0.0), "optimizer": (str, "Adam"), "lr": (float, 0.0002),
    "beta1": (float, 0.9), "amsgrad": (bool, False), "eps": (float, 1e-8),
    "grad_clip": (float, 1.0),
}
_BETA_SCHEDULES = ("linear", "quad", "const", "jsd", "sigmoid", "cosine")
_UNET_TYPES = ("simple", "bayesian")

# arch_instance -> cell ops, as the official operation table defines them.
_ARCH_INSTANCES: dict[str, dict[str, list[str]]] = {}


def _arch(enc, dec, pre, post):
    return {
        "normal_enc": enc, "down_enc": enc, "normal_dec": dec, "up_dec": dec,
        "normal_pre": pre, "down_pre": pre, "normal_post": post, "up_post": post,
    }


_ARCH_INSTANCES.update({
    "res_elu": _arch(["res_elu"] * 2, ["res_elu"] * 2, ["res_elu"] * 2, ["res_elu"] * 2),
    "res_bnelu": _arch(["res_bnelu"] * 2, ["res_bnelu"] * 2, ["res_bnelu"] * 2, ["res_bnelu"] * 2),
    "res_bnswish": _arch(["res_bnswish"] * 2, ["res_bnswish"] * 2, ["res_bnswish"] * 2,
                         ["res_bnswish"] * 2),
    "mbconv_sep": _arch(["mconv_e6k5g0"], ["mconv_e6k5g0"], ["mconv_e3k5g0"], ["mconv_e3k5g0"]),
    "mbconv_sep11": _arch(["mconv_e6k11g0"], ["mconv_e6k11g0"], ["mconv_e3k5g0"],
                          ["mconv_e3k5g0"]),
    "res_mbconv": _arch(["res_bnswish"] * 2, ["mconv_e6k5g0"], ["res_bnswish"] * 2,
                        ["mconv_e3k5g0"]),
    "res53_mbconv": _arch(["res_bnswish5", "res_bnswish"], ["mconv_e6k5g0"],
                          ["res_bnswish5", "res_bnswish"], ["mconv_e3k5g0"]),
    "res35_mbconv": _arch(["res_bnswish", "res_bnswish5"], ["mconv_e6k5g0"],
                          ["res_bnswish", "res_bnswish5"], ["mconv_e3k5g0"]),
    "res55_mbconv": _arch(["res_bnswish5"] * 2, ["mconv_e6k5g0"], ["res_bnswish5"] * 2,
                          ["mconv_e3k5g0"]),
    # The official table names mconv_e6k9g0/e3k9g0 here, which its OPS table lacks; our op
    # parser builds any mconv_e{ex}k{k}g{g}, so this instance works too.
    "res_mbconv9": _arch(["res_bnswish"] * 2, ["mconv_e6k9g0"], ["res_bnswish"] * 2,
                         ["mconv_e3k9g0"]),
    "mbconv_res": _arch(["mconv_e6k5g0"], ["res_bnswish"] * 2, ["mconv_e3k5g0"],
                        ["res_bnswish"] * 2),
    "mbconv_den": _arch(["mconv_e6k5g0"], ["mconv_e6k5g0"], ["mconv_e3k5g8"], ["mconv_e3k5g8"]),
})

_MCONV_RE = re.compile(r"^mconv_e(\d+)k(\d+)g(\d+)$")
CELL_OPS = ("res_elu", "res_bnelu", "res_bnswish", "res_bnswish5")


def arch_cells(name: str) -> dict[str, list[str]]:
    """The cell ops of an official ``arch_instance`` name."""
    if name not in _ARCH_INSTANCES:
        raise ConfigError("autoencoder.arch_instance",
                          f"unknown arch_instance {name!r}; known: {sorted(_ARCH_INSTANCES)}")
    return copy.deepcopy(_ARCH_INSTANCES[name])


def parse_mconv(op: str):
    """``mconv_e6k5g0`` -> (expansion 6, kernel 5, groups 0 meaning depthwise) or None."""
    m = _MCONV_RE.match(op)
    return tuple(int(v) for v in m.groups()) if m else None


def _section(raw, spec, prefix: str, *, allow_missing=False) -> dict:
    if raw is None and allow_missing:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"expected a mapping, got {type(raw).__name__}")
    out = {}
    for k in raw:
        if k not in spec:
            raise ConfigError(f"{prefix}.{k}", "unknown field")
    for k, (typ, default) in spec.items():
        if k in raw:
            out[k] = check_type(f"{prefix}.{k}", raw[k], typ, optional=default is None,
                                numeric_strings=True)
        elif default is _REQ:
            raise ConfigError(f"{prefix}.{k}", "missing required field")
        else:
            out[k] = copy.deepcopy(default)
    return out


@dataclass
class AutoencoderConfig:
    dataset: str
    arch_instance: str
    num_nf: int
    num_x_bits: int
    num_latent_scales: int
    num_groups_per_scale: int
    num_latent_per_group: int
    ada_groups: bool
    min_groups_per_scale: int
    num_channels_enc: int
    num_preprocess_blocks: int
    num_preprocess_cells: int
    num_cell_per_cond_enc: int
    num_channels_dec: int
    num_postprocess_blocks: int
    num_postprocess_cells: int
    num_cell_per_cond_dec: int
    use_se: bool
    res_dist: bool
    moco_dim: int
    moco_k: int
    moco_m: float
    moco_t: float
    latent_dim: int
    resolution: int
    kl_anneal_portion: float
    kl_const_portion: float
    kl_const_coeff: float

    @property
    def image_channels(self) -> int:
        return 1 if self.dataset == "mnist" else 3

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.num_latent_per_group, self.latent_dim, self.latent_dim)

    def groups_per_scale(self) -> list[int]:
        """Official ``groups_per_scale``: halves per scale when ``ada_groups``."""
        g, n = [], self.num_groups_per_scale
        for _ in range(self.num_latent_scales):
            g.append(n)
            if self.ada_groups:
                n = max(self.min_groups_per_scale, n // 2)
        return g


@dataclass
class UNetConfig:
    type: str
    in_channels: int
    out_ch: int
    ch: int
    ch_mult: list
    num_res_blocks: int
    attn_resolutions: list
    dropout: float
    resamp_with_conv: bool
    resolution: int
    num_timesteps: int
    norm_groups: int = 32
    prediction: str = "eps"


@dataclass
class ScheduleConfig:
    beta_schedule: str
    beta_start: float
    beta_end: float
    num_diffusion_timesteps: int


@dataclass
class ModelConfig:
    """A validated D2C config. ``raw`` is the normalised dict (all defaults filled in)."""
    autoencoder: AutoencoderConfig
    unet: UNetConfig
    schedule: ScheduleConfig
    raw: dict = field(repr=False)
    guide: UNetConfig | None = None   # autoguidance prior (``diffusion.guide.model``) or None
    guide_weight: float = 1.0         # its recommended weight (1: no guidance)
    guide_rescale: float = 0.0        # its recommended guidance rescale phi (0: off)
    guide_rescale_t: tuple[int, int] | None = None   # timesteps where it applies (None: all)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.latent_shape

    @property
    def resolution(self) -> int:
        return self.autoencoder.resolution

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True)

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.raw, indent=1, sort_keys=True))


def _validate_ae(ae: dict) -> None:
    arch = arch_cells(ae["arch_instance"])
    for cells in arch.values():
        for op in cells:
            if op not in CELL_OPS and parse_mconv(op) is None:
                raise ConfigError("autoencoder.arch_instance", f"cell op {op!r} is not defined")
    positive = ["num_x_bits", "num_latent_scales", "num_groups_per_scale", "num_latent_per_group",
                "min_groups_per_scale", "num_channels_enc", "num_channels_dec",
                "num_preprocess_cells", "num_postprocess_cells", "latent_dim", "resolution"]
    for k in positive:
        if ae[k] < 1:
            raise ConfigError(f"autoencoder.{k}", f"must be >= 1, got {ae[k]}")
    for k in ("num_preprocess_blocks", "num_postprocess_blocks", "num_cell_per_cond_enc",
              "num_cell_per_cond_dec", "num_nf"):
        if ae[k] < 0:
            raise ConfigError(f"autoencoder.{k}", f"must be >= 0, got {ae[k]}")
    if ae["num_x_bits"] > 8:
        raise ConfigError("autoencoder.num_x_bits", f"must be in 1..8, got {ae['num_x_bits']}")
    if ae["num_latent_scales"] == 1 and ae["num_groups_per_scale"] == 1:
        raise ConfigError("autoencoder.num_groups_per_scale",
                          "the official 'vanilla VAE' layout (1 scale, 1 group) has no working "
                          "decoder; use more than one group")
    if ae["num_nf"] != 0:
        raise ConfigError("autoencoder.num_nf", "D2C uses no normalising flows (num_nf must be 0)")
    down = ae["num_preprocess_blocks"] + ae["num_latent_scales"] - 1
    if ae["resolution"] % (2 ** down) or ae["resolution"] // 2 ** down != ae["latent_dim"]:
        raise ConfigError(
            "autoencoder.latent_dim",
            f"resolution {ae['resolution']} halved {down} times (num_preprocess_blocks + "
            f"num_latent_scales - 1) gives {ae['resolution'] / 2 ** down:g}, not {ae['latent_dim']}")
    up = ae["num_latent_scales"] - 1 + ae["num_postprocess_blocks"]
    if ae["latent_dim"] * 2 ** up != ae["resolution"]:
        raise ConfigError("autoencoder.num_postprocess_blocks",
                          f"the decoder would output {ae['latent_dim'] * 2 ** up}x"
                          f"{ae['latent_dim'] * 2 ** up}, not the resolution {ae['resolution']}")
    if ae["dataset"] == "mnist" and ae["num_x_bits"] != 8:
        pass  # the Bernoulli head ignores num_x_bits for decoding; encoder still quantises


def _validate_diffusion(d: dict, ae: dict) -> None:
    m, data, s = d["model"], d["data"], d["diffusion"]
    if m["type"] not in _UNET_TYPES:
        raise ConfigError("diffusion.model.type", f"must be one of {_UNET_TYPES}, got {m['type']!r}")
    if s["beta_schedule"] not in _BETA_SCHEDULES:
        raise ConfigError("diffusion.diffusion.beta_schedule",
                          f"must be one of {_BETA_SCHEDULES}, got {s['beta_schedule']!r}")
    if not (0 <= s["beta_start"] <= s["beta_end"] < 1 and s["beta_end"] > 0):
        raise ConfigError("diffusion.diffusion.beta_end",
                          f"need 0 <= beta_start <= beta_end < 1 and beta_end > 0, got {s['beta_start']}, "
                          f"{s['beta_end']}")
    if not 0 <= m["dropout"] < 1:
        raise ConfigError("diffusion.model.dropout", f"must be in [0, 1), got {m['dropout']}")
    if s["num_diffusion_timesteps"] < 2:
        raise ConfigError("diffusion.diffusion.num_diffusion_timesteps", "must be >= 2")
    for k in ("ch_mult", "attn_resolutions"):
        for v in m[k]:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"diffusion.model.{k}", f"entries must be positive ints, got {v!r}")
    if not m["ch_mult"]:
        raise ConfigError("diffusion.model.ch_mult", "must not be empty")
    if m["ch"] < 1:
        raise ConfigError("diffusion.model.ch", f"must be >= 1, got {m['ch']}")
    if m["prediction"] not in ("eps", "v"):
        raise ConfigError("diffusion.model.prediction", f"must be 'eps' or 'v', got "
                          f"{m['prediction']!r}")
    g = m["norm_groups"]
    if g < 1:
        raise ConfigError("diffusion.model.norm_groups", f"must be >= 1, got {g}")
    if m["ch"] % g or any((m["ch"] * c) % g for c in m["ch_mult"]):
        raise ConfigError("diffusion.model.ch", f"ch and ch * every ch_mult must be divisible "
                          f"by norm_groups = {g} (GroupNorm with {g} groups)")
    if m["num_res_blocks"] < 1:
        raise ConfigError("diffusion.model.num_res_blocks", "must be >= 1")
    c = ae["num_latent_per_group"]
    if data["channels"] != c:
        raise ConfigError("diffusion.data.channels",
                          f"{data['channels']} != autoencoder.num_latent_per_group {c}")
    if m["in_channels"] != c:
        raise ConfigError("diffusion.model.in_channels", f"{m['in_channels']} != latent channels {c}")
    if m["out_ch"] != c:
        raise ConfigError("diffusion.model.out_ch", f"{m['out_ch']} != latent channels {c}")
    if data["image_size"] != ae["latent_dim"]:
        raise ConfigError("diffusion.data.image_size",
                          f"{data['image_size']} != autoencoder.latent_dim {ae['latent_dim']}")
    if data["image_size"] % 2 ** (len(m["ch_mult"]) - 1):
        raise ConfigError("diffusion.model.ch_mult",
                          f"{len(m['ch_mult']) - 1} down-samplings do not divide image_size "
                          f"{data['image_size']}")


def config_from_dict(raw: dict) -> ModelConfig:
    """Validate a config dict in the official layout; return a :class:`ModelConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError("<root>", f"expected a mapping, got {type(raw).__name__}")
    for k in raw:
        if k not in ("autoencoder", "diffusion"):
            raise ConfigError(k, "unknown field (expected 'autoencoder' and 'diffusion')")
    for k in ("autoencoder", "diffusion"):
        if k not in raw:
            raise ConfigError(k, "missing required section")
    ae = _section(raw["autoencoder"], _AE_FIELDS, "autoencoder")
    draw = raw["diffusion"]
    if not isinstance(draw, dict):
        raise ConfigError("diffusion", "expected a mapping")
    known = {"data": _DATA_FIELDS, "model": _MODEL_FIELDS, "diffusion": _SCHED_FIELDS,
             "training": _TRAINING_FIELDS, "sampling": _SAMPLING_FIELDS, "optim": _OPTIM_FIELDS,
             "guide": _GUIDE_FIELDS}
    for k in draw:
        if k not in known:
            raise ConfigError(f"diffusion.{k}", "unknown field")
    d = {}
    for k, spec in known.items():
        if k == "guide" and k not in draw:
            continue
        required = k in ("data", "model", "diffusion")
        if required and k not in draw:
            raise ConfigError(f"diffusion.{k}", "missing required section")
        d[k] = _section(draw.get(k), spec, f"diffusion.{k}", allow_missing=not required)
    _validate_ae(ae)
    _validate_diffusion(d, ae)
    unet = _unet_config(d["model"], d)
    guide, guide_weight, guide_rescale, guide_rescale_t = None, 1.0, 0.0, None
    if "guide" in d:
        g = d["guide"]
        g["model"] = _section(g["model"], _MODEL_FIELDS, "diffusion.guide.model")
        try:
            _validate_diffusion({**d, "model": g["model"]}, ae)
        except ConfigError as e:   # the same checks, reported under the guide's name
            raise ConfigError(e.field.replace("diffusion.model", "diffusion.guide.model"),
                              e.cause) from None
        if g["model"]["prediction"] != d["model"]["prediction"]:
            raise ConfigError("diffusion.guide.model.prediction",
                              f"{g['model']['prediction']!r} differs from the prior's "
                              f"{d['model']['prediction']!r}")
        if g["model"]["type"] != "simple":
            raise ConfigError("diffusion.guide.model.type", "must be 'simple'")
        if not (math.isfinite(g["weight"]) and g["weight"] > 0):
            raise ConfigError("diffusion.guide.weight", f"must be a finite number > 0, got "
                              f"{g['weight']}")
        guide, guide_weight = _unet_config(g["model"], d), float(g["weight"])
        guide_rescale, guide_rescale_t = check_guidance_rescale(
            g["rescale"], g["rescale_t"], d["diffusion"]["num_diffusion_timesteps"],
            "diffusion.guide.")
        if guide_rescale_t is None:       # defaults left out: the JSON of files written
            del g["rescale_t"]            # before the option stays as it was
            if guide_rescale == 0.0:
                del g["rescale"]
        _drop_defaults(g["model"])
    _drop_defaults(d["model"])
    return ModelConfig(autoencoder=AutoencoderConfig(**ae), unet=unet,
                       schedule=ScheduleConfig(**d["diffusion"]),
                       raw={"autoencoder": ae, "diffusion": d}, guide=guide,
                       guide_weight=guide_weight, guide_rescale=guide_rescale,
                       guide_rescale_t=guide_rescale_t)


def _unet_config(m: dict, d: dict) -> UNetConfig:
    return UNetConfig(type=m["type"], in_channels=m["in_channels"], out_ch=m["out_ch"], ch=m["ch"],
                      ch_mult=list(m["ch_mult"]), num_res_blocks=m["num_res_blocks"],
                      attn_resolutions=list(m["attn_resolutions"]), dropout=m["dropout"],
                      resamp_with_conv=m["resamp_with_conv"], resolution=d["data"]["image_size"],
                      num_timesteps=d["diffusion"]["num_diffusion_timesteps"],
                      norm_groups=m["norm_groups"], prediction=m["prediction"])


def check_guidance_rescale(phi, t_range, num_timesteps: int, prefix: str = ""):
    """Validate a guidance rescale ``phi`` (a number in [0, 1]) and its timestep range
    (``None``: all timesteps, or ``[lo, hi]`` ints with ``0 <= lo <= hi < num_timesteps``).
    Returns ``(float phi, tuple or None)``; :class:`ConfigError` names ``prefix + field``."""
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not math.isfinite(phi) \
            or not 0.0 <= phi <= 1.0:
        raise ConfigError(f"{prefix}rescale", f"must be a number in [0, 1], got {phi!r}")
    if t_range is None:
        return float(phi), None
    if not isinstance(t_range, (list, tuple)) or len(t_range) != 2 \
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in t_range) \
            or not 0 <= t_range[0] <= t_range[1] < num_timesteps:
        raise ConfigError(f"{prefix}rescale_t", f"must be [lo, hi] timesteps with 0 <= lo <= hi "
                          f"< {num_timesteps}, or null for all; got {t_range!r}")
    return float(phi), (int(t_range[0]), int(t_range[1]))


def _drop_defaults(m: dict) -> None:
    """Our extensions at their official values are left out: the normalised JSON (and the
    model fingerprints derived from it) of official-layout configs stay as they were."""
    if m["norm_groups"] == 32:
        del m["norm_groups"]
    if m["prediction"] == "eps":
        del m["prediction"]


def load_config(src) -> ModelConfig:
    """Load a config: a path to an official ``.yml``/``.yaml`` or our ``.json``, a dict, or a
    :class:`ModelConfig` (returned as is)."""
    if isinstance(src, ModelConfig):
        return src
    if isinstance(src, dict):
        if "config" in src and "autoencoder" not in src:
            src = src["config"]
        return config_from_dict(src)
    if not isinstance(src, (str, os.PathLike)):
        raise ConfigError("<config>", f"expected a path, a dict or a ModelConfig, got "
                          f"{type(src).__name__}")
    path = os.fspath(src)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("<file>", f"cannot read config {path}: {e}") from e
    if path.endswith(".json"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("<file>", f"{path} is not valid JSON: {e}") from e
    else:
        import yaml
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError("<file>", f"{path} is not valid YAML{where}: {what}") from e
    if isinstance(raw, dict) and "config" in raw and "autoencoder" not in raw:
        raw = raw["config"]  # a wrapper {"config": {...}, ...}, as in the fixture's meta.json
    return config_from_dict(raw)
