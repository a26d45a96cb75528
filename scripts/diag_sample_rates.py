"""Where does an attribute get lost between the data and the prior's samples? (built-in faces)

    python scripts/diag_sample_rates.py runs/builtin6b/model.safetensors \
        --oracle runs/oracle32v2.safetensors [--n 1000] [--eta 0] [--inflate 1.0,1.05,1.1] \
        [--renoise 100,200,400,600,800]

Per attribute, rates of:
  data      the oracle on rendered training faces (ground truth is within its 0.4% error)
  recon     the oracle on their deterministic reconstructions (what the autoencoder keeps)
  samples   the oracle on decoded prior samples (DDIM, 50 steps), as `d2c-fast evaluate`
  probe     a linear probe fitted on many real latents (standardised), applied to the real and
            to the sampled latents: whether the prior's latents carry the attribute at all,
            and how wide its score spreads on samples relative to real latents (spread < 1:
            the samples carry a weakened version of the attribute)
and the sampled latents' standard deviation relative to the data's (under-dispersion), then
the oracle rates of samples whose standardised latents are scaled by each `--inflate` factor,
and (`--renoise T1,T2,...`) the rates after the real latents are noised to each t and brought
back by the prior (DDIM every 20 steps): a perfect prior keeps the data's rates from any t,
so the first t that loses an attribute says at which noise level the prior decides it.
A diagnostic for the lipstick analysis in docs/quality/README.md, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse

import torch


def probe(x, y, l2=2e-3):
    """L2 logistic regression on rows of x -> (w, b): d2c_fast.attributes' own fitter
    (float64 L-BFGS, mean BCE + l2 / 2 |w|^2), unweighted."""
    from d2c_fast.attributes import fit_lr as _fit_lr
    w, b = _fit_lr(x.double(), y.double(), l2, torch.ones(y.shape[0], dtype=torch.float64))
    return w.float(), b


def main(argv=None):
    from d2c_fast import Sampler
    from d2c_fast.edit import apply_delta
    from d2c_fast.data import ATTRIBUTES, FacesDataset
    from d2c_fast.eval.oracle import Oracle
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--n", type=int, default=1000, help="samples (and 3x as many real faces)")
    ap.add_argument("--eta", type=float, default=0.0)
    ap.add_argument("--inflate", default="1.0,1.05,1.1")
    ap.add_argument("--renoise", default="", help="e.g. 100,200,400,600,800")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s, orc = Sampler(args.model), Oracle.load(args.oracle)
    n_real = 3 * args.n
    ds = FacesDataset(n_real, resolution=s.resolution, seed=0, split="train")
    x = torch.stack([ds[i][0] for i in range(n_real)])
    y = torch.stack([ds[i][1] for i in range(n_real)]).float()
    bs = 250

    def rates(zz):
        """Oracle positive rates of the deterministic decodings of raw latents ``zz``."""
        img = torch.cat([s.decode(zz[i:i + bs], mode="mode") for i in range(0, len(zz), bs)])
        return (orc.predict(img) > 0.5).float().mean(0)

    with torch.inference_mode():
        z = torch.cat([s.encode(x[i:i + bs]) for i in range(0, n_real, bs)])
        zs = torch.cat([s.sample_latents(min(bs, args.n - i), steps=50, seed=i, eta=args.eta)
                        for i in range(0, args.n, bs)])
        r_rec, r_smp = rates(z[:args.n]), rates(zs)
    zr, zq = z.flatten(1).clone(), zs.flatten(1).clone()
    mu, sd = zr.mean(0), zr.std(0) + 1e-6
    xr, xq = (zr - mu) / sd, (zq - mu) / sd
    r_data = (orc.predict(x[:args.n]) > 0.5).float().mean(0)
    ntr = n_real - args.n // 2
    print(f"{'attribute':14s} {'data':>6s} {'recon':>6s} {'samples':>8s} {'probe acc':>9s} "
          f"{'probe real':>10s} {'probe smp':>9s} {'spread smp/real':>15s}")
    for a, name in enumerate(ATTRIBUTES):
        w, b = probe(xr[:ntr], y[:ntr, a])
        acc = float(((xr[ntr:] @ w + b > 0).float() == y[ntr:, a]).float().mean())
        sr, sq = xr @ w + b, xq @ w + b
        pr, pq = float((sr > 0).float().mean()), float((sq > 0).float().mean())
        print(f"{name:14s} {r_data[a]:6.3f} {r_rec[a]:6.3f} {r_smp[a]:8.3f} {acc:9.3f} "
              f"{pr:10.3f} {pq:9.3f} {float(sq.std() / sr.std()):15.3f}")
    print(f"sampled / real latent std: {float(zq.std(0).mean() / zr.std(0).mean()):.3f}")
    with torch.inference_mode():
        for k in (float(v) for v in args.inflate.split(",")):
            r = rates(s.unstandardise(s.standardise(zs) * k))
            print(f"samples, standardised latents x {k:g}: " + ", ".join(
                f"{n} {float(v):.3f}" for n, v in zip(ATTRIBUTES, r)))
        # the d2c edit's clean-up with a zero step: noise to t0, DDIM back every 20 steps
        g = torch.Generator().manual_seed(0)
        for t0 in (int(v) for v in args.renoise.split(",") if v.strip()):
            zn = z[:args.n]
            eps = torch.randn(zn.shape, generator=g)
            z0 = torch.cat([apply_delta(s, zn[i:i + bs], 0.0, method="d2c", t0=t0, skip=20,
                                        eps=eps[i:i + bs]) for i in range(0, args.n, bs)])
            r = rates(z0)
            print(f"real latents noised to t={t0 - t0 % 20}, denoised by the prior: " + ", ".join(
                f"{n} {float(v):.3f}" for n, v in zip(ATTRIBUTES, r)))


if __name__ == "__main__":
    main()
