"""D2C models from the command line: convert, sample, edit, train, evaluate, few-shot attributes.

    d2c-fast convert model.ckpt --config config.yml -o model.safetensors
    d2c-fast info model.safetensors
    d2c-fast sample model.safetensors -n 16 --seed 0 --grid samples.png
    d2c-fast edit model.safetensors img1.png img2.png --attr blond.ckpt --step 1.5 -o edits/
    d2c-fast fit-attribute model.safetensors --faces blond_hair -n 100 -o blond.safetensors
    d2c-fast demo -o demo.png

One module a group of commands, each with ``add_parser(subparsers)``: :mod:`.model`
(convert, info, demo), :mod:`.sample` (sample, sample-conditional), :mod:`.edit` (edit and
its alias manipulate), :mod:`.fit` (fit-attribute), :mod:`.jobs` (manipulate-dir,
sample-conditional-dir), :mod:`.train` (train, export), :mod:`.evaluation` (train-oracle,
evaluate, eval-attributes). Options several commands share (the model, ``--threads``,
guidance and its rescale) are defined once in :mod:`.options`. This package imports the rest
of d2c_fast and nothing in d2c_fast imports it.
"""
from .main import build_parser, main

__all__ = ["main", "build_parser"]
