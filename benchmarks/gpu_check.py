"""One GPU check for the issue-4 fast path: card, GPU tests, B0 / B1 / ours, JSON + table.

    python benchmarks/gpu_check.py OUTDIR                 # full run (ARCH-256, batch 1 and 64)
    python benchmarks/gpu_check.py OUTDIR --quick         # fewer iterations, B1 in default mode
    python benchmarks/gpu_check.py OUTDIR --b1-mode default
    python benchmarks/gpu_check.py /tmp/gpu_dry --dry-run # CPU: tiny config, interpreter/reference

What it does, in order (each section is guarded: a failure is recorded, the rest goes on, and
results.json / results.md in OUTDIR are rewritten after every section, so a run cut short still
leaves its numbers):
 1. prints the card and versions;
 2. runs the GPU tests in a subprocess: tests/test_gpu_*.py and the Triton tests compiled on
    CUDA (D2C_FAST_TRITON_NATIVE=1, no interpreter);
 3. accuracy gate: ours (bf16) vs B0 (fp32) W-gen latents and decoder logits, relative L2;
 4. one U-Net call at batch 1 and 64: B0 = reference eager fp32; B1 = torch.compile of the
    reference U-Net in bf16, channels-last, mode max-autotune (or --b1-mode); ours = FastUNet in a
    CUDA graph (and eagerly, for information). Compile / capture times are reported apart;
 5. W-gen (skip 100: 11 U-Net calls + decode + mixture sample) at batch 1 and 64, same three;
 6. GroupNorm+SiLU bandwidth at U-Net shapes vs a measured copy bandwidth; DDIM step kernel;
 7. host synchronisations during a warmed sampling call (torch.cuda.set_sync_debug_mode);
 8. batch independence (images of a batch-64 run vs the same noise at batch 1);
 (issue 5, the decoder kernels and the whole edit)
 9. W-edit (encode, attribute step, noise to t0 = 50, 2 DDIM steps, decode, mixture sample) at
    batch 1 and 64: B0 = Sampler(impl="ref") eager fp32; B1 = the reference in bf16,
    channels-last, its U-Net compiled in --b1-mode and its encoder and decoder in
    --b1-decoder-mode (both reported); ours = Sampler(impl="fast", dtype=bf16). Median time,
    images/s, peak GPU memory (what one call adds at its peak over the memory allocated before
    it: torch.cuda.max_memory_allocated minus memory_allocated; model weights, resident for all
    candidates, excluded); B0 at batch 64 falls back to batch_size=16 chunks on out-of-memory
    (reported, and then no memory ratio is claimed);
10. the decoder alone (latents -> logits) at the same batches: B0, B1, ours eager, ours in the
    GpuSampler's captured CUDA graph;
11. depthwise conv + bias + Swish (d2c_fast::dwconv_bias_swish) and se_residual at the ARCH-256
    decoder shapes (bf16, channels-last, largest batch): time, GB/s (bytes each op must move:
    dwconv in + out; se_residual s + skip + out), fraction of the measured copy bandwidth, and
    PyTorch's cuDNN depthwise conv + SiLU / eager SE expression for comparison.
Timings are medians of wall time around a synchronised call; ratios are same-run. --skip
SECTION,... leaves sections out (names as printed, e.g. "unet call,wgen") to fit a short GPU slot.
A dry run (CPU, tiny config) times W-gen and the accuracy gate at the first batch only and keeps
every count at 1, so that it ends within about two minutes on two cores.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNET_GFLOP_NOMINAL = 12.5   # per image per call, ARCH-256 (BENCHMARKING.md)
DEC_GFLOP_NOMINAL = 60.0
# Dense bf16 tensor-core peaks from the vendor spec sheets (TFLOP/s), by device-name fragment.
BF16_PEAK_TFLOPS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
                    ("L40S", 362.0), ("A10", 125.0)]


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir")
    p.add_argument("--quick", action="store_true", help="fewer iterations; B1 in default mode")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny config, Triton interpreter / reference paths, tiny counts")
    p.add_argument("--b1-mode", default=None, choices=["max-autotune", "default",
                                                       "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode of B1's U-Net (default max-autotune; --quick: default)")
    p.add_argument("--b1-decoder-mode", default="default",
                   help="torch.compile mode of B1's decoder in W-gen (default: 'default', to bound "
                        "compile time; reported)")
    p.add_argument("--batches", default=None, help="comma list (default 1,64; dry-run 1,2)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="wall-clock budget; optional sections are skipped past it")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip", default="", help="comma list of section names to leave out")
    p.add_argument("--tests-timeout-s", type=float, default=None)
    return p.parse_args()


ARGS = _parse()
if ARGS.dry_run:
    # The Triton interpreter must be chosen before triton is first imported.
    os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*d2c_fast._C not loaded.*")

import torch  # noqa: E402

T0 = time.perf_counter()
OUT = Path(ARGS.outdir)
OUT.mkdir(parents=True, exist_ok=True)
DEVICE = "cpu" if ARGS.dry_run or not torch.cuda.is_available() else "cuda"
CUDA = DEVICE == "cuda"
B1_MODE = "backend=eager (dry run)" if ARGS.dry_run else (
    ARGS.b1_mode or ("default" if ARGS.quick else "max-autotune"))
BATCHES = [int(b) for b in (ARGS.batches or ("1,2" if ARGS.dry_run else "1,64")).split(",")]
ITERS = {"unet": 1 if ARGS.dry_run else (10 if ARGS.quick else 30),
         "wgen": 1 if ARGS.dry_run else (2 if ARGS.quick else 5),
         "b0_wgen": 1 if ARGS.dry_run else (1 if ARGS.quick else 3),
         "wedit": 1 if ARGS.dry_run else (3 if ARGS.quick else 10),
         "b0_wedit": 1 if ARGS.dry_run else (2 if ARGS.quick else 3),
         "decoder": 1 if ARGS.dry_run else (5 if ARGS.quick else 20),
         "kernel": 1 if ARGS.dry_run else (20 if ARGS.quick else 50)}
SKIP = {x.strip() for x in ARGS.skip.split(",") if x.strip()}

R: dict = {"meta": {}, "tests": {}, "accuracy": {}, "unet": {}, "wgen": {}, "compile_s": {},
           "capture_s": {}, "group_norm_silu": {}, "ddim_step": {}, "host_syncs": {},
           "batch_independence": {}, "wedit": {}, "decoder": {}, "dwconv": {}, "se_residual": {},
           "targets": {}, "skipped": [], "errors": []}


def elapsed() -> float:
    return time.perf_counter() - T0


def log(msg: str) -> None:
    print(f"[{elapsed():7.1f}s] {msg}", flush=True)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def timed(fn, iters: int, warmup: int = 1) -> dict:
    """Median / min wall time (s) of synchronised calls (no warm-up call in a dry run)."""
    for _ in range(0 if ARGS.dry_run else warmup):
        fn()
    sync()
    ts = []
    for _ in range(max(1, iters)):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "iters": len(ts)}


def event_time(fn, iters: int) -> float:
    """Seconds per call from CUDA events around ``iters`` back-to-back calls (wall on CPU)."""
    fn()
    sync()
    if not CUDA:
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t) / iters
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3 / iters


def save() -> None:
    R["meta"]["elapsed_s"] = round(elapsed(), 1)
    (OUT / "results.json").write_text(json.dumps(R, indent=1, default=str))
    (OUT / "results.md").write_text(markdown())


def section(name: str, min_left_s: float = 0.0):
    """Decorator: run a section unless the budget is spent; record failures; save after."""
    def deco(fn):
        if name in SKIP:
            R["skipped"].append(f"{name}: --skip")
            log(f"SKIP {name} (--skip)")
            save()
            return fn
        left = ARGS.budget_s - elapsed()
        if left < min_left_s:
            R["skipped"].append(f"{name}: budget ({left:.0f}s left, needs ~{min_left_s:.0f}s)")
            log(f"SKIP {name} (budget)")
            save()
            return fn
        log(f"== {name}")
        try:
            fn()
        except Exception as exc:  # keep going: one broken section must not lose the others
            R["errors"].append({"section": name, "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc()[-3000:]})
            log(f"ERROR in {name}: {type(exc).__name__}: {exc}")
        save()
        return fn
    return deco


def ms(entry) -> str:
    if not entry:
        return "—"
    return f"{entry['median_s'] * 1e3:.2f}"


def ratio(a, b) -> str:
    if not a or not b:
        return "—"
    return f"{a['median_s'] / b['median_s']:.2f}x"


def markdown() -> str:
    m = R["meta"]
    lines = [f"# gpu_check results ({'DRY RUN, CPU' if ARGS.dry_run else m.get('device', '?')})", "",
             f"- device: {m.get('device')}; torch {m.get('torch')}; triton {m.get('triton')}; "
             f"config {m.get('config')}; B1 mode: U-Net `{B1_MODE}`, decoder "
             f"`{ARGS.b1_decoder_mode}`, encoder (W-edit) `{m.get('b1_encoder_mode', '—')}`; "
             f"elapsed {m.get('elapsed_s')} s", ""]
    lines += ["| workload | batch | B0 ms | B1 ms | ours ms | ours eager ms | ours NCHW ms | B0/ours | B1/ours |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for wl in ("unet", "wgen"):
        for b, row in sorted(R[wl].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {wl} | {b} | {ms(row.get('B0'))} | {ms(row.get('B1'))} | "
                         f"{ms(row.get('ours'))} | {ms(row.get('ours_eager'))} | "
                         f"{ms(row.get('ours_nchw'))} | "
                         f"{ratio(row.get('B0'), row.get('ours'))} | "
                         f"{ratio(row.get('B1'), row.get('ours'))} |")
    if R["wedit"] or R["decoder"]:
        lines += ["", "| workload | batch | B0 ms | B1 ms | ours ms | ours graph ms | B0/ours | B1/ours | "
                  "ours img/s | peak extra GiB B0 / B1 / ours |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for wl in ("wedit", "decoder"):
            for b, row in sorted(R[wl].items(), key=lambda kv: int(kv[0])):
                pk = row.get("peak_gib", {})
                ips = row.get("ours_images_per_s")
                lines.append(f"| {wl} | {b} | {ms(row.get('B0'))} | {ms(row.get('B1'))} | "
                             f"{ms(row.get('ours'))} | {ms(row.get('ours_graph'))} | "
                             f"{ratio(row.get('B0'), row.get('ours'))} | "
                             f"{ratio(row.get('B1'), row.get('ours'))} | "
                             f"{'—' if ips is None else f'{ips:.1f}'} | "
                             + " / ".join("—" if pk.get(k) is None else f"{pk[k]:.2f}"
                                          for k in ("B0", "B1", "ours")) + " |")
        notes = [f"{wl} b{b}: {row['note']}" for wl in ("wedit", "decoder")
                 for b, row in R[wl].items() if row.get("note")]
        if notes:
            lines += ["", "notes: " + "; ".join(notes)]
    for op in ("dwconv", "se_residual"):
        k = R[op]
        if k.get("shapes"):
            lines += ["", f"{op} ({k.get('dtype')}, kernel {k.get('kernel')}), copy bandwidth "
                      f"{k.get('copy_gbps', 0):.0f} GB/s:", "",
                      "| shape | ours us | torch us | ours GB/s | of copy | torch/ours |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for x in k["shapes"]:
                lines.append(f"| {x['shape']} | {x['ours_us']:.1f} | {x['torch_us']:.1f} | "
                             f"{x['ours_gbps']:.0f} | {x['frac_of_copy']:.0%} | "
                             f"{x['torch_us'] / x['ours_us']:.2f}x |")
    if R["compile_s"] or R["capture_s"]:
        lines += ["", "compile (B1, first call) / capture (ours) seconds: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in {**R["compile_s"], **R["capture_s"]}.items())]
    g = R["group_norm_silu"]
    if g.get("shapes"):
        lines += ["", f"GroupNorm+SiLU ({g.get('dtype')}), copy bandwidth {g.get('copy_gbps', 0):.0f} GB/s:", "",
                  "| shape | ours us | torch us | ours GB/s | of copy |", "| --- | --- | --- | --- | --- |"]
        for s in g["shapes"]:
            lines.append(f"| {s['shape']} | {s['ours_us']:.1f} | {s['torch_us']:.1f} | "
                         f"{s['ours_gbps']:.0f} | {s['frac_of_copy']:.0%} |")
    if R["ddim_step"]:
        d = R["ddim_step"]
        lines += ["", f"DDIM step {d.get('shape')}: kernel {d.get('ours_us', 0):.1f} us, "
                      f"PyTorch chain {d.get('torch_us', 0):.1f} us"]
    if R["accuracy"]:
        lines += ["", "accuracy: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in R["accuracy"].items())]
    if R["host_syncs"]:
        lines += ["", "host syncs: " + ", ".join(f"{k} {v}" for k, v in R["host_syncs"].items())]
    if R["batch_independence"]:
        lines += ["", "batch independence: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float)
                                                          else f"{k} {v}"
                                                          for k, v in R["batch_independence"].items())]
    if R["tests"]:
        lines += ["", "tests: " + "; ".join(f"{k}: {v.get('summary')}" for k, v in R["tests"].items())]
    if R["targets"]:
        lines += ["", "| target | value | status |", "| --- | --- | --- |"]
        for k, v in R["targets"].items():
            lines.append(f"| {k} | {v.get('value')} | {v.get('status')} |")
    if R["skipped"]:
        lines += ["", "skipped: " + "; ".join(R["skipped"])]
    if R["errors"]:
        lines += ["", "errors: " + "; ".join(f"{e['section']}: {e['error']}" for e in R["errors"])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- setup
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402

from d2c_fast import diffusion as D  # noqa: E402
from d2c_fast.eval.metrics import rel_error  # noqa: E402
from d2c_fast.gpu import FastUNet, GpuSampler, UNetCallGraph, build_gpu_unet  # noqa: E402
from d2c_fast.checkpoint.random_init import arch256_config_path, random_model  # noqa: E402
from d2c_fast.ops import backend_info  # noqa: E402
from d2c_fast.sampler import Sampler  # noqa: E402

CONFIG = str(ROOT / "d2c_fast" / "configs" / "tiny64.json") if ARGS.dry_run else arch256_config_path()
R["meta"].update({
    "argv": sys.argv[1:], "device": torch.cuda.get_device_name() if CUDA else f"cpu ({cpu_name()})",
    "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
    "config": Path(CONFIG).name, "batches": BATCHES, "b1_mode": B1_MODE,
    "b1_decoder_mode": ARGS.b1_decoder_mode, "iters": ITERS, "dry_run": ARGS.dry_run,
    "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
})
try:
    import triton
    R["meta"]["triton"] = triton.__version__
except Exception as exc:  # noqa: BLE001
    R["meta"]["triton"] = f"unavailable ({exc})"
R["meta"]["backend_info"] = {k: v["kernel"] for k, v in backend_info(DEVICE).items()}
if CUDA:
    props = torch.cuda.get_device_properties(0)
    R["meta"].update({"sm_count": props.multi_processor_count,
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}"})
    torch.backends.cudnn.benchmark = True   # for every candidate alike
    R["meta"]["cudnn_benchmark"] = True
print("=" * 80)
print(f"card: {R['meta']['device']}  torch {torch.__version__}  triton {R['meta']['triton']}  "
      f"config {R['meta']['config']}  batches {BATCHES}  B1 mode {B1_MODE}")
print(f"kernels: {R['meta']['backend_info']}")
print("=" * 80)
save()


@section("tests")
def _tests():
    if ARGS.skip_tests:
        R["skipped"].append("tests: --skip-tests")
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([str(ROOT / ".gpu_pydeps")] if (ROOT / ".gpu_pydeps").is_dir() else [])
        + [os.environ.get("PYTHONPATH", "")]))
    if ARGS.dry_run:   # exercise the mechanism cheaply on CPU
        runs = {"gpu+triton(cpu)": (["tests/test_gpu_kernels.py", "tests/test_triton_ddim_step.py"], {}),
                "decoder-ops+edit(cpu: skip)": (["tests/test_gpu_decoder_ops.py",
                                                 "tests/test_gpu_edit.py"], {})}
    else:
        env.pop("TRITON_INTERPRET", None)
        quick = ["tests/test_gpu_kernels.py"] if ARGS.quick else ["tests/test_gpu_kernels.py",
                                                                  "tests/test_gpu_sampler.py"]
        runs = {"gpu": (quick, {}),
                "gpu-decoder": (["tests/test_gpu_decoder_ops.py", "tests/test_gpu_edit.py"]
                                if not ARGS.quick else ["tests/test_gpu_edit.py"],
                                {"D2C_FAST_REQUIRE_EXT": "1"}),
                "triton-native": (["tests/test_triton_group_norm_silu.py",
                                   "tests/test_triton_ddim_step.py"],
                                  {"D2C_FAST_TRITON_NATIVE": "1"})}
    timeout = ARGS.tests_timeout_s or (60 if ARGS.dry_run else (120 if ARGS.quick else 240))
    for name, (files, extra) in runs.items():
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *files]
        try:
            r = subprocess.run(cmd, cwd=ROOT, env={**env, **extra}, capture_output=True, text=True,
                               timeout=timeout)
            tail = (r.stdout + r.stderr).strip().splitlines()
            summary = tail[-1] if tail else ""
            R["tests"][name] = {"rc": r.returncode, "summary": summary,
                                "seconds": round(time.perf_counter() - t, 1),
                                "failures": [l for l in tail if l.startswith(("FAILED", "ERROR"))][:40],
                                "tail": "\n".join(tail[-60:])}
        except subprocess.TimeoutExpired as exc:
            R["tests"][name] = {"rc": None, "summary": f"timeout after {timeout}s",
                                "tail": str((exc.stdout or b"")[-3000:])}
        log(f"tests {name}: {R['tests'][name]['summary']}")


# --------------------------------------------------------------------------- models and inputs
log("building models")
LOADED = random_model(CONFIG, seed=0)
LATENT = tuple(LOADED.config.latent_shape)
T_BUILD = time.perf_counter()
REF = Sampler(copy.deepcopy(LOADED), impl="ref", device=DEVICE)            # B0
OURS = GpuSampler(copy.deepcopy(LOADED), device=DEVICE,
                  dtype=torch.bfloat16 if CUDA else torch.float32)       # ours
R["meta"]["ours_dtype"] = str(OURS.dtype)
R["meta"]["build_s"] = round(time.perf_counter() - T_BUILD, 1)
B1_DTYPE = torch.bfloat16
CL = torch.channels_last
SEQ = D.uncond_sequence(REF.num_timesteps, skip=100)
GEN = torch.Generator().manual_seed(0)
NOISE = {b: torch.randn(b, *LATENT, generator=GEN).to(DEVICE) for b in BATCHES}
UNET_FLOP = None
try:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        REF.unet_model(NOISE[BATCHES[0]][:1], torch.full((1,), 500.0, device=DEVICE))
    UNET_FLOP = fc.get_total_flops()
    R["meta"]["unet_gflop_counted_per_image"] = round(UNET_FLOP / 1e9, 2)
except Exception as exc:  # noqa: BLE001
    R["meta"]["unet_gflop_counted_per_image"] = f"n/a ({exc})"
log(f"models ready ({R['meta']['build_s']} s); U-Net GFLOP/image counted: "
    f"{R['meta']['unet_gflop_counted_per_image']}")


@section("accuracy gate")
def _accuracy():
    b = 1 if ARGS.dry_run else min(BATCHES[-1], 4)
    zT = NOISE[BATCHES[-1]][:b]
    with torch.inference_mode():
        zr = REF.sample_latents(b, noise=zT)
        zo = OURS.sample_latents(b, noise=zT)
        lr = REF.decode_logits(zr)
        lo = OURS.decode_logits(zr)
    R["accuracy"].update({"latents_rel_l2": rel_error(zo, zr), "logits_rel_l2": rel_error(lo, lr),
                          "finite": bool(torch.isfinite(zo).all() and torch.isfinite(lo).all()),
                          "dtype": str(OURS.dtype), "limit": 1e-2 if OURS.dtype != torch.float32 else 1e-4})
    R["accuracy"]["pass"] = (R["accuracy"]["finite"] and R["accuracy"]["latents_rel_l2"]
                             <= R["accuracy"]["limit"] and R["accuracy"]["logits_rel_l2"]
                             <= R["accuracy"]["limit"])
    log(f"accuracy {R['accuracy']}")


# ------------------------------------------------------------------------------------------ B1
B1 = {}


def _b1_unet():
    if "unet" not in B1:
        m = copy.deepcopy(LOADED.unet).to(DEVICE, B1_DTYPE).to(memory_format=CL).eval()
        opts = {"backend": "eager"} if ARGS.dry_run else {"mode": B1_MODE}
        B1["unet"] = torch.compile(m, dynamic=False, **opts)
    return B1["unet"]


def _b1_sampler():
    if "sampler" not in B1:
        s = Sampler(copy.deepcopy(LOADED), impl="ref", device=DEVICE, dtype=B1_DTYPE)
        s.autoencoder.to(memory_format=CL)
        cu = _b1_unet()
        s.unet_model = lambda x, t: cu(x.contiguous(memory_format=CL), t)
        dec = s.autoencoder.decode_logits
        opts = {"backend": "eager"} if ARGS.dry_run else (
            {} if ARGS.b1_decoder_mode == "default" else {"mode": ARGS.b1_decoder_mode})
        cdec = torch.compile(dec, dynamic=False, **opts)
        s.autoencoder.decode_logits = lambda z: cdec(z.contiguous(memory_format=CL))
        B1["sampler"] = s
    return B1["sampler"]


# ------------------------------------------------------------------------------- U-Net call
@section("unet call")
def _unet():
    global GPU_UNET
    # the sampler's own GPU U-Net on CUDA; the same module built for the CPU dry run (a CPU
    # sampler runs the CPU plan's U-Net)
    GPU_UNET = OURS.unet_model if isinstance(OURS.unet_model, FastUNet) else \
        build_gpu_unet(LOADED.unet, dtype=OURS.dtype, device=DEVICE)
    for b in BATCHES:
        row = R["unet"].setdefault(str(b), {})
        x = NOISE[b]
        t = torch.full((b,), 500.0, device=DEVICE)
        with torch.inference_mode():
            row["B0"] = timed(lambda: REF.unet_model(x, t), ITERS["unet"])
            log(f"unet b{b} B0 {ms(row['B0'])} ms")
            tc = time.perf_counter()
            call = UNetCallGraph(GPU_UNET, b, LATENT[0])
            call.load(x, 500.0)
            sync()
            R["capture_s"][f"ours_unet_b{b}"] = time.perf_counter() - tc
            row["ours"] = timed(call, ITERS["unet"] * (1 if ARGS.dry_run else 3))
            row["ours_eager"] = timed(lambda: GPU_UNET(x, t), ITERS["unet"])
            if CUDA:   # the same in NCHW activations, to choose the layout (information only)
                u2 = build_gpu_unet(LOADED.unet, dtype=OURS.dtype, device=DEVICE, channels_last=False)
                call2 = UNetCallGraph(u2, b, LATENT[0])
                call2.load(x, 500.0)
                row["ours_nchw"] = timed(call2, ITERS["unet"] * 3)
                del call2, u2
            log(f"unet b{b} ours {ms(row['ours'])} ms (eager {ms(row['ours_eager'])}, "
                f"nchw graph {ms(row.get('ours_nchw'))})")
            if ARGS.budget_s - elapsed() < 60:
                R["skipped"].append(f"unet b{b} B1: budget")
                continue
            cu = _b1_unet()
            xb = x.to(B1_DTYPE).contiguous(memory_format=CL)
            tc = time.perf_counter()
            cu(xb, t)
            cu(xb, t)
            sync()
            R["compile_s"][f"B1_unet_b{b}"] = time.perf_counter() - tc
            row["B1"] = timed(lambda: cu(xb, t), ITERS["unet"])
            log(f"unet b{b} B1 {ms(row['B1'])} ms (compile {R['compile_s'][f'B1_unet_b{b}']:.1f} s)")
        flop = (UNET_FLOP if isinstance(UNET_FLOP, int) else UNET_GFLOP_NOMINAL * 1e9) * b
        row["gflop"] = flop / 1e9
        row["ours_tflops"] = flop / row["ours"]["median_s"] / 1e12


# ------------------------------------------------------------------------------------ W-gen
@section("wgen", min_left_s=30)
def _wgen():
    for b in BATCHES:
        if ARGS.dry_run and b != BATCHES[0]:
            R["skipped"].append(f"wgen b{b}: dry run times W-gen at the first batch only")
            continue
        row = R["wgen"].setdefault(str(b), {})
        zT = NOISE[b]
        with torch.inference_mode():
            tc = time.perf_counter()
            OURS.sample(b, noise=zT, seed=0)
            sync()
            R["capture_s"][f"ours_wgen_b{b}"] = time.perf_counter() - tc
            row["ours"] = timed(lambda: OURS.sample(b, noise=zT, seed=0), ITERS["wgen"])
            row["ours_latents"] = timed(lambda: OURS.sample_latents(b, noise=zT), ITERS["wgen"])
            z = OURS.sample_latents(b, noise=zT)
            row["ours_decode"] = timed(lambda: OURS.decode_logits(z), ITERS["wgen"])
            log(f"wgen b{b} ours {ms(row['ours'])} ms (latents {ms(row['ours_latents'])}, "
                f"decode {ms(row['ours_decode'])})")
            row["B0"] = timed(lambda: REF.sample(b, noise=zT, seed=0), ITERS["b0_wgen"], warmup=1)
            log(f"wgen b{b} B0 {ms(row['B0'])} ms")
            if ARGS.budget_s - elapsed() < 90:
                R["skipped"].append(f"wgen b{b} B1: budget")
                continue
            s1 = _b1_sampler()
            tc = time.perf_counter()
            s1.sample(b, noise=zT, seed=0)
            sync()
            R["compile_s"][f"B1_wgen_b{b}(decoder+rest)"] = time.perf_counter() - tc
            row["B1"] = timed(lambda: s1.sample(b, noise=zT, seed=0), ITERS["wgen"])
            row["B1_latents"] = timed(lambda: s1.sample_latents(b, noise=zT), ITERS["wgen"])
            log(f"wgen b{b} B1 {ms(row['B1'])} ms (latents {ms(row['B1_latents'])})")


# ------------------------------------------------------------------------- W-edit (issue 5)
EDIT_STEP = 1.5
IMG_RES = int(LOADED.config.autoencoder.resolution)
IMG_CH = int(LOADED.config.autoencoder.image_channels)
FAST = {}


def _fast_sampler():
    """Ours for the whole edit: Sampler(impl="fast") in bf16 on CUDA (fp32 on CPU)."""
    if "s" not in FAST:
        FAST["s"] = Sampler(copy.deepcopy(LOADED), impl="fast", device=DEVICE,
                            dtype=torch.bfloat16 if CUDA else torch.float32)
    return FAST["s"]


def _b1_edit_sampler():
    """B1 for the edit: _b1_sampler() (compiled U-Net and decoder) plus a compiled encoder."""
    s = _b1_sampler()
    if "encode" not in B1:
        enc = s.autoencoder.encode
        opts = {"backend": "eager"} if ARGS.dry_run else (
            {} if ARGS.b1_decoder_mode == "default" else {"mode": ARGS.b1_decoder_mode})
        cenc = torch.compile(enc, dynamic=False, **opts)
        s.autoencoder.encode = lambda x: cenc(x.contiguous(memory_format=CL))
        B1["encode"] = True
        R["meta"]["b1_encoder_mode"] = "backend=eager (dry run)" if ARGS.dry_run else ARGS.b1_decoder_mode
    return s


def _images(b: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + b)
    return torch.rand(b, IMG_CH, IMG_RES, IMG_RES, generator=g).to(DEVICE)


ATTR = torch.randn(*LATENT, generator=torch.Generator().manual_seed(7))
ATTR = ATTR / ATTR.norm()


def _peak_gib(fn):
    """GPU memory (GiB) that one call of fn adds at its peak over what was allocated before it
    (the weights of every candidate stay resident, so they are left out); None on CPU."""
    if not CUDA:
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def _oom(exc) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@section("wedit", min_left_s=45)
def _wedit():
    for b in BATCHES:
        row = R["wedit"].setdefault(str(b), {"peak_gib": {}})
        imgs = _images(b)
        with torch.inference_mode():
            fs = _fast_sampler()

            def ours():
                return fs.manipulate(imgs, ATTR, step=EDIT_STEP, seed=0)
            tc = time.perf_counter()
            ours()
            sync()
            R["capture_s"][f"ours_wedit_b{b}(first call)"] = time.perf_counter() - tc
            row["ours"] = timed(ours, ITERS["wedit"])
            row["peak_gib"]["ours"] = _peak_gib(ours)
            row["ours_images_per_s"] = b / row["ours"]["median_s"]
            log(f"wedit b{b} ours {ms(row['ours'])} ms ({row['ours_images_per_s']:.1f} img/s, "
                f"peak {row['peak_gib']['ours']} GiB)")

            bs = None
            def b0():
                return REF.manipulate(imgs, ATTR, step=EDIT_STEP, seed=0, batch_size=bs)
            try:
                row["peak_gib"]["B0"] = _peak_gib(b0)
            except Exception as exc:  # noqa: BLE001
                if not _oom(exc):
                    raise
                if CUDA:
                    torch.cuda.empty_cache()
                bs = max(1, b // 4)
                row["note"] = f"B0 out of memory at batch {b}: timed with batch_size={bs} chunks"
                row["peak_gib"]["B0"] = _peak_gib(b0)
            row["B0"] = timed(b0, ITERS["b0_wedit"], warmup=0)
            log(f"wedit b{b} B0 {ms(row['B0'])} ms (peak {row['peak_gib']['B0']} GiB)"
                + (f" [{row['note']}]" if row.get("note") else ""))
            if ARGS.budget_s - elapsed() < 90:
                R["skipped"].append(f"wedit b{b} B1: budget")
                continue
            s1 = _b1_edit_sampler()

            def b1():
                return s1.manipulate(imgs, ATTR, step=EDIT_STEP, seed=0)
            tc = time.perf_counter()
            b1()
            sync()
            R["compile_s"][f"B1_wedit_b{b}(encoder+unet+decoder)"] = time.perf_counter() - tc
            row["B1"] = timed(b1, ITERS["wedit"])
            row["peak_gib"]["B1"] = _peak_gib(b1)
            log(f"wedit b{b} B1 {ms(row['B1'])} ms (peak {row['peak_gib']['B1']} GiB)")
        if CUDA:
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------- decoder alone (issue 5)
@section("decoder", min_left_s=30)
def _decoder():
    for b in BATCHES:
        row = R["decoder"].setdefault(str(b), {"peak_gib": {}})
        z = NOISE[b] * REF.std + REF.mean   # raw latents of a typical scale
        with torch.inference_mode():
            fs = _fast_sampler()
            row["ours"] = timed(lambda: fs.decode_logits(z), ITERS["decoder"])
            row["peak_gib"]["ours"] = _peak_gib(lambda: fs.decode_logits(z))
            row["ours_images_per_s"] = b / row["ours"]["median_s"]
            tc = time.perf_counter()
            OURS.decode_logits(z)
            sync()
            R["capture_s"][f"ours_decoder_graph_b{b}"] = time.perf_counter() - tc
            row["ours_graph"] = timed(lambda: OURS.decode_logits(z), ITERS["decoder"])
            try:
                row["B0"] = timed(lambda: REF.decode_logits(z), max(1, ITERS["decoder"] // 4))
                row["peak_gib"]["B0"] = _peak_gib(lambda: REF.decode_logits(z))
            except Exception as exc:  # noqa: BLE001
                if not _oom(exc):
                    raise
                row["note"] = f"B0 decoder out of memory at batch {b}"
                if CUDA:
                    torch.cuda.empty_cache()
            log(f"decoder b{b} ours {ms(row['ours'])} ms (graph {ms(row['ours_graph'])}), "
                f"B0 {ms(row.get('B0'))} ms")
            if ARGS.budget_s - elapsed() < 60:
                R["skipped"].append(f"decoder b{b} B1: budget")
                continue
            s1 = _b1_sampler()
            zb = z.to(B1_DTYPE)
            s1.autoencoder.decode_logits(zb)   # compile (shared with W-gen / W-edit when run)
            sync()
            row["B1"] = timed(lambda: s1.autoencoder.decode_logits(zb), ITERS["decoder"])
            row["peak_gib"]["B1"] = _peak_gib(lambda: s1.autoencoder.decode_logits(zb))
            log(f"decoder b{b} B1 {ms(row['B1'])} ms")
        if CUDA:
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------- kernel bandwidth
@section("group_norm_silu bandwidth")
def _gn():
    from d2c_fast.ops.group_norm_silu import import_kernel_module
    import torch.nn.functional as F
    gns = import_kernel_module("group_norm_silu").group_norm_silu_triton
    dt = torch.bfloat16 if CUDA else torch.float32
    R["group_norm_silu"]["dtype"] = str(dt).replace("torch.", "") + ("" if CUDA else ", interpreter")
    if CUDA:
        n = 256 * 2**20 // 2
        src = torch.empty(n, dtype=dt, device=DEVICE)
        dst = torch.empty_like(src)
        R["group_norm_silu"]["copy_gbps"] = 2 * n * 2 / event_time(lambda: dst.copy_(src), 20) / 1e9
        shapes = [(64, 128, 32, 32), (64, 256, 32, 32), (64, 384, 32, 32), (64, 256, 16, 16),
                  (64, 512, 16, 16), (64, 512, 8, 8), (1, 384, 32, 32)]
        iters = 50
    else:
        R["group_norm_silu"]["copy_gbps"] = 0.0
        shapes, iters = [(1, 64, 8, 8)], 1
    R["group_norm_silu"]["shapes"] = []
    for shape, layout in [(s, lay) for s in shapes for lay in ("cl", "nchw")]:
        x = torch.randn(shape, device=DEVICE).to(dt)
        if layout == "cl":
            x = x.contiguous(memory_format=CL)
        w = torch.ones(shape[1], device=DEVICE)
        bb = torch.zeros(shape[1], device=DEVICE)
        add = torch.randn(shape[0], shape[1], device=DEVICE)
        t_ours = event_time(lambda: gns(x, w, bb, add=add), iters)
        t_torch = event_time(lambda: F.silu(F.group_norm(x + add.to(dt)[:, :, None, None], 32,
                                                          w.to(dt), bb.to(dt), 1e-6)), iters)
        nbytes = 2 * x.numel() * x.element_size()
        gbps = nbytes / t_ours / 1e9
        cp = R["group_norm_silu"]["copy_gbps"]
        R["group_norm_silu"]["shapes"].append({
            "shape": "x".join(map(str, shape)) + f"-{layout}", "ours_us": t_ours * 1e6, "torch_us": t_torch * 1e6,
            "ours_gbps": gbps, "frac_of_copy": gbps / cp if cp else 0.0})
    for s in R["group_norm_silu"]["shapes"]:
        log(f"gn {s['shape']}: {s['ours_us']:.1f} us ({s['ours_gbps']:.0f} GB/s, "
            f"{s['frac_of_copy']:.0%} of copy), torch {s['torch_us']:.1f} us")
    # DDIM step
    ddim = import_kernel_module("ddim_step").ddim_step_triton
    from d2c_fast.ops.ddim_step import ddim_step_ref
    b = BATCHES[-1]
    x = torch.randn(b, *LATENT, device=DEVICE).contiguous(memory_format=CL)
    e = torch.randn_like(x).to(dt)
    c = torch.tensor([0.9, 0.4, 0.95, 0.0, 0.3], device=DEVICE)
    it = 100 if CUDA else 1
    R["ddim_step"] = {"shape": "x".join(map(str, x.shape)),
                      "ours_us": event_time(lambda: ddim(x, e, c, out=torch.empty_like(x)), it) * 1e6,
                      "torch_us": event_time(lambda: ddim_step_ref(x, e, (0.9, 0.4, 0.95, 0.0, 0.3)),
                                             it) * 1e6}


# ------------------------------------------------------------- decoder kernel bandwidth (issue 5)
def _copy_gbps(dt) -> float:
    if not CUDA:
        return 0.0
    if "copy_gbps" not in R["meta"]:
        n = 256 * 2**20 // 2
        src = torch.empty(n, dtype=torch.bfloat16, device=DEVICE)
        dst = torch.empty_like(src)
        R["meta"]["copy_gbps"] = 2 * n * 2 / event_time(lambda: dst.copy_(src), 20) / 1e9
    return R["meta"]["copy_gbps"]


# ARCH-256 decoder depthwise (k = 5, stride 1) and SE shapes, per image (C, H = W).
DW_SHAPES = [(144, 256), (288, 128), (576, 64), (1152, 32)]
SE_SHAPES = [(24, 256), (48, 128), (96, 64), (192, 32)]


@section("decoder kernel bandwidth")
def _dec_kernels():
    import torch.nn.functional as F
    from d2c_fast.ops import backend_info as _bi
    dt = torch.bfloat16 if CUDA else torch.float32
    cp = _copy_gbps(dt)
    big = max(BATCHES)
    it = ITERS["kernel"]
    dw_shapes = [(big, c, h) for c, h in DW_SHAPES] if CUDA else [(1, 16, 8)]
    se_shapes = [(big, c, h) for c, h in SE_SHAPES] if CUDA else [(1, 16, 8)]
    for op in ("dwconv", "se_residual"):
        key = "dwconv_bias_swish" if op == "dwconv" else "se_residual"
        R[op].update({"dtype": str(dt).replace("torch.", "") + ("" if CUDA else ", CPU"),
                      "kernel": _bi(DEVICE)[key]["kernel"], "copy_gbps": cp, "shapes": []})
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for n, c, h in dw_shapes:
        x = torch.randn(n, c, h, h, device=DEVICE, generator=g).to(dt).contiguous(memory_format=CL)
        w = 0.2 * torch.randn(c, 1, 5, 5, device=DEVICE, generator=g)
        bias = 0.1 * torch.randn(c, device=DEVICE, generator=g)
        wl, bl = w.to(dt), bias.to(dt)
        t_ours = event_time(lambda: torch.ops.d2c_fast.dwconv_bias_swish(x, w, bias, 1, 2, 1, True), it)
        t_torch = event_time(lambda: F.silu(F.conv2d(x, wl, bl, padding=2, groups=c)), it)
        gbps = 2 * x.numel() * x.element_size() / t_ours / 1e9
        R["dwconv"]["shapes"].append({"shape": f"{n}x{c}x{h}x{h}-cl-k5", "ours_us": t_ours * 1e6,
                                      "torch_us": t_torch * 1e6, "ours_gbps": gbps,
                                      "frac_of_copy": gbps / cp if cp else 0.0})
        del x
    for n, c, h in se_shapes:
        sx = torch.randn(n, c, h, h, device=DEVICE, generator=g).to(dt).contiguous(memory_format=CL)
        sk = torch.randn(n, c, h, h, device=DEVICE, generator=g).to(dt).contiguous(memory_format=CL)
        ch = max(c // 16, 4)
        w1 = 0.3 * torch.randn(ch, c, device=DEVICE, generator=g)
        b1 = 0.1 * torch.randn(ch, device=DEVICE, generator=g)
        w2 = 0.3 * torch.randn(c, ch, device=DEVICE, generator=g)
        b2 = 0.1 * torch.randn(c, device=DEVICE, generator=g)
        lw = [t.to(dt) for t in (w1, b1, w2, b2)]

        def eager():
            gate = torch.sigmoid(F.linear(torch.relu(F.linear(sx.mean((2, 3)), lw[0], lw[1])), lw[2], lw[3]))
            return sk + 0.1 * sx * gate[:, :, None, None]
        t_ours = event_time(lambda: torch.ops.d2c_fast.se_residual(sx, sk, w1, b1, w2, b2, 0.1), it)
        t_torch = event_time(eager, it)
        gbps = 3 * sx.numel() * sx.element_size() / t_ours / 1e9
        R["se_residual"]["shapes"].append({"shape": f"{n}x{c}x{h}x{h}-cl", "ours_us": t_ours * 1e6,
                                           "torch_us": t_torch * 1e6, "ours_gbps": gbps,
                                           "frac_of_copy": gbps / cp if cp else 0.0})
        del sx, sk
    for op in ("dwconv", "se_residual"):
        for x in R[op]["shapes"]:
            log(f"{op} {x['shape']}: {x['ours_us']:.1f} us ({x['ours_gbps']:.0f} GB/s, "
                f"{x['frac_of_copy']:.0%} of copy), torch {x['torch_us']:.1f} us")


# ------------------------------------------------------------------------------- host syncs
@section("host syncs")
def _syncs():
    if not CUDA:
        R["host_syncs"]["loop"] = "n/a on CPU"
        return
    for b in BATCHES:
        zT = NOISE[b]
        OURS.sample_latents(b, noise=zT)   # warmed: captured, tables cached
        torch.cuda.synchronize()
        for what, fn in (("sample_latents", lambda: OURS.sample_latents(b, noise=zT)),
                         ("sample(+decode+mixture)", lambda: OURS.sample(b, noise=zT, seed=0))):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    fn()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            n = sum("sync" in str(w.message).lower() for w in caught)
            R["host_syncs"][f"{what}_b{b}"] = n
    log(f"host syncs {R['host_syncs']}")


# ------------------------------------------------------------------------ batch independence
@section("batch independence")
def _batch_indep():
    b = BATCHES[-1]
    zT = NOISE[b]
    full = OURS.sample_latents(b, noise=zT)
    worst = 0.0
    for i in (0, b - 1):
        one = OURS.sample_latents(1, noise=zT[i:i + 1])
        worst = max(worst, rel_error(one, full[i:i + 1]))
    R["batch_independence"] = {"max_rel_l2_batch1_vs_batch%d" % b: worst,
                               "bitwise_equal": worst == 0.0}
    log(f"batch independence {R['batch_independence']}")


# -------------------------------------------------------------------------------- targets
def _targets():
    T = R["targets"]

    def verdict(name, value, ok, fmt="{:.2f}"):
        if value is None:
            T[name] = {"value": "not measured", "status": "NOT MEASURED"}
        else:
            T[name] = {"value": fmt.format(value), "status": ("PASS" if ok else "FAIL")
                       if not ARGS.dry_run else "dry-run (not a measurement)"}

    def sp(wl, b, base):
        row = R[wl].get(str(b), {})
        if row.get(base) and row.get("ours"):
            return row[base]["median_s"] / row["ours"]["median_s"]
        return None

    name = R["meta"].get("device", "")
    peak = next((p for k, p in BF16_PEAK_TFLOPS if k in name), None)
    big = max(BATCHES)
    u = R["unet"].get(str(big), {})
    frac = (u["ours_tflops"] / peak) if (peak and u.get("ours_tflops") and CUDA) else None
    verdict(f"unet b{big} >= 50% of bf16 peak ({peak} TFLOP/s spec)", frac, frac and frac >= 0.5, "{:.0%}")
    s = sp("unet", big, "B1")
    verdict(f"unet b{big} >= 1.2x B1", s, s and s >= 1.2)
    s = sp("unet", 1, "B1")
    verdict("unet b1 >= 1.5x B1", s, s and s >= 1.5)
    s = sp("wgen", 1, "B0")
    verdict("wgen b1 >= 20x B0", s, s and s >= 20)
    for b in BATCHES:
        s = sp("wgen", b, "B1")
        verdict(f"wgen b{b} >= 1.5x B1", s, s and s >= 1.5)
    sh = [x for x in R["group_norm_silu"].get("shapes", [])
          if x["shape"].startswith(f"{big}x") and x["shape"].endswith("-cl")]
    f = min((x["frac_of_copy"] for x in sh), default=None) if CUDA else None
    verdict("group_norm_silu >= 70% of copy bandwidth (worst U-Net shape, channels-last)", f, f and f >= 0.7, "{:.0%}")
    syn = [v for k, v in R["host_syncs"].items() if k.startswith("sample_latents") and isinstance(v, int)]
    verdict("zero host syncs in the sampling loop", max(syn) if syn else None,
            bool(syn) and max(syn) == 0, "{}")
    # issue 5: W-edit, decoder, kernels, memory
    for b in BATCHES:
        s = sp("wedit", b, "B0")
        need = 20 if b == 1 else 10
        verdict(f"wedit b{b} >= {need}x B0", s, s and s >= need)
        s = sp("wedit", b, "B1")
        verdict(f"wedit b{b} >= 1.5x B1", s, s and s >= 1.5)
    ips = R["wedit"].get(str(big), {}).get("ours_images_per_s") if CUDA else None
    verdict(f"wedit b{big} >= 2000 images/s", ips, ips and ips >= 2000, "{:.0f}")
    s = sp("decoder", big, "B1")
    verdict(f"decoder b{big} >= 2x B1", s, s and s >= 2)
    sh = R["dwconv"].get("shapes", [])
    f = min((x["frac_of_copy"] for x in sh), default=None) if CUDA else None
    verdict("dwconv+bias+swish >= 70% of copy bandwidth (worst ARCH-256 shape, bf16, channels-last)",
            f, f and f >= 0.7, "{:.0%}")
    pk = R["wedit"].get(str(big), {}).get("peak_gib", {})
    pr = (pk["ours"] / pk["B0"]) if (CUDA and pk.get("ours") and pk.get("B0")
                                      and "out of memory" not in R["wedit"][str(big)].get("note", "")) else None
    verdict(f"wedit b{big} peak memory <= 0.5x B0", pr, pr is not None and pr <= 0.5, "{:.2f}x")
    acc = R["accuracy"].get("pass")
    T["accuracy gate"] = {"value": f"{R['accuracy'].get('latents_rel_l2', float('nan')):.3g}",
                          "status": "PASS" if acc else ("FAIL" if acc is not None else "NOT MEASURED")}


try:
    from d2c_fast.gpu import GRAPH_ERRORS
    R["meta"]["graph_capture_errors"] = GRAPH_ERRORS
except Exception:  # noqa: BLE001
    pass
_targets()
save()
log(f"done: {OUT / 'results.json'}, {OUT / 'results.md'}")
print(markdown())
