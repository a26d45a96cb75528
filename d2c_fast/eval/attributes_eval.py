"""Few-shot attribute evaluation on the built-in faces with the oracle (``d2c-fast
eval-attributes``): the issue's table rows for one model.

Per attribute (default ``blond_hair``, ``red_lipstick``, ``beard``):

* **Fit.** Labelled mode: ``n_fit`` labelled images of the held-out ``val`` stream (half with
  the attribute, half without; the population prior is the data's label rate). Positive-only
  mode: ``n_fit`` positives of ``val`` + ``n_unlabelled`` unlabelled ``val`` images (disjoint).
  The labelled fit also trains on the mirrored images (``fit_flip``, see ``fit_attribute``).
  Reported: cross-validated accuracy, and the balanced accuracy on held-out ``test`` latents
  (``n_eval`` negatives + ``n_real`` positives) with ground-truth labels.
* **Edits.** ``n_eval`` ``test`` images that lack the attribute (ground truth), edited with
  every method (``d2c``, ``nvae``, ``ddim``) at strengths ``factor * g`` for each factor in
  ``strength_factors`` (``g`` = the fit's logit gap, see ``fit_attribute``; ``strengths`` gives
  absolute calibrated strengths instead), with the positive-only attribute (``d2c``), and
  (``preserve_others``) ``d2c`` with ``preserve=`` the labelled classifiers of the four
  other attributes (fitted the same way): the edit is orthogonal to their normals.
  ``edit_guidance``: the ``d2c`` clean-up's autoguidance weight (``None``: the model's
  recommended weight, as ``Sampler.manipulate``; 1: the unguided, official edit).
  Decodes use the deterministic ``mode``. Success: the oracle says the attribute is present
  (p > 0.5); preservation: the fraction of (image, other attribute) pairs whose oracle
  decision is unchanged (also per other attribute: ``preservation_by_attribute``); identity:
  mean oracle-feature distance edit-original, also divided by the mean distance between
  different originals (1.0 = as far as another face).
  A ``reconstruction`` row (decode of the encoding, no edit) gives the preservation and
  identity that the autoencoder alone reaches.
  Per-image edits (``target=``, see :mod:`d2c_fast.edit`): the same methods and fits with
  each image taken to the target logit ``typical positive + offset * g`` for each offset in
  ``target_offsets`` (its own strength per image; the row reports the mean strength).
  ``at_preservation_95``: per method, the best success among strengths with preservation
  >= 0.95 (how "d2c beats nvae and ddim at equal preservation" is read); per-image rows count
  as the method's (keys ``.../target`` separately as well).
* **Conditional generation.** ``n_cond`` rejection samples with the labelled classifier
  (the paper's probability rule, ``cond_skip``): oracle precision, FD_oracle to ``n_real``
  real ``test`` images with the attribute, acceptance rate; the same with the threshold rule
  (accept when ``p >= cond_threshold``; keys ``threshold_*``; ``None`` skips it); the "naive"
  row: ``n_naive`` unconditional samples against the same class. ``real_latent_precision``
  (and ``threshold_real_latent_precision``): the precision each rule would reach with a
  perfect prior, i.e. applied to the encodings of ``n_population`` ``test`` images (both
  classes, ground-truth labels): ``sum p y / sum p`` for the probability rule, the positive
  fraction among ``p >= cond_threshold`` for the threshold rule. It separates what the
  classifier (100 labels) limits from what the prior does. ``cond_eps_scale``: the
  prior sampler's epsilon scaling for both (1: official), ``cond_guidance`` its autoguidance
  weight (``None``: the model's recommended weight). ``cond_adapt_prior``: also the
  probability rule with the classifier re-based on the attribute's rate among that many
  pilot prior samples (``adapt_prior``, keys ``adapted_*``, ``adapted_prior`` the rate;
  0 skips the row).
* **Latency** (batch 1, this CPU): one ``d2c`` edit (encode + edit + decode, fast plan) vs
  the projector baseline (``projector_steps`` Adam steps through the decoder + edit + decode,
  on the reference modules: the fused ops have no backward); the ratio.

Outputs: a dict (also JSON), a markdown report, PNG grids (per attribute: originals and the
edits of each method at the middle strength; conditional samples and naive samples).
"""
from __future__ import annotations

