"""Will a time budget cover a run's fixed costs? Estimated before any work.

A run under ``max_minutes`` spends part of it on work that does not depend on the budget:
building the data (rendering or decoding ``data.n`` images), encoding the training latents,
the export, and the fewest optimiser steps that give a usable model (``ae.min_steps``,
``diffusion.min_steps``; a model with fewer samples noise). :func:`probe_costs` times these
on this machine, with the config's sizes, in a few seconds (three real training steps of
each network on random data, the first not timed, fewer when a step takes over a second;
16 rendered images; one encoder batch);
:func:`minimum_seconds` turns them into the smallest total budget that reaches the minimum
steps under the pipeline's split of the time (``ae_share``, ``guide_share``, the export
reserve), and :func:`check_budget` refuses a shorter budget (:class:`BudgetError`) or, when
the caller allows it, warns.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..errors import BudgetError
from ..models.autoencoder import AutoEncoder
from .autoencoder import AETrainer
from .data import dataset_to_uint8, make_dataset
from .diffusion import DiffusionTrainer, encode_latents
from .engine import DistInfo, broadcast_object, load_checkpoint, rng_state, set_rng_state
from .config import TrainConfig

#: at most this many seconds of a total budget are kept back for the stages' last
#: checkpoints and the export (:func:`export_reserve`)
EXPORT_RESERVE_S = 30.0
#: steps a stage takes before its time budget plans the rest (``engine.Budget``)
CALIB_STEPS = 20
#: slack on the measured times (shared cores change speed within minutes)
MARGIN = 1.25
#: ``diffusion.compile``: a compilation of the prior's training step, not probed (about two
#: minutes for the built-in U-Net on one core, d2c_fast/train/README.md)
COMPILE_S = 150.0
SMOKE_CONFIG = "d2c_fast/configs/smoke_train.json"


def export_reserve(total_s: float) -> float:
    """Seconds of a ``total_s`` budget kept back for the last checkpoints and the export: 5%,
    at least 5 s, at most :data:`EXPORT_RESERVE_S` (a 2-minute run keeps 6 s, an hour 30 s)."""
    return min(EXPORT_RESERVE_S, max(5.0, 0.05 * total_s))


@dataclass
class Costs:
    """Measured or estimated seconds of the work a run still has to do (0: nothing to do)."""
    probe_s: float = 0.0
    data_s: float = 0.0
    latents_s: float = 0.0
    ae_steps: int = 0
    ae_step_s: float = 0.0
    prior_steps: int = 0
    prior_step_s: float = 0.0
    guide_steps: int = 0
    guide_step_s: float = 0.0
    compile_s: float = 0.0


def required_steps(st, done_step: int = 0) -> int:
    """Steps a stage still needs to reach its minimum (``min(steps, min_steps)``)."""
    return max(0, min(st.steps, st.min_steps) - done_step)


def checkpoint_state(path: str):
    """``(step, done)`` of a stage checkpoint, ``(0, False)`` when there is none."""
    if not os.path.exists(path):
        return 0, False
    ck = load_checkpoint(path)
    return int(ck["step"]), bool(ck["done"])


def _mean_seconds(fn, n: int = 2, quick: float = 1.0, slow: float = 10.0) -> float:
    """One warm-up call of ``fn``, then the mean time of ``n`` calls: of one call when the
    warm-up took more than ``quick`` seconds, none (the warm-up's own time) beyond ``slow``
    seconds, so the probe stays short."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > slow:
        return first
    if first > quick:
        n = 1
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _n_images(tc: TrainConfig, resolution: int, dataset) -> int:
    if dataset is not None:
        return len(dataset)
    if tc.data.kind in ("faces", "synthetic"):
        return tc.data.n
    return len(make_dataset(tc.data, resolution))


def probe_costs(tc: TrainConfig, model_cfg, out_dir: str, info: DistInfo, stage: str,
                dataset=None, extend: bool = False, data_cached: bool = False) -> Costs:
    """Time the work ``train(tc, out_dir, stage=stage)`` still has to do here (what the folder
    already holds is not counted). ``extend``: finished stages are continued (then only the
    calibration steps are required of them). Runs on every rank (the trainers' collectives);
    rank 0's numbers are returned everywhere. The global RNG states are restored."""
    t0 = time.perf_counter()
    saved = rng_state()
    c = Costs()
    res, dev = model_cfg.resolution, info.device
    ch = model_cfg.autoencoder.image_channels
    has = lambda f: os.path.exists(os.path.join(out_dir, f))   # noqa: E731
    probe_tc = copy.deepcopy(tc)
    probe_tc.progress = False
    probe_tc.diffusion.compile = False
    n = _n_images(tc, res, dataset)
    # under DDP every rank must run the same number of steps (collectives): no shortcuts
    steady = {"quick": math.inf, "slow": math.inf} if info.distributed else {}
    try:
        if not data_cached:
            k = min(16, n)
            ds = (torch.utils.data.Subset(dataset, range(k)) if dataset is not None
                  else make_dataset(tc.data, res, n=k))
            ds[0]                                   # first-use costs (fonts, file listing)
            t = time.perf_counter()
            dataset_to_uint8(ds)
            c.data_s = (time.perf_counter() - t) / k * n / max(1, tc.data.workers)
        g = torch.Generator().manual_seed(0)
        ae = None
        if stage in ("all", "ae") and not (has("autoencoder.pt") and not has("ckpt-ae.pt")):
            done_step, done = checkpoint_state(os.path.join(out_dir, "ckpt-ae.pt"))
            c.ae_steps = 0 if done else required_steps(tc.ae, done_step)
            if c.ae_steps:
                bs = min(tc.ae.batch_size, n)
                imgs = torch.randint(0, 256, (bs, ch, res, res), dtype=torch.uint8, generator=g)
                tr = AETrainer(probe_tc, model_cfg, imgs, out_dir, info)
                c.ae_step_s = _mean_seconds(lambda: tr.train_step(0), **steady)
                ae = tr.model.encoder_q
                tr = None
        if stage != "ae" and not has("latents.pt"):
            ae = ae if ae is not None else AutoEncoder(model_cfg.autoencoder).to(dev)
            bs = min(tc.diffusion.encode_batch_size, 32, n)
            imgs = torch.randint(0, 256, (bs, ch, res, res), dtype=torch.uint8, generator=g)
            per = _mean_seconds(lambda: encode_latents(ae, imgs, bs, False, dev), 1) / bs
            c.latents_s = per * n * (2 if tc.diffusion.flip else 1)
        ae = None
        lat = torch.randn(max(1, tc.diffusion.batch_size or 64), *model_cfg.latent_shape,
                          generator=g)
        stages = {"all": ("prior", "guide"), "diffusion": ("prior", "guide"),
                  "guide": ("guide",), "ae": ()}[stage]
        for which in stages:
            if which == "guide" and model_cfg.guide is None:
                continue
            done_step, done = checkpoint_state(os.path.join(
                out_dir, "ckpt-guide.pt" if which == "guide" else "ckpt-diffusion.pt"))
            steps = (min(CALIB_STEPS, max(0, tc.diffusion.steps - done_step)) if done and extend
                     else 0 if done else required_steps(tc.diffusion, done_step))
            if not steps:
                continue
            tr = DiffusionTrainer(probe_tc, model_cfg, lat, out_dir, info,
                                  guide=which == "guide")
            per = _mean_seconds(lambda: tr.train_step(0), **steady)
            tr = None
            if which == "guide":
                c.guide_steps, c.guide_step_s = steps, per
            else:
                c.prior_steps, c.prior_step_s = steps, per
                c.compile_s = COMPILE_S if tc.diffusion.compile else 0.0
    finally:
        set_rng_state(saved)
    c.probe_s = time.perf_counter() - t0
    return Costs(**broadcast_object(asdict(c), info))


def minimum_seconds(tc: TrainConfig, stage: str, c: Costs, has_guide: bool) -> float:
    """The smallest total budget (seconds) under which each stage of ``stage`` reaches its
    required steps, with the pipeline's split: stage 1 gets ``ae_share`` of what is left
    after the data (and the probe) less the export reserve, stage 2 the rest, which first
    pays for the latents, the prior then getting ``1 - guide_share`` of it and the guide the
    remainder. Measured times are taken ``MARGIN`` times."""
    A = c.ae_steps * c.ae_step_s * MARGIN
    L = c.latents_s * MARGIN
    P = c.prior_steps * c.prior_step_s * MARGIN + c.compile_s
    G = c.guide_steps * c.guide_step_s * MARGIN
    gs = tc.guide_share if has_guide and stage != "guide" else 0.0
    if stage == "guide":
        rest = L + G
    elif gs > 0:
        rest = L + max(P / (1 - gs), G / gs)
    else:
        rest = L + P
    if stage == "ae":
        x = A
    elif stage == "all" and A > 0:
        a = tc.ae_share
        x = max(A / a, rest / (1 - a)) if a < 1 else A + rest
    else:
        x = rest
    fixed = x + c.probe_s + c.data_s * MARGIN
    # the smallest T with T - export_reserve(T) >= fixed
    return max(fixed + 5.0, min(fixed / 0.95, fixed + EXPORT_RESERVE_S))


def describe(c: Costs) -> str:
    """The estimate in words (one line)."""
    parts = [f"data {c.data_s:.1f} s"] if c.data_s else []
    if c.ae_steps:
        parts.append(f"{c.ae_steps} autoencoder steps x {c.ae_step_s:.2f} s")
    if c.latents_s:
        parts.append(f"encoding the latents {c.latents_s:.1f} s")
    if c.prior_steps:
        parts.append(f"{c.prior_steps} prior steps x {c.prior_step_s:.2f} s")
    if c.compile_s:
        parts.append(f"compiling the prior ~{c.compile_s:.0f} s")
    if c.guide_steps:
        parts.append(f"{c.guide_steps} guide steps x {c.guide_step_s:.2f} s")
    parts.append("export reserve 5-30 s")
    return ", ".join(parts)


def _fast_bf16() -> bool:
    """Whether bf16 autocast runs natively here (a GPU, or a CPU with AVX-512 BF16 / AMX)."""
    if torch.cuda.is_available():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def check_budget(tc: TrainConfig, stage: str, costs: Costs, has_guide: bool,
                 allow_short: bool = False) -> Optional[str]:
    """``BudgetError`` when ``tc.max_minutes`` (or a stage's own ``max_minutes``) cannot cover
    ``costs`` (with ``allow_short``: the message is returned, to be shown as a warning);
    None when it can."""
    need = minimum_seconds(tc, stage, costs, has_guide)
    problems = []
    if tc.max_minutes is not None and 60 * tc.max_minutes < need:
        smallest = math.ceil(need / 30) / 2      # minutes, rounded up to half a minute
        problems.append(f"a budget of {tc.max_minutes:g} min (max_minutes / --max-minutes) "
                        f"is too short for this run on this machine: it needs at least "
                        f"{smallest:g} min ({describe(costs)}; measured here, then "
                        f"x{MARGIN} slack); give --max-minutes {smallest:g} or more")
    for name, st, sec in (("ae", tc.ae, costs.ae_steps * costs.ae_step_s),
                          ("diffusion", tc.diffusion,
                           costs.prior_steps * costs.prior_step_s + costs.compile_s)):
        if st.max_minutes is not None and sec > 0 and 60 * st.max_minutes < sec * MARGIN:
            problems.append(f"{name}.max_minutes {st.max_minutes:g} cannot reach "
                            f"{name}.min_steps ({sec * MARGIN / 60:.1f} min needed here)")
    if not problems:
        return None
    if "bf16" in (tc.ae.amp, tc.diffusion.amp) and not _fast_bf16():
        problems.append('amp "bf16" is emulated on this CPU (no AVX-512 BF16 / AMX) and much '
                        'slower than "none" here: set ae.amp and diffusion.amp to "none"')
    msg = ("; ".join(problems) + f". Below its minimum steps a model samples noise. For a "
           f"quick try, {SMOKE_CONFIG} trains a small model in about 2 minutes; "
           f"--allow-short trains anyway")
    if allow_short:
        return msg
    raise BudgetError(msg)


__all__ = ["BudgetError", "Costs", "probe_costs", "minimum_seconds", "check_budget",
           "describe", "required_steps", "checkpoint_state", "EXPORT_RESERVE_S", "export_reserve",
           "SMOKE_CONFIG"]
