"""The counterfactual edit evaluation over several runs: other held-out faces and other label
draws, so that the edit's numbers are not those of one sample.

    python scripts/edit_runs.py [--oracle ORACLE] [--runs 0,1,2,3,4] [--faces 48]

Run ``k`` scores the held-out faces of face seed ``k`` (``evaluate_edits(..., seed=k)``, the
default edit and ``method="nvae"``). Runs 0-2 use the shipped attributes (the first 50 + 50
labelled faces of the val split); run ``k >= 3`` refits the five attributes on the
``k - 2``-th next 50 + 50 (the 50 + 50 after the shipped ones, then the 50 + 50 after those).
One line per run: min / mean over the ten cells of the median progress, max / mean of the
median outside change, the cells with outside change <= 1.5x and with progress >= 0.8, the
cells where the default is ahead of ``nvae`` on both numbers, the worst outside change of the
reconstructions of the true counterfactual and of the counterfactual in another face's style
(the references of :mod:`d2c_fast.eval.counterfactual`), and (with an oracle) the mean oracle
distance. The built-in model card and docs/quality/log-2026-12-07.md report these lines.
"""
import argparse

import torch

from d2c_fast import Sampler
from d2c_fast.data.faces import ATTRIBUTES, FacesDataset
from d2c_fast.demo import builtin_attributes
from d2c_fast.eval import Oracle
from d2c_fast.eval.counterfactual import CEILING, OTHER_STYLE, evaluate_edits


def label_draw(s, ds, labels, name, j):
    """The attribute refitted on the ``j``-th 50 + 50 labelled faces (``j = 0``: the shipped
    attribute's)."""
    i = ATTRIBUTES.index(name)
    pos = [k for k in range(len(ds)) if labels[k, i] > 0.5][50 * j:50 * j + 50]
    neg = [k for k in range(len(ds)) if labels[k, i] < 0.5][50 * j:50 * j + 50]
    return s.fit_attribute(torch.stack([ds[k][0] for k in pos]),
                           torch.stack([ds[k][0] for k in neg]), name=name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oracle", help="an oracle file (d2c-fast train-oracle): adds the "
                                     "oracle distance")
    ap.add_argument("--runs", default="0,1,2,3,4")
    ap.add_argument("--faces", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = Sampler("builtin")
    orc = Oracle.load(args.oracle) if args.oracle else None
    ds = FacesDataset(4000, resolution=s.resolution, seed=0, split="val")
    labels = ds.all_labels()
    for k in (int(v) for v in args.runs.split(",")):
        attrs = (builtin_attributes(s) if k < 3
                 else {n: label_draw(s, ds, labels, n, k - 2) for n in ATTRIBUTES})
        rows = evaluate_edits(s, attrs, {"default": {}, "nvae": {"method": "nvae"}},
                              n=args.faces, seed=k, oracle=orc)
        d = {(r["attribute"], r["direction"]): r for r in rows if r["setting"] == "default"}
        nv = {(r["attribute"], r["direction"]): r for r in rows if r["setting"] == "nvae"}
        p = [r["progress"] for r in d.values()]
        o = [r["outside"] for r in d.values()]
        ahead = sum(d[c]["progress"] >= nv[c]["progress"] and d[c]["outside"] <= nv[c]["outside"]
                    for c in d)
        worst = max(d, key=lambda c: d[c]["outside"])
        line = (f"run {k}: progress {min(p):.2f} / {sum(p) / len(p):.2f}, outside "
                f"{max(o):.2f} / {sum(o) / len(o):.2f} (worst: {' '.join(worst)}), "
                f"{sum(v <= 1.5 for v in o)} cells <= 1.5x, {sum(v >= 0.8 for v in p)} cells with "
                f"progress >= 0.8, ahead of nvae in {ahead}")
        for label, ref in (("true cf", CEILING), ("other style", OTHER_STYLE)):
            rr = {(r["attribute"], r["direction"]): r["outside"] for r in rows
                  if r["setting"] == ref}
            c = max(rr, key=rr.get)
            line += f"; {label} recon worst outside {rr[c]:.2f} ({' '.join(c)})"
        if orc is not None:
            line += f", oracle distance {sum(r['oracle'] for r in d.values()) / len(d):.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
