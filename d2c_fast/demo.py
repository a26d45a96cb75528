"""The demo behind the README's first command.

With the built-in model (``d2c_fast/assets/builtin.safetensors``) it shows real faces. Until
that model ships, it runs the same pipeline on a randomly initialised 64x64 model, so the
pictures are noise-like: it proves the pipeline and reports its speed, nothing more.
"""
from __future__ import annotations

import os
import time

import torch


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


def run_demo(output: str = "demo.png", *, device: str = "cpu", impl: str = "fast") -> int:
    from .attributes import Attribute
    from .images import save_grid
    from .sampler import _BUILTIN, Sampler

    t_load = time.perf_counter()
    if os.path.exists(_BUILTIN):
        s = Sampler("builtin", device=device, impl=impl)
        note = "built-in model"
    else:
        from .models.random_init import random_model
        cfg = os.path.join(os.path.dirname(__file__), "configs", "tiny64.json")
        s = Sampler(random_model(cfg, seed=0), device=device, impl=impl)
        note = ("RANDOMLY INITIALISED 64x64 model (the built-in trained model is not shipped "
                "yet): images are not meaningful; this run shows the pipeline and its speed")
    t_load = time.perf_counter() - t_load
    n = 4
    x = example_images(n, s.resolution)
    g = torch.Generator().manual_seed(1)
    attr = Attribute(torch.randn(s.latent_shape, generator=g), name="random-direction")

    with torch.inference_mode():
        z = s.encode(x)
        recon = s.decode(z, mode="mode")
        s.manipulate(x[:1], attr, step=1.0, seed=0)  # warm-up
        t = time.perf_counter()
        edits = s.manipulate(x, attr, step=1.5, seed=0, mode="mode")
        t_edit = (time.perf_counter() - t) / n
        samples = s.sample(n, skip=100, seed=0, mode="mode")
    save_grid([x, recon, edits, samples], output,
              labels=["input", "recon", "edit", "sample"])
    print(f"d2c_fast demo ({note})")
    print(f"  model load {t_load:.2f} s, impl={impl}, device={device}")
    print(f"  W-edit (encode + 2 U-Net calls + decode): {t_edit * 1000:.1f} ms per image "
          f"at batch {n}")
    print(f"  wrote {os.path.abspath(output)}")
    return 0
