"""Large jobs: edit a directory of images, or write conditional samples to a directory;
resumable and sharded across processes.

* **Resumable.** An item whose output file exists is skipped; every file is written to a
  temporary name in its directory and moved into place (``os.replace``), so a killed job
  leaves no partial outputs and a rerun does only what is missing. The job's settings (model
  fingerprint, attributes, edit or sampling settings) are recorded in ``d2c_fast_job.json``
  in the output directory; a rerun with other settings is refused rather than mixing
  outputs of two jobs (use another output directory, or delete it).
* **Sharded.** Under ``torchrun`` (``WORLD_SIZE``/``RANK`` in the environment), rank ``r``
  takes items ``r, r + world_size, ...`` and writes its own outputs; the process group (gloo)
  is only used for a final barrier. Every item's randomness comes from its global index
  (edits: generator ``seed + index``; conditional samples: the streams of
  :mod:`d2c_fast.conditional`), so a sharded run writes the same images as one process.

    torchrun --nproc_per_node=4 -m d2c_fast manipulate-dir model.safetensors \\
        --input-dir faces/ --output-dir edits/ --attr blond.safetensors --strength 4
    d2c-fast sample-conditional-dir model.safetensors --output-dir blond/ --attr blond.safetensors -n 10000
"""
from __future__ import annotations

import copy
import json
import os
import time

import torch

from .attributes import resolve_attribute
from .conditional import (DEFAULT_THRESHOLD, adapt_priors, check_adapt_prior, decode_with,
                          sample_conditional_latents)
from .edit import default_amount, default_method, edit_guidance, manipulate
from .errors import ImageError
from .images import IMAGE_EXTENSIONS, check_output_dir, refuse_shared_outputs, save_png
from .sampler import Sampler
from .utils import atomic_write_text, torchrun_env


def dist_info(init: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment; initialises a gloo process group
    when ``world_size > 1`` (and ``init``)."""
    rank, world, _ = torchrun_env()
    if init and world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo")
    return rank, world


def _barrier():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def list_images(input_dir) -> list[str]:
    """Image files under ``input_dir`` (relative paths, sorted, dot-files/dirs skipped)."""
    root = os.fspath(input_dir)
    if not os.path.isdir(root):
        raise ImageError(f"input directory not found: {root}")
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


JOB_FILE = "d2c_fast_job.json"


def _attr_digest(a) -> str:
    """SHA-256 (16 hex digits) of what an attribute edits or samples with."""
    import hashlib
    h = hashlib.sha256(a.direction.numpy().tobytes())
    if a.classifier is not None:
        c = a.classifier
        h.update(c.weight.numpy().tobytes())
        h.update(repr((c.bias, c.offset)).encode())
    return h.hexdigest()[:16]


def _job_settings(out_dir: str, settings: dict, write: bool = False) -> None:
    """Refuse (``ValueError``) when ``out_dir`` already holds a job with other settings;
    ``write``: record ``settings`` in ``out_dir/d2c_fast_job.json`` (done just before the
    first output is saved, so a call that fails on its arguments records nothing)."""
    path = os.path.join(out_dir, JOB_FILE)
    settings = json.loads(json.dumps(settings))   # normalised: tuples -> lists
    if os.path.exists(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError:
                old = None
        if old != settings:
            if not isinstance(old, dict):
                diff = f"unreadable {JOB_FILE}"
            else:
                keys = sorted(set(old) | set(settings))
                diff = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in keys
                                 if old.get(k) != settings.get(k))
            raise ValueError(f"{out_dir} holds the outputs of a job with other settings "
                             f"({diff}); write to another output directory, or delete it to "
                             f"start over")
        return
    if not write:
        return
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True))


def _load_attrs(attr, s) -> list:
    """An attribute, a path, or a list of those (``None``: none) -> loaded attributes, checked
    against ``s``'s model."""
    items = attr if isinstance(attr, (list, tuple)) else ([] if attr is None else [attr])
    return [a if not isinstance(a, (str, os.PathLike)) else resolve_attribute(a, s)
            for a in items]


def _bar(total, rank, desc, progress):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"{desc} [rank {rank}]", position=rank, unit="img",
                disable=(not progress) or None, leave=True)


