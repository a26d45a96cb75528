"""Conditional generation's two acceptance rules on the built-in model, judged by the oracle
(an independent classifier trained on ground-truth labels, d2c-fast train-oracle):
precision (the oracle's rate of the attribute among the accepted samples) and FD_oracle to
real test faces that have the attribute (fidelity to the class).

    python scripts/compare_conditional_rules.py ORACLE [--n 200] [--threads 2]

Rules: the library's default (every probability >= 0.9) and the paper's (accept with the
probability). Attributes: the shipped blond_hair, red_lipstick and beard (100 labels each).
"""
import argparse
import time

import torch

from d2c_fast import Sampler
from d2c_fast.conditional import DEFAULT_THRESHOLD, PAPER_RULE
from d2c_fast.data.faces import ATTRIBUTES, FacesDataset
from d2c_fast.eval import Oracle
from d2c_fast.eval.fid import frechet_distance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("oracle")
    ap.add_argument("--n", type=int, default=200, help="accepted samples per rule")
    ap.add_argument("--n-real", type=int, default=600, help="real faces of the class")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = Sampler("builtin")
    o = Oracle.load(args.oracle)
    ds = FacesDataset(20 * args.n_real, resolution=s.resolution, seed=0, split="test")
    labels = ds.all_labels()
    print("| attribute | rule | precision | FD_oracle to the class | seconds |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in ("blond_hair", "red_lipstick", "beard"):
        i = ATTRIBUTES.index(name)
        idx = [j for j in range(len(ds)) if labels[j, i] > 0.5][:args.n_real]
        real = o.features(torch.stack([ds[j][0] for j in idx]))
        for rule in (DEFAULT_THRESHOLD, PAPER_RULE):
            t = time.perf_counter()
            imgs = s.sample_conditional(name, args.n, seed=0, threshold=rule, mode="mode",
                                        return_probs=False)
            precision = float((o.predict(imgs)[:, i] > 0.5).float().mean())
            fd = frechet_distance(o.features(imgs), real)
            label = "p >= 0.9 (default)" if rule == DEFAULT_THRESHOLD else "paper's"
            print(f"| {name} | {label} | {precision:.3f} | {fd:.2f} | "
                  f"{time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
