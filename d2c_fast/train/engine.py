"""Shared pieces of the training loops (the config they read: :mod:`.config`): checkpoints
(atomic, with RNG states), deterministic data order, time budgets, progress bars, learning-rate schedules and
``torch.distributed`` helpers.

Determinism contract (what makes a killed-and-resumed run bitwise equal to a straight one on
CPU): every random draw of a step comes either from a generator seeded by
``(seed, stage, step, rank)`` (data order, augmentations, diffusion timesteps and noise) or
from the global torch RNG (dropout), whose state is saved in every checkpoint with the numpy
and Python states. The data order is a pure function of ``(seed, step)``, so the position in
the data is the step counter itself.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..utils import atomic_write, torchrun_env
from .config import TrainConfig

STAGES = ("ae", "diffusion")
_STAGE_TAG = {"ae": 1, "diffusion": 2, "data": 3, "init": 4, "queue": 5, "ae-latent-noise": 6}


def autocast(device: torch.device, amp: str):
    """The training forward's autocast context: bf16 mixed precision for ``amp="bf16"``
    (matmuls and convolutions in bf16 with fp32 weights and accumulation; on CPUs with AMX
    or AVX512-BF16 a ~1.5x faster step here), a no-op for ``"none"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, state: dict) -> None:
    """``torch.save`` atomically (:func:`d2c_fast.utils.atomic_write`): a run killed while
    saving leaves the previous checkpoint intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path) -> dict:
    """Load a training checkpoint written by :func:`save_checkpoint` (tensors, numbers,
    strings only: ``weights_only=True``)."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """The global RNG states (torch CPU/CUDA, numpy, Python) as tensors and numbers only."""
    np_state = np.random.get_state()
    py = random.getstate()
    st = {
        "torch": torch.random.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2] if py[2] is None else float(py[2]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.random.set_rng_state(st["torch"])
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32),
                         st["numpy_pos"], st["numpy_has_gauss"], st["numpy_gauss"]))
    random.setstate((st["python_version"], tuple(int(v) for v in st["python_state"].tolist()),
                     st["python_gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def step_seed(seed: int, stage: str, step: int, rank: int = 0) -> int:
    """A 63-bit seed that depends on ``(seed, stage, step, rank)`` only."""
    ss = np.random.SeedSequence([seed, _STAGE_TAG[stage], step, rank])
    return int(ss.generate_state(2, np.uint32).astype(np.uint64) @ np.array([1, 2 ** 31],
                                                                            dtype=np.uint64))


def step_generator(seed: int, stage: str, step: int, rank: int = 0,
                   device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(seed, stage, step, rank))


# --------------------------------------------------------------------------- data order
def epoch_permutation(n: int, seed: int, stage: str, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step_seed(seed, "data", epoch, _STAGE_TAG[stage]))
    return torch.randperm(n, generator=g)


class DataOrder:
    """Which items a rank trains on at a step: epoch-wise random permutations of ``n`` items
    (seeded by ``(seed, stage, epoch)``), global batches of ``batch_size`` taken in order
    (incomplete tail dropped, as ``drop_last=True``), each rank taking its strided shard
    ``batch[rank::world]``. A pure function of the step, so resuming needs only the step."""

    def __init__(self, n: int, batch_size: int, seed: int, stage: str, rank: int = 0,
                 world: int = 1):
        if batch_size % world:
            raise ConfigError(f"train.{stage}.batch_size",
                              f"global batch {batch_size} is not divisible by {world} ranks")
        self.n, self.batch_size, self.seed, self.stage = n, min(batch_size, n), seed, stage
        self.rank, self.world = rank, world
        if self.batch_size % world:
            raise ConfigError(f"train.{stage}.batch_size", "dataset smaller than the batch")
        self.per_epoch = n // self.batch_size
        self._cache = (None, None)

    def indices(self, step: int) -> torch.Tensor:
        epoch, within = divmod(step, self.per_epoch)
        if self._cache[0] != epoch:
            self._cache = (epoch, epoch_permutation(self.n, self.seed, self.stage, epoch))
        b = self._cache[1][within * self.batch_size:(within + 1) * self.batch_size]
        return b[self.rank::self.world]


# --------------------------------------------------------------------------- LR schedule
def lr_at(step: int, total: int, base: float, warmup: int = 0, cosine: bool = True,
          min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``base`` to
    ``min_ratio * base`` at ``total`` (constant when ``cosine`` is false)."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if not cosine or total <= warmup:
        return base
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def make_adam(cls, params, **kw) -> torch.optim.Optimizer:
    """``cls(params, **kw)`` (``torch.optim.Adam`` or ``AdamW``) with PyTorch's fused kernel
    where this build has one for the parameters' device (one kernel per step instead of
    about ten ops per parameter tensor: inside the built-in recipe's stage-2 step, 11.8 ->
    3.3 ms for the prior's 268 tensors on 2 CPU threads, benchmarks/RESULTS.md); otherwise
    the default implementation.
    The same update up to rounding. A checkpoint's optimizer state loads into either (its
    saved ``fused`` flag then applies, as ``Optimizer.load_state_dict`` restores it)."""
    params = list(params)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kw)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# --------------------------------------------------------------------------- EMA
@torch.no_grad()
def copy_shadow(shadow: dict, module: torch.nn.Module) -> None:
    """Copy EMA weights (``EMA.shadow``, or the ``"shadow"`` of a saved ``EMA.state_dict()``)
    into ``module``'s parameters of the same names."""
    for n, p in module.named_parameters():
        if n in shadow:
            p.copy_(shadow[n])


