"""The built-in model's shipped attributes (d2c_fast/assets/attributes): reachable by name
from Python and the CLI, a file of the same name wins, unknown names and other models are
refused with messages that say what exists."""
from __future__ import annotations

import os

import pytest
import torch

from d2c_fast import Sampler
from d2c_fast.attributes import (ATTRIBUTE_DIR, Attribute, builtin_attribute_names,
                                 builtin_attribute_path, resolve_attribute)
from d2c_fast.cli.main import main as cli_main
from d2c_fast.data.faces import ATTRIBUTES, FacesDataset
from d2c_fast.errors import AttributeFileError
from d2c_fast.images import load_images, save_png
from d2c_fast.train.testing import save_tiny_model


@pytest.fixture(scope="module")
def s():
    return Sampler("builtin")


def test_the_five_attributes_ship_and_fit_the_builtin_model(s):
    assert set(builtin_attribute_names()) == set(ATTRIBUTES)
    for name in ATTRIBUTES:
        a = resolve_attribute(name, s)
        assert a.is_fitted and a.name == name
        assert a.fingerprint == s.fingerprint


def test_a_name_edits_like_its_file(s):
    x = torch.stack([FacesDataset(2, resolution=s.resolution, split="test")[i][0]
                     for i in range(2)])
    by_name = s.manipulate(x, "smiling", strength=3.0, seed=0, mode="mode")
    by_file = s.manipulate(x, Attribute.load(builtin_attribute_path("smiling")), strength=3.0,
                           seed=0, mode="mode")
    assert torch.equal(by_name, by_file)
    assert (by_name - x).abs().mean() > 0.005


def test_a_file_of_that_name_wins(tmp_path, s, monkeypatch):
    a = resolve_attribute("beard", s)
    a.name = "beard-copy"
    a.save(str(tmp_path / "beard"))
    monkeypatch.chdir(tmp_path)
    assert resolve_attribute("beard", s).name == "beard-copy"


def test_unknown_name_lists_the_builtin_ones(s):
    with pytest.raises(AttributeFileError, match="no such attribute file.*blond_hair"):
        resolve_attribute("blonde_hair", s)
    assert builtin_attribute_path("../builtin") is None
    assert builtin_attribute_path("blond_hair.safetensors") is None


def test_a_builtin_name_with_another_model_is_refused(tmp_path):
    p = str(tmp_path / "other.safetensors")
    save_tiny_model(p, resolution=32)
    other = Sampler(p)
    with pytest.raises(AttributeFileError):
        resolve_attribute("blond_hair", other)


def test_cli_edit_takes_a_builtin_name(tmp_path, s):
    face = str(tmp_path / "face.png")
    save_png(FacesDataset(1, resolution=s.resolution, split="test")[0][0], face)
    out = tmp_path / "out"
    rc = cli_main(["edit", "builtin", face, "--attr", "blond_hair", "--strength", "8",
                   "-o", str(out)])
    assert rc == 0
    pngs = sorted(os.listdir(out))
    assert pngs and (load_images(str(out / pngs[0])) - load_images(face)).abs().mean() > 0.01


def test_attribute_dir_is_inside_the_package():
    assert os.path.commonpath([ATTRIBUTE_DIR, os.path.dirname(os.path.abspath(
        __import__("d2c_fast").__file__))]) == os.path.dirname(os.path.abspath(
            __import__("d2c_fast").__file__))
