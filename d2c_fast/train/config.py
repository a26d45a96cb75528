"""The training config: :class:`TrainConfig` and its parts (one dataclass per stage, data and
augmentations), read from JSON with every field type-checked and the whole validated
(:func:`as_train_config`). The loops that use it: :mod:`.engine` and the stage modules."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional


from ..checkpoint import UNET_DTYPES
from ..config import load_config
from ..errors import ConfigError
from ..utils import atomic_write_text, check_type

__all__ = ["AugmentConfig", "AEStageConfig", "DiffusionStageConfig", "DataConfig", "TrainConfig",
           "as_train_config"]


@dataclass
class AugmentConfig:
    """MoCo-v2 style augmentations (torch, on tensors). Official celeba_64 values are
    ``crop_scale (0.25, 1)``, jitter ``(0.4, 0.4, 0.4, 0.1)`` with p 0.5, grayscale p 0.2,
    flip p 0.5."""
    crop_scale: list = field(default_factory=lambda: [0.25, 1.0])
    crop_ratio: list = field(default_factory=lambda: [3 / 4, 4 / 3])
    flip_p: float = 0.5
    jitter_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2


@dataclass
class AEStageConfig:
    steps: int = 1000                 # planned optimiser steps (upper bound with max_minutes)
    min_steps: int = 300              # fewer give an unusable model: shorter budgets refused
    max_minutes: Optional[float] = None
    batch_size: int = 32              # global batch (all ranks together), as the official -b
    optimizer: str = "adamw"          # official train_cifar.sh: adamw, lr 1e-3, wd 1e-4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    cosine: bool = True               # cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0            # 0: off (the official stage 1 does not clip)
    recon_loss_weight: float = 17500.0  # loss = mean(-log p(x)) / recon_loss_weight + InfoNCE
    moco_weight: float = 1.0
    recon_view: str = "query"         # "query" (official) or "clean" (un-augmented image)
    latent_noise: float = 0.0         # decoder sees z + latent_noise * std_c(z) * N(0, 1); 0: off
    mlp: bool = True                  # official --mlp head
    mlp_hidden: Optional[int] = None  # None: latent numel (official dim_mlp_next default)
    bn_recalib_batches: int = 0       # re-estimate BN running stats on clean images at the end
    amp: str = "none"                 # "bf16": autocast the networks (fp32 weights, losses, Adam)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class DiffusionStageConfig:
    steps: int = 1000
    min_steps: int = 300              # fewer give an unusable prior: shorter budgets refused
    max_minutes: Optional[float] = None
    batch_size: Optional[int] = 128   # None -> the model config's diffusion.training.batch_size
    lr: Optional[float] = None        # None -> the model config's diffusion.optim.lr
    warmup_steps: int = 0
    cosine: bool = False              # the official DDIM runner uses a constant LR
    min_lr_ratio: float = 0.0
    flip: bool = True                 # encode horizontal flips too (official save_latents)
    encode_batch_size: int = 128
    ema_warmup: bool = False          # EMA rate min(rate, (1 + n) / (10 + n)); official: off
    amp: str = "none"                 # "bf16": autocast the U-Net (fp32 weights, loss, Adam)
    min_snr_gamma: float = 0.0        # > 0: Min-SNR-gamma loss weights (ours); 0: official
    t_sampling: str = "uniform"       # training timesteps: "uniform" (official, antithetic)
    t_logit: tuple = (0.0, 1.0)       # or "logit_normal" (ours): t / T = sigmoid(N(mean, std))
    latent_norm: str = "channel"      # latent standardisation: "channel" (official) or
                                      # "position" (ours: mean and std per (c, h, w))
    compile: bool = False             # torch.compile the U-Net's training forward (ours)


@dataclass
class DataConfig:
    kind: str = "faces"               # "faces" (built-in), "folder", "celeba", "synthetic"
    n: int = 10000
    seed: int = 0
    split: str = "train"
    root: Optional[str] = None        # for folder / celeba
    cache: bool = True                # render / decode once into a uint8 tensor in out_dir
    workers: int = 0                  # worker processes for building the cache


@dataclass
class TrainConfig:
    model: Any = None                 # model config: path (relative to this file) or dict
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    ae: AEStageConfig = field(default_factory=AEStageConfig)
    diffusion: DiffusionStageConfig = field(default_factory=DiffusionStageConfig)
    max_minutes: Optional[float] = None  # total budget (both stages + export)
    ae_share: float = 0.65            # share of the remaining total budget given to stage 1
    guide_share: float = 0.15         # share of stage 2's time for the guide prior (if any)
    export_unet_dtype: str = "float32"  # U-Net weights in the exported file (float16: half size)
    keep_caches: bool = False         # keep data-*.pt, latents.pt, ckpt-ae.pt after export
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 5.0
    log_every: int = 10
    threads: Optional[int] = None     # torch.set_num_threads
    device: str = "auto"              # "auto": cuda:<local_rank> when available, else cpu
    progress: bool = True
    base_dir: Optional[str] = field(default=None, repr=False)  # where relative paths resolve

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("base_dir", None)
        return d

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def from_dict(cls, raw: dict, base_dir: Optional[str] = None) -> "TrainConfig":
        return _from_dict(cls, raw, "train", base_dir)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        path = os.fspath(path)
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError("<file>", f"cannot read training config {path}: {e}") from e
        return cls.from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)))

    def model_config(self):
        """The validated :class:`~d2c_fast.config.ModelConfig`."""
        m = self.model
        if m is None:
            raise ConfigError("train.model", "missing: a model config path or dict")
        if isinstance(m, str):
            if not os.path.isabs(m):
                cands = [os.path.join(self.base_dir or os.getcwd(), m),
                         os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", m)]
                m = next((c for c in cands if os.path.exists(c)), cands[0])
            return load_config(m)
        return load_config(m)


_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple": tuple}


def _check_field(name: str, annotation: str, v) -> None:
    """``ConfigError`` when ``v`` does not fit a field annotated ``annotation`` (the simple
    forms used here: int, float, bool, str, list, tuple, Optional[...] of those; other
    annotations are not checked here)."""
    ann = annotation.replace(" ", "")
    optional = ann.startswith("Optional[") and ann.endswith("]")
    kind = _SIMPLE.get(ann[len("Optional["):-1] if optional else ann)
    if kind is not None:
        check_type(name, v, kind, optional=optional)


def _from_dict(cls, raw, prefix, base_dir=None):
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        if k not in fields or k == "base_dir":
            raise ConfigError(f"{prefix}.{k}", "unknown field")
        sub = {"data": DataConfig, "ae": AEStageConfig, "diffusion": DiffusionStageConfig,
               "augment": AugmentConfig}.get(k)
        if sub is not None:
            if not isinstance(v, dict):
                raise ConfigError(f"{prefix}.{k}", f"expected a mapping, got {type(v).__name__}")
            v = _from_dict(sub, v, f"{prefix}.{k}")
        else:
            _check_field(f"{prefix}.{k}", str(fields[k].type), v)
        kwargs[k] = v
    obj = cls(**kwargs)
    if cls is TrainConfig:
        obj.base_dir = base_dir
        _validate(obj)
    return obj


def _validate(c: TrainConfig) -> None:
    if c.threads is not None and c.threads < 1:
        raise ConfigError("train.threads", f"must be >= 1 or null (all cores), got {c.threads}")
    if c.data.n < 1:
        raise ConfigError("train.data.n", f"must be >= 1, got {c.data.n}")
    if c.ae.optimizer not in ("adamw", "adam", "adamax", "sgd"):
        raise ConfigError("train.ae.optimizer", f"unknown optimizer {c.ae.optimizer!r}")
    if c.ae.recon_view not in ("query", "clean"):
        raise ConfigError("train.ae.recon_view", "must be 'query' or 'clean'")
    if not c.ae.latent_noise >= 0:
        raise ConfigError("train.ae.latent_noise", "must be >= 0 (0: off)")
    for name, st in (("ae", c.ae), ("diffusion", c.diffusion)):
        if not isinstance(st.steps, int) or st.steps < 0:
            raise ConfigError(f"train.{name}.steps", "must be an int >= 0")
        if not isinstance(st.min_steps, int) or st.min_steps < 0:
            raise ConfigError(f"train.{name}.min_steps", "must be an int >= 0")
        if st.batch_size is not None and st.batch_size < 1:
            raise ConfigError(f"train.{name}.batch_size", "must be >= 1")
        if st.amp not in ("none", "bf16"):
            raise ConfigError(f"train.{name}.amp", f"must be 'none' or 'bf16', got {st.amp!r}")
    if not c.diffusion.min_snr_gamma >= 0:
        raise ConfigError("train.diffusion.min_snr_gamma", "must be >= 0 (0: off)")
    if c.diffusion.latent_norm not in ("channel", "position"):
        raise ConfigError("train.diffusion.latent_norm", "must be 'channel' or 'position', "
                          f"got {c.diffusion.latent_norm!r}")
    if c.diffusion.t_sampling not in ("uniform", "logit_normal"):
        raise ConfigError("train.diffusion.t_sampling", "must be 'uniform' or 'logit_normal', "
                          f"got {c.diffusion.t_sampling!r}")
    tl = c.diffusion.t_logit
    if not (isinstance(tl, (list, tuple)) and len(tl) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in tl) and tl[1] > 0):
        raise ConfigError("train.diffusion.t_logit", f"must be [mean, std] with std > 0, got "
                          f"{tl!r}")
    c.diffusion.t_logit = (float(tl[0]), float(tl[1]))
    if not isinstance(c.diffusion.compile, bool):
        raise ConfigError("train.diffusion.compile", f"must be true or false, got "
                          f"{c.diffusion.compile!r}")
    if c.data.kind not in ("faces", "folder", "celeba", "synthetic"):
        raise ConfigError("train.data.kind", f"unknown dataset kind {c.data.kind!r}")
    if c.export_unet_dtype not in UNET_DTYPES:
        raise ConfigError("train.export_unet_dtype", f"must be one of {sorted(UNET_DTYPES)}")
    if not 0 < c.ae_share <= 1:
        raise ConfigError("train.ae_share", "must be in (0, 1]")
    if not 0 < c.guide_share < 1:
        raise ConfigError("train.guide_share", "must be in (0, 1)")


def as_train_config(src) -> TrainConfig:
    if isinstance(src, TrainConfig):
        return copy.deepcopy(src)
    if isinstance(src, dict):
        return TrainConfig.from_dict(src)
    return TrainConfig.load(src)
