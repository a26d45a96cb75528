"""``train()``: stage 1 (autoencoder + MoCo), stage 2 (latent diffusion), export.

Run folder layout (``out_dir``)::

    train_config.json   the TrainConfig of the run (as given, defaults filled in)
    model_config.json   the model config (official layout)
    data-*.pt           the training images as uint8 (cache)
    ckpt-ae.pt          stage-1 checkpoint (model, key encoder, queue, optimiser, RNG, step)
    autoencoder.pt      the trained query autoencoder (after BN recalibration)
    latents.pt          encoded training latents (+ flips), mean, std
    ckpt-diffusion.pt   stage-2 checkpoint (U-Net, EMA, optimiser, RNG, step)
    ckpt-guide.pt       the guide prior's checkpoint (only for configs with diffusion.guide)
    model.safetensors   the export: d2c_fast.Sampler(out_dir + "/model.safetensors")
    latent-stats.pt     the latents' mean and std (written when latents.pt is removed)
    log.jsonl, log-ae.jsonl, log-diffusion.jsonl (, log-guide.jsonl)

After an export, unless ``keep_caches``, the files only a stage still running needs are
removed: the data cache, ``latents.pt`` (both rebuilt if the run is continued) and
``ckpt-ae.pt`` (a finished stage 1 is not continued); the stage-2 checkpoints stay, so
``--resume --max-minutes M`` continues the prior.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Optional

import torch

from ..checkpoint import identity_json, save_native
from ..config import load_config
from ..errors import ConfigError
from ..utils import finite_number
from .autoencoder import AETrainer, load_trained_autoencoder
from .budget import (check_budget, checkpoint_state, describe, export_reserve, probe_costs,
                     required_steps)
from .data import cache_path, load_images
from .diffusion import DiffusionTrainer, load_ema_unet, prepare_latents
from .engine import (DistInfo, barrier, init_distributed, load_checkpoint, log_event,
                     save_checkpoint)
from .config import TrainConfig, as_train_config

LATENT_STATS = "latent-stats.pt"


def _stage_seconds(tc_minutes, total_left, share):
    s = None if tc_minutes is None else 60.0 * tc_minutes
    if total_left is not None:
        t = max(1.0, total_left * share)
        s = t if s is None else min(s, t)
    return s


def _check_same_run(out_dir: str, tc: TrainConfig, model_cfg, stage: str) -> None:
    """Before the folder's config files are rewritten: refuse (``ConfigError``) settings that
    differ from the ones its finished or checkpointed stages were trained with (model
    sections, seed, data, and each trained stage's section); budgets (``max_minutes``,
    ``steps``, ``min_steps``), threads and logging may change on a resume, and a guide prior
    may be added to a run without one (``stage="guide"`` trains it with the ``diffusion``
    section's settings)."""

    def has(f):
        return os.path.exists(os.path.join(out_dir, f))
    ae_done = has("ckpt-ae.pt") or has("autoencoder.pt")
    dif_done = has("ckpt-diffusion.pt") or has("ckpt-guide.pt")
    if not (ae_done or dif_done):
        return

    def model_section(d, k):
        v = d.get(k)
        if k == "diffusion" and isinstance(v, dict) and not has("ckpt-guide.pt"):
            v = {kk: vv for kk, vv in v.items() if kk != "guide"}   # a guide may be added
        return v
    diffs = []
    mpath, tpath = (os.path.join(out_dir, f) for f in ("model_config.json", "train_config.json"))
    if os.path.exists(mpath):
        old = json.loads(identity_json(load_config(mpath)))
        new = json.loads(identity_json(model_cfg))
        diffs += [f"model {k}" for k in ("autoencoder",) + (("diffusion",) if dif_done else ())
                  if model_section(old, k) != model_section(new, k)]
    if os.path.exists(tpath):
        with open(tpath) as f:
            old = json.load(f)
        new = json.loads(json.dumps(tc.to_dict()))
        free = ("max_minutes", "compile", "encode_batch_size", "workers", "cache",  # speed only
                "min_steps", "steps")   # budgets: a finished prior may be continued

        def strip(v):
            return {k: x for k, x in v.items() if k not in free} if isinstance(v, dict) else v
        keys = ["seed", "data"] + (["ae"] if ae_done else []) + \
            (["diffusion"] if dif_done and stage != "guide" else [])
        diffs += [k for k in keys if strip(old.get(k)) != strip(new.get(k))]
    if diffs:
        raise ConfigError("<resume>", f"{out_dir} holds a run trained with other settings "
                          f"({', '.join(diffs)} differ); resume with the config it was made "
                          f"with, or train into another folder")


def train(config, out_dir, resume: bool = True, *, stage: str = "all",
          max_minutes: Optional[float] = None, dataset=None, progress: Optional[bool] = None,
          export_path: Optional[str] = None, allow_short: bool = False) -> Optional[str]:
    """Train a D2C model: ``config`` is a :class:`TrainConfig`, a dict, or a JSON path.

    ``stage``: ``"ae"`` (stage 1 only), ``"diffusion"`` (stage 2 + export; needs a finished
    stage 1 in ``out_dir``), ``"guide"`` (only the autoguidance prior of a model config with
    ``diffusion.guide``, + export; needs a finished stage 2) or ``"all"``. With a guide, the
    guide trains after the prior, on ``guide_share`` of stage 2's time when a total budget is
    set (without one, ``diffusion.steps`` steps; ``"guide"``: all of the time given).
    ``max_minutes`` overrides the config's total budget. ``dataset``: an optional ``Dataset``
    of ``(image, ...)`` items used instead of
    ``config.data``. With ``resume`` (default), finished stages are skipped and an
    interrupted stage continues from its last checkpoint; without it, a folder that already
    holds checkpoints is refused. A finished prior (and guide) given ``max_minutes`` here
    (``--resume --max-minutes M``) is continued for that long, up to the config's
    ``diffusion.steps`` (the autoencoder is not: the prior is trained on its latents).

    Under a time budget, the work it must pay for (data, latents, export, each stage's
    ``min_steps``) is timed first on this machine (a few seconds); a budget that cannot
    cover it raises :class:`~d2c_fast.errors.BudgetError` with the estimate and the
    smallest budget that works, before any work, unless ``allow_short`` (then a warning).
    Returns the exported ``.safetensors`` path (rank 0) or None when no export happened
    (``stage="ae"``).
    """
    t_start = time.perf_counter()
    tc = as_train_config(config)
    if stage not in ("all", "ae", "diffusion", "guide"):
        raise ConfigError("stage", f"must be 'all', 'ae', 'diffusion' or 'guide', got "
                          f"{stage!r}")
    if max_minutes is not None:
        try:
            tc.max_minutes = finite_number("max_minutes", max_minutes, "> 0")
        except ValueError:
            raise ConfigError("max_minutes", f"must be a number > 0, got {max_minutes!r}") \
                from None
    if progress is not None:
        tc.progress = bool(progress)
    model_cfg = tc.model_config()
    if stage == "guide" and model_cfg.guide is None:
        raise ConfigError("diffusion.guide", "stage 'guide' needs a model config with a guide "
                          "prior (diffusion.guide)")
    out_dir = os.path.abspath(os.fspath(out_dir))
    info = init_distributed(tc.device)
    threads_before = torch.get_num_threads()
    if tc.threads:
        torch.set_num_threads(int(tc.threads))
    try:
        return _train(tc, model_cfg, out_dir, info, resume, stage, dataset, export_path,
                      t_start, extend=resume and max_minutes is not None,
                      allow_short=allow_short)
    finally:
        torch.set_num_threads(threads_before)
        if info.initialised_here:
            import torch.distributed as dist
            dist.destroy_process_group()


def warn(out_dir, info: DistInfo, text: str, **rec) -> None:
    """A loud warning: a ``warning`` event in ``log.jsonl`` and a line on stderr (rank 0)."""
    if info.is_main:
        log_event(out_dir, info, event="warning", text=text, **rec)
        print(f"d2c-fast train: WARNING: {text}", file=sys.stderr, flush=True)


def _finished(out_dir: str, stage: str, has_guide: bool) -> bool:
    """Whether every stage ``stage`` trains is finished in ``out_dir``."""
    def done(f):
        return checkpoint_state(os.path.join(out_dir, f))[1]
    ae = os.path.exists(os.path.join(out_dir, "autoencoder.pt")) and (
        done("ckpt-ae.pt") or not os.path.exists(os.path.join(out_dir, "ckpt-ae.pt")))
    prior = done("ckpt-diffusion.pt") and (done("ckpt-guide.pt") or not has_guide)
    return {"ae": ae, "all": ae and prior, "diffusion": prior,
            "guide": done("ckpt-guide.pt")}[stage]


def _check_min_steps(out_dir, info, name: str, st, trainer) -> None:
    """Warn when a stage ended below its ``min_steps`` (a time budget cut it short)."""
    need = required_steps(st)
    if trainer.step < need:
        how = ("train into a new folder with a larger --max-minutes or on free cores (a "
               "finished autoencoder is not continued)" if name == "ae" else
               "continue it with --resume --max-minutes M")
        warn(out_dir, info, f"stage {name} stopped at step {trainer.step}, below its minimum "
             f"{need} (train.{trainer.tc_section}.min_steps; a short budget, or cores slower "
             f"than estimated): the model is likely unusable; {how}", stage=name,
             step=trainer.step, min_steps=need)


def _train(tc: TrainConfig, model_cfg, out_dir, info: DistInfo, resume, stage, dataset,
           export_path, t_start, extend: bool = False, allow_short: bool = False):
    has_guide = model_cfg.guide is not None
    if info.is_main:
        # only the checkpoints of the stages this call trains (a guide-only call expects a
        # finished stage 1 and 2 in the folder)
        mine = {"all": ("ckpt-ae.pt", "ckpt-diffusion.pt", "ckpt-guide.pt"),
                "ae": ("ckpt-ae.pt",), "diffusion": ("ckpt-diffusion.pt", "ckpt-guide.pt"),
                "guide": ("ckpt-guide.pt",)}[stage]
        existing = [f for f in mine if os.path.exists(os.path.join(out_dir, f))]
        if existing and not resume:
            raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; resume "
                                  "(--resume), or use an empty folder")
        _check_same_run(out_dir, tc, model_cfg, stage)
    barrier(info)
    finished = resume and _finished(out_dir, stage, has_guide)
    extend = extend and finished       # an interrupted run resumes as planned
    if finished and extend and stage == "ae":
        raise ConfigError("<resume>", f"stage 1 of {out_dir} is finished and is not "
                          "continued (a prior trained on its latents would no longer fit); "
                          "train into another folder with a larger --max-minutes")
    data_file = cache_path(tc.data, model_cfg.resolution, out_dir)
    if tc.max_minutes is not None or tc.ae.max_minutes is not None \
            or tc.diffusion.max_minutes is not None:
        costs = probe_costs(tc, model_cfg, out_dir, info, stage, dataset, extend=extend,
                            data_cached=dataset is None and tc.data.cache
                            and os.path.exists(data_file))
        short = check_budget(tc, stage, costs, has_guide, allow_short=allow_short)
        if info.is_main:
            os.makedirs(out_dir, exist_ok=True)
            log_event(out_dir, info, event="estimate", text=describe(costs),
                      probe_seconds=round(costs.probe_s, 1))
        if short:
            warn(out_dir, info, short)
    if info.is_main:
        os.makedirs(out_dir, exist_ok=True)
        tc.save(os.path.join(out_dir, "train_config.json"))
        model_cfg.save(os.path.join(out_dir, "model_config.json"))
    barrier(info)
    total = None if tc.max_minutes is None else 60.0 * tc.max_minutes

    def left():
        return None if total is None else total - (time.perf_counter() - t_start) \
            - export_reserve(total)

    log_event(out_dir, info, event="start", stage=stage, world=info.world,
              device=str(info.device), threads=torch.get_num_threads(),
              max_minutes=tc.max_minutes)
    if finished:
        if extend and stage in ("all", "diffusion"):
            note = ("every stage is finished: continuing the prior" + (" and its guide" if
                    has_guide else "") + " for the new budget (the autoencoder stays: the "
                    "prior is trained on its latents)")
        elif extend:
            note = "the guide is finished: continuing it for the new budget"
        else:
            note = ("every stage is finished, nothing to train: exporting again (to train "
                    "the prior longer: --resume --max-minutes M)")
        log_event(out_dir, info, event="finished_run", note=note)
        if not extend and stage != "ae":    # the checkpoints hold the model: no data needed
            path = export_path or os.path.join(out_dir, "model.safetensors")
            if info.is_main:
                export_run(out_dir, path)
                log_event(out_dir, info, event="export", path=path,
                          total_seconds=round(time.perf_counter() - t_start, 1))
            barrier(info)
            return path if info.is_main else None
    ae_pending = stage in ("all", "ae") and not (
        os.path.exists(os.path.join(out_dir, "autoencoder.pt"))
        and not os.path.exists(os.path.join(out_dir, "ckpt-ae.pt")))
    images = None
    if ae_pending or (stage != "ae" and not os.path.exists(os.path.join(out_dir,
                                                                         "latents.pt"))):
        t0 = time.perf_counter()
        images = load_images(tc.data, model_cfg.resolution, out_dir, info, dataset=dataset,
                             progress=tc.progress)
        log_event(out_dir, info, event="data", n=int(images.shape[0]),
                  seconds=round(time.perf_counter() - t0, 1))

    if ae_pending:
        t0 = time.perf_counter()
        share = tc.ae_share if stage == "all" else 1.0
        ae_tr = AETrainer(tc, model_cfg, images, out_dir, info,
                          max_seconds=_stage_seconds(tc.ae.max_minutes, left(), share))
        ae_tr.run(resume=resume)
        log_event(out_dir, info, event="ae_done", step=ae_tr.step,
                  seconds=round(time.perf_counter() - t0, 1),
                  img_per_s=round(getattr(ae_tr, "last_rate", 0.0), 2))
        _check_min_steps(out_dir, info, "ae", tc.ae, ae_tr)
        del ae_tr
    if stage == "ae":
        return None

    if not os.path.exists(os.path.join(out_dir, "autoencoder.pt")):
        raise FileNotFoundError(f"{out_dir}/autoencoder.pt missing: run stage 'ae' first")
    t0 = time.perf_counter()
    ae = load_trained_autoencoder(out_dir, model_cfg, info.device)
    latents, mean, std = prepare_latents(out_dir, ae, images, tc.diffusion, info,
                                         progress=tc.progress and info.is_main)
    del images
    log_event(out_dir, info, event="latents", n=int(latents.shape[0]),
              seconds=round(time.perf_counter() - t0, 1),
              norm=tc.diffusion.latent_norm,     # per channel (per-position stats: averaged)
              mean=[round(v, 4) for v in mean.mean(dim=(0, 2, 3)).tolist()],
              std=[round(v, 4) for v in std.mean(dim=(0, 2, 3)).tolist()])
    t0 = time.perf_counter()
    if stage == "guide":
        try:
            prior = load_ema_unet(os.path.join(out_dir, "ckpt-diffusion.pt"), model_cfg.unet,
                                  require_done=True)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"stage 'guide' needs a finished stage 2: {e}") from e
    else:
        dif = DiffusionTrainer(tc, model_cfg, latents, out_dir, info,
                               max_seconds=_stage_seconds(tc.diffusion.max_minutes, left(),
                                                          1.0 - tc.guide_share if has_guide
                                                          else 1.0))
        dif.run(resume=resume, extend=extend)
        log_event(out_dir, info, event="diffusion_done", step=dif.step,
                  seconds=round(time.perf_counter() - t0, 1),
                  img_per_s=round(getattr(dif, "last_rate", 0.0), 2))
        _check_min_steps(out_dir, info, "diffusion", tc.diffusion, dif)
        prior = dif.ema_unet()
        del dif
    guide = None
    if has_guide:
        t0 = time.perf_counter()
        gtr = DiffusionTrainer(tc, model_cfg, latents, out_dir, info, guide=True,
                               max_seconds=_stage_seconds(None, left(), 1.0))
        gtr.run(resume=resume, extend=extend)
        log_event(out_dir, info, event="guide_done", step=gtr.step,
                  seconds=round(time.perf_counter() - t0, 1),
                  img_per_s=round(getattr(gtr, "last_rate", 0.0), 2))
        _check_min_steps(out_dir, info, "guide", tc.diffusion, gtr)
        guide = gtr.ema_unet()
    path = export_path or os.path.join(out_dir, "model.safetensors")
    if info.is_main:
        export(path, model_cfg, ae, prior, mean, std, tc.export_unet_dtype, guide)
        log_event(out_dir, info, event="export", path=path,
                  total_seconds=round(time.perf_counter() - t_start, 1))
        if not tc.keep_caches:
            prune_run(out_dir, mean, std, info)
    barrier(info)
    return path if info.is_main else None