def _sampler(model, **kw):
    return model if isinstance(model, Sampler) else Sampler(model, **kw)


def manipulate_dir(model, input_dir, output_dir, attr, *, strength=None, step=None,
                   target=None, method: str | None = None, preserve=None,
                   t0: int | None = None,
                   skip: int | None = None,
                   seed: int = 0, batch_size: int = 16, mode: str = "sample",
                   resize: bool = False, progress: bool = True, rank=None, world=None,
                   guidance=None, **sampler_kw) -> dict:
    """Edit every image of ``input_dir`` into ``output_dir`` (same relative path, ``.png``).
    Image ``i`` (sorted order) uses generator ``seed + i``; ``guidance``: the d2c clean-up's
    autoguidance weight (``Sampler.manipulate``). Returns this rank's counts."""
    r0, w0 = dist_info()
    rank = r0 if rank is None else rank
    world = w0 if world is None else world
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    inp, out_dir = os.fspath(input_dir), check_output_dir(os.fspath(output_dir))
    ri, ro = os.path.realpath(inp), os.path.realpath(out_dir)
    if ro == ri or ro.startswith(ri.rstrip(os.sep) + os.sep):
        raise ValueError(f"output directory {out_dir!r} is (inside) the input directory "
                         f"{inp!r}: its edits would overwrite inputs or become inputs of a rerun")
    files = list_images(inp)
    if not files:
        raise ImageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {inp}")
    outs = [os.path.join(out_dir, os.path.splitext(f)[0] + ".png") for f in files]
    refuse_shared_outputs([os.path.join(inp, f) for f in files], outs)
    s = _sampler(model, **sampler_kw)
    attrs, pres = _load_attrs(attr, s), _load_attrs(preserve, s)
    method = default_method(method, step)        # the settings recorded are the resolved ones
    target = default_amount(attrs, step, strength, target)
    job = {
        "job": "manipulate_dir", "model": getattr(s, "fingerprint", None),
        "attributes": [_attr_digest(a) for a in attrs],
        "preserve": [_attr_digest(a) for a in pres],
        "strength": strength, "step": step, "target": target, "method": method, "t0": t0,
        "skip": skip, "seed": seed, "mode": mode, "resize": resize,
        "guidance": edit_guidance(s, method, guidance)}
    _job_settings(out_dir, job)
    preserve = pres or None
    mine = list(range(rank, len(files), world))
    todo = [i for i in mine if not os.path.exists(outs[i])]
    t = time.perf_counter()
    bar = _bar(len(todo), rank, "edit", progress)
    for a in range(0, len(todo), batch_size):
        idx = todo[a:a + batch_size]
        x = manipulate(s, [os.path.join(inp, files[i]) for i in idx],
                       attrs if len(attrs) > 1 else attrs[0], step=step, strength=strength,
                       target=target, t0=t0, skip=skip, method=method, preserve=preserve,
                       mode=mode, seeds=[seed + i for i in idx], resize=resize,
                       guidance=guidance)
        if a == 0:
            _job_settings(out_dir, job, write=True)
        for i, img in zip(idx, x):
            save_png(img, outs[i])
        bar.update(len(idx))
    bar.close()
    _barrier()
    return {"rank": rank, "world_size": world, "total": len(files), "mine": len(mine),
            "written": len(todo), "skipped": len(mine) - len(todo),
            "seconds": round(time.perf_counter() - t, 2)}


