"""Few-shot attribute diagnostics on the built-in model (docs/quality/README.md):
what limits positive-only fits and conditional precision.

    python benchmarks/attr_diagnostics.py --oracle runs/oracle32v3.safetensors [--threads 2]

1. Positive-only vs labelled held-out balanced accuracy (as ``d2c-fast eval-attributes``
   computes it: TPR and TNR at probability 0.5 on encodings of 2,000 real test faces) over
   ``--draws`` draws shaped like eval-attributes: draw k takes val images [500k, 500k + 500)
   as the unlabelled set and the next positives / negatives after it (draw 0 is
   eval-attributes' own); also the PU fit's estimated rate against the data's.
2. The paper's rule's expected precision ``sum p y / sum p`` over ``--samples`` prior samples
   (the model's default sampling, 10 DDIM steps as eval-attributes, decoded with ``mode``,
   ``y`` the oracle's decision): no acceptance noise, so label draws and rules compare on
   the same samples. Rows: three 50 + 50 labelled fits (mirrored) with the data's rate as
   prior; the same re-based on the rate EM finds among the first half of the samples
   (``adapt_prior``, scored on the second half); a 1,000 + 1,000 fit (the classifier no
   longer limits); and for each attribute the split by the oracle's smiling decision.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from d2c_fast import Sampler
from d2c_fast.attributes import estimate_prior
from d2c_fast.data import ATTRIBUTES, FacesDataset
# the label picks and renders eval-attributes uses, so draw 0 is its own
from d2c_fast.eval.attributes_eval import _pick as pick, _render as render


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--attributes", default="blond_hair,red_lipstick,beard")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from d2c_fast.eval.oracle import Oracle
    t0 = time.perf_counter()
    s = Sampler(args.model)
    orc = Oracle.load(args.oracle)
    R = s.resolution
    val = FacesDataset(4000, resolution=R, seed=0, split="val")
    test = FacesDataset(4000, resolution=R, seed=0, split="test")
    yv, yt = val.all_labels(), test.all_labels()[:2000]
    rates = FacesDataset(4000, resolution=R, seed=0, split="train").all_labels().double().mean(0)

    xv = render(val, list(range(4000)))
    zv = s.encode(xv, batch_size=200)
    zt = s.encode(render(test, list(range(2000))), batch_size=200)
    print(f"encoded 4,000 val and 2,000 test faces in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    def fit_labelled(pos, neg, prior):
        # images, so fit_attribute mirrors them as it does by default
        return s.fit_attribute(xv[pos], xv[neg], prior=prior, seed=0, batch_size=200)

    def bacc(at, a):
        p = at.probability(zt)
        return 0.5 * (float((p[yt[:, a] == 1] > 0.5).double().mean())
                      + float((p[yt[:, a] == 0] <= 0.5).double().mean()))

    out = {"model": args.model, "pu_vs_labelled": {}, "precision": {}}
    names = args.attributes.split(",")
    # ---- 1. positive-only vs labelled
    for name in names:
        a = ATTRIBUTES.index(name)
        rows = []
        for k in range(args.draws):
            u = list(range(500 * k, 500 * k + 500))
            st = (500 * k + 500) % 4000
            lab = fit_labelled(pick(yv, a, 1, 50, st), pick(yv, a, 0, 50, st), float(rates[a]))
            pos = [i for i in pick(yv, a, 1, 120, st) if i not in set(u)][:100]
            pu = s.fit_attribute(zv[pos], unlabelled=zv[u], seed=0)
            rows.append({"labelled": round(bacc(lab, a), 4), "positive_only": round(bacc(pu, a), 4),
                         "pu_prior": round(pu.classifier.prior, 3),
                         "data_rate": round(float(yv[u, a].double().mean()), 3)})
        gaps = [r["labelled"] - r["positive_only"] for r in rows]
        out["pu_vs_labelled"][name] = {"draws": rows, "max_gap": round(max(gaps), 4),
                                       "mean_gap": round(sum(gaps) / len(gaps), 4)}
        print(name, "labelled / positive-only held-out balanced accuracy:",
              " ".join(f"{r['labelled']:.3f}/{r['positive_only']:.3f}" for r in rows),
              f"(max gap {max(gaps):.3f}); PU rates", [r["pu_prior"] for r in rows], flush=True)
    # ---- 2. the paper's rule's expected precision on the same prior samples
    t = time.perf_counter()
    zs, ys = [], []
    for i in range(0, args.samples, 100):
        z = s.sample_latents(min(100, args.samples - i), skip=100, seed=10_000_000 + i)
        zs.append(z)
        ys.append((orc.predict(s.decode(z, mode="mode")) > 0.5).double())
    z, y = torch.cat(zs), torch.cat(ys)
    half = z.shape[0] // 2
    print(f"{z.shape[0]} prior samples decoded and judged in {time.perf_counter() - t:.0f} s; "
          f"oracle rates " + ", ".join(f"{n} {float(y[:, ATTRIBUTES.index(n)].mean()):.3f}"
                                       for n in names), flush=True)
    smile = ATTRIBUTES.index("smiling")

    def prec(at, a, rows=slice(None)):
        p = at.probability(z[rows]).double()
        return round(float((p * y[rows, a]).sum() / p.sum()), 4)

    for name in names:
        a = ATTRIBUTES.index(name)
        r = {"draws": []}
        for st in (500, 1500, 2500):
            at = fit_labelled(pick(yv, a, 1, 50, st), pick(yv, a, 0, 50, st), float(rates[a]))
            em = estimate_prior(at, z[:half])
            r["draws"].append({"start": st, "paper": prec(at, a, slice(half, None)),
                               "adapted": prec(at.with_prior(em), a, slice(half, None)),
                               "em_rate": round(em, 3)})
        big = fit_labelled(pick(yv, a, 1, 1000), pick(yv, a, 0, 1000), float(rates[a]))
        r["labels_2000"] = prec(big, a, slice(half, None))
        r["by_smiling"] = {}
        for sm in (0, 1):
            keep = torch.nonzero(y[half:, smile] == sm).flatten() + half
            r["by_smiling"][f"smiling={sm}"] = {"n": int(keep.numel()),
                                                 "labels_2000": prec(big, a, keep)}
        r["oracle_rate"] = round(float(y[half:, a].mean()), 3)
        out["precision"][name] = r
        print(name, "expected precision on the second half, paper -> adapted:",
              " ".join(f"{d['paper']:.3f}->{d['adapted']:.3f} (EM {d['em_rate']:.3f})"
                       for d in r["draws"]),
              f"| 2,000 labels {r['labels_2000']:.3f} (not smiling "
              f"{r['by_smiling']['smiling=0']['labels_2000']:.3f}, smiling "
              f"{r['by_smiling']['smiling=1']['labels_2000']:.3f})", flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"done in {out['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
