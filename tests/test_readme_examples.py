"""Every example of README.md does what it promises: the fenced ``d2c-fast`` command lines and
Python blocks are read from the README as it is now and run in a temporary folder.

* Files the examples read are provided the way a user has them: the official release's files
  (``model.ckpt``, ``config.yml``, any other ``.ckpt``: an official boundary file) from the
  official fixture (conftest's ``fixture_dir``: ``../shared/fixtures/official_tiny64`` or
  ``$D2C_FIXTURE_DIR``); input
  images (``face.png``, ``a.png``, ...) are built-in faces without any of the five
  attributes, at the resolution of the model the example opens. Everything else an example
  reads must be written by an example before it (``fit-attribute ... -o blond.safetensors``).
* A command line must exit 0 and write what it names (``-o``, ``--output``, ``--grid``: the
  file, or a folder with files in it). An edit (``edit``, ``manipulate``) must change the
  picture visibly: it is run again with no edit (``--strength 0`` / ``--step 0``) and the
  mean absolute pixel change between the two outputs must be at least ``VISIBLE`` (see
  there for how it was chosen).
* A Python block must run; an assignment commented with a shape ``# (1, 3, H, W) in [0, 1]``
  must give such a tensor; a ``.manipulate(...)`` call must differ visibly from the same
  call with ``step=0`` / ``strength=0`` (for ``target=``: ``strength=0``).
* Counts that only set how much a line makes are scaled down (``SCALE``: ``-n 16`` -> 2
  pictures, ``--adapt-prior 512`` -> 32 pilot samples): the line still runs its real path
  and must write its outputs, in seconds instead of minutes on 2 shared cores.
* Lines that take minutes by design (``SLOW``: training, the oracle, evaluations, the demo
  with its five fits) and placeholders (``...``) are parsed by the real CLI parser (every flag
  exists, every value has its type) instead of being run.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_fast.cli import main
from d2c_fast.cli.main import build_parser
from d2c_fast.data import FacesDataset
from d2c_fast.images import IMAGE_EXTENSIONS, load_images

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Subcommands whose README lines are parsed, not run, and why.
SLOW = {
    "train": "trains for its --max-minutes (58 min for the built-in recipe)",
    "train-oracle": "trains the oracle classifier (~2 min)",
    "evaluate": "needs the trained run of the train line and samples thousands of images",
    "eval-attributes": "fits and samples every attribute (minutes)",
    "eval-edits": "edits 48 faces per attribute and direction with three methods (minutes); "
                  "tests/test_counterfactual_eval.py runs it small",
    "demo": "fits five attributes (about a minute on 2 shared cores; tests/test_builtin_model.py "
            "runs it)",
    "serve": "serves until stopped (tests/test_serve_api.py runs it on a loopback port)",
}
#: Smallest mean absolute pixel change (images in [0, 1]) between an edit and the same
#: command without the edit that counts as visible: 0.03, 7.7 grey levels on average over the
#: whole picture. Measured on the built-in model (2026-12-07, the plain face this test gives):
#: the README's blond edit at --strength 15 changes it by 0.084 against --strength 0 (hair
#: clearly blond), --target typical by 0.063; --strength 2, the value the README once showed,
#: by 0.012, which looks unchanged side by side. The official fixture's random tiny model
#: moves 0.16 at --step 1.5.
VISIBLE = 0.03
#: Flags whose values only set how much a line makes, and the value the test runs with.
SCALE = {"-n": 2, "--adapt-prior": 32}
OUTPUT_FLAGS = ("-o", "--output", "--grid", "--export")
EDIT_COMMANDS = ("edit", "manipulate")


def fenced_blocks(text: str):
    """``(language, code)`` of every fenced block of a Markdown text."""
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)]


def scaled(argv):
    """``argv`` with the counts of ``SCALE`` lowered to its values (never raised)."""
    out = list(argv)
    for i, a in enumerate(argv[:-1]):
        if a in SCALE and argv[i + 1].isdigit():
            out[i + 1] = str(min(int(argv[i + 1]), SCALE[a]))
    return out


def command_lines(text: str):
    """Every ``d2c-fast ...`` line of the bash blocks, comments removed, as argv lists."""
    out = []
    for lang, code in fenced_blocks(text):
        if lang not in ("bash", "sh", "console", ""):
            continue
        for line in code.splitlines():
            line = line.strip()
            if line.startswith("d2c-fast "):
                out.append(shlex.split(line, comments=True)[1:])
    return out


def python_blocks(text: str):
    return [code for lang, code in fenced_blocks(text) if lang == "python"]


class Workspace:
    """The temporary folder the examples run in, and the inputs they need."""

    def __init__(self, path: Path, official: Path):
        self.path, self.official = path, official
        self._res = {}

    def provide_official(self, name: str) -> None:
        """Copy the official file a README example reads (``model.ckpt``, ``config.yml``, any
        other ``.ckpt``: the official boundary file) unless an example wrote it."""
        dst = self.path / name
        if dst.exists():
            return
        src = {"model.ckpt": "model.ckpt", "config.yml": "config.yml"}.get(
            os.path.basename(name), "boundary.ckpt" if name.endswith(".ckpt") else None)
        if src is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.official / src, dst)

    def resolution(self, model: str, config=None) -> int:
        from d2c_fast import Sampler
        key = (model, config)
        if key not in self._res:
            self._res[key] = Sampler(model if model == "builtin" else str(self.path / model),
                                     config=None if config is None else str(self.path / config),
                                     impl="ref").resolution
        return self._res[key]

    def provide_images(self, names, resolution: int) -> None:
        """Built-in faces without any of the five attributes, one per name (the edit has
        something to add), written at ``resolution``."""
        ds = FacesDataset(64, resolution=resolution, seed=0, split="test")
        plain = [i for i in range(len(ds)) if float(ds[i][1].sum()) == 0]
        for k, name in enumerate(names):
            x = ds[plain[k % len(plain)]][0]
            arr = (x.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(self.path / name)


def _value(argv, *flags):
    for i, a in enumerate(argv[:-1]):
        if a in flags:
            return argv[i + 1]
    return None


def _inputs_and_outputs(argv):
    """(input image names, output names) of a command line."""
    outs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in OUTPUT_FLAGS]
    ins = [a for i, a in enumerate(argv) if a.lower().endswith(IMAGE_EXTENSIONS)
           and not (i > 0 and argv[i - 1] in OUTPUT_FLAGS)]
    return ins, outs


def _pictures(path: Path) -> dict:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                 if p.suffix.lower() in IMAGE_EXTENSIONS)
    return {p.relative_to(path).as_posix() if path.is_dir() else "(the file)":
            load_images(str(p)) for p in files}


def _without_edit(argv):
    """The same command with no edit: ``--strength 0`` (``--step 0`` for raw steps; a line
    that gives no amount, the default edit, gets ``--strength 0``)."""
    out, skip, amount = [], False, False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("--strength", "--step", "--target"):
            out += ["--step" if a == "--step" else "--strength", "0"]
            skip = amount = True
        else:
            out.append(a)
    return out if amount else out + ["--strength", "0"]


def _renamed_outputs(argv, suffix):
    out = list(argv)
    for i, a in enumerate(argv[:-1]):
        if a in OUTPUT_FLAGS:
            p = argv[i + 1]
            out[i + 1] = (p.rstrip("/") + suffix + "/") if p.endswith("/") else \
                str(Path(p).with_name(Path(p).stem + suffix + Path(p).suffix))
    return out


def test_readme_has_examples():
    text = README.read_text()
    assert len(command_lines(text)) >= 10 and python_blocks(text)


def test_readme_command_lines(tmp_path, fixture_dir, monkeypatch, capsys):
    torch.set_num_threads(1)     # 2 OpenMP threads on busy shared cores stall (train/README)
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path, fixture_dir)
    parser = build_parser()
    ran, measured, took = [], [], []
    for argv in command_lines(README.read_text()):
        line = "d2c-fast " + " ".join(argv)
        if "..." in argv or argv[0] in SLOW:
            real = [a for a in argv if a != "..."]
            if "..." in argv:     # a placeholder: each named subcommand must exist
                for a in real:
                    if a != "/":
                        with pytest.raises(SystemExit) as e:
                            parser.parse_args([a, "--help"])
                        assert e.value.code == 0, f"{line}: no subcommand {a}"
                capsys.readouterr()
                continue
            parser.parse_args(real)      # flags exist, values parse (SystemExit otherwise)
            continue
        argv = scaled(argv)
        for a in argv:
            if a.endswith((".ckpt", ".yml", ".yaml")):
                ws.provide_official(a)
        ins, outs = _inputs_and_outputs(argv)
        if ins:
            model = argv[1]
            res = ws.resolution(model, _value(argv, "--config"))
            ws.provide_images(ins, res)
        t0 = time.perf_counter()
        rc = main(argv)
        err = capsys.readouterr().err
        took.append((time.perf_counter() - t0, line))
        assert rc == 0, f"{line}: exit {rc}: {err.strip()[-400:]}"
        for o in outs:
            p = tmp_path / o
            assert p.exists(), f"{line}: promised output {o} was not written"
            if o.endswith("/"):
                assert any(p.iterdir()), f"{line}: {o} is empty"
        if argv[0] in EDIT_COMMANDS:
            base = _renamed_outputs(_without_edit(argv), "-noedit")
            assert main(base) == 0, capsys.readouterr().err
            _, bouts = _inputs_and_outputs(base)
            for o, bo in zip(outs, bouts):
                if o == _value(argv, "--grid"):
                    continue
                got, ref = _pictures(tmp_path / o), _pictures(tmp_path / bo)
                assert got.keys() == ref.keys() and got, line
                for k in got:
                    change = float((got[k] - ref[k]).abs().mean())
                    measured.append((line, k, change))
                    assert change >= VISIBLE, (f"{line}: {k} changes by only {change:.4f} "
                                               f"(mean abs, [0, 1]) against the unedited "
                                               f"output; below {VISIBLE}, it looks unchanged")
        ran.append(line)
    with capsys.disabled():
        print("\n".join([f"edit change {c:.4f}: {ln} [{k}]" for ln, k, c in measured]
                        + [f"{t:6.1f} s  {ln}" for t, ln in took]))
    assert len(ran) >= 8, ran


_SHAPE = re.compile(r"^\s*(\w+)\s*=.*#\s*\(\s*(\w+)\s*,\s*(\w+)\s*,\s*\w+\s*,\s*\w+\s*\)"
                    r"(\s*in \[0, 1\])?")


def _literals(code: str):
    return [n.value for n in ast.walk(ast.parse(code))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_readme_python_blocks(tmp_path, fixture_dir, monkeypatch):
    torch.set_num_threads(1)     # 2 OpenMP threads on busy shared cores stall (train/README)
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path, fixture_dir)
    for code in python_blocks(README.read_text()):
        lits = _literals(code)
        for s in lits:
            if s.endswith((".ckpt", ".yml", ".yaml")):
                ws.provide_official(s)
        images = [s for s in lits if s.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            m = re.search(r"Sampler\(\s*[\"']([^\"']+)[\"']\s*(?:,\s*config\s*=\s*[\"']([^\"']+)"
                          r"[\"'])?", code)
            assert m, "a Python example reads images but opens no Sampler"
            ws.provide_images(images, ws.resolution(m.group(1), m.group(2)))
        ns = {}
        exec(compile(code, "README.md", "exec"), ns)
        for line in code.splitlines():
            sm = _SHAPE.match(line)
            if sm:
                v = ns[sm.group(1)]
                assert isinstance(v, torch.Tensor) and v.dim() == 4, line
                for dim, want in zip(v.shape[:2], sm.group(2, 3)):
                    assert not want.isdigit() or dim == int(want), (line, tuple(v.shape))
                if sm.group(4):
                    assert 0 <= float(v.min()) and float(v.max()) <= 1, line
            em = re.match(r"^\s*(\w+)\s*=\s*(.*\.manipulate\(.*)$", line.split("#")[0])
            if em:
                call = re.sub(r"\b(step|strength|target)\s*=\s*[^,)]+",
                              lambda m: ("step" if m.group(1) == "step" else "strength") + "=0",
                              em.group(2))
                if call == em.group(2):     # the default edit: undone with strength=0
                    call = re.sub(r"\)\s*$", ", strength=0)", call.rstrip())
                base = eval(call, ns)
                change = float((ns[em.group(1)] - base).abs().mean())
                print(f"edit change {change:.4f}: {line.strip()}")
                assert change >= VISIBLE, f"{line}: changes the image by only {change:.4f}"
