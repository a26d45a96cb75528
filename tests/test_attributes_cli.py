"""The attribute subcommands of ``d2c-fast`` on a tiny saved model (fit from the built-in
faces, edit, sweep, conditional samples, the evaluation with tiny sizes)."""
import json
import os
import shutil

import pytest
import torch

from d2c_fast import Attribute, Sampler
from d2c_fast.cli import main
from d2c_fast.eval.oracle import Oracle
from d2c_fast.images import load_images, save_png
from d2c_fast.train.testing import save_tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cli")
    model = str(d / "tiny.safetensors")
    save_tiny_model(model, 16, seed=2)
    torch.manual_seed(0)
    oracle = str(d / "oracle.safetensors")
    Oracle(resolution=16, width=8).eval().save(oracle)
    imgs = []
    for i in range(2):
        p = str(d / f"face{i}.png")
        save_png(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)), p)
        imgs.append(p)
    return {"dir": d, "model": model, "oracle": oracle, "images": imgs}


def test_fit_edit_sample_cli(files, capsys):
    d, model = files["dir"], files["model"]
    attr = str(d / "blond.safetensors")
    assert main(["fit-attribute", model, "--faces", "blond_hair", "-n", "12", "--folds", "3",
                 "-o", attr]) == 0
    a = Attribute.load(attr)
    assert a.name == "blond_hair" and a.is_fitted and a.info["n_positive"] == 6
    pu = str(d / "blond_pu.safetensors")
    assert main(["fit-attribute", model, "--faces", "blond_hair", "-n", "6", "--positive-only",
                 "--n-unlabelled", "12", "--folds", "3", "-o", pu]) == 0
    assert Attribute.load(pu).classifier.mode == "pu"
    # argument mistakes: one line on stderr, exit status 2, no file
    capsys.readouterr()
    assert main(["fit-attribute", model, "--faces", "blonde", "-o", str(d / "x.safetensors")]) == 2
    assert "--faces must be one of" in capsys.readouterr().err
    assert main(["fit-attribute", model, "-o", str(d / "x.safetensors")]) == 2
    assert "give --positives" in capsys.readouterr().err
    assert not os.path.exists(d / "x.safetensors")
    # from directories of images
    pos, neg = d / "pos", d / "neg"
    for i in range(4):
        save_png(torch.rand(3, 16, 16), str(pos / f"{i}.png"))
        save_png(torch.rand(3, 16, 16) * 0.2, str(neg / f"{i}.png"))
    dirattr = str(d / "dark.safetensors")
    assert main(["fit-attribute", model, "--positives", str(pos), "--negatives", str(neg),
                 "--folds", "2", "-o", dirattr]) == 0
    out = d / "edits"
    assert main(["edit", model, *files["images"], "--attr", attr, "--strength", "2",
                 "--method", "nvae", "--preserve", dirattr, "-o", str(out),
                 "--grid", str(d / "g.png")]) == 0
    assert sorted(os.listdir(out)) == ["face0.png", "face1.png"]
    # per-image target: the CLI equals the Python API
    assert main(["edit", model, *files["images"], "--attr", attr, "--target", "typical",
                 "--method", "nvae", "--mode", "mode", "-o", str(d / "tgt")]) == 0
    want = Sampler(model).manipulate(files["images"], Attribute.load(attr), target="typical",
                                     method="nvae", mode="mode", seed=0)
    got = load_images([str(d / "tgt" / "face0.png"), str(d / "tgt" / "face1.png")])
    assert float((got - want).abs().max()) <= 1 / 255 + 1e-6
    with pytest.raises(SystemExit):
        main(["edit", model, *files["images"], "--attr", attr, "--target", "blond", "-o",
              str(d / "bad")])
    assert main(["edit", model, *files["images"], "--attr", attr, "--sweep", "0", "1", "2",
                 "-o", str(d / "sweep"), "--grid", str(d / "sweep.png")]) == 0
    assert len(os.listdir(d / "sweep")) == 6 and os.path.isfile(d / "sweep.png")
    # the d2c clean-up's guidance: 1 (unguided) is what a model without a guide prior has;
    # another weight is a one-line error, and D2C_FAST_TRACEBACK=1 gives the traceback
    assert main(["edit", model, files["images"][0], "--attr", attr, "--strength", "1",
                 "--guidance", "1", "-o", str(d / "g1")]) == 0
    capsys.readouterr()
    assert main(["edit", model, files["images"][0], "--attr", attr, "--strength", "1",
                 "--guidance", "2", "-o", str(d / "g2")]) == 2
    err = capsys.readouterr().err
    assert "guide prior" in err and "Traceback" not in err
    os.environ["D2C_FAST_TRACEBACK"] = "1"
    try:
        with pytest.raises(ValueError, match="guide prior"):
            main(["edit", model, files["images"][0], "--attr", attr, "--strength", "1",
                  "--guidance", "2", "-o", str(d / "g2")])
    finally:
        del os.environ["D2C_FAST_TRACEBACK"]
    # the official manipulate subcommand accepts a fitted attribute with a raw step
    assert main(["manipulate", model, *files["images"], "--attr", attr, "--step", "-1",
                 "-o", str(d / "m")]) == 0
    assert main(["sample-conditional", model, "--attr", attr, "-n", "3", "--threshold", "0.0",
                 "--skip", "500", "--grid", str(d / "cond.png")]) == 0
    assert os.path.isfile(d / "cond.png")
    # rare -> error exit with the acceptance rate
    capsys.readouterr()
    assert main(["sample-conditional", model, "--attr", attr, "-n", "3", "--threshold", "1.0",
                 "--max-draws", "4", "--skip", "500"]) == 2
    assert "acceptance rate" in capsys.readouterr().err


