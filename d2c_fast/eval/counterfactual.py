"""Edits judged against the true counterfactual (the built-in faces only).

The built-in renderer draws any face again with one attribute switched and everything else
the same (``render_face(..., force={attr: v})``), so every held-out face ``x`` has its true
counterfactual ``c``. An edit ``e`` of ``x`` is compared with ``c`` through the model's own
reconstructions ``rx = decode(encode(x))``, ``rc = decode(encode(c))`` (``mode="mode"``), so
that what the autoencoder cannot draw is not charged to the edit. Definitions (per image;
tables report medians over the faces):

* **attribute pixels** ``M``: pixels where the counterfactual differs from the face,
  ``max_channel |c - x| > PIXEL_TAU`` (0.1 of the [0, 1] range);
* **progress**: how far the edit goes from ``rx`` towards ``rc`` in those pixels, the
  projection ``<e - rx, rc - rx>_M / |rc - rx|^2_M`` (0: no change, 1: the counterfactual's
  reconstruction; ``rc`` itself scores 1);
* **outside change**: the change outside ``M``, relative to the reconstruction's,
  ``mean_{not M} (e - x)^2 / mean_{not M} (rx - x)^2`` (``rx`` scores 1; ``rc`` about 1);
* **distance to the counterfactual**: RMSE ``|e - c|`` over the whole image, and, with an
  oracle (:class:`~d2c_fast.eval.oracle.Oracle`), the distance between the oracle's features
  of ``e`` and ``c`` relative to that between ``rx``'s and ``c``'s (1: no closer than the
  reconstruction of the unedited face).

"add" edits faces that lack the attribute up to ``target="typical"`` (the fit's median
positive logit); "remove" edits faces that have it down to the fit's median negative logit.
Nothing of the counterfactual reaches the edit: it only judges.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from ..data.faces import labels_only, render_face
from ..images import save_grid

PIXEL_TAU = 0.1
DIRECTIONS = ("add", "remove")
CEILING = "reconstruction of the counterfactual"   # the row every setting is measured against

__all__ = ["PIXEL_TAU", "DIRECTIONS", "CEILING", "counterfactual_pairs", "edit_scores", "evaluate_edits",
           "markdown_table"]


def counterfactual_pairs(attribute: str, direction: str, n: int, resolution: int, *,
                         seed: int = 0, split: str = "test"):
    """The first ``n`` faces of ``(seed, split)`` that lack (``"add"``) or have
    (``"remove"``) ``attribute``, and their true counterfactuals: two ``(n, 3, R, R)``
    tensors in [0, 1]."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    has = direction == "remove"
    xs, cs, i = [], [], 0
    while len(xs) < n:
        if labels_only(seed, i, split)[attribute] == has:
            xs.append(render_face(seed, i, resolution, split=split)[0])
            cs.append(render_face(seed, i, resolution, split=split,
                                  force={attribute: not has})[0])
        i += 1
        if i > 100 * n + 1000:
            raise ValueError(f"too few faces {'with' if has else 'without'} {attribute}")
    return torch.stack(xs), torch.stack(cs)


def edit_scores(x, c, e, rx, rc, oracle=None) -> dict:
    """Per-image scores ``(B,)`` of edits ``e`` of faces ``x`` with counterfactuals ``c``
    (module docstring): ``progress``, ``outside``, ``rmse``, and ``oracle`` with an oracle."""
    m = ((c - x).abs().amax(1, keepdim=True) > PIXEL_TAU).to(x.dtype)
    out = 1 - m
    d = rc - rx
    progress = ((e - rx) * d * m).flatten(1).sum(1) / ((d * d * m).flatten(1).sum(1)
                                                       .clamp_min(1e-12))
    area = (out.flatten(1).sum(1) * x.shape[1]).clamp_min(1)
    ch = (((e - x) ** 2) * out).flatten(1).sum(1) / area
    ch0 = (((rx - x) ** 2) * out).flatten(1).sum(1) / area
    r = {"progress": progress, "outside": ch / ch0.clamp_min(1e-12),
         "rmse": ((e - c) ** 2).flatten(1).mean(1).sqrt()}
    if oracle is not None:
        fc, fe, fr = (oracle.features(v) for v in (c, e, rx))
        r["oracle"] = (fe - fc).norm(dim=1) / (fr - fc).norm(dim=1).clamp_min(1e-12)
    return r


@torch.inference_mode()
def evaluate_edits(sampler, attributes: Mapping[str, object], settings: Mapping[str, dict], *,
                   n: int = 48, seed: int = 0, split: str = "test", oracle=None,
                   grid: str | None = None, grid_faces: int = 4, progress: bool = False
                   ) -> list:
    """Score each setting (``manipulate`` keyword arguments, e.g. ``{}`` for the defaults or
    ``{"method": "nvae"}``) on every attribute (name -> :class:`Attribute`) and direction.
    Returns rows ``{attribute, direction, setting, n, progress, outside, rmse[, oracle]}``
    (medians), with rows ``setting=CEILING`` (the counterfactual's reconstruction) as the
    ceiling.
    ``grid``: also write a picture (per attribute and direction, ``grid_faces`` faces: face,
    counterfactual, both reconstructions, each setting's edit)."""
    rows, pics, labels = [], [], []
    R = sampler.resolution
    cases = [(a, d) for a in attributes for d in DIRECTIONS]
    bar = None
    if progress:
        from tqdm.auto import tqdm   # optional: only for progress bars
        bar = tqdm(total=len(cases) * (len(settings) + 1), desc="eval-edits", unit="edit")
    for name, d in cases:
        attr = attributes[name]
        x, c = counterfactual_pairs(name, d, n, R, seed=seed, split=split)
        rx = sampler.decode(sampler.encode(x), mode="mode")
        rc = sampler.decode(sampler.encode(c), mode="mode")
        target = "typical" if d == "add" else attr.typical_logits[0]
        edits = {}
        for label, kw in settings.items():
            edits[label] = sampler.manipulate(x, attr, **{"target": target, "seed": seed,
                                                          "mode": "mode", **kw})
            if bar is not None:
                bar.update(1)
        for label, e in {CEILING: rc, **edits}.items():
            sc = edit_scores(x, c, e, rx, rc, oracle)
            rows.append({"attribute": name, "direction": d, "setting": label, "n": n,
                         **{k: float(v.median()) for k, v in sc.items()}})
        if bar is not None:
            bar.update(1)
        k = min(grid_faces, n)
        pics += [x[:k], c[:k], rx[:k], rc[:k]] + [e[:k] for e in edits.values()]
        labels += [f"{name} {d}", "true cf", "recon", "recon cf"] + list(edits)
    if bar is not None:
        bar.close()
    if grid:
        save_grid(torch.cat(pics), grid, nrow=min(grid_faces, n), labels=labels)
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows of :func:`evaluate_edits` as a Markdown table (progress / outside change /
    RMSE to the counterfactual [/ oracle distance])."""
    has_oracle = any("oracle" in r for r in rows)
    head = "| attribute | direction | setting | progress | outside change | RMSE to cf |"
    sep = "| --- | --- | --- | ---: | ---: | ---: |"
    if has_oracle:
        head += " oracle distance |"
        sep += " ---: |"
    out = [head, sep]
    for r in rows:
        line = (f"| {r['attribute']} | {r['direction']} | {r['setting']} | "
                f"{r['progress']:.2f} | {r['outside']:.2f}x | {r['rmse']:.3f} |")
        if has_oracle:
            o = r.get("oracle", math.nan)
            line += f" {o:.2f} |"
        out.append(line)
    return "\n".join(out)