import json
import os
import time

import torch

from ..conditional import RareAttributeError, adapt_to, pilot_latents
from ..data import ATTRIBUTES, FacesDataset
from ..edit import NOISED, apply_delta, edit_delta, edit_plan, invert, target_strengths
from ..images import save_grid
from ..projector import project
from ..sampler import Sampler
from .fid import frechet_distance
from .metrics import wilson_interval
from .oracle import Oracle

DEFAULT_ATTRIBUTES = ("blond_hair", "red_lipstick", "beard")


def _render(ds, idx):
    if len(idx) == 0:
        return torch.zeros(0, 3, ds.resolution, ds.resolution)
    return torch.stack([ds[int(i)][0] for i in idx])


def _pick(labels: torch.Tensor, col: int, want: int, n: int, start: int = 0):
    idx = torch.nonzero(labels[start:, col] == want).flatten() + start
    return idx[:n].tolist()


def _edit_metrics(oracle, a_idx, p0, f0, x_edit, id_scale):
    p1 = oracle.predict(x_edit)
    f1 = oracle.features(x_edit)
    others = [j for j in range(p0.shape[1]) if j != a_idx]
    success = float((p1[:, a_idx] > 0.5).float().mean())
    kept = ((p1[:, others] > 0.5) == (p0[:, others] > 0.5)).float()
    ident = float((f1 - f0).norm(dim=1).mean())
    return {"success": success, "preservation": float(kept.mean()),
            "preservation_by_attribute": dict(zip((oracle.attributes[j] for j in others),
                                                  kept.mean(0).tolist())),
            "identity": ident, "identity_rel": ident / id_scale}


def _flips(row) -> str:
    """The other attributes an edit changes most often, e.g. ``smiling 12%, beard 3%``."""
    by = row.get("preservation_by_attribute") or {}
    worst = sorted(((1 - v, k) for k, v in by.items()), reverse=True)
    return ", ".join(f"{k} {100 * f:.0f}%" for f, k in worst[:2] if f >= 0.005) or "-"


def _batched(fn, x, bs):
    return torch.cat([fn(x[i:i + bs], i) for i in range(0, x.shape[0], bs)])


