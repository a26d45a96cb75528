"""The issue's quality targets for a trained model on the built-in faces, with the oracle:

* reconstruction PSNR (deterministic decode, ``mode``) on held-out images;
* latent linear probe: logistic regression on raw latents of ``n_probe`` labelled held-out
  images (L2 chosen by cross-validation on them), accuracy on other held-out images;
* unconditional samples: oracle attribute rates vs the data's, FD_oracle(samples, data) and,
  as the reference, FD_oracle(held-out data, data).
"""
from __future__ import annotations

import time

import torch

from ..data import ATTRIBUTES, FacesDataset
from ..sampler import Sampler
from .fid import frechet_distance
from .metrics import probe_l2_select, reconstruction_psnr, wilson_interval
from .oracle import Oracle


def _render(ds, n):
    xs, ys = zip(*(ds[i] for i in range(n)))
    return torch.stack(xs), torch.stack(ys).float()


def evaluate(model_path, oracle_path, *, n_heldout: int = 1000, n_probe: int = 100,
             n_samples: int = 1000, n_data: int = 2000, sample_steps: int = 50,
             seed: int = 0, data_seed: int = 0, batch_size: int = 100,
             eps_scale: float = 1.0, guidance: float | None = None,
             guidance_rescale: float | None = None, guidance_rescale_t=None) -> dict:
    t0 = time.perf_counter()
    s = Sampler(model_path)
    oracle = Oracle.load(oracle_path)
    R = s.resolution
    held_x, held_y = _render(FacesDataset(n_heldout, resolution=R, seed=data_seed,
                                          split="test"), n_heldout)
    data_x, data_y = _render(FacesDataset(n_data, resolution=R, seed=data_seed,
                                          split="train"), n_data)
    guidance = s.resolve_guidance(guidance)
    if guidance_rescale is not None:   # phi with its timestep range (None: all)
        s.set_guidance_rescale(guidance_rescale, guidance_rescale_t)
    res = {"model": str(model_path), "resolution": R, "eps_scale": eps_scale,
           **s.sampling_record(guidance)}
    res["psnr_db"] = reconstruction_psnr(s, held_x, batch_size)
    z = torch.cat([s.encode(held_x[i:i + batch_size]) for i in range(0, n_heldout, batch_size)])
    z = z.flatten(1)
    probe = {}
    for a, name in enumerate(ATTRIBUTES):
        acc, l2 = probe_l2_select(z[:n_probe], held_y[:n_probe, a], z[n_probe:],
                                  held_y[n_probe:, a])
        probe[name] = {"accuracy": acc, "majority": float(max(held_y[n_probe:, a].mean(),
                                                              1 - held_y[n_probe:, a].mean())),
                       "l2": l2}
    res["probe"] = probe
    samples = torch.cat([s.sample(min(batch_size, n_samples - i), steps=sample_steps,
                                  seed=seed + i, mode="mode", eps_scale=eps_scale,
                                  guidance=guidance)
                         for i in range(0, n_samples, batch_size)])
    p_s = oracle.predict(samples)
    hits = (p_s > 0.5).sum(0)
    rates_s = hits.float() / p_s.shape[0]
    rates_d = data_y.mean(0)
    # samples_ci95: the sampled rate's 95% (Wilson) interval, the noise of n_samples draws
    res["sample_rates"] = {n: {"samples": float(rates_s[i]), "data": float(rates_d[i]),
                               "diff_points": float(100 * (rates_s[i] - rates_d[i])),
                               "samples_ci95": wilson_interval(int(hits[i]), p_s.shape[0])}
                           for i, n in enumerate(ATTRIBUTES)}
    f_data = oracle.features(data_x)
    res["fd_oracle_samples_vs_data"] = frechet_distance(oracle.features(samples), f_data)
    res["fd_oracle_heldout_vs_data"] = frechet_distance(oracle.features(held_x), f_data)
    res["oracle_heldout_accuracy"] = oracle.metrics.get("heldout_accuracy")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res