class EMA:
    """Exponential moving average of parameters (official ``EMAHelper``):
    ``shadow = (1 - mu) * param + mu * shadow`` after each step, over parameters that
    require gradients. ``warmup`` uses ``min(mu, (1 + n) / (10 + n))`` (not official)."""

    def __init__(self, module: torch.nn.Module, mu: float, warmup: bool = False):
        self.mu, self.warmup, self.num_updates = float(mu), bool(warmup), 0
        self.shadow = {n: p.detach().clone() for n, p in module.named_parameters()
                       if p.requires_grad}

    def rate(self) -> float:
        if self.warmup:
            return min(self.mu, (1 + self.num_updates) / (10 + self.num_updates))
        return self.mu

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        mu = self.rate()
        pairs = [(self.shadow[n], p.detach()) for n, p in module.named_parameters()
                 if n in self.shadow]
        if pairs:   # the loop's mul_ then add_, as one multi-tensor op each
            sh, ps = (list(v) for v in zip(*pairs))
            torch._foreach_mul_(sh, mu)
            torch._foreach_add_(sh, ps, alpha=1 - mu)
        self.num_updates += 1

    def copy_to(self, module: torch.nn.Module) -> None:
        copy_shadow(self.shadow, module)

    def state_dict(self) -> dict:
        return {"shadow": dict(self.shadow), "num_updates": self.num_updates, "mu": self.mu}

    def load_state_dict(self, sd: dict) -> None:
        for n, t in sd["shadow"].items():
            self.shadow[n].copy_(t)
        self.num_updates = int(sd["num_updates"])


