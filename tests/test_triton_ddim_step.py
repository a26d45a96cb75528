"""The Triton DDIM step kernel (kernels/ddim_step.py) and the d2c_fast::ddim_step op.

Default (CI, CPU): the kernel runs under the Triton interpreter on CPU tensors (fp32 and fp16).
``D2C_FAST_TRITON_NATIVE=1`` (benchmarks/gpu_check.py on a GPU): compiled kernel on CUDA, bf16 too.
The interpreter must be on when triton is first imported; when another test module of the same
process imported triton natively, the kernel cases run in a fresh CPU-only process instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from d2c_fast import diffusion as D
from op_helpers import import_triton_or_skip, in_subprocess_only

ROOT = Path(__file__).resolve().parents[1]
NATIVE = os.environ.get("D2C_FAST_TRITON_NATIVE", "") == "1"
IN_SUBPROCESS = os.environ.get("D2C_FAST_TRITON_SUBPROCESS", "") == "1"

if NATIVE and not torch.cuda.is_available():
    pytest.skip("D2C_FAST_TRITON_NATIVE=1 needs CUDA", allow_module_level=True)


def _setup_triton(interpret: bool):
    """The kernel module, with triton imported under TRITON_INTERPRET=1 when ``interpret``
    (it must be set before triton's first import and stays set); None when triton was already
    imported the other way by another test module."""
    if interpret and "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    triton = import_triton_or_skip()
    if (type(triton.language.standard.sum).__name__ == "InterpretedFunction") != interpret:
        return None
    from d2c_fast.ops.group_norm_silu import import_kernel_module
    mod = import_kernel_module("ddim_step")
    if (type(mod._ddim_step_kernel).__name__ == "InterpretedFunction") != interpret:
        return None
    return mod


K = _setup_triton(interpret=not NATIVE)
IN_PROCESS = K is not None
# triton imported without the interpreter in this process: the kernel cases run in a subprocess
needs_kernel = in_subprocess_only(not IN_PROCESS)
DEVICE = "cuda" if NATIVE else "cpu"
EPS_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if NATIVE else [])

from d2c_fast.ops import backend_info  # noqa: E402
from d2c_fast.ops.ddim_step import DDIM_STEP_SCHEMA, ddim_step, ddim_step_ref  # noqa: E402

SCHED = D.Schedule(D.beta_schedule("linear", beta_start=1e-4, beta_end=0.02, num_timesteps=1000))


def _dtype_id(dt):
    return str(dt).replace("torch.", "").replace("float", "fp").replace("bfp", "bf")


def _tensors(shape, eps_dtype, layout="nchw", seed=0, x_dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    e = torch.randn(shape, generator=g)
    z = torch.randn(shape, generator=g)
    x, e, z = x.to(DEVICE, x_dtype), e.to(DEVICE, eps_dtype), z.to(DEVICE)
    if layout == "cl":            # everything channels-last: the linear path
        x, e, z = (t.contiguous(memory_format=torch.channels_last) for t in (x, e, z))
    elif layout == "eps-cl":      # U-Net output channels-last, latent NCHW: the strided path
        e = e.contiguous(memory_format=torch.channels_last)
    elif layout == "x-slice":     # x is every other image of a larger batch
        x = torch.stack([x, x], dim=1)[:, 0]
    return x, e, z


# (t, t_next, eta): first step of skip=100, a middle one, the last (t_next = -1), eta > 0.
STEPS = [(999, 900, 0.0), (500, 400, 0.0), (0, -1, 0.0), (600, 500, 1.0)]
SHAPES = [(1, 8, 32, 32), (4, 8, 32, 32), (3, 4, 7, 5), (1, 1, 1, 1), (2, 3, 5)]
LAYOUTS = ["nchw", "cl", "eps-cl", "x-slice"]
CASES = ([(s, "nchw", dt, st) for s in SHAPES for dt in EPS_DTYPES for st in (STEPS[0], STEPS[3])]
         + [((2, 8, 6, 6), lay, dt, st) for lay in LAYOUTS[1:] for dt in EPS_DTYPES
            for st in (STEPS[1], STEPS[2], STEPS[3])])


def _case_id(c):
    shape, layout, dt, (t, tn, eta) = c
    return f"{'x'.join(map(str, shape))}-{layout}-eps_{_dtype_id(dt)}-t{t}to{tn}-eta{eta:g}"


def _truth(x, e, coeffs, z):
    """float64 DDIM update of the same inputs."""
    sa, s1a, sn, c1, c2 = coeffs
    x0 = (x.double() - s1a * e.double()) / sa
    xn = sn * x0 + c2 * e.double()
    if z is not None:
        xn = xn + c1 * z.double()
    return xn, x0


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("coeff_kind", ["device-tensor", "floats"])
def test_kernel_matches_reference(case, coeff_kind):
    shape, layout, eps_dtype, (t, tn, eta) = case
    x, e, z = _tensors(shape, eps_dtype, layout)
    coeffs = D.ddim_step_coeffs(SCHED, t, tn, eta)
    noise = z if eta > 0 else None
    c_arg = torch.tensor(coeffs, dtype=torch.float32, device=DEVICE) if coeff_kind == "device-tensor" \
        else coeffs
    x0 = torch.empty_like(x)
    y = K.ddim_step_triton(x, e, c_arg, noise, x0_out=x0)
    ref = ddim_step_ref(x, e, coeffs, noise)
    want, want_x0 = _truth(x, e, coeffs, noise)
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == torch.empty_like(x).stride()
    # fp32 arithmetic on both sides: agree with the reference to rounding, and with float64
    torch.testing.assert_close(y, ref, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(y.double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x0.double(), want_x0, atol=1e-5 / coeffs[0], rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("x_dtype", [torch.float16] + ([torch.bfloat16] if NATIVE else []),
                         ids=_dtype_id)
def test_low_precision_latent(x_dtype):
    x, e, z = _tensors((2, 4, 7, 5), x_dtype, x_dtype=x_dtype)
    coeffs = D.ddim_step_coeffs(SCHED, 500, 400, 0.5)
    y = K.ddim_step_triton(x, e, coeffs, z)
    assert y.dtype == x_dtype
    ref = ddim_step_ref(x, e, coeffs, z)
    tol = 2e-3 if x_dtype == torch.float16 else 1.6e-2
    torch.testing.assert_close(y.float(), ref.float(), atol=tol, rtol=tol)


@needs_kernel
def test_in_place_and_table_row():
    """The graph loop's use: coefficients are a row of a per-step device table, out is x."""
    x, e, z = _tensors((2, 8, 6, 6), torch.float16, "cl")
    seq = D.uncond_sequence(1000, skip=100)
    pairs = list(zip(reversed(seq), reversed([-1] + seq[:-1])))
    table = torch.tensor([D.ddim_step_coeffs(SCHED, t, tn, 0.3) for t, tn in pairs],
                         dtype=torch.float32, device=DEVICE)
    i = 4
    want = ddim_step_ref(x, e, D.ddim_step_coeffs(SCHED, *pairs[i], 0.3), z)
    ptr = x.data_ptr()
    y = K.ddim_step_triton(x, e, table[i], z, out=x)
    assert y is x and x.data_ptr() == ptr
    torch.testing.assert_close(x, want, atol=2e-6, rtol=2e-6)


@needs_kernel
def test_full_trajectory_matches_diffusion_ddim():
    """A whole skip=100 trajectory (eta 0 and eta 1, noise injected per step) with the kernel
    equals d2c_fast.diffusion.ddim with the same model callable and noise."""
    g = torch.Generator().manual_seed(3)
    w = (0.3 * torch.randn(4, 4, generator=g)).to(DEVICE)
    x_T = torch.randn(2, 4, 5, 5, generator=g).to(DEVICE)
    noises = torch.randn(11, 2, 4, 5, 5, generator=g).to(DEVICE)

    def model(x, t):
        return torch.tanh(torch.einsum("oc,nchw->nohw", w, x) + t[:, None, None, None] / 1000)

    seq = D.uncond_sequence(1000, skip=100)
    pairs = list(zip(reversed(seq), reversed([-1] + seq[:-1])))
    for eta in (0.0, 1.0):
        want = D.ddim(model, x_T.clone(), seq, SCHED, eta=eta, step_noise=lambda i: noises[i])
        x = x_T.clone()
        table = torch.tensor([D.ddim_step_coeffs(SCHED, t, tn, eta) for t, tn in pairs],
                             dtype=torch.float32, device=DEVICE)
        for i, (t, _) in enumerate(pairs):
            e = model(x, torch.full((2,), float(t), device=DEVICE))
            K.ddim_step_triton(x, e, table[i], noises[i] if eta > 0 else None, out=x)
        torch.testing.assert_close(x, want, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_kernel_errors():
    x, e, _ = _tensors((1, 2, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="5"):
        K.ddim_step_triton(x, e, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        K.ddim_step_triton(x, e[:, :1], (1.0, 0.0, 1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="float32"):
        K.ddim_step_triton(x, e, torch.ones(5, dtype=torch.float64, device=DEVICE))


# --- the dispatcher op --------------------------------------------------------------------------

def test_schema():
    assert str(torch.ops.d2c_fast.ddim_step.default._schema) == f"d2c_fast::{DDIM_STEP_SCHEMA}"


@pytest.mark.parametrize("layout,with_noise", [("nchw", True), ("eps-cl", False), ("cl", True)])
def test_opcheck(layout, with_noise):
    x, e, z = _tensors((2, 4, 5, 5), torch.float16, layout)
    coeffs = torch.tensor(D.ddim_step_coeffs(SCHED, 600, 500, 1.0), device=DEVICE)
    noise = z if with_noise else None
    torch.library.opcheck(torch.ops.d2c_fast.ddim_step.default, (x, e, coeffs, noise))
    y = ddim_step(x, e, coeffs, noise)
    torch.testing.assert_close(y, ddim_step_ref(x, e, coeffs.tolist(), noise), atol=2e-6, rtol=2e-6)
    assert y.stride() == torch.empty_like(x).stride()


def test_op_errors_and_out():
    x, e, z = _tensors((1, 2, 3, 3), torch.float32)
    c = torch.tensor([1.0, 0.5, 1.0, 0.0, 0.5], device=DEVICE)
    with pytest.raises(RuntimeError, match="shape"):
        torch.ops.d2c_fast.ddim_step(x, e[:, :1], c, None)
    with pytest.raises(RuntimeError, match="5 float32"):
        torch.ops.d2c_fast.ddim_step(x, e, c[:4], None)
    with pytest.raises(ValueError, match="impl"):
        ddim_step(x, e, c, impl="nope")
    out = torch.empty_like(x)
    assert ddim_step(x, e, c, z, out=out) is out
    torch.testing.assert_close(out, ddim_step_ref(x, e, c, z))


def test_backend_info():
    assert backend_info(DEVICE)["ddim_step"]["kernel"] == ("triton" if NATIVE else "ref")


@in_subprocess_only(IN_PROCESS or IN_SUBPROCESS)   # the kernel cases ran in this process
def test_kernel_cases_in_subprocess():
    """The interpreter cases of this file in a fresh CPU-only process."""
    env = dict(os.environ, TRITON_INTERPRET="1", D2C_FAST_TRITON_SUBPROCESS="1",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    env.pop("D2C_FAST_TRITON_NATIVE", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                        __file__], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
