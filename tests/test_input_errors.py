"""User mistakes get a clear error of the library's family (not an internal one, and not a
silent wrong result): attribute files, devices, timesteps, fits on too little data."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from d2c_fast import Attribute, Sampler
from d2c_fast.errors import AttributeFileError


@pytest.fixture(scope="module")
def s():
    return Sampler("builtin")


def test_attribute_file_mistakes(s, tmp_path):
    good = tmp_path / "good.safetensors"
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(6, 3, 32, 32, generator=g), torch.rand(6, 3, 32, 32, generator=g) * 0.3
    a = s.fit_attribute(pos, neg, name="bright", folds=2)
    a.save(good)
    # atomic writes keep the permissions a plain open() would give (not mkstemp's 0o600)
    from d2c_fast.utils import file_mode
    assert os.stat(good).st_mode & 0o777 == file_mode()
    # metadata 'info' that is JSON but not an object
    from safetensors import safe_open
    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / "bad_info.safetensors"
    save_file(tensors, str(bad), metadata={**meta, "info": json.dumps([1, 2])})
    with pytest.raises(AttributeFileError, match="bad_info.safetensors: metadata 'info' must "
                                                 "be a JSON object"):
        Attribute.load(bad)
    # a prior that is not a number: the file is named
    info = json.loads(meta["info"])
    bad = tmp_path / "bad_prior.safetensors"
    save_file(tensors, str(bad), metadata={**meta, "info": json.dumps({**info, "prior": "abc"})})
    with pytest.raises(AttributeFileError, match="bad_prior.safetensors: "):
        Attribute.load(bad)
    # NaN weights: the file is named
    bad = tmp_path / "nan.safetensors"
    t = dict(tensors)
    t["direction"] = torch.full_like(t["direction"], float("nan"))
    save_file(t, str(bad), metadata=meta)
    with pytest.raises(AttributeFileError, match="nan.safetensors: .*NaN"):
        Attribute.load(bad)
    # a model file given as an attribute, a directory, an all-zero boundary
    with pytest.raises(AttributeFileError, match="model file, not an attribute"):
        Attribute.load("d2c_fast/assets/builtin.safetensors")
    (tmp_path / "adir.safetensors").mkdir()
    with pytest.raises(AttributeFileError, match="is a directory"):
        Attribute.load(tmp_path / "adir.safetensors")
    torch.save({"boundary": torch.zeros(1, *s.latent_shape)}, tmp_path / "zero.ckpt")
    with pytest.raises(AttributeFileError, match="zero.ckpt: the direction is all zeros"):
        Attribute.load(tmp_path / "zero.ckpt")
    assert Attribute.load(good).name == "bright"


def test_fit_needs_enough_data_and_warns_near_chance(s):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 32, 32, generator=g)
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives"):
        s.fit_attribute(x[:1], x[1:4])
    with pytest.raises(ValueError, match="at least 2 positives and 2 unlabelled"):
        s.fit_attribute(x[:3], unlabelled=x[3:4])
    for bad in (0, 1, -3, 2.5, True):
        with pytest.raises(ValueError, match="folds must be an integer >= 2"):
            s.fit_attribute(x[:4], x[4:], folds=bad)
    for bad in ([], [-1.0], [float("nan")], ["x"]):
        with pytest.raises(ValueError, match="l2_grid must be"):
            s.fit_attribute(x[:4], x[4:], l2_grid=bad)
    # images of another size: an error naming --resize, or resized with resize=True
    big = torch.nn.functional.interpolate(x, scale_factor=2)
    from d2c_fast.errors import ImageError
    with pytest.raises(ImageError, match="resize=True"):
        s.fit_attribute(big[:4], big[4:], folds=2)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # random images: a near-chance fit
        a = s.fit_attribute(big[:4], big[4:], folds=2, resize=True)
    assert a.is_fitted and a.info["n_positive"] == 4 and a.info["n_negative"] == 4
    # two random halves of one distribution: out-of-fold accuracy near chance -> a warning
    noise = torch.rand(24, 3, 32, 32, generator=g)
    with pytest.warns(UserWarning, match="near chance"):
        s.fit_attribute(noise[:12], noise[12:], folds=3)


def test_device_and_timestep_mistakes(s):
    with pytest.raises(ValueError, match="not a device name"):
        Sampler("builtin", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Sampler("builtin", device="cuda")
    z = torch.zeros(1, *s.latent_shape)
    for t in (s.num_timesteps, -1, float("nan")):
        with pytest.raises(ValueError, match="t must be in"):
            s.unet(z, t)
    assert torch.isfinite(s.unet(z, s.num_timesteps - 1)).all()
    with pytest.raises(ValueError, match="eta must be"):
        s.sample_latents(1, skip=500, eta=float("inf"))
    with pytest.raises(ValueError, match="eta must be"):
        s.sample_latents(1, skip=500, eta=-0.5)
    with pytest.raises(ValueError, match="contain NaN or Inf"):
        s.decode(torch.full((1, *s.latent_shape), float("nan")))
    from d2c_fast.edit import sweep
    with pytest.raises(ValueError, match="mode must be"):
        sweep(s, torch.rand(1, 3, 32, 32), Attribute(torch.ones(s.latent_shape)), steps=[0, 1],
              mode="x")


def test_fingerprint_covers_every_weight_and_reads_legacy_files(s, tmp_path):
    """A model changed only in its middle layers is another model for its attributes (the
    fingerprint hashed six tensors until 2026-11-29); files written with that old fingerprint
    still load on their own model."""
    from d2c_fast.checkpoint import is_alias_key, load_model
    from d2c_fast.runtime import BUILTIN_PATH as _BUILTIN
    m = load_model(_BUILTIN)
    keys = [k for k, v in m.autoencoder.state_dict().items()
            if not is_alias_key(k) and v.is_floating_point()]
    with torch.no_grad():
        m.autoencoder.state_dict()[keys[len(keys) // 2]].mul_(1.3)
    s2 = Sampler(m)
    assert s2.fingerprint != s.fingerprint and s2.legacy_fingerprint == s.legacy_fingerprint
    assert len(s.fingerprint.split("-")[1]) == 16
    g = torch.Generator().manual_seed(0)
    a = s.fit_attribute(torch.rand(6, 3, 32, 32, generator=g),
                        torch.rand(6, 3, 32, 32, generator=g) * 0.3, name="bright", folds=2)
    a.save(tmp_path / "new.safetensors")
    with pytest.raises(AttributeFileError, match="same architecture, different weights"):
        Attribute.load(tmp_path / "new.safetensors", model=s2)
    Attribute.load(tmp_path / "new.safetensors", model=s)
    old = Attribute(None, name="old", classifier=a.classifier, latent_shape=s.latent_shape,
                    fingerprint=s.legacy_fingerprint)
    old.save(tmp_path / "old.safetensors")
    Attribute.load(tmp_path / "old.safetensors", model=s)          # its own model: loads
    tiny = Sampler(load_model(_BUILTIN))
    assert tiny.fingerprint == s.fingerprint                         # deterministic


def test_cli_warnings_and_config_errors_are_one_line(tmp_path):
    import subprocess
    import sys
    from d2c_fast.images import save_png
    img = str(tmp_path / "f.png")
    save_png(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), img)
    Attribute(torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(1))).save(
        tmp_path / "d.safetensors")
    r = subprocess.run([sys.executable, "-m", "d2c_fast", "manipulate", "builtin", img, "--attr",
                        str(tmp_path / "d.safetensors"), "--step", "1", "--t0", "7", "-o",
                        str(tmp_path / "out"), "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    warn = [ln for ln in r.stderr.splitlines() if "--t0 7" in ln]      # flags, not t0=7
    assert len(warn) == 1 and warn[0].startswith("d2c-fast: warning: --t0 7 is not a multiple "
                                                 "of --skip 50"), r.stderr[-2000:]
    (tmp_path / "bad.yml").write_text("a: [1, 2\nb: 3\n")
    (tmp_path / "m.ckpt").write_bytes(b"not read: the config is read first")
    r = subprocess.run([sys.executable, "-m", "d2c_fast", "info", str(tmp_path / "m.ckpt"),
                        "--config",
                        str(tmp_path / "bad.yml")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not valid YAML (line 2" in r.stderr


def test_cli_argument_checks_before_work(tmp_path, capsys):
    """Counts, names and output paths of the evaluation, oracle and fit commands are checked
    before any rendering, fitting or training."""
    from d2c_fast.cli import main
    (tmp_path / "file").write_text("x")
    cases = [
        (["eval-attributes", "builtin", "--oracle", "o", "--n-fit", "-4"], "--n-fit must be >= 4"),
        (["eval-attributes", "builtin", "--oracle", "o", "--methods", "d2cc"], "--methods"),
        (["eval-attributes", "builtin", "--oracle", "o", "--attributes", "blonde"],
         "--attributes"),
        (["eval-attributes", "builtin", "--oracle", "o", "--cond-threshold", "1.5"],
         "--cond-threshold"),
        (["eval-attributes", "builtin", "--oracle", "o", "--t0", "5000"], "--t0 must be"),
        (["eval-attributes", "builtin", "--oracle", "o", "-o", str(tmp_path / "file")],
         "is a file"),
        (["train-oracle", "-o", str(tmp_path / "o.safetensors"), "--epochs", "0"],
         "--epochs must be >= 1"),
        (["train-oracle", "-o", str(tmp_path / "o.safetensors"), "--batch-size", "0"],
         "--batch-size must be >= 1"),
        (["evaluate", "builtin", "--oracle", "o", "--n-heldout", "50", "--n-probe", "60"],
         "--n-heldout must be at least"),
        (["evaluate", "builtin", "--oracle", "o", "--json", str(tmp_path / "file" / "x.json")],
         "is a file"),
        (["fit-attribute", "builtin", "--faces", "beard", "--positives", "a.png", "-o",
          str(tmp_path / "a.safetensors")], "--faces fits on rendered"),
        (["fit-attribute", "builtin", "--positive-only", "--positives", "a.png", "-o",
          str(tmp_path / "a.safetensors")], "--positive-only is for --faces"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_train_config_types_are_checked():
    import copy
    from d2c_fast.errors import ConfigError
    from d2c_fast.train.config import TrainConfig
    base = json.load(open("d2c_fast/configs/builtin_train.json"))
    base["model"] = "d2c_fast/configs/builtin.json"
    TrainConfig.from_dict(base)
    for path, v, msg in [(("ae", "lr"), "fast", "train.ae.lr': must be a number"),
                         (("ae", "batch_size"), "8", "must be an integer"),
                         (("max_minutes",), "abc", "must be a number or null"),
                         (("data",), 5, "train.data': expected a mapping"),
                         (("ae", "augment"), [1], "expected a mapping"),
                         (("diffusion", "steps"), True, "must be an integer, got true"),
                         (("seed",), "x", "train.seed': must be an integer"),
                         (("threads",), 0, "train.threads': must be >= 1"),
                         (("data", "n"), -5, "train.data.n': must be >= 1")]:
        d = copy.deepcopy(base)
        t = d
        for k in path[:-1]:
            t = t[k]
        t[path[-1]] = v
        with pytest.raises(ConfigError, match=msg):
            TrainConfig.from_dict(d)
    d = copy.deepcopy(base)
    d["diffusion"]["batch_size"] = None          # documented: the model config's batch size
    assert TrainConfig.from_dict(d).diffusion.batch_size is None


def test_seed_range_and_unwritable_output_named(s, capsys):
    with pytest.raises(ValueError, match="seed must be a 64-bit integer"):
        s.sample_latents(1, skip=500, seed=2 ** 64)
    assert s.sample_latents(1, skip=500, seed=-5).shape == (1, *s.latent_shape)
    if os.path.isdir("/proc/self"):                       # a folder no file can be created in
        from d2c_fast.cli import main
        assert main(["sample", "builtin", "-n", "1", "--skip", "500", "--threads", "1",
                     "--grid", "/proc/d2c_fast_test.png"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("d2c-fast: error:") and "cannot write /proc/d2c_fast_test.png" in err