# --------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on
    GPUs, gloo on CPU. Otherwise a single process."""
    rank, world, local = torchrun_env()
    if device == "auto":
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    info = DistInfo(rank=rank, world=world, local_rank=local, device=dev)
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        info.initialised_here = True
    return info


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


@torch.no_grad()
def concat_all_gather(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0 in rank order (no gradient)."""
    if not info.distributed:
        return x
    out = [torch.empty_like(x) for _ in range(info.world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_mean(x: float, info: DistInfo) -> float:
    if not info.distributed:
        return x
    t = torch.tensor([x], dtype=torch.float64,
                     device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / info.world


def broadcast_object(obj, info: DistInfo):
    if not info.distributed:
        return obj
    lst = [obj]
    dist.broadcast_object_list(lst, src=0)
    return lst[0]


# --------------------------------------------------------------------------- budget/progress
class Budget:
    """Wall-clock budget of a stage, carried across resumes (``elapsed`` is checkpointed).
    With ``max_minutes``, the planned number of steps (which the cosine schedule spans) is
    fixed once, after ``calib_steps`` steps, from the measured time per step; it is saved
    in the checkpoint so a resumed run keeps the same schedule. The time per step is taken
    over the steps after the first ``warm_steps`` (allocations, a ``torch.compile``
    compilation), and the time left after calibration is divided by it: a slow start costs
    its own seconds, not a proportionally shorter plan.

    The plan is then re-made every ``replan_every`` steps (the number of steps of about
    ``replan_seconds`` at the calibrated speed, fixed with the first plan and the same on
    every rank) from the speed of the steps since the last plan: a machine that gets slower
    or faster mid-stage (other jobs on shared cores) still ends its cosine schedule when its
    time ends, instead of being cut short by the time limit. ``replan_seconds=0`` keeps the
    first plan."""

    def __init__(self, steps: int, max_seconds: Optional[float], calib_steps: int = 20,
                 safety: float = 0.97, warm_steps: int = 3, replan_seconds: float = 60.0):
        self.steps, self.max_seconds = steps, max_seconds
        self.calib_steps, self.safety = calib_steps, safety
        self.warm_steps = max(0, min(warm_steps, calib_steps - 1))
        self.replan_seconds = replan_seconds
        self.planned: Optional[int] = None if max_seconds is not None else steps
        self.replan_every = 0   # steps between re-plans (0: none), set with the first plan
        self.elapsed = 0.0
        self._t0 = None
        self._warm: Optional[tuple] = None   # (seconds, steps) when timing started
        self._mark: Optional[tuple] = None   # (seconds, steps) of the last plan

    def total(self) -> int:
        return self.planned if self.planned is not None else self.steps

    def start(self):
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def after_step(self, step_done: int, info: DistInfo) -> None:
        """Called after each step (``step_done`` steps completed)."""
        if self.planned is not None:
            if self.max_seconds is not None and self.replan_every > 0:
                self._replan(step_done, info)
            return
        if self._warm is None:   # also the first step after a resume within calibration
            if step_done >= self.warm_steps:
                self._warm = (self.now(), step_done)
            return
        t_w, s_w = self._warm
        if step_done - s_w >= self.calib_steps - self.warm_steps:
            now = self.now()
            per = (now - t_w) / (step_done - s_w)
            plan = self._plan(step_done, now, per)
            every = (max(self.calib_steps, int(self.replan_seconds / per))
                     if self.replan_seconds > 0 and per > 0 else 0)
            self.planned, self.replan_every = (int(v) for v in
                                               broadcast_object((plan, every), info))
            self._mark = (now, step_done)

    def _plan(self, step_done: int, now: float, per: float) -> int:
        """Steps in all when the time left (to ``safety * max_seconds``) goes at ``per`` s
        per step: at least ``step_done`` (no time left: what is done), at most ``steps``."""
        more = int((self.safety * self.max_seconds - now) / per) if per > 0 else self.steps
        return min(self.steps, max(step_done, step_done + more))

    def _replan(self, step_done: int, info: DistInfo) -> None:
        if self._mark is None:   # the first step after a resume: start a new window
            self._mark = (self.now(), step_done)
            return
        t_m, s_m = self._mark
        if step_done - s_m < self.replan_every or step_done >= self.planned:
            return
        now = self.now()
        plan = self._plan(step_done, now, (now - t_m) / (step_done - s_m))
        self.planned = int(broadcast_object(plan, info))
        self._mark = (now, step_done)

    def state_dict(self) -> dict:
        return {"planned": -1 if self.planned is None else self.planned, "elapsed": self.now(),
                "replan_every": self.replan_every}

    def load_state_dict(self, sd: dict) -> None:
        self.planned = None if sd["planned"] < 0 else int(sd["planned"])
        self.elapsed = float(sd["elapsed"])
        self.replan_every = int(sd.get("replan_every", 0))   # 0: a checkpoint from before
        self._mark = None


class Progress:
    """tqdm bar (rank 0 only) with loss and images/s, plus a JSON-lines log in ``out_dir``."""

    def __init__(self, desc: str, total: int, initial: int, enabled: bool, log_path=None,
                 log_every: int = 10):
        self.bar = None
        self.log_path, self.log_every = log_path, max(1, log_every)
        self.ema_loss = None
        self._last_t, self._imgs = time.perf_counter(), 0
        self.rate = 0.0
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)

    def set_total(self, total: int) -> None:
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()

    def update(self, step: int, n_images: int, metrics: dict, extra: Optional[dict] = None):
        self._imgs += n_images
        loss = metrics.get("loss")
        if loss is not None:
            self.ema_loss = loss if self.ema_loss is None else 0.9 * self.ema_loss + 0.1 * loss
        if step % self.log_every == 0:
            now = time.perf_counter()
            self.rate = self._imgs / max(now - self._last_t, 1e-9)
            self._last_t, self._imgs = now, 0
            if self.bar is not None:
                post = {k: f"{v:.4g}" for k, v in metrics.items()}
                post["img/s"] = f"{self.rate:.1f}"
                self.bar.set_postfix(post, refresh=False)
            if self.log_path is not None:
                rec = {"step": step, **{k: float(v) for k, v in metrics.items()},
                       "img_per_s": self.rate, **(extra or {})}
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def log_event(out_dir, info: DistInfo, **rec) -> None:
    """Append one JSON record to ``out_dir/log.jsonl`` (rank 0) and print it."""
    if not info.is_main:
        return
    rec = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **rec}
    with open(os.path.join(out_dir, "log.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    print("[d2c-fast train] " + " ".join(f"{k}={v}" for k, v in rec.items() if k != "time"),
          file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- stage loop
class StageTrainer:
    """Base of the two stages: the step loop with budget, progress, periodic atomic
    checkpoints and resume. Subclasses define ``train_step(step) -> (metrics, n_images)``,
    ``state_dict()`` / ``load_state_dict()`` (model, optimiser, EMA, queue ...) and
    ``finish()``."""

    stage = "ae"
    tc_section = "ae"     # the config section of the stage's settings

    def __init__(self, tc: TrainConfig, out_dir: str, info: DistInfo, steps: int,
                 max_seconds: Optional[float]):
        self.tc, self.out_dir, self.info = tc, out_dir, info
        self.step = 0
        self.done = False
        self.budget = Budget(steps, max_seconds)

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.out_dir, f"ckpt-{self.stage}.pt")

    # subclass hooks
    def train_step(self, step: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state_dict(self, sd: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def extra_log(self) -> dict:
        return {}

    # checkpoints
    def _gather_rng(self):
        st = rng_state()
        if not self.info.distributed:
            return [st]
        out = [None] * self.info.world
        dist.all_gather_object(out, st)
        return out

    def save(self) -> None:
        rngs = self._gather_rng()
        if self.info.is_main:
            save_checkpoint(self.ckpt_path, {
                "stage": self.stage, "step": self.step, "done": self.done,
                "world": self.info.world, "state": self.state_dict(),
                "budget": self.budget.state_dict(), "rng": rngs,
                "train_config": json.dumps(self.tc.to_dict(), sort_keys=True),
            })
        barrier(self.info)

    def try_resume(self) -> bool:
        if not os.path.exists(self.ckpt_path):
            return False
        ck = load_checkpoint(self.ckpt_path)
        self.load_state_dict(ck["state"])
        self.step, self.done = int(ck["step"]), bool(ck["done"])
        self.budget.load_state_dict(ck["budget"])
        rngs = ck["rng"]
        if len(rngs) == self.info.world:
            set_rng_state(rngs[self.info.rank])
        else:  # a different world size: the order stays exact, dropout draws do not
            set_rng_state(rngs[0])
        return True

    def run(self, resume: bool = True, extend: bool = False) -> None:
        """Train to the budget (``resume``: from the stage's checkpoint; a finished stage
        returns at once). ``extend``: a finished stage is continued under this trainer's time
        budget, as far as ``steps`` allows: its budget is re-planned from this process's
        speed, so the learning-rate schedule is re-planned over all steps, old and new (the
        rate goes back up to where a run planned that long would be at this step)."""
        if resume and self.try_resume() and self.done:
            if not extend:
                return
            if self.step >= self.budget.steps:
                log_event(self.out_dir, self.info, event="not_extended", stage=self.stage,
                          step=self.step, note=f"already at train.{self.tc_section}.steps "
                          f"({self.budget.steps}); raise it in the config to train further")
                return
            sec = self.budget.max_seconds
            log_event(self.out_dir, self.info, event="extend", stage=self.stage,
                      step=self.step, seconds=None if sec is None else round(sec, 1))
            self.done = False
            self.budget = Budget(self.budget.steps, self.budget.max_seconds)
        tc, info = self.tc, self.info
        prog = Progress(f"{self.stage}", self.budget.total(), self.step,
                        enabled=tc.progress and info.is_main,
                        log_path=os.path.join(self.out_dir, f"log-{self.stage}.jsonl")
                        if info.is_main else None, log_every=tc.log_every)
        self.budget.start()
        last_save = time.perf_counter()
        try:
            stop = False
            while self.step < self.budget.total() and not stop:
                metrics, n_img = self.train_step(self.step)
                self.step += 1
                self.budget.after_step(self.step, info)
                prog.set_total(self.budget.total())
                prog.update(self.step, n_img * info.world, metrics, self.extra_log())
                now = time.perf_counter()
                save_due = bool((tc.checkpoint_every_steps
                                 and self.step % tc.checkpoint_every_steps == 0)
                                or (tc.checkpoint_every_minutes
                                    and now - last_save >= 60 * tc.checkpoint_every_minutes))
                out = self.budget.max_seconds is not None \
                    and self.budget.now() >= self.budget.max_seconds
                if info.distributed:  # rank 0 decides for everyone (clocks differ)
                    save_due, out = broadcast_object((save_due, out), info)
                stop = out
                if save_due and self.step < self.budget.total() and not stop:
                    self.save()
                    last_save = time.perf_counter()
        finally:
            prog.close()
        if stop and self.step < self.budget.total():
            # the plan came from the speed of the last re-plan window; a machine that got
            # slower since (other jobs on the cores) cuts the cosine schedule short: say so
            log_event(self.out_dir, info, event="time_budget_cut", stage=self.stage,
                      step=self.step, planned=self.budget.total(),
                      note="stopped by the time budget before the planned steps; the "
                           "learning-rate schedule did not reach its end")
        self.last_rate = prog.rate
        self.finish()
        self.done = True
        self.save()
