"""``d2c-fast`` as a new user meets it (issue 32): image commands always write their images
(a new folder without ``-o``), ``-o x.png`` is one file, nothing is overwritten without
``--overwrite``, an image given as the model is named as such, messages name flags, typos get
the subcommand's usage and the close flag, a closed pipe ends quietly, ``--mode`` defaults to
the clean decode, converted inputs are said in one line, one input/output convention, plurals,
one sample naming, grids labelled by attribute with an input row. Every case runs the real
entry point (``d2c_fast.cli.main`` or ``python -m d2c_fast``) on a tiny random model."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_fast import Sampler
from d2c_fast.cli import build_parser, main
from d2c_fast.cli.options import PYTHON_FLAGS, cli_message
from d2c_fast.errors import CheckpointError
from d2c_fast.images import load_images, save_png
from d2c_fast.train.testing import save_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("ux")
    model = str(d / "tiny.safetensors")
    save_tiny_model(model, 16, seed=3)
    g = torch.Generator().manual_seed(0)
    imgs = []
    for i in range(2):
        p = str(d / f"face{i}.png")
        save_png(torch.rand(3, 16, 16, generator=g), p)
        imgs.append(p)
    s = Sampler(model)
    a = s.fit_attribute(torch.rand(8, 3, 16, 16, generator=g),
                        torch.rand(8, 3, 16, 16, generator=g) * 0.3, name="blond_hair", folds=2)
    attr = str(d / "blond.safetensors")
    a.save(attr)
    return {"dir": d, "model": model, "images": imgs, "attr": attr}


def run(args, cwd):
    """``python -m d2c_fast ...``: (exit status, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "d2c_fast", *args], cwd=cwd, env=ENV,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


def err_of(argv, capsys, rc=2) -> str:
    capsys.readouterr()
    assert main(argv) == rc, argv
    return capsys.readouterr().err


# item 1 -------------------------------------------------------------------------------------

