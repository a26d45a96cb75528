"""Fit the built-in model's five attributes and write them to d2c_fast/assets/attributes/.

    python scripts/fit_builtin_attributes.py

Each is fitted from 100 labelled faces (50 with, 50 without) of the built-in dataset's val
split, as d2c_fast.demo.fit_builtin_attribute documents: the few-shot setting, nothing a user
would not have. About 20 s on a 2-core CPU.
"""
import os

from d2c_fast.attributes import ATTRIBUTE_DIR
from d2c_fast.data.faces import ATTRIBUTES
from d2c_fast.demo import fit_builtin_attribute
from d2c_fast.sampler import Sampler


def main() -> None:
    s = Sampler("builtin")
    os.makedirs(ATTRIBUTE_DIR, exist_ok=True)
    for name in ATTRIBUTES:
        a = fit_builtin_attribute(s, name)
        path = a.save(os.path.join(ATTRIBUTE_DIR, f"{name}.safetensors"))
        print(f"{name}: cv accuracy {a.info.get('cv_accuracy', float('nan')):.3f} -> {path}")


if __name__ == "__main__":
    main()
