"""Large jobs: resumable directory edits / conditional samples, sharded with torchrun over two
CPU processes (gloo); the sharded outputs equal a single-process run."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_fast import Attribute, Sampler
from d2c_fast.attributes import LinearClassifier
from d2c_fast.images import save_png
from d2c_fast.jobs import list_images, manipulate_dir, sample_conditional_dir
from d2c_fast.train.testing import save_tiny_model

N_IMAGES = 7
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("jobs")
    model = str(d / "tiny.safetensors")
    save_tiny_model(model, 16, seed=1)
    s = Sampler(model)
    D = int(np.prod(s.latent_shape))
    w = torch.randn(D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    attr = Attribute(None, name="planted", classifier=LinearClassifier(
        0.5 * w / w.norm(), 0.0, s.mean, s.std, prior=0.5), fingerprint=s.fingerprint,
        latent_shape=s.latent_shape)
    attr_path = attr.save(d / "planted.safetensors")
    inp = d / "in"
    g = torch.Generator().manual_seed(1)
    for i in range(N_IMAGES):
        sub = "sub/" if i % 3 == 0 else ""
        save_png(torch.rand(3, 16, 16, generator=g), str(inp / f"{sub}img{i}.png"))
    return {"dir": d, "model": model, "attr": attr_path, "input": str(inp), "sampler": s}


def read_dir(root):
    out = {}
    for rel in list_images(root):
        out[rel] = np.asarray(Image.open(os.path.join(root, rel)), dtype=np.int16)
    return out


def torchrun(*args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
           "-m", "d2c_fast", *args]
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the two ranks' report lines may interleave on the shared stdout: pick the objects out
    reports = [json.loads(m) for m in re.findall(r'\{"rank"[^{}]*\}', r.stdout)]
    assert sorted((x["rank"], x["world_size"]) for x in reports) == [(0, 2), (1, 2)]
    return reports


def test_manipulate_dir_sharded_equals_single_and_resumes(setup, tmp_path):
    single = tmp_path / "single"
    r = manipulate_dir(setup["sampler"], setup["input"], single, setup["attr"], strength=2.0,
                       seed=5, batch_size=3, mode="mode", progress=False)
    assert r["written"] == N_IMAGES and r["skipped"] == 0
    # resumable: a rerun does nothing; a deleted output is redone alone
    r = manipulate_dir(setup["sampler"], setup["input"], single, setup["attr"], strength=2.0,
                       seed=5, batch_size=3, mode="mode", progress=False)
    assert r["written"] == 0 and r["skipped"] == N_IMAGES
    want = read_dir(single)
    os.unlink(single / "img1.png")
    r = manipulate_dir(setup["sampler"], setup["input"], single, setup["attr"], strength=2.0,
                       seed=5, batch_size=2, mode="mode", progress=False)
    assert r["written"] == 1
    assert np.abs(read_dir(single)["img1.png"] - want["img1.png"]).max() <= 1
    # sharded over 2 processes
    sharded = tmp_path / "sharded"
    reports = torchrun("manipulate-dir", setup["model"], "--input-dir", setup["input"], "--output-dir",
             str(sharded), "--attr", setup["attr"], "--strength", "2.0", "--seed", "5",
             "--mode", "mode", "--batch-size", "2", "--quiet", cwd=tmp_path)
    assert sum(x["written"] for x in reports) == N_IMAGES      # each item exactly once
    got = read_dir(sharded)
    assert sorted(got) == sorted(want) == sorted(
        os.path.splitext(p)[0] + ".png" for p in list_images(setup["input"]))
    for k in want:
        assert np.abs(got[k] - want[k]).max() <= 1, k      # per-image seeds: same images
    assert not [f for f in os.listdir(sharded) if f.startswith(".")]   # no temp files left
    # a rerun with another strength is refused (it would count the old edits as done)
    with pytest.raises(ValueError, match="other settings .*strength: 2.0 -> -2.0"):
        manipulate_dir(setup["sampler"], setup["input"], single, setup["attr"], strength=-2.0,
                       seed=5, mode="mode", progress=False)
    assert np.abs(read_dir(single)["img1.png"] - want["img1.png"]).max() <= 1


def test_manipulate_dir_refuses_overwrites(setup, tmp_path):
    """Inputs that would share an output name, an output directory inside the input
    directory, an empty input directory and a bad batch size fail before any work."""
    from d2c_fast.errors import ImageError
    from d2c_fast.images import save_png
    src = tmp_path / "src"
    save_png(torch.rand(3, 16, 16), str(src / "a.png"))
    save_png(torch.rand(3, 16, 16), str(src / "b.png"))
    kw = dict(strength=1.0, mode="mode", progress=False)
    for out in (src, src / "edits"):
        with pytest.raises(ValueError, match="inside. the input directory"):
            manipulate_dir(setup["sampler"], src, out, setup["attr"], **kw)
    with pytest.raises(ValueError, match="batch_size"):
        manipulate_dir(setup["sampler"], src, tmp_path / "o", setup["attr"], batch_size=0, **kw)
    (src / "b.png").rename(src / "a.jpg")
    with pytest.raises(ValueError, match="would both be written as .*a.png"):
        manipulate_dir(setup["sampler"], src, tmp_path / "o", setup["attr"], **kw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        manipulate_dir(setup["sampler"], tmp_path / "empty", tmp_path / "o", setup["attr"], **kw)
    assert not os.path.exists(tmp_path / "o") and sorted(os.listdir(src)) == ["a.jpg", "a.png"]
    # a call that fails on its arguments records no settings: the corrected rerun proceeds
    (src / "a.jpg").rename(src / "b.png")
    with pytest.raises(ValueError, match="finite"):
        manipulate_dir(setup["sampler"], src, tmp_path / "o", setup["attr"], strength=float("nan"),
                       mode="mode", progress=False)
    assert not os.path.exists(tmp_path / "o" / "d2c_fast_job.json")
    r = manipulate_dir(setup["sampler"], src, tmp_path / "o", setup["attr"], **kw)
    assert r["written"] == 2 and os.path.exists(tmp_path / "o" / "d2c_fast_job.json")


def test_sample_conditional_dir_sharded_equals_single(setup, tmp_path):
    n = 6
    single = tmp_path / "single"
    r = sample_conditional_dir(setup["sampler"], single, setup["attr"], n, seed=3,
                               batch_size=8, skip=500, mode="mode", progress=False)
    assert r["written"] == n
    sharded = tmp_path / "sharded"
    torchrun("sample-conditional-dir", setup["model"], "--output-dir", str(sharded), "--attr",
             setup["attr"], "-n", str(n), "--seed", "3", "--skip", "500", "--mode", "mode",
             "--batch-size", "4", "--quiet", cwd=tmp_path)
    a, b = read_dir(single), read_dir(sharded)
    assert sorted(a) == sorted(b) == [f"{k:06d}.png" for k in range(n)]
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= 1, k
        ja = json.load(open(single / k.replace(".png", ".json")))
        jb = json.load(open(sharded / k.replace(".png", ".json")))
        assert ja["attempts"] == jb["attempts"]
        assert np.allclose(ja["probabilities"], jb["probabilities"], atol=1e-4)
    r = sample_conditional_dir(setup["sampler"], sharded, setup["attr"], n, seed=3, skip=500,
                               mode="mode", progress=False)
    assert r["written"] == 0 and r["skipped"] == n
    # a rerun with other settings is refused, not counted as done
    with pytest.raises(ValueError, match="other settings .*mode: 'mode' -> 'sample'"):
        sample_conditional_dir(setup["sampler"], sharded, setup["attr"], n, seed=3, skip=500,
                               progress=False)
    with pytest.raises(ValueError, match="n must be"):
        sample_conditional_dir(setup["sampler"], tmp_path / "neg", setup["attr"], -3)


def test_sample_conditional_dir_eps_scale_matches_sampler(setup, tmp_path):
    """``eps_scale`` reaches the prior sampler: the directory job writes what
    ``Sampler.sample_conditional`` returns with the same scaling (not the default's images),
    and records the scaling in each image's json."""
    n, s = 3, setup["sampler"]
    out = tmp_path / "eps"
    sample_conditional_dir(s, out, setup["attr"], n, seed=5, batch_size=8, skip=500,
                           mode="mode", progress=False, eps_scale=1.1)
    want, p = s.sample_conditional(setup["attr"], n, seed=5, batch_size=8, skip=500,
                                   mode="mode", eps_scale=1.1, return_probs=True)
    plain = s.sample_conditional(setup["attr"], n, seed=5, batch_size=8, skip=500,
                                 mode="mode", return_probs=False)
    got = read_dir(out)
    for k in range(n):
        img = got[f"{k:06d}.png"].transpose(2, 0, 1)
        ref = np.round(want[k].clamp(0, 1).numpy() * 255).astype(np.int16)
        assert np.abs(img - ref).max() <= 1, k
        meta = json.load(open(out / f"{k:06d}.json"))
        assert meta["eps_scale"] == 1.1 and meta["guidance"] == 1.0   # no guide prior
        assert np.allclose(meta["probabilities"], p[k].numpy(), atol=1e-6)
    assert not torch.allclose(want, plain, atol=1e-3)
    with pytest.raises(ValueError, match="eps_scale"):
        sample_conditional_dir(s, tmp_path / "bad", setup["attr"], 1, eps_scale=0.0,
                               progress=False)