def test_image_commands_write_into_a_new_folder_without_o(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    m, a = files["model"], files["attr"]
    assert main(["sample", m, "-n", "2", "--skip", "500"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 images to sample-001/" in out and "no -o given" in out
    assert sorted(os.listdir("sample-001")) == ["000000.png", "000001.png"]
    assert main(["sample", m, "-n", "1", "--skip", "500"]) == 0        # never into an old one
    assert sorted(os.listdir("sample-002")) == ["000000.png"]
    assert main(["sample-conditional", m, "--attr", a, "-n", "2", "--threshold", "0",
                 "--skip", "500"]) == 0
    assert sorted(os.listdir("sample-conditional-001")) == ["000000.png", "000001.png"]
    assert main(["edit", m, files["images"][0], "--attr", a, "--strength", "1"]) == 0
    assert "wrote 1 image to edit-001/" in capsys.readouterr().out
    assert os.listdir("edit-001") == ["face0.png"]
    # only --grid asked for: just the grid
    assert main(["sample", m, "-n", "2", "--skip", "500", "--grid", "g.png"]) == 0
    assert sorted(os.listdir(".")) == ["edit-001", "g.png", "sample-001", "sample-002",
                                       "sample-conditional-001"]


# item 2 -------------------------------------------------------------------------------------

def test_o_png_is_one_file_and_nothing_is_overwritten(files, tmp_path, capsys):
    m, a, img = files["model"], files["attr"], files["images"]
    one = str(tmp_path / "one.png")
    assert main(["sample", m, "-n", "1", "--skip", "500", "-o", one]) == 0
    assert os.path.isfile(one) and Image.open(one).size == (16, 16)
    # several outputs into one file name: refused before any work, nothing written
    for argv in (["sample", m, "-n", "2", "-o", str(tmp_path / "two.png")],
                 ["sample-conditional", m, "--attr", a, "-n", "2", "-o",
                  str(tmp_path / "two.png")],
                 ["edit", m, *img, "--attr", a, "--strength", "1", "-o",
                  str(tmp_path / "two.png")],
                 ["edit", m, img[0], "--attr", a, "--sweep", "0", "1", "-o",
                  str(tmp_path / "two.png")]):
        err = err_of(argv, capsys)
        assert "names one image file, but this command writes 2 images" in err, err
        assert "give a folder" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "two.png") and not os.path.exists(tmp_path / "two")
    assert "give a name ending in .png" in err_of(
        ["edit", m, img[0], "--attr", a, "--strength", "1", "-o", str(tmp_path / "e.jpg")],
        capsys)
    e = str(tmp_path / "edited.png")
    assert main(["edit", m, img[0], "--attr", a, "--strength", "1", "-o", e]) == 0
    assert os.path.isfile(e)                                       # a file, not a folder
    # existing outputs: refused before the work unless --overwrite
    before = open(e, "rb").read()
    err = err_of(["edit", m, img[0], "--attr", a, "--strength", "3", "-o", e], capsys)
    assert "exists; pass --overwrite" in err and open(e, "rb").read() == before
    assert main(["edit", m, img[0], "--attr", a, "--strength", "3", "-o", e,
                 "--overwrite"]) == 0
    assert open(e, "rb").read() != before
    folder = str(tmp_path / "f")
    assert main(["sample", m, "-n", "2", "--skip", "500", "-o", folder]) == 0
    err = err_of(["sample", m, "-n", "3", "--skip", "500", "-o", folder], capsys)
    assert "000000.png exists (and 1 other)" in err
    assert "exists; pass --overwrite" in err_of(
        ["sample", m, "-n", "1", "--skip", "500", "--grid", one], capsys)


# item 3 -------------------------------------------------------------------------------------

def test_an_image_given_as_the_model_is_named(files, tmp_path, capsys):
    img = files["images"]
    err = err_of(["edit", *img, "--attr", files["attr"], "--strength", "1", "-o",
                  str(tmp_path / "out")], capsys)
    assert "face0.png: an image, not a checkpoint, was given where the model goes" in err
    assert "'builtin', a .safetensors file, or an official .ckpt with its config (--config)" in err
    assert "config=" not in err and "Sampler" not in err and err.count("\n") == 1
    with pytest.raises(CheckpointError, match=r"an image, not a checkpoint, was given where the "
                       r"model goes.*official \.ckpt with its config \(config=\)"):
        Sampler(img[0])
    disguised = tmp_path / "model.ckpt"                 # a PNG by its bytes, whatever its name
    disguised.write_bytes(open(img[0], "rb").read())
    with pytest.raises(CheckpointError, match="an image, not a checkpoint"):
        Sampler(str(disguised))


# item 4 -------------------------------------------------------------------------------------

def test_messages_name_flags_on_the_command_line_only(files, tmp_path, capsys):
    # one table: Python keywords and calls -> flags and commands
    assert cli_message("give negatives= (labelled mode) or unlabelled= (positive-unlabelled)") \
        == "give --negatives (labelled mode) or --unlabelled (positive-unlabelled)"
    assert cli_message("a plain direction (official boundary): use step=") \
        == "a plain direction (official boundary): use --step"
    assert cli_message("refit it on this model (Sampler.fit_attribute)") \
        == "refit it on this model (d2c-fast fit-attribute)"
    assert cli_message("guidance=2.0 needs a guide prior; flip=False; t0=7 and skip=50") \
        == "--guidance 2.0 needs a guide prior; --no-flip; --t0 7 and --skip 50"
    assert cli_message("its config: Sampler(ckpt, config='config.yml')") == \
        "its config: --config config.yml"
    assert cli_message("guidance=2.0 applies to the d2c method's clean-up only; method 'nvae' "
                       "is unguided (leave guidance unset)") == (
        "--guidance 2.0 applies to the d2c method's clean-up only; method 'nvae' is unguided "
        "(leave --guidance out)")
    # every flag of the table is a flag of some subcommand
    ap = build_parser()
    helps = ""
    for name in ("edit", "sample", "sample-conditional", "fit-attribute", "info"):
        with pytest.raises(SystemExit):
            ap.parse_args([name, "--help"])
        helps += capsys.readouterr().out
    for flag in PYTHON_FLAGS.values():
        assert flag + " " in helps or flag + "\n" in helps, flag
    # the library's own errors, through the command line
    pos = tmp_path / "pos"
    save_png(torch.rand(3, 16, 16), str(pos / "a.png"))
    err = err_of(["fit-attribute", files["model"], "--positives", str(pos), "-o",
                  str(tmp_path / "x.safetensors")], capsys)
    assert "give --negatives" in err and "--unlabelled" in err and "=" not in err, err
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    err = err_of(["info", str(ckpt)], capsys)
    assert "--config config.yml" in err and "Sampler" not in err, err
    with pytest.raises(ValueError, match="negatives="):            # Python keeps its names
        Sampler(files["model"]).fit_attribute(torch.rand(2, 3, 16, 16))


def test_typos_get_the_subcommand_usage_and_the_close_flag(files, capsys):
    m, a, img = files["model"], files["attr"], files["images"][0]
    for typo, meant in (("--strenght", "--strength"), ("--guidence", "--guidance")):
        argv = ["edit", m, img, "--attr", a, typo, "6"]
        if typo == "--guidence":
            argv += ["--strength", "1"]
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: d2c-fast edit ")
        assert f"unrecognized argument {typo}; did you mean {meant}?" in err
        assert "is required" not in err
    # negative numbers are values, not flags; abbreviations still work
    a_ = build_parser().parse_args(["edit", m, img, "--attr", a, "--sweep", "-4", "-1.5", "0",
                                    "--guid", "1"])
    assert a_.sweep == [-4.0, -1.5, 0.0] and a_.guidance == 1.0
    assert build_parser().parse_args(["sample", m, "-n4", "--seed=3"]).n == 4
    # flags of argument groups count too
    from d2c_fast.cli.options import Parser
    p = Parser(prog="x")
    p.add_argument_group("g").add_mutually_exclusive_group().add_argument("--deep")
    assert p.parse_args(["--deep", "1"]).deep == "1"
    with pytest.raises(SystemExit):
        p.parse_args(["--dep", "1"])
    assert "did you mean --deep?" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(files, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "d2c_fast", "info", files["model"]],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                                         # as `| head` does, before it writes
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141, err
    assert "Broken pipe" not in err and "Error" not in err, err


# item 6 -------------------------------------------------------------------------------------

def test_mode_is_documented_and_the_cli_default_is_mode(files, tmp_path, capsys):
    ap = build_parser()
    for name in ("edit", "manipulate", "sample", "sample-conditional", "manipulate-dir",
                 "sample-conditional-dir"):
        with pytest.raises(SystemExit):
            ap.parse_args([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--mode {mode,sample} how latents become pixels: 'mode' (default)" in text, name
        assert "MSE 0.0012 with 'mode', 0.0021 with 'sample'" in text, name
    out = tmp_path / "s"
    assert main(["sample", files["model"], "-n", "2", "--skip", "500", "--seed", "1", "-o",
                 str(out)]) == 0
    got = load_images([str(out / "000000.png"), str(out / "000001.png")])
    want = Sampler(files["model"]).sample(2, skip=500, seed=1, mode="mode")
    assert float((got - want).abs().max()) <= 1 / 255 + 1e-6


# item 9 -------------------------------------------------------------------------------------

def test_grayscale_input_is_converted_said_once_and_stays_gray(files, tmp_path):
    gray = tmp_path / "in" / "gray.png"
    gray.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8),
                    "L").save(gray)
    Image.open(files["images"][0]).convert("P").save(tmp_path / "in" / "pal.png")
    rc, out, err = run(["edit", files["model"], str(tmp_path / "in"), "--attr", files["attr"],
                        "--strength", "2", "-o", str(tmp_path / "out"), "--threads", "1"],
                       tmp_path)
    assert rc == 0, err
    warn = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warn) == 1, err
    assert "converted 2 of 2 inputs to the model's RGB" in warn[0]
    assert "PIL mode L, grayscale copied to R, G and B" in warn[0]
    assert "PIL mode P, palette expanded" in warn[0]
    assert "1 grayscale input written in grayscale" in out
    a = np.asarray(Image.open(tmp_path / "out" / "gray.png").convert("RGB")).astype(int)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_one_input_output_convention_plurals_and_names(files, tmp_path, capsys):
    m, a = files["model"], files["attr"]
    src = tmp_path / "src"
    for i in range(2):
        save_png(torch.rand(3, 16, 16), str(src / ("sub" if i else "") / f"p{i}.png"))
    # edit takes folders as fit-attribute --positives does
    assert main(["edit", m, str(src), "--attr", a, "--strength", "1", "-o",
                 str(tmp_path / "e")]) == 0
    assert sorted(os.listdir(tmp_path / "e")) == ["p0.png", "p1.png"]
    # manipulate-dir: the input folder is positional and -o its output, as for edit ...
    assert main(["manipulate-dir", m, str(src), "-o", str(tmp_path / "d"), "--attr", a,
                 "--strength", "1", "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "d" / "sub")) == ["p1.png"]
    # ... its first flags still work, with a warning each
    with pytest.warns(FutureWarning, match="--input-dir is deprecated"):
        with pytest.warns(FutureWarning, match="--output-dir is deprecated"):
            assert main(["manipulate-dir", m, "--input-dir", str(src), "--output-dir",
                         str(tmp_path / "d2"), "--attr", a, "--strength", "1",
                         "--quiet"]) == 0
    with pytest.warns(FutureWarning, match="--output-dir is deprecated"):
        assert main(["sample-conditional-dir", m, "--output-dir", str(tmp_path / "c"),
                     "--attr", a, "-n", "1", "--skip", "500", "--threshold", "0",
                     "--quiet"]) == 0
    assert "give -o or --output-dir, not both" in err_of(
        ["sample-conditional-dir", m, "-o", "x", "--output-dir", "y", "--attr", a, "-n", "1"],
        capsys)
    # one naming of samples: the directory job's
    assert main(["sample-conditional", m, "--attr", a, "-n", "1", "--skip", "500",
                 "--threshold", "0", "-o", str(tmp_path / "sc")]) == 0
    assert os.listdir(tmp_path / "sc") == sorted(
        f for f in os.listdir(tmp_path / "c") if f.endswith(".png")) == ["000000.png"]
    # plurals
    capsys.readouterr()
    assert main(["edit", m, files["images"][0], "--attr", a, "--strength", "1", "-o",
                 str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert "1 image in " in out and "1 images" not in out
    assert main(["sample", m, "-n", "1", "--skip", "500", "-o", str(tmp_path / "s1")]) == 0
    assert "1 sample in " in capsys.readouterr().out
    # a missing input: its path once
    err = err_of(["edit", m, "data/nope.png", "--attr", a, "--strength", "1", "-o",
                  str(tmp_path / "n")], capsys)
    assert err.count("nope.png") == 1 and "no such file" in err, err


def test_grids_label_rows_by_attribute_with_an_input_row(files, tmp_path, monkeypatch):
    import d2c_fast.cli.edit as cli_edit
    grids = []
    real = cli_edit.save_grid

    def spy(rows, path, **kw):
        grids.append((len(rows), kw.get("labels")))
        return real(rows, path, **kw)
    monkeypatch.setattr(cli_edit, "save_grid", spy)
    m, a, img = files["model"], files["attr"], files["images"]
    assert main(["edit", m, *img, "--attr", a, "--strength", "2", "-o", str(tmp_path / "e"),
                 "--grid", str(tmp_path / "e.png")]) == 0
    assert main(["edit", m, *img, "--attr", a, "--sweep", "-2", "0", "2", "-o",
                 str(tmp_path / "s"), "--grid", str(tmp_path / "s.png")]) == 0
    assert main(["manipulate", m, "--attr", a, "--step", "1.5", *img, "-o",
                 str(tmp_path / "m"), "--grid", str(tmp_path / "m.png")]) == 0
    assert grids == [(2, ["input", "blond_hair +2"]),
                     (4, ["input", "blond_hair -2", "blond_hair +0", "blond_hair +2"]),
                     (2, ["input", "blond_hair step 1.5"])]