def sample_conditional_dir(model, output_dir, attr, n: int, *, seed: int = 0,
                           batch_size: int = 64, chunk: int | None = None,
                           threshold=DEFAULT_THRESHOLD,
                           max_draws_per_image: int = 100, skip: int = 100,
                           mode: str = "sample", progress: bool = True, rank=None, world=None,
                           eps_scale: float = 1.0, guidance: float | None = None,
                           guidance_rescale: float | None = None, guidance_rescale_t=None,
                           adapt_prior: int = 0, **sampler_kw) -> dict:
    """Write ``n`` conditional samples ``{k:06d}.png`` (+ ``{k:06d}.json``: probabilities and
    attempts) to ``output_dir``. Image ``k`` depends only on ``(seed, k)``. ``chunk`` images
    (default ``batch_size``) are rejection-sampled together with a budget of
    ``max_draws_per_image * chunk + 1000`` draws. ``eps_scale``: the prior sampler's epsilon
    scaling and ``guidance`` its autoguidance weight (as in ``Sampler.sample_latents``),
    both recorded in every ``.json`` with the guidance rescale in use: the Sampler's, or
    ``guidance_rescale`` (phi) with ``guidance_rescale_t`` (its timestep range, None: all)
    for this call only (a Sampler passed in keeps its own setting). ``adapt_prior=N``: the
    classifiers are first re-based on the attributes' rates among ``N`` pilot prior samples
    (see :mod:`d2c_fast.conditional`; the same pilot, hence the same rates, in every process
    and on every resume), recorded in every ``.json`` as ``priors``."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    for what, v in (("batch_size", batch_size), ("chunk", chunk),
                    ("max_draws_per_image", max_draws_per_image)):
        if v is not None and v < 1:
            raise ValueError(f"{what} must be >= 1, got {v}")
    out = check_output_dir(os.fspath(output_dir))
    r0, w0 = dist_info()
    rank = r0 if rank is None else rank
    world = w0 if world is None else world
    s = _sampler(model, **sampler_kw)
    if guidance_rescale is not None:
        s = copy.copy(s)   # shares the weights; the caller's Sampler keeps its setting
        s.set_guidance_rescale(guidance_rescale, guidance_rescale_t)
    elif guidance_rescale_t is not None:
        raise ValueError("guidance_rescale_t needs guidance_rescale")
    guidance = s.resolve_guidance(guidance)   # resolved once: None -> the file's weight
    record = s.sampling_record(guidance)   # guidance and the rescale in use
    attrs = _load_attrs(attr, s)
    adapt = check_adapt_prior(adapt_prior)
    job = {
        "job": "sample_conditional_dir", "model": getattr(s, "fingerprint", None),
        "attributes": [_attr_digest(a) for a in attrs], "seed": seed, "threshold": threshold,
        "skip": skip, "mode": mode, "eps_scale": float(eps_scale), "adapt_prior": adapt_prior,
        **record}
    _job_settings(out, job)
    mine = list(range(rank, n, world))
    todo = [k for k in mine if not os.path.exists(os.path.join(out, f"{k:06d}.png"))]
    chunk = chunk or batch_size
    t = time.perf_counter()
    if adapt and todo:
        with torch.inference_mode():
            attrs, _ = adapt_priors(s, attrs, adapt_prior, seed=seed, batch_size=batch_size,
                                    skip=skip, eps_scale=eps_scale, guidance=guidance,
                                    progress=progress and rank == 0)
    draws = 0
    bar = _bar(len(todo), rank, "conditional", progress)
    for a in range(0, len(todo), chunk):
        ks = todo[a:a + chunk]
        with torch.inference_mode():
            z, p, gens, st = sample_conditional_latents(
                s, attrs, ks, seed=seed, batch_size=batch_size, threshold=threshold, skip=skip,
                max_draws=max_draws_per_image * len(ks) + 1000, eps_scale=eps_scale,
                guidance=guidance)
            x = decode_with(s, z, gens, mode)
        draws += st["draws"]
        if a == 0:
            _job_settings(out, job, write=True)
        for j, k in enumerate(ks):
            atomic_write_text(os.path.join(out, f"{k:06d}.json"), json.dumps(
                {"index": k, "seed": seed, "eps_scale": float(eps_scale), **record,
                 "attributes": st["attributes"], "priors": st["priors"],
                 "adapt_prior": int(adapt_prior), "probabilities": [float(v) for v in p[j]],
                 "attempts": st["attempts"][j]}))
            save_png(x[j], os.path.join(out, f"{k:06d}.png"))
        bar.update(len(ks))
    bar.close()
    _barrier()
    return {"rank": rank, "world_size": world, "total": n, "mine": len(mine),
            "written": len(todo), "skipped": len(mine) - len(todo), "draws": draws,
            "seconds": round(time.perf_counter() - t, 2)}


__all__ = ["manipulate_dir", "sample_conditional_dir", "list_images", "dist_info"]
