"""The demo behind the README's first command.

With the built-in model (``d2c_fast/assets/builtin.safetensors``) it shows real faces. Until
that model ships, it runs the same pipeline on a randomly initialised 64x64 model, so the
pictures are noise-like: it proves the pipeline and reports its speed, nothing more.
"""
from __future__ import annotations

import os
import time

import torch

from .attributes import Attribute, builtin_attribute_path, resolve_attribute
from .checkpoint.random_init import random_model
from .data.faces import ATTRIBUTES, FacesDataset
from .diffusion import manip_sequence
from .edit import D2C_SKIP, D2C_T0, LOCAL_SKIP, LOCAL_T0
from .images import save_grid
from .runtime import BUILTIN_PATH
from .sampler import Sampler


def example_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Simple procedural pictures (coloured discs on gradients) in [0, 1], ``(n, 3, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        c0, c1, c2 = torch.rand(3, 3, generator=g)
        bg = c0[:, None, None] * (1 - yy) + c1[:, None, None] * yy
        cx, cy, r = (0.3 + 0.4 * torch.rand(3, generator=g)).tolist()
        disc = (((xx - cx) ** 2 + (yy - cy) ** 2) < (0.35 * r) ** 2).float()
        out.append(bg * (1 - disc) + c2[:, None, None] * disc)
    return torch.stack(out).clamp(0, 1)


def fit_builtin_attribute(s, name: str, n_fit: int = 100):
    """Fit built-in attribute ``name`` on the model ``s`` as a few-shot user would: the first
    ``n_fit // 2`` faces with it and ``n_fit // 2`` without it of the built-in dataset's
    ``val`` split (seed 0). ``scripts/fit_builtin_attributes.py`` ships these."""
    i = ATTRIBUTES.index(name)
    ds = FacesDataset(4000, resolution=s.resolution, seed=0, split="val")
    labels = ds.all_labels()
    pos = [j for j in range(len(ds)) if labels[j, i] > 0.5][:n_fit // 2]
    neg = [j for j in range(len(ds)) if labels[j, i] < 0.5][:n_fit // 2]
    return s.fit_attribute(torch.stack([ds[j][0] for j in pos]),
                           torch.stack([ds[j][0] for j in neg]), name=name)


def builtin_attributes(s, names=ATTRIBUTES, refit: bool = False) -> dict:
    """The built-in attributes ``names`` by name: the shipped files
    (``d2c_fast/assets/attributes``), or fitted now (a few seconds each) where a file is
    missing or with ``refit``."""
    out = {}
    for name in names:
        path = None if refit else builtin_attribute_path(name)
        out[name] = (resolve_attribute(path, s) if path is not None
                     else fit_builtin_attribute(s, name))
    return out


def run_demo(output: str = "demo.png", *, device: str = "cpu", impl: str = "fast") -> int:

    t_load = time.perf_counter()
    builtin = os.path.exists(BUILTIN_PATH)
    if builtin:
        s = Sampler("builtin", device=device, impl=impl)
        note = "built-in model (trained on the built-in procedural faces)"
    else:
        cfg = os.path.join(os.path.dirname(__file__), "configs", "tiny64.json")
        s = Sampler(random_model(cfg, seed=0), device=device, impl=impl)
        note = ("RANDOMLY INITIALISED 64x64 model (the built-in trained model is not shipped "
                "yet): images are not meaningful; this run shows the pipeline and its speed")
    t_load = time.perf_counter() - t_load
    n = 6
    rows, labels = [], []
    attrs = builtin_attributes(s) if builtin else None  # fitting needs autograd
    with torch.inference_mode():
        if builtin:
            ds = FacesDataset(n, resolution=s.resolution, seed=1, split="test")
            x = torch.stack([ds[i][0] for i in range(n)])
        else:
            x = example_images(n, s.resolution)
            g = torch.Generator().manual_seed(1)
            attrs = {"random-direction": Attribute(torch.randn(s.latent_shape, generator=g))}
        z = s.encode(x)
        rows += [x, s.decode(z, mode="mode")]
        labels += ["input", "recon"]
        first = next(iter(attrs.values()))
        # built-in: the library's default edit, manipulate(x, attr) as a user calls it
        # (method "local" to the typical logit); random model: an official-style raw step
        kw = (lambda a: {}) if builtin else (lambda a: {"step": 1.5})
        s.manipulate(x[:1], first, seed=0, **kw(first))  # warm-up
        t_edit, n_edit = 0.0, 0
        for name, a in attrs.items():
            t = time.perf_counter()
            rows.append(s.manipulate(x, a, seed=0, mode="mode", **kw(a)))
            t_edit += time.perf_counter() - t
            n_edit += n
            labels.append(f"+{name}")
        rows.append(s.sample(n, skip=100, seed=0, mode="mode"))
        labels.append("sample")
    save_grid(rows, output, labels=labels)
    print(f"d2c_fast demo ({note})")
    print(f"  model load {t_load:.2f} s, impl={impl}, device={device}, "
          f"resolution {s.resolution}")
    t0, skip = (LOCAL_T0, LOCAL_SKIP) if builtin else (D2C_T0, D2C_SKIP)
    steps = len(manip_sequence(t0, skip, s.num_timesteps))
    dec = ("2 decodes (the edit's and the paste's reference), the colour spread"
           if builtin else "decode")
    calls = f"{steps} U-Net calls + {dec}" if s.guidance == 1 else \
        f"{steps} U-Net + {steps} guide calls + {dec}; autoguidance {s.guidance:g}"
    how = (f"the default edit: to the typical logit, masked regeneration from t0 {t0}"
           if builtin else f"a raw step, t0 {t0}")
    print(f"  edits ({how}; encode + {calls}): {t_edit / n_edit * 1000:.1f} ms per image at "
          f"batch {n}")
    print(f"  wrote {os.path.abspath(output)}")
    return 0