def prune_run(out_dir: str, mean, std, info: DistInfo) -> list:
    """Remove what a run with an exported prior no longer needs: the data cache and
    ``latents.pt`` (rebuilt, in about the time they took, if the run is continued; their
    statistics stay in ``latent-stats.pt`` for ``export_run``) and ``ckpt-ae.pt`` (stage 1
    is finished; ``autoencoder.pt`` holds its result). Logs and returns the removed names."""
    save_checkpoint(os.path.join(out_dir, LATENT_STATS), {"mean": mean.cpu(), "std": std.cpu()})
    gone, size = [], 0
    for p in sorted(glob.glob(os.path.join(out_dir, "data-*.pt"))) + [
            os.path.join(out_dir, f) for f in ("latents.pt", "ckpt-ae.pt")]:
        if os.path.exists(p):
            size += os.path.getsize(p)
            os.remove(p)
            gone.append(os.path.basename(p))
    kept = sorted(f for f in os.listdir(out_dir) if not f.startswith("."))
    log_event(out_dir, info, event="pruned", removed=gone, mb=round(size / 1e6, 1), kept=kept,
              note="set keep_caches: true in the config to keep them")
    return gone


def export(path, model_cfg, ae, unet, mean, std, unet_dtype: str = "float32",
           guide=None) -> None:
    """The native ``.safetensors`` that ``d2c_fast.Sampler(path)`` loads (MoCo head, key
    encoder and queue are not part of it); ``unet_dtype``: see ``save_native``; ``guide``:
    the guide prior (EMA weights) for configs with ``diffusion.guide``."""
    save_native(path, model_cfg, ae.cpu().eval(), unet.cpu().eval(), mean.cpu(), std.cpu(),
                unet_dtype=unet_dtype, guide=guide.cpu().eval() if guide is not None else None)


