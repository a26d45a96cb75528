"""The ``d2c-fast`` package: one ``edit`` command for official boundary files and fitted
attributes, ``manipulate`` as its alias with the flags it always had, every subcommand's
parser (shared options declared once, no clashes)."""
import os
import re

import pytest
import torch

from d2c_fast.cli import build_parser, main
from d2c_fast.images import save_png
from d2c_fast.train.testing import save_tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cli_edit")
    model = str(d / "tiny.safetensors")
    m = save_tiny_model(model, 16, seed=4)
    boundary = str(d / "blond.ckpt")
    latent = tuple(m.config.latent_shape)
    torch.save({"boundary": torch.randn(1, *latent, generator=torch.Generator().manual_seed(0))},
               boundary)
    imgs = []
    for i in range(2):
        p = str(d / f"face{i}.png")
        save_png(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)), p)
        imgs.append(p)
    return {"dir": d, "model": model, "boundary": boundary, "images": imgs}


COMMANDS = ["convert", "info", "demo", "sample", "sample-conditional", "edit", "manipulate",
            "fit-attribute", "manipulate-dir", "sample-conditional-dir", "train", "export",
            "train-oracle", "evaluate", "eval-attributes", "eval-edits", "serve"]


def test_every_subcommand_parses_and_prints_help(capsys):
    ap = build_parser()
    with pytest.raises(SystemExit):
        ap.parse_args(["--help"])
    assert "{" + ",".join(COMMANDS) + "}" in capsys.readouterr().out
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            ap.parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert text.startswith(f"usage: d2c-fast {name} "), name
        if name not in ("convert", "export"):
            assert "--threads" in text, name
    # the official form: one --attr and one --step, so images may follow them
    a = ap.parse_args(["manipulate", "m.safetensors", "--attr", "b.ckpt", "--step", "1.5",
                       "x.png", "y.png", "-o", "out"])
    assert (a.attr, a.step, a.images, a.method) == (["b.ckpt"], [1.5], ["x.png", "y.png"], "d2c")
    with pytest.raises(SystemExit):
        ap.parse_args(["manipulate", "m.safetensors", "x.png", "--attr", "b.ckpt",
                       "--strength", "1", "-o", "out"])


def test_edit_and_manipulate_are_one_command(files, capsys):
    """A boundary file with a raw step: ``edit`` and ``manipulate`` write the same images;
    each keeps its summary line."""
    d, model, b = files["dir"], files["model"], files["boundary"]
    capsys.readouterr()
    assert main(["manipulate", model, "--attr", b, "--step", "1.5", *files["images"],
                 "-o", str(d / "m"), "--grid", str(d / "m.png")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^2 edits in [\d.]+ s \([\d.]+ s/image\) -> .*m \(guidance 1\)$", out, re.M)
    assert main(["edit", model, *files["images"], "--attr", b, "--step", "1.5",
                 "-o", str(d / "e"), "--grid", str(d / "e.png")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^2 images in [\d.]+ s -> .*e \(d2c, guidance 1\)$", out, re.M)
    assert sorted(os.listdir(d / "m")) == sorted(os.listdir(d / "e")) == ["face0.png",
                                                                          "face1.png"]
    for f in ("face0.png", "face1.png"):
        assert (d / "m" / f).read_bytes() == (d / "e" / f).read_bytes()
    assert os.path.isfile(d / "m.png") and os.path.isfile(d / "e.png")
    # edit's methods and sweeps take the boundary file too (raw steps)
    assert main(["edit", model, files["images"][0], "--attr", b, "--step", "1",
                 "--method", "nvae", "-o", str(d / "n")]) == 0
    assert "(nvae)" in capsys.readouterr().out
    # strengths need a fitted attribute: one line, exit status 2
    assert main(["edit", model, files["images"][0], "--attr", b, "--strength", "1",
                 "-o", str(d / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("d2c-fast: error:") and err.count("\n") == 1
    assert not os.path.exists(d / "s")
