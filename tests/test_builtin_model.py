"""The shipped built-in model (d2c_fast/assets/builtin.safetensors): loads by name, its prior
samples latents with the data's statistics (the first built-in model's U-Net could not, see
docs/quality/README.md), and its edit path runs. Its quality is measured there with the oracle."""
from __future__ import annotations

import torch

from d2c_fast import Sampler
from d2c_fast.eval.metrics import rel_error


def test_builtin_loads_with_the_fixed_unet_layout():
    s = Sampler("builtin")
    u = s.config.unet
    assert s.resolution == 32 and u.norm_groups == 8 and u.prediction == "v"


def test_builtin_prior_samples_standardised_latents_of_unit_scale():
    """Standardised sampled latents must look like the data (mean 0, std 1 per channel, and
    per-image channel means of the data's spread ~0.6); the broken prior gave std ~9.5."""
    torch.manual_seed(0)
    s = Sampler("builtin")
    z = s.sample_latents(32, steps=20, seed=0)
    x = (z - s.mean) / s.std
    std = x.std(dim=(0, 2, 3))
    assert ((std > 0.6) & (std < 1.4)).all(), std
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.4
    assert x.mean(dim=(2, 3)).std(dim=0).max() < 1.2


def test_builtin_fast_and_ref_agree_and_edit_runs():
    ref, fast = Sampler("builtin", impl="ref"), Sampler("builtin", impl="fast")
    z = ref.sample_latents(2, steps=10, seed=1)
    zf = fast.sample_latents(2, steps=10, seed=1)
    assert rel_error(zf, z) < 1e-4
    imgs = fast.decode(z, mode="mode")
    out = fast.manipulate(imgs, torch.randn(fast.latent_shape), step=0.5, seed=0)
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1


def test_demo_command_writes_the_grid_and_reports_edit_time(tmp_path, capsys):
    """The README's first command (``d2c-fast demo``) on the built-in model: a PNG with one
    row per stage (input, recon, one edit per built-in attribute, samples) and a timing line."""
    from PIL import Image

    from d2c_fast.cli import main
    from d2c_fast.data.faces import ATTRIBUTES

    out = tmp_path / "demo.png"
    threads = torch.get_num_threads()
    try:
        assert main(["demo", "-o", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole process
    text = capsys.readouterr().out
    assert "built-in model" in text and "ms per image" in text
    w, h = Image.open(out).size
    rows = 2 + len(ATTRIBUTES) + 1
    assert h >= rows * 32 and w >= 6 * 32


def test_threads_option_rejects_values_below_one(tmp_path, capsys):
    """Every subcommand's --threads goes through cli.apply_threads: a clear error, no output."""
    from d2c_fast.cli import main
    assert main(["demo", "-o", str(tmp_path / "x.png"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    for cmd in (["evaluate", "builtin", "--oracle", str(tmp_path / "none")],
                ["eval-attributes", "builtin", "--oracle", str(tmp_path / "none"),
                 "-o", str(tmp_path / "ev")]):
        assert main(cmd + ["--threads", "-1"]) == 2
        assert "--threads must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_builtin_samples_with_its_guide_prior_by_default():
    """The built-in model carries a guide prior (autoguidance, weight 2.75, guidance rescale 1
    at t in [200, 999]; docs/quality/README.md): default sampling uses it, ``guidance=1`` is the prior alone, and
    fast and ref agree on both."""
    ref, fast = Sampler("builtin", impl="ref"), Sampler("builtin", impl="fast")
    assert fast.guidance == 2.75 and fast.guide_model is not None
    assert (fast.guidance_rescale, fast.guidance_rescale_t) == (1.0, (200, 999))
    assert fast.config.guide.ch < fast.config.unet.ch
    for w in (None, 1.0):
        z = ref.sample_latents(2, steps=8, seed=3, guidance=w)
        zf = fast.sample_latents(2, steps=8, seed=3, guidance=w)
        assert rel_error(zf, z) < 1e-4, w
    a = fast.sample_latents(2, steps=8, seed=3)
    b = fast.sample_latents(2, steps=8, seed=3, guidance=1.0)
    assert rel_error(a, b) > 1e-3


def test_info_reports_the_guide_prior(capsys):
    from d2c_fast.cli import main
    assert main(["info", "builtin"]) == 0
    out = capsys.readouterr().out
    assert "guide prior (autoguidance): U-Net ch 16" in out and "default guidance 2.75" in out
    assert "guidance rescale 1 at t in [200, 999]" in out
    # its prior was trained on per-position standardised latents (tenth version)
    assert "latent standardisation: per position (1, 4, 16, 16)" in out
