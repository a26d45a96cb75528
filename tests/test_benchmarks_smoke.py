"""The benchmark suites and scripts still import against the library (nothing here times
anything): a renamed helper once broke `make bench` without any test noticing."""
from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _scripts():
    """Modules under benchmarks/ and scripts/ that only act under ``__main__``."""
    out = []
    for path in sorted(glob.glob(os.path.join(BENCH, "*.py")) +
                       glob.glob(os.path.join(ROOT, "scripts", "*.py"))):
        with open(path) as f:
            if 'if __name__ == "__main__":' in f.read():
                out.append(path)
    return out


def test_benchmark_suites_collect():
    suites = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCH, "bench_*.py")))
    assert "bench_cpu.py" in suites
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", *suites], cwd=BENCH,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("path", _scripts(), ids=os.path.basename)
def test_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    spec = importlib.util.spec_from_file_location(f"_smoke_{os.path.basename(path)[:-3]}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(getattr(mod, "main", None))


def test_roofline_conv_flops():
    """roofline.py's FLOP count against the formula: 2 * out elements * C_in/groups * k * k."""
    sys.path.insert(0, BENCH)
    try:
        import roofline
    finally:
        sys.path.remove(BENCH)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                              torch.nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=4))
    x = torch.randn(2, 3, 10, 10)
    want = 2 * (2 * 8 * 10 * 10) * 3 * 9 + 2 * (2 * 8 * 5 * 5) * 2 * 25
    assert roofline.conv_flops(net, lambda: net(x)) == want
    fwd, bwd = roofline.split_conv({"aten::mkldnn_convolution": 2.0, "aten::convolution": 0.5,
                                    "aten::convolution_backward": 3.0,
                                    "autograd::engine::evaluate_function: "
                                    "ConvolutionBackward0": 0.25, "aten::mul": 9.0})
    assert (fwd, bwd) == (2.5, 3.25)
