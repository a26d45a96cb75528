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

Beside the ceiling, each table has the row **counterfactual in another face's style**: the
reconstruction of the face drawn with the attribute switched in the style of the next face
of the stream (``render_face(..., style_from=)``: another frame, tint, beard style, shade of
blond, ...). A face without eyeglasses does not show which glasses it would wear, so no edit
can know; this row is what a perfect edit that draws a plausible style other than the
face's own scores (where the style is all visible, e.g. removing lipstick, it scores as the
ceiling).

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
OTHER_STYLE = "counterfactual in another face's style"   # a perfect but style-blind edit

__all__ = ["PIXEL_TAU", "DIRECTIONS", "CEILING", "OTHER_STYLE", "counterfactual_pairs",
           "restyled_counterfactuals", "edit_scores", "evaluate_edits", "markdown_table"]


def _faces(attribute: str, direction: str, n: int, seed: int, split: str) -> list:
    """The indices of the first ``n`` faces of ``(seed, split)`` to edit."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    has = direction == "remove"
    out, i = [], 0
    while len(out) < n:
        if labels_only(seed, i, split)[attribute] == has:
            out.append(i)
        i += 1
        if i > 100 * n + 1000:
            raise ValueError(f"too few faces {'with' if has else 'without'} {attribute}")
    return out


def counterfactual_pairs(attribute: str, direction: str, n: int, resolution: int, *,
                         seed: int = 0, split: str = "test"):
    """The first ``n`` faces of ``(seed, split)`` that lack (``"add"``) or have
    (``"remove"``) ``attribute``, and their true counterfactuals: two ``(n, 3, R, R)``
    tensors in [0, 1]."""
    idx = _faces(attribute, direction, n, seed, split)
    force = {attribute: direction == "add"}
    xs = [render_face(seed, i, resolution, split=split)[0] for i in idx]
    cs = [render_face(seed, i, resolution, split=split, force=force)[0] for i in idx]
    return torch.stack(xs), torch.stack(cs)


def restyled_counterfactuals(attribute: str, direction: str, n: int, resolution: int, *,
                             seed: int = 0, split: str = "test") -> torch.Tensor:
    """The counterfactuals of :func:`counterfactual_pairs`' faces with the attribute drawn in
    the style of the next face of the stream (face ``i`` in face ``i + 1``'s: module
    docstring), ``(n, 3, R, R)``."""
    force = {attribute: direction == "add"}
    return torch.stack([render_face(seed, i, resolution, split=split, force=force,
                                    style_from=i + 1)[0]
                        for i in _faces(attribute, direction, n, seed, split)])


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
    ceiling and ``setting=OTHER_STYLE`` (the reconstruction of the counterfactual in another
    face's style: what a perfect edit that cannot see the face's own style scores).
    ``grid``: also write a picture (per attribute and direction, ``grid_faces`` faces: face,
    counterfactual, the counterfactual in another style, both reconstructions, each
    setting's edit)."""
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
        c2 = restyled_counterfactuals(name, d, n, R, seed=seed, split=split)
        rc2 = sampler.decode(sampler.encode(c2), mode="mode")
        target = "typical" if d == "add" else attr.typical_logits[0]
        edits = {}
        for label, kw in settings.items():
            edits[label] = sampler.manipulate(x, attr, **{"target": target, "seed": seed,
                                                          "mode": "mode", **kw})
            if bar is not None:
                bar.update(1)
        for label, e in {CEILING: rc, OTHER_STYLE: rc2, **edits}.items():
            sc = edit_scores(x, c, e, rx, rc, oracle)
            rows.append({"attribute": name, "direction": d, "setting": label, "n": n,
                         **{k: float(v.median()) for k, v in sc.items()}})
        if bar is not None:
            bar.update(1)
        k = min(grid_faces, n)
        pics += [x[:k], c[:k], c2[:k], rx[:k], rc[:k]] + [e[:k] for e in edits.values()]
        labels += [f"{name} {d}", "true cf", "cf, other style", "recon", "recon cf"] \
            + list(edits)
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
