"""The CUDA executor: the one DDIM loop (:func:`d2c_fast.diffusion.ddim_loop`) run over
static buffers and captured as a CUDA graph, plus one captured U-Net call for benchmarks.

:class:`CudaGraphExecutor` keeps one captured loop per ``(batch, steps, noise, guidance)``: the
loop's step coefficients and timesteps are device tables (:meth:`DDIMSteps.to_tables`), so
another sequence of the same length replays the same graph after a table copy. Whatever noise
prediction the runtime hands it is captured, the autoguided pair of U-Nets included. No host
synchronisation happens inside the loop. With ``use_graphs=False`` (or on the CPU) the same
buffers run eagerly, which is what the CPU tests exercise.
"""
from __future__ import annotations

import warnings

import torch

from ..diffusion import DDIMSteps, ddim_loop
from ..models.fast_unet import FastUNet, build_gpu_unet

__all__ = ["CudaGraphExecutor", "UNetCallGraph", "GRAPH_ERRORS", "capture_or_none",
           "build_gpu_unet", "FastUNet"]


def _warm_then_capture(fn, warmup: int = 2) -> torch.cuda.CUDAGraph:
    """Run ``fn`` on a side stream (Triton compiles, cuDNN and SDPA pick kernels), then capture
    one call of it."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


#: ``(what, error)`` of every capture that failed and fell back to eager execution.
GRAPH_ERRORS: list[tuple[str, str]] = []


def capture_or_none(fn, what: str):
    """:func:`_warm_then_capture`, or None (eager fallback, recorded in GRAPH_ERRORS and warned
    about) when the capture fails."""
    try:
        return _warm_then_capture(fn)
    except Exception as exc:  # e.g. an op that synchronises: run that part eagerly instead
        torch.cuda.synchronize()
        GRAPH_ERRORS.append((what, f"{type(exc).__name__}: {exc}"))
        warnings.warn(f"d2c_fast: CUDA graph capture of {what} failed ({exc}); running it "
                      "eagerly", RuntimeWarning, stacklevel=3)
        return None


class UNetCallGraph:
    """One U-Net call on static buffers, captured as a CUDA graph (eager on CPU): copy inputs
    with :meth:`load`, :meth:`__call__` replays, ``.out`` holds
    eps."""

    def __init__(self, unet: FastUNet, n: int, in_channels: int, *, use_graph: bool | None = None):
        dev = unet.conv_in.weight.device
        self.unet = unet
        self.use_graph = dev.type == "cuda" if use_graph is None else use_graph
        with torch.inference_mode():
            self.x = torch.zeros(n, in_channels, unet.resolution, unet.resolution, device=dev)
            self.bias = unet.step_bias(torch.full((1,), 500.0, device=dev))
            self.out = None
            self.graph = capture_or_none(self._body, f"the U-Net call (batch {n})") \
                if self.use_graph else None

    def _body(self):
        self.out = self.unet(self.x, step_bias=self.bias)

    def load(self, x: torch.Tensor | None = None, t: float | None = None) -> None:
        """Copy a new input latent and/or timestep into the static buffers."""
        with torch.inference_mode():
            if x is not None:
                self.x.copy_(x)
            if t is not None:
                self.bias.copy_(self.unet.step_bias(torch.full((1,), float(t),
                                                               device=self.x.device)))

    def __call__(self) -> torch.Tensor:
        with torch.inference_mode():
            if self.graph is not None:
                self.graph.replay()
            else:
                self._body()
        return self.out


class _Loop:
    """Static buffers of one DDIM run shape, and its graph (None: eager)."""

    def __init__(self, eps_fn, x: torch.Tensor, steps: DDIMSteps, use_graph: bool):
        n = x.shape[0]
        self.x = torch.zeros_like(x, memory_format=torch.channels_last) if x.dim() == 4 \
            else torch.zeros_like(x)
        self.steps = steps.to_tables(x.device)
        self.noise = torch.zeros(len(steps), *self.x.shape, device=x.device) \
            if steps.with_noise else None
        self.eps_fn = eps_fn

        def body():
            ddim_loop(self.eps_fn, self.x, self.steps, inplace=True,
                      step_noise=(lambda i: self.noise[i]) if self.noise is not None else None)
        self.body = body
        self.graph = capture_or_none(body, f"the DDIM loop ({n} x {len(steps)} steps)") \
            if use_graph else None

    def run(self, x, steps: DDIMSteps, tables: DDIMSteps, noise) -> torch.Tensor:
        self.steps.coeffs.copy_(tables.coeffs)
        self.steps.timesteps.copy_(tables.timesteps)
        self.x.copy_(x)
        if self.noise is not None:
            self.noise.copy_(noise)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()
        return self.x.clone()


class CudaGraphExecutor:
    """Runs the DDIM loop over static buffers, captured once per shape and guidance."""

    def __init__(self, use_graphs: bool = True):
        self.use_graphs = use_graphs
        #: the captured loops, by (batch, steps, with noise, guidance key)
        self.loops: dict[tuple, _Loop] = {}
        # device step tables by (sequence, eta): a repeated sequence costs no host-to-device
        # copy (a pageable copy would synchronise with the host)
        self.tables: dict[tuple, DDIMSteps] = {}

    def run(self, eps_fn, key, x: torch.Tensor, steps: DDIMSteps, step_noise) -> torch.Tensor:
        """``ddim_loop(eps_fn, x, steps, step_noise=...)`` on the captured loop of this shape;
        ``key`` names what ``eps_fn`` computes (a new key captures a new loop). Step noise is
        drawn before the loop, in step order (the same draws as the eager loop)."""
        noise = torch.stack([step_noise(i) for i in range(len(steps))]) \
            if steps.with_noise else None
        k = (tuple(x.shape), len(steps), steps.with_noise, key)
        loop = self.loops.get(k)
        if loop is None:
            use_graph = self.use_graphs and x.device.type == "cuda"
            loop = self.loops[k] = _Loop(eps_fn, x, steps, use_graph)
        tk = (tuple(steps.seq), steps.eta, str(x.device))
        if tk not in self.tables:
            self.tables[tk] = steps.to_tables(x.device)
        return loop.run(x, steps, self.tables[tk], noise)
