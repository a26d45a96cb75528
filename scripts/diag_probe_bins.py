"""At equal linear-probe score, do the prior's samples show an attribute as often as real
faces do? (built-in faces)

    python scripts/diag_probe_bins.py MODEL --oracle ORACLE [--attributes smiling red_lipstick]
        [--n 1000] [--grid smile_look.png] [--threads 1]

A probe (L2 logistic regression on standardised latents, 2,000 labelled training faces) scores
``n`` held-out real latents and ``n`` prior samples (DDIM, 50 steps, the model's default
guidance, as ``d2c-fast evaluate``); per score bin, the oracle's positive rate on the decoded
real latents and on the decoded samples. Equal rates: the prior draws the attribute as the
data has it, only perhaps in other proportions; lower rates for samples at the same score:
the samples carry the attribute's linear signature without what the oracle (and the eye)
needs. ``--grid``: a PNG of the first attribute: real positives, samples with probe > 3 that
the oracle calls positive, samples with probe > 3 it calls negative, samples with probe < -3
(3x nearest). A diagnostic for docs/quality/README.md, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diag_sample_rates import probe  # noqa: E402

EDGES = (-99, -6, -3, -1, 0, 1, 3, 6, 99)


def main(argv=None):
    from d2c_fast import Sampler
    from d2c_fast.data import ATTRIBUTES, FacesDataset
    from d2c_fast.eval.oracle import Oracle
    from d2c_fast.images import save_grid
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--attributes", nargs="+", default=["smiling", "red_lipstick"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--grid", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s, orc = Sampler(args.model), Oracle.load(args.oracle)
    n_fit, n, bs = 2000, args.n, 250
    ds = FacesDataset(n_fit + n, resolution=s.resolution, seed=0, split="train")
    x = torch.stack([ds[i][0] for i in range(n_fit + n)])
    y = torch.stack([ds[i][1] for i in range(n_fit + n)]).float()

    def decode(zz):
        return torch.cat([s.decode(zz[i:i + bs], mode="mode") for i in range(0, len(zz), bs)])

    with torch.inference_mode():
        z = torch.cat([s.encode(x[i:i + bs]) for i in range(0, len(x), bs)])
        zs = torch.cat([s.sample_latents(min(bs, n - i), steps=50, seed=i)
                        for i in range(0, n, bs)])
        img_r, img_s = decode(z[n_fit:]), decode(zs)
    p_r, p_s = orc.predict(img_r), orc.predict(img_s)
    xr, xs = s.standardise(z).flatten(1), s.standardise(zs).flatten(1)
    for k, name in enumerate(args.attributes):
        a = ATTRIBUTES.index(name)
        w, b = probe(xr[:n_fit], y[:n_fit, a])
        sr, ss = xr[n_fit:] @ w + b, xs @ w + b
        print(f"{name}: probe > 0 on real {float((sr > 0).float().mean()):.3f}, on samples "
              f"{float((ss > 0).float().mean()):.3f}; oracle on real {float((p_r[:, a] > .5).float().mean()):.3f}, "
              f"on samples {float((p_s[:, a] > .5).float().mean()):.3f}")
        print(f"  {'score bin':>12s} {'real n':>7s} {'oracle+':>8s} {'samples n':>10s} {'oracle+':>8s}")
        for lo, hi in zip(EDGES[:-1], EDGES[1:]):
            mr, ms = (sr >= lo) & (sr < hi), (ss >= lo) & (ss < hi)
            fr = f"{float((p_r[mr, a] > .5).float().mean()):.2f}" if mr.any() else "-"
            fs = f"{float((p_s[ms, a] > .5).float().mean()):.2f}" if ms.any() else "-"
            print(f"  {f'[{lo}, {hi})':>12s} {int(mr.sum()):7d} {fr:>8s} {int(ms.sum()):10d} {fs:>8s}")
        if k == 0 and args.grid:
            up = lambda t: torch.nn.functional.interpolate(t, scale_factor=3, mode="nearest")
            rows = [x[n_fit:][y[n_fit:, a] > .5][:8], img_s[(ss > 3) & (p_s[:, a] > .5)][:8],
                    img_s[(ss > 3) & (p_s[:, a] <= .5)][:8], img_s[ss < -3][:8]]
            labels = [f"real {name}", "samples: probe > 3, oracle +", "samples: probe > 3, oracle -",
                      "samples: probe < -3"]
            keep = [(r, l) for r, l in zip(rows, labels) if len(r)]
            print("grid:", save_grid([up(r) for r, _ in keep], args.grid, labels=[l for _, l in keep]))


if __name__ == "__main__":
    main()