def export_run(out_dir, path=None, unet_dtype=None) -> str:
    """Export a run folder whose stages have finished (or the latest checkpoints);
    ``unet_dtype`` default: the run's ``export_unet_dtype``."""
    if not os.path.isfile(os.path.join(out_dir, "model_config.json")):
        raise ConfigError("<run folder>", f"{out_dir} is not a training run folder (no "
                          f"model_config.json; `d2c-fast train ... -o {out_dir}` makes one)")
    cfg = load_config(os.path.join(out_dir, "model_config.json"))
    stats = "latents.pt" if os.path.exists(os.path.join(out_dir, "latents.pt")) \
        else LATENT_STATS
    for f, what in (("autoencoder.pt", "stage 1 (autoencoder)"),
                    (stats, "stage 2 (latent diffusion)"),
                    ("ckpt-diffusion.pt", "stage 2 (latent diffusion)")):
        if not os.path.exists(os.path.join(out_dir, f)):
            raise ConfigError("<run folder>", f"{out_dir} has no {f}: {what} has not run there "
                              f"yet, so there is no model to export")
    ae = load_trained_autoencoder(out_dir, cfg)
    lat = load_checkpoint(os.path.join(out_dir, stats))
    unet = load_ema_unet(os.path.join(out_dir, "ckpt-diffusion.pt"), cfg.unet)
    guide = (load_ema_unet(os.path.join(out_dir, "ckpt-guide.pt"), cfg.guide)
             if cfg.guide is not None else None)
    path = path or os.path.join(out_dir, "model.safetensors")
    if unet_dtype is None:
        tc_path = os.path.join(out_dir, "train_config.json")
        unet_dtype = (TrainConfig.load(tc_path).export_unet_dtype if os.path.exists(tc_path)
                      else "float32")
    export(path, cfg, ae, unet, lat["mean"], lat["std"], unet_dtype, guide)
    return path