def test_cli_refuses_overwrites_and_bad_values(files, capsys):
    """Output mistakes fail before any work, in one line with exit status 2, and write
    nothing: two inputs with one name, editing into the inputs' folder, a grid path that is a
    folder, an output under a file; non-finite edit values too."""
    d, model = files["dir"], files["model"]
    attr = str(d / "blond_x.safetensors")
    assert main(["fit-attribute", model, "--faces", "blond_hair", "-n", "12", "--folds", "3",
                 "-o", attr]) == 0
    img = files["images"][0]
    twin = d / "twin" / os.path.basename(img)
    twin.parent.mkdir()
    shutil.copy(img, twin)
    before = open(img, "rb").read()
    cases = [
        (["manipulate", model, img, str(twin), "--attr", attr, "--step", "1", "-o",
          str(d / "c1")], "would both be written"),
        (["edit", model, img, str(twin), "--attr", attr, "--strength", "1", "-o",
          str(d / "c2")], "would both be written"),
        (["edit", model, img, "--attr", attr, "--strength", "1", "-o",
          os.path.dirname(img)], "would overwrite an input"),
        (["edit", model, img, "--attr", attr, "--strength", "1", "-o", str(d / "c3"),
          "--grid", str(d)], "is a directory"),
        (["manipulate", model, img, "--attr", attr, "--step", "1", "-o",
          str(d / "blond_x.safetensors" / "sub")], "is a file, not a directory"),
        (["edit", model, img, "--attr", attr, "--strength", "nan", "-o", str(d / "c4")],
         "must be finite"),
        (["edit", model, img, "--attr", attr, "--step", "inf", "-o", str(d / "c5")],
         "must be finite"),
        (["edit", model, img, "--attr", attr, "--step", "1e30", "-o", str(d / "c6")],
         "non-finite latents"),
        (["sample", model, "-n", "1", "--eta", "nan", "--grid", str(d / "c7.png")],
         "eta must be"),
        (["edit", model, img, "--attr", attr, "--step", "-5", "--preserve", attr, "-o",
          str(d / "c8")], "nothing would be left to edit"),
        (["edit", model, img, "--attr", attr, "--sweep", "1", "1.0000001", "-o",
          str(d / "c9")], "suffixes repeat"),
        (["edit", model, img, "--attr", attr, attr, "--strength", "2", "3", "-o",
          str(d / "c10")], "the same attribute given twice"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)
    assert open(img, "rb").read() == before
    assert not any(os.path.exists(d / f"c{i}") for i in list(range(1, 7)) + [8, 9, 10])
    assert not os.path.exists(d / "c7.png")


def test_eval_attributes_cli(files):
    d = files["dir"]
    out = d / "eval"
    assert main(["eval-attributes", files["model"], "--oracle", files["oracle"],
                 "--attributes", "smiling", "--n-fit", "8", "--n-unlabelled", "8", "--n-eval",
                 "4", "--n-real", "4", "--strength-factors", "1", "--n-cond", "2",
                 "--n-naive", "3", "--cond-skip", "500", "--ddim-skip", "500",
                 "--projector-steps", "2", "--batch-size", "4", "-o", str(out)]) == 0
    r = json.load(open(out / "attributes_eval.json"))
    assert r["model"] == files["model"] and "smiling" in r["attributes"]
    assert r["settings"]["edit_guidance"] == 1.0          # no guide prior: unguided
    assert os.path.isfile(out / "edits_grid.png") and os.path.isfile(out / "attributes_eval.md")


def test_sample_cli_eps_scale(files, tmp_path):
    """``d2c-fast sample --eps-scale``: the same images as ``Sampler.sample(eps_scale=)``."""
    for lam in ("1.0", "1.05"):
        out = tmp_path / lam
        assert main(["sample", files["model"], "-n", "2", "--skip", "250", "--seed", "3",
                     "--mode", "mode", "--eps-scale", lam, "-o", str(out)]) == 0
        got = load_images(sorted(str(p) for p in out.iterdir()))
        want = Sampler(files["model"]).sample(2, skip=250, seed=3, mode="mode",
                                             eps_scale=float(lam))
        assert torch.allclose(got.float() / 255.0 if got.dtype == torch.uint8 else got,
                              want, atol=1 / 255 + 1e-6)