def evaluate_attributes(model, oracle, *, attributes=DEFAULT_ATTRIBUTES, n_fit: int = 100,
                        n_unlabelled: int = 500, n_eval: int = 200, n_real: int = 300,
                        strength_factors=(1.0, 2.0, 3.0), strengths=None,
                        target_offsets=(0.0, 0.5, 1.0), methods=("d2c", "nvae", "ddim"),
                        t0: int = 50, d2c_skip: int = 50,
                        ddim_skip: int = 100, n_cond: int = 100, n_naive: int = 200,
                        cond_skip: int = 100, cond_threshold: float | None = 0.9,
                        cond_eps_scale: float = 1.0, cond_guidance: float | None = None,
                        cond_adapt_prior: int = 512, max_draws: int | None = None,
                        projector_steps: int = 1000, latency_repeats: int = 5,
                        positive_only: bool = True, seed: int = 0, data_seed: int = 0,
                        batch_size: int = 100, out_dir=None, progress: bool = True,
                        grid_n: int = 8, projector_model=None,
                        preserve_others: bool = True, n_population: int = 1000,
                        fit_flip: bool | None = None,
                        edit_guidance: float | None = None) -> dict:
    """Run the evaluation (module docstring). ``model``: a path or a ``Sampler``; ``oracle``:
    a path or an ``Oracle``. ``projector_model``: the ``impl="ref"`` sampler the projector
    baseline runs on (default: loaded from ``model`` when it is a path, or ``model`` itself
    when it is a ref sampler; otherwise the latency row is skipped). With ``out_dir``,
    writes ``attributes_eval.json``,
    ``attributes_eval.md``, ``edits_grid.png`` and ``conditional_grid.png`` there."""
    t_start = time.perf_counter()
    s = model if isinstance(model, Sampler) else Sampler(model)
    cond_guidance = s.resolve_guidance(cond_guidance)   # resolved (and checked) once
    edit_guidance = s.resolve_guidance(edit_guidance)
    orc = oracle if isinstance(oracle, Oracle) else Oracle.load(oracle)
    R = s.resolution
    log = (lambda *a: print(*a, flush=True)) if progress else (lambda *a: None)
    for name in attributes:
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}; choose from {ATTRIBUTES}")
    if strengths is None and not strength_factors:
        raise ValueError("give strength_factors or strengths")
    pool = max(4000, 20 * (n_fit + n_unlabelled))
    val = FacesDataset(pool, resolution=R, seed=data_seed, split="val")
    test = FacesDataset(max(4000, 20 * (n_eval + n_real)), resolution=R, seed=data_seed,
                        split="test")
    yv, yt = val.all_labels(), test.all_labels()
    rates = FacesDataset(4000, resolution=R, seed=data_seed, split="train").all_labels().mean(0)

    def enc(x):
        return _batched(lambda b, i: s.encode(b), x, batch_size) if x.shape[0] else \
            torch.zeros(0, *s.latent_shape)

    def dec(z):
        return _batched(lambda b, i: s.decode(b, mode="mode"), z, batch_size)

    res = {"model": str(getattr(model, "source", model)) if not isinstance(model, Sampler)
           else "Sampler", "fingerprint": s.fingerprint, "resolution": R,
           "settings": {"n_fit": n_fit, "n_unlabelled": n_unlabelled, "n_eval": n_eval,
                        "n_real": n_real, "strength_factors": list(strength_factors or []),
                        "strengths": list(strengths) if strengths is not None else None,
                        "target_offsets": list(target_offsets or []),
                        "methods": list(methods), "t0": t0, "d2c_skip": d2c_skip,
                        "edit_guidance": edit_guidance,
                        "ddim_skip": ddim_skip, "n_cond": n_cond, "n_naive": n_naive,
                        "cond_skip": cond_skip, "cond_threshold": cond_threshold,
                        "cond_eps_scale": cond_eps_scale,
                        "cond_guidance": cond_guidance, "cond_adapt_prior": cond_adapt_prior,
                        "n_population": n_population,
                        "projector_steps": projector_steps,
                        "seed": seed, "data_seed": data_seed, "decode": "mode",
                        "preserve_others": preserve_others, "fit_flip": fit_flip,
                        "threads": torch.get_num_threads()},
           "attributes": {}}
    grid_rows, grid_labels, cond_rows, cond_labels = [], [], [], []
    first_attr = None
    labelled_fits = {}

    def fit_labelled(name):
        """Labelled fit of one attribute (cached: also used as a preserved classifier)."""
        if name not in labelled_fits:
            a_idx = ATTRIBUTES.index(name)
            half = n_fit // 2
            pos_i = _pick(yv, a_idx, 1, half, start=n_unlabelled)
            neg_i = _pick(yv, a_idx, 0, n_fit - half, start=n_unlabelled)
            labelled_fits[name] = s.fit_attribute(_render(val, pos_i), _render(val, neg_i),
                                                  name=name, prior=float(rates[a_idx]),
                                                  seed=seed, batch_size=batch_size,
                                                  flip=fit_flip)
        return labelled_fits[name]

    # real population latents (both classes): the conditional rules with a perfect prior
    pop_z = pop_y = None
    if n_cond and n_population > 0:
        n_pop = min(int(n_population), len(test))
        pop_z, pop_y = enc(_render(test, list(range(n_pop)))), yt[:n_pop].double()
    # unlabelled pool (PU) and the naive row, shared by all attributes
    unl_idx = list(range(n_unlabelled))
    # encoded once for every attribute: PU fits never mirror, so latents serve as well
    z_unl = enc(_render(val, unl_idx)) if positive_only and n_unlabelled else None
    t = time.perf_counter()
    pilot_z = None   # adapt_prior's pilot latents, drawn once (the same for every attribute)
    naive = None
    if n_cond:
        naive = torch.cat([s.sample(min(batch_size, n_naive - i), skip=cond_skip,
                                    seed=seed + 10_000_000 + i, mode="mode",
                                    eps_scale=cond_eps_scale, guidance=cond_guidance)
                           for i in range(0, n_naive, batch_size)])
        p_naive, f_naive = orc.predict(naive), orc.features(naive)
        log(f"naive: {n_naive} unconditional samples in {time.perf_counter() - t:.1f} s")

    for name in attributes:
        a_idx = ATTRIBUTES.index(name)
        r = {}
        t_attr = time.perf_counter()
        # ---- fit
        attr = fit_labelled(name)
        first_attr = first_attr or attr
        fits = {"labelled": attr}
        if positive_only and z_unl is not None:
            pu_i = _pick(yv, a_idx, 1, n_fit, start=n_unlabelled)
            fits["positive_only"] = s.fit_attribute(enc(_render(val, pu_i)), unlabelled=z_unl,
                                                    name=f"{name}_pu", seed=seed)
        # ---- held-out data: negatives to edit, positives (real class)
        ev_i = _pick(yt, a_idx, 0, n_eval)
        real_i = _pick(yt, a_idx, 1, n_real)
        x_ev, x_real = _render(test, ev_i), _render(test, real_i)
        z_ev, z_real = enc(x_ev), enc(x_real)
        r["fit"] = {}
        for mode, at in fits.items():
            tpr = float((at.probability(z_real) > 0.5).double().mean()) if len(real_i) else 0.0
            tnr = float((at.probability(z_ev) <= 0.5).double().mean())
            r["fit"][mode] = {"cv_accuracy": at.info["cv_accuracy"],
                              "heldout_balanced_accuracy": 0.5 * (tpr + tnr),
                              "prior": at.classifier.prior, "l2": at.info["l2"],
                              "logit_gap": at.info["logit_gap"],
                              "fit_seconds": at.info["fit_seconds"],
                              "n_positive": at.info["n_positive"]}
        log(f"{name}: fit labelled cv {attr.info['cv_accuracy']:.3f} / held-out "
            f"{r['fit']['labelled']['heldout_balanced_accuracy']:.3f}"
            + (f", positive-only held-out "
               f"{r['fit']['positive_only']['heldout_balanced_accuracy']:.3f}"
               if "positive_only" in r["fit"] else ""))
        # ---- edits
        p0, f0 = orc.predict(x_ev), orc.features(x_ev)
        perm = torch.roll(torch.arange(f0.shape[0]), 1)
        id_scale = float((f0 - f0[perm]).norm(dim=1).mean()) if f0.shape[0] > 1 else 1.0
        r["oracle_on_originals"] = {"has_attribute": float((p0[:, a_idx] > 0.5).float().mean())}
        rows = []
        mid_imgs = {}

        def edit_rows(at, tag, meths, preserve=None):
            gap = at.info["logit_gap"]
            # fixed strengths, then per-image targets: (strength or per-image (N, 1), target)
            plans = [(sv, None) for sv in (list(strengths) if strengths is not None else
                                           [f * gap for f in strength_factors])]
            targets = [at.typical_logits[1] + o * gap for o in (target_offsets or [])]
            plans += [(target_strengths(s, at, z_ev, tv), tv) for tv in targets]
            n_fixed = len(plans) - len(targets)
            for m in meths:
                inv = None
                if m == "ddim":
                    with torch.inference_mode():
                        inv = _batched(lambda b, i: invert(s, b, skip=ddim_skip), z_ev,
                                       batch_size)
                for k, (sv, tv) in enumerate(plans):
                    delta, mask = edit_plan(s, [at], list(preserve or ()), z_ev, method=m,
                                            strength=sv)

                    def one(b, i):
                        rng = s.rng(b.shape[0], None, seed + i)
                        eps = rng.randn(*s.latent_shape) if m in NOISED else None
                        d = delta if delta.shape[0] == 1 else delta[i:i + b.shape[0]]
                        mk = (None if mask is None else
                              mask if mask.shape[0] == 1 else mask[i:i + b.shape[0]])
                        # local: its own t0 and skip (the library's defaults)
                        return apply_delta(s, b, d, method=m,
                                           t0=None if m == "local" else t0,
                                           skip={"d2c": d2c_skip, "local": None}.get(m, ddim_skip),
                                           eps=eps, rng=rng,
                                           inverted=None if inv is None else inv[i:i + b.shape[0]],
                                           guidance=edit_guidance if m in NOISED else 1.0,
                                           attrs=[at], preserve=preserve or (), mask=mk)
                    with torch.inference_mode():
                        zp = _batched(one, z_ev, batch_size)
                        x1 = dec(zp)
                    mean_s = float(sv.mean()) if tv is not None else sv
                    row = {"fit": tag, "method": m, "strength": mean_s,
                           "factor": (mean_s / gap if strengths is None or tv is not None
                                      else None), "target": tv,
                           **_edit_metrics(orc, a_idx, p0, f0, x1, id_scale)}
                    rows.append(row)
                    if k == n_fixed // 2:
                        mid_imgs[(tag, m)] = (x1[:grid_n], f"s={sv:.1f}")
                    elif k == n_fixed and m == "d2c" and tag == "labelled":
                        mid_imgs[(tag, "d2c target")] = (x1[:grid_n], f"logit->{tv:.1f}")

        t = time.perf_counter()
        # reference row: the autoencoder's reconstruction (what "unchanged" can reach)
        with torch.inference_mode():
            x_rec = dec(z_ev)
        rows.append({"fit": "none", "method": "reconstruction", "strength": 0.0, "factor": 0.0,
                     "target": None, **_edit_metrics(orc, a_idx, p0, f0, x_rec, id_scale)})
        edit_rows(attr, "labelled", methods)
        if "positive_only" in fits:
            edit_rows(fits["positive_only"], "positive_only", ["d2c"])
        if preserve_others:
            others = [fit_labelled(o) for o in ATTRIBUTES if o != name]
            edit_rows(attr, "labelled+preserve", ["d2c"], preserve=others)
        r["edits"] = rows
        best = {}
        for row in rows:
            if row["method"] == "reconstruction":
                continue
            keys = [f"{row['fit']}/{row['method']}"]
            if row.get("target") is not None:
                keys.append(keys[0] + "/target")
            for key in keys:
                if row["preservation"] >= 0.95:
                    best[key] = max(best.get(key, 0.0), row["success"])
                else:
                    best.setdefault(key, 0.0)
        r["at_preservation_95"] = best
        log(f"{name}: edits in {time.perf_counter() - t:.1f} s: " + ", ".join(
            f"{k} {v:.2f}" for k, v in best.items()))
        grid_rows.append(x_ev[:grid_n])
        grid_labels.append(f"{name}: original")
        for (tag, m), (imgs, how) in mid_imgs.items():
            grid_rows.append(imgs)
            suffix = {"labelled": "", "positive_only": " (pos-only)",
                      "labelled+preserve": " +preserve"}[tag]
            grid_labels.append(f"{m}{suffix} {how}")
        # ---- conditional generation
        if n_cond:
            t = time.perf_counter()
            f_real = orc.features(x_real) if len(real_i) > 1 else None
            cond = {"naive_precision": float((p_naive[:, a_idx] > 0.5).float().mean()),
                    "naive_fd_oracle": (frechet_distance(f_naive, f_real)
                                        if f_real is not None else None)}
            rules = [("", None, 0)] + ([("threshold_", cond_threshold, 0)]
                                       if cond_threshold is not None else []) + (
                [("adapted_", None, cond_adapt_prior)] if cond_adapt_prior else [])
            for prefix, thr, adapt in rules:
                use = attr
                if adapt:   # as sample_conditional(adapt_prior=...), one pilot for all attributes
                    if pilot_z is None:
                        pilot_z = pilot_latents(s, cond_adapt_prior, seed=seed,
                                                batch_size=batch_size, skip=cond_skip,
                                                eps_scale=cond_eps_scale, guidance=cond_guidance)
                    (use,), (rate,) = adapt_to([attr], pilot_z)
                    cond[prefix + "prior"] = rate
                try:
                    xc, pc, st = s.sample_conditional(use, n_cond, seed=seed,
                                                      batch_size=batch_size, skip=cond_skip,
                                                      mode="mode", max_draws=max_draws,
                                                      threshold=thr, return_probs=True,
                                                      return_stats=True,
                                                      eps_scale=cond_eps_scale,
                                                      guidance=cond_guidance)
                    pcond = orc.predict(xc)
                    hits = int((pcond[:, a_idx] > 0.5).sum())
                    cond.update({
                        prefix + "precision": hits / pcond.shape[0],
                        prefix + "precision_ci95": wilson_interval(hits, pcond.shape[0]),
                        prefix + "fd_oracle": (frechet_distance(orc.features(xc), f_real)
                                               if f_real is not None else None),
                        prefix + "acceptance_rate": st["acceptance_rate"],
                        prefix + "draws": st["draws"],
                        prefix + "mean_classifier_probability": float(pc.mean())})
                    if thr is None:
                        cond_rows.append(xc[:grid_n])
                        cond_labels.append(f"{name}")
                except RareAttributeError as e:   # too rare for the budget: a row
                    cond[prefix + "error"] = str(e)
            if pop_z is not None:
                pp, yy = attr.probability(pop_z).double(), pop_y[:, a_idx]
                cond["real_latent_precision"] = float((pp * yy).sum() / pp.sum().clamp_min(1e-12))
                if cond_threshold is not None:
                    keep = pp >= cond_threshold
                    cond["threshold_real_latent_precision"] = (
                        float(yy[keep].mean()) if bool(keep.any()) else None)
            if cond_threshold is not None:
                cond["threshold"] = cond_threshold
            cond["seconds"] = round(time.perf_counter() - t, 1)
            r["conditional"] = cond
            log(f"{name}: conditional precision {cond.get('precision', float('nan')):.2f} "
                f"(naive {cond['naive_precision']:.2f}), FD {cond.get('fd_oracle')} "
                f"(naive {cond['naive_fd_oracle']}) in {cond['seconds']} s")
        r["seconds"] = round(time.perf_counter() - t_attr, 1)
        res["attributes"][name] = r

    # ---- latency, batch 1
    ps = projector_model
    if ps is None and projector_steps:
        if isinstance(model, Sampler):
            ps = model if model.impl == "ref" else None
        else:
            ps = Sampler(model, impl="ref")
    if projector_steps and first_attr is not None and ps is None:
        log("latency: skipped (no impl='ref' sampler for the projector)")
    if projector_steps and first_attr is not None and ps is not None:
        at = first_attr
        x1 = _render(test, [0])
        s.manipulate(x1, at, strength=1.0, seed=0)          # warm-up
        times = []
        for k in range(max(1, latency_repeats)):
            t = time.perf_counter()
            s.manipulate(x1, at, strength=1.0, seed=k)
            times.append(time.perf_counter() - t)
        edit_s = sorted(times)[len(times) // 2]
        t = time.perf_counter()
        zp, info = project(ps, x1, steps=projector_steps)
        with torch.inference_mode():
            ps.decode(apply_delta(ps, zp, edit_delta(ps, at, strength=1.0), method="nvae"),
                      mode="mode")
        proj_s = time.perf_counter() - t
        res["latency"] = {"attribute": at.name, "edit_d2c_s": edit_s, "projector_s": proj_s,
                          "projector_steps": projector_steps,
                          "projector_final_loss": info["losses"][-1],
                          "projector_first_loss": info["losses"][0],
                          "ratio": proj_s / edit_s, "batch": 1,
                          "threads": torch.get_num_threads()}
        log(f"latency: d2c edit {edit_s * 1e3:.1f} ms, projector ({projector_steps} steps) "
            f"{proj_s:.2f} s, ratio {proj_s / edit_s:.0f}x")
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        res["files"] = {}
        if grid_rows:
            res["files"]["edits_grid"] = save_grid(
                grid_rows, os.path.join(out_dir, "edits_grid.png"), labels=grid_labels)
        if cond_rows or naive is not None:
            rows_ = cond_rows + ([naive[:grid_n]] if naive is not None else [])
            labs = cond_labels + (["naive (unconditional)"] if naive is not None else [])
            res["files"]["conditional_grid"] = save_grid(
                rows_, os.path.join(out_dir, "conditional_grid.png"), labels=labs)
        res["files"]["json"] = os.path.join(out_dir, "attributes_eval.json")
        res["files"]["markdown"] = os.path.join(out_dir, "attributes_eval.md")
        with open(res["files"]["json"], "w") as f:
            json.dump(res, f, indent=1)
        with open(res["files"]["markdown"], "w") as f:
            f.write(markdown(res))
    return res


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def markdown(res: dict) -> str:
    """The evaluation as markdown tables."""
    st = res["settings"]
    out = [f"# Attribute evaluation ({res['fingerprint']}, {res['resolution']}px)", "",
           f"{st['n_fit']} labels per attribute (half positive), {st['n_eval']} held-out images "
           f"lacking the attribute per edit row, decode `mode`, t0={st['t0']}, d2c skip "
           f"{st['d2c_skip']}, d2c guidance {st.get('edit_guidance', 1.0):g}, ddim skip "
           f"{st['ddim_skip']}; {res.get('seconds')} s.", "",
           "## Fits", "", "| attribute | mode | CV acc | held-out bal. acc | prior | L2 | logit gap |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in res["attributes"].items():
        for mode, fr in r["fit"].items():
            out.append(f"| {name} | {mode} | {_f(fr['cv_accuracy'])} | "
                       f"{_f(fr['heldout_balanced_accuracy'])} | {_f(fr['prior'])} | "
                       f"{fr['l2']:g} | {_f(fr['logit_gap'], '{:.2f}')} |")
    out += ["", "## Edits", "", "Per-image rows (`target`): each image is taken to the target "
            "logit; strength and x gap are then the mean over images.", "",
            "| attribute | fit | method | target | strength | x gap | success | "
            "preservation | most changed others | identity (rel.) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in res["attributes"].items():
        for row in r["edits"]:
            out.append(f"| {name} | {row['fit']} | {row['method']} | "
                       f"{_f(row.get('target'), '{:.2f}')} | {row['strength']:.2f} | "
                       f"{_f(row['factor'], '{:.1f}')} | {_f(row['success'])} | "
                       f"{_f(row['preservation'])} | {_flips(row)} | {_f(row['identity_rel'])} |")
    out += ["", "Best success with preservation >= 0.95:", ""]
    for name, r in res["attributes"].items():
        out.append(f"- {name}: " + ", ".join(f"{k} {v:.3f}"
                                             for k, v in r["at_preservation_95"].items()))
    if any("conditional" in r for r in res["attributes"].values()):
        out += ["", "## Conditional generation", "", "Precision with real latents: the rule "
                "applied to encodings of real test images (a perfect prior), the classifier's "
                "own limit. Precision: the oracle's rate on the accepted samples, with its 95% "
                "(Wilson) interval.", "", "| attribute | rule | precision | precision with real "
                "latents | FD_oracle to class | acceptance rate |",
                "| --- | --- | --- | --- | --- | --- |"]
        for name, r in res["attributes"].items():
            c = r.get("conditional")
            if c is None:
                continue
            rules = [("probability (paper)", "")]
            if c.get("threshold") is not None:
                rules.append((f"p >= {c['threshold']:g}", "threshold_"))
            if "adapted_precision" in c or "adapted_error" in c:
                rules.append((f"probability, prior adapted ({_f(c.get('adapted_prior'))})",
                              "adapted_"))
            for label, k in rules:
                ci = c.get(k + "precision_ci95")
                ci = f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
                out.append(f"| {name} | {label} | {_f(c.get(k + 'precision'))}{ci} | "
                           f"{_f(c.get(k + 'real_latent_precision'))} | "
                           f"{_f(c.get(k + 'fd_oracle'), '{:.2f}')} | "
                           f"{_f(c.get(k + 'acceptance_rate'))} |"
                           + (f" error: {c[k + 'error']}" if k + "error" in c else ""))
            out.append(f"| {name} | naive (unconditional) | {_f(c['naive_precision'])} | "
                       f"- | {_f(c['naive_fd_oracle'], '{:.2f}')} | 1 |")
    if "latency" in res:
        lt = res["latency"]
        out += ["", "## Latency (batch 1)", "",
                f"d2c edit {lt['edit_d2c_s'] * 1e3:.1f} ms; projector ({lt['projector_steps']} Adam "
                f"steps) {lt['projector_s']:.2f} s; ratio **{lt['ratio']:.0f}x** "
                f"({lt['threads']} thread(s))."]
    return "\n".join(out) + "\n"


__all__ = ["evaluate_attributes", "markdown", "DEFAULT_ATTRIBUTES"]
