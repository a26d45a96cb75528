"""How large is each attribute in a model's latent, and how much of it does the decoder need?

    python scripts/diag_attribute_size.py builtin --oracle runs/oracle32v3.safetensors [--n 120]

For ``--n`` held-out built-in faces, each rendered twice with only one attribute switched
(``render_face(..., force={attr: True / False})``, the same identity, pose and lighting),
per attribute:
  |dz|        mean L2 norm of the difference of the two standardised latents (``(z - mean) / std``
              of the model), next to the mean distance between two different faces: how
              big a change the prior has to resolve for the attribute
  alpha rows  the oracle's positive rate on decodings (``mode``) of ``z_off + alpha * dz``:
              how much of the change the decoder needs before the oracle sees the attribute
              (a prior that shrinks the attribute's direction, e.g. by 0.7, loses it when
              the rate at alpha 0.75 is low)

This found the render-version-2 smile (|dz| 4.2 against 7-28 for the others, 57% at alpha
0.75) that the built-in model's prior could not keep; see docs/quality/README.md.
A diagnostic, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse

import torch

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main(argv=None):
    from d2c_fast import Sampler
    from d2c_fast.data.faces import ATTRIBUTES, render_face
    from d2c_fast.eval.oracle import Oracle
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="native .safetensors or 'builtin'")
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--n", type=int, default=120, help="held-out faces (test split, seed 0)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be >= 2")
    torch.set_num_threads(args.threads)
    s, orc = Sampler(args.model), Oracle.load(args.oracle)
    r = s.resolution
    print(f"{'attribute':13s} {'|dz|':>6s} {'pair':>6s}   oracle positive rate at alpha "
          + " ".join(f"{a:g}" for a in ALPHAS))
    for ai, name in enumerate(ATTRIBUTES):
        on = torch.stack([render_face(0, i, r, split="test", force={name: True})[0]
                          for i in range(args.n)])
        off = torch.stack([render_face(0, i, r, split="test", force={name: False})[0]
                           for i in range(args.n)])
        with torch.inference_mode():
            z_on = (s.encode(on) - s.mean) / s.std
            z_off = (s.encode(off) - s.mean) / s.std
            dz = z_on - z_off
            size = dz.flatten(1).norm(dim=1).mean()
            pair = (z_off - z_off.roll(1, 0)).flatten(1).norm(dim=1).mean()
            rates = []
            for a in ALPHAS:
                img = s.decode((z_off + a * dz) * s.std + s.mean, mode="mode")
                rates.append(float((orc.predict(img)[:, ai] > 0.5).float().mean()))
        print(f"{name:13s} {size:6.1f} {pair:6.1f}   " + " ".join(f"{v:.2f}" for v in rates),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
