"""GPU sampling path: a fast U-Net derived from the reference one, and a DDIM loop captured as a
CUDA graph.

``FastUNet`` (built from a reference :class:`~d2c_fast.models.unet.UNet`, which is left as is):
- convolutions in the compute dtype (bf16 by default), activations channels-last;
- every ``swish(GroupNorm(h))`` is one ``d2c_fast::group_norm_silu`` call (Triton on CUDA), the
  attention norm the same op with ``silu=False``;
- the ResNet block's ``conv1(h) + temb_proj(swish(temb))`` feeding ``norm2`` becomes a bias-free
  ``conv1`` plus a per-channel bias added inside the norm kernel; the biases of all blocks
  (``temb_proj`` and ``conv1.bias``) come out of ONE fp32 GEMM per timestep
  (:meth:`FastUNet.step_bias`), and since the timestep is shared by the batch the sampling loop
  computes them for the whole sequence before the loop;
- attention: q, k, v as one 1x1 convolution, ``scaled_dot_product_attention``, and the output
  read back as a channels-last view (no transposes).

``GpuSampler``: DDIM in fp32 through ``d2c_fast::ddim_step`` (schedule constants in a device
table), the fixed-shape loop (``n`` images, ``S`` steps, with or without step noise) captured
once as a CUDA graph over static buffers and replayed per call; another sequence of the same
length only rewrites the tables. No host synchronisation inside the loop. Every op acts per image
(noise comes from the caller or from per-image generators), so an image does not depend on the
rest of the batch (up to the library's choice of convolution algorithm for each batch size).
On CPU (or ``use_graphs=False``) the same loop runs eagerly: in fp32 it reproduces
``Sampler(..., impl="ref").sample_latents`` to float rounding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import diffusion as D
from .checkpoint import LoadedModel, load_model
from .models.unet import AttnBlock, ResnetBlock, UNet, timestep_embedding
from .ops.ddim_step import ddim_step
from .ops.group_norm_silu import group_norm_silu

__all__ = ["FastUNet", "GpuSampler", "UNetCallGraph", "attach_gpu_path", "build_gpu_unet",
           "GRAPH_ERRORS"]


class _Float32(nn.Module):
    """fp32 tensors that follow device moves but never dtype casts (GroupNorm parameters, the
    timestep MLP): ``FastUNet.to(torch.bfloat16)`` casts the convolutions only."""

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t.detach().float().clone())

    def _apply(self, fn, recurse=True):
        for name, t in self._buffers.items():
            if t is not None:
                self._buffers[name] = t.to(fn(torch.zeros(1, device=t.device)).device)
        return self


def _conv(src: nn.Conv2d, *, bias: bool = True, dtype=None) -> nn.Conv2d:
    out = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, src.stride, src.padding,
                    src.dilation, src.groups, bias=bias and src.bias is not None)
    with torch.no_grad():
        out.weight.copy_(src.weight.detach())
        if out.bias is not None:
            out.bias.copy_(src.bias.detach())
    out.requires_grad_(False)
    return out.to(dtype) if dtype is not None else out


class _FastResBlock(nn.Module):
    def __init__(self, blk: ResnetBlock, offset: int):
        super().__init__()
        self.offset, self.cout = offset, blk.out_channels
        self.gn = _Float32(n1w=blk.norm1.weight, n1b=blk.norm1.bias,
                           n2w=blk.norm2.weight, n2b=blk.norm2.bias)
        self.eps1, self.eps2 = blk.norm1.eps, blk.norm2.eps
        self.groups = blk.norm1.num_groups
        self.conv1 = _conv(blk.conv1, bias=False)   # its bias moves into the norm2 bias
        self.conv2 = _conv(blk.conv2)
        self.nin_shortcut = _conv(blk.nin_shortcut) if blk.in_channels != blk.out_channels else None

    def forward(self, x: torch.Tensor, bias_all: torch.Tensor) -> torch.Tensor:
        g = self.gn
        h = self.conv1(group_norm_silu(x, g.n1w, g.n1b, eps=self.eps1, num_groups=self.groups))
        h = group_norm_silu(h, g.n2w, g.n2b, bias_all[:, self.offset:self.offset + self.cout],
                            eps=self.eps2, num_groups=self.groups)
        h = self.conv2(h)   # dropout: identity at inference
        return h.add_(self.nin_shortcut(x) if self.nin_shortcut is not None else x)


class _FastAttn(nn.Module):
    def __init__(self, blk: AttnBlock):
        super().__init__()
        C = blk.q.in_channels
        self.gn = _Float32(w=blk.norm.weight, b=blk.norm.bias)
        self.eps, self.groups = blk.norm.eps, blk.norm.num_groups
        self.qkv = nn.Conv2d(C, 3 * C, 1)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([blk.q.weight, blk.k.weight, blk.v.weight]))
            self.qkv.bias.copy_(torch.cat([blk.q.bias, blk.k.bias, blk.v.bias]))
        self.qkv.requires_grad_(False)
        self.proj_out = _conv(blk.proj_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = group_norm_silu(x, self.gn.w, self.gn.b, eps=self.eps, num_groups=self.groups,
                            silu=False)
        qkv = self.qkv(h)                                            # (B, 3C, H, W)
        B, C3, H, W = qkv.shape
        C = C3 // 3
        t = qkv.permute(0, 2, 3, 1).reshape(B, H * W, 3, C)         # a view when channels-last
        q, k, v = (t[:, None, :, i] for i in range(3))              # (B, 1, HW, C)
        o = F.scaled_dot_product_attention(q, k, v)                 # scale C**-0.5, as the ref
        o = o.reshape(B, H, W, C).permute(0, 3, 1, 2)               # channels-last view
        return self.proj_out(o).add_(x)


class _Resample(nn.Module):
    def __init__(self, mod: nn.Module, up: bool):
        super().__init__()
        self.up = up
        self.conv = _conv(mod.conv) if mod.with_conv else None

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            return self.conv(x) if self.conv is not None else x
        if self.conv is not None:
            return self.conv(F.pad(x, (0, 1, 0, 1)))   # asymmetric padding, as the reference
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class FastUNet(nn.Module):
    """Inference U-Net with the reference's maths (see the module docstring).

    ``forward(x, t)`` matches ``UNet.forward`` (``x``: ``(B, C, d, d)``, ``t``: ``(B,)``) and
    returns eps in the compute dtype (channels-last when ``channels_last``). In a sampling loop
    pass ``step_bias=`` (a ``(B, total)`` or ``(1, total)`` row of :meth:`step_bias`) instead
    of ``t``.
    """

    def __init__(self, unet: UNet, *, dtype: torch.dtype = torch.bfloat16,
                 channels_last: bool = True):
        super().__init__()
        self.ch, self.resolution = unet.ch, unet.resolution
        self.num_resolutions, self.num_res_blocks = unet.num_resolutions, unet.num_res_blocks
        self.channels_last = channels_last

        blocks: list[ResnetBlock] = []
        for i in range(unet.num_resolutions):
            blocks += list(unet.down[i].block)
        blocks += [unet.mid.block_1, unet.mid.block_2]
        for i in range(unet.num_resolutions):
            blocks += list(unet.up[i].block)
        offsets, off = {}, 0
        for b in blocks:
            offsets[id(b)] = off
            off += b.out_channels
        self.bias_width = off
        d0, d1 = unet.temb.dense
        # One GEMM gives every block's norm2 bias: temb_proj(swish(temb)) + conv1.bias.
        self.temb = _Float32(
            w0=d0.weight, b0=d0.bias, w1=d1.weight, b1=d1.bias,
            proj_w=torch.cat([b.temb_proj.weight.detach() for b in blocks]),
            proj_b=torch.cat([b.temb_proj.bias.detach() + b.conv1.bias.detach() for b in blocks]))

        def fast_block(b):
            return _FastResBlock(b, offsets[id(b)])

        self.conv_in = _conv(unet.conv_in)
        self.down = nn.ModuleList()
        for i in range(unet.num_resolutions):
            m = nn.Module()
            m.block = nn.ModuleList(fast_block(b) for b in unet.down[i].block)
            m.attn = nn.ModuleList(_FastAttn(a) for a in unet.down[i].attn)
            if i != unet.num_resolutions - 1:
                m.downsample = _Resample(unet.down[i].downsample, up=False)
            self.down.append(m)
        self.mid = nn.Module()
        self.mid.block_1 = fast_block(unet.mid.block_1)
        self.mid.attn_1 = _FastAttn(unet.mid.attn_1)
        self.mid.block_2 = fast_block(unet.mid.block_2)
        self.up = nn.ModuleList()
        for i in range(unet.num_resolutions):
            m = nn.Module()
            m.block = nn.ModuleList(fast_block(b) for b in unet.up[i].block)
            m.attn = nn.ModuleList(_FastAttn(a) for a in unet.up[i].attn)
            if i != 0:
                m.upsample = _Resample(unet.up[i].upsample, up=True)
            self.up.append(m)
        self.norm_out = _Float32(w=unet.norm_out.weight, b=unet.norm_out.bias)
        self.norm_out_eps, self.norm_out_groups = unet.norm_out.eps, unet.norm_out.num_groups
        self.conv_out = _conv(unet.conv_out)
        self.eval()
        self.requires_grad_(False)
        self.to(dtype)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def step_bias(self, t: torch.Tensor) -> torch.Tensor:
        """fp32 ``(len(t), bias_width)``: for each timestep, every ResNet block's pre-norm2 bias
        (``temb_proj(swish(temb(t))) + conv1.bias``), blocks concatenated in forward order."""
        e = self.temb
        emb = timestep_embedding(t.float(), self.ch)
        h = F.linear(emb, e.w0, e.b0)
        h = F.linear(h * torch.sigmoid(h), e.w1, e.b1)
        return F.linear(h * torch.sigmoid(h), e.proj_w, e.proj_b)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, *,
                step_bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            raise ValueError(f"U-Net expects {self.resolution}x{self.resolution} latents, "
                             f"got {tuple(x.shape[2:])}")
        if step_bias is None:
            if t is None:
                raise ValueError("give t= or step_bias=")
            step_bias = self.step_bias(t)
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        h = x.to(dtype=self.dtype, memory_format=mf)
        hs = [self.conv_in(h)]
        for i in range(self.num_resolutions):
            d = self.down[i]
            for j in range(self.num_res_blocks):
                h = d.block[j](hs[-1], step_bias)
                if len(d.attn) > 0:
                    h = d.attn[j](h)
                hs.append(h)
            if i != self.num_resolutions - 1:
                hs.append(d.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], step_bias)), step_bias)
        for i in reversed(range(self.num_resolutions)):
            u = self.up[i]
            for j in range(self.num_res_blocks + 1):
                h = u.block[j](torch.cat([h, hs.pop()], dim=1), step_bias)
                if len(u.attn) > 0:
                    h = u.attn[j](h)
            if i != 0:
                h = u.upsample(h)
        h = group_norm_silu(h, self.norm_out.w, self.norm_out.b, eps=self.norm_out_eps,
                            num_groups=self.norm_out_groups)
        return self.conv_out(h)


def build_gpu_unet(unet: UNet, *, dtype: torch.dtype = torch.bfloat16, device="cuda",
                   channels_last: bool = True) -> FastUNet:
    """A :class:`FastUNet` of ``unet`` (left untouched) on ``device``."""
    return FastUNet(unet, dtype=dtype, channels_last=channels_last).to(device)


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


def _capture_or_none(fn, what: str):
    """:func:`_warm_then_capture`, or None (eager fallback, recorded in GRAPH_ERRORS and warned
    about) when the capture fails."""
    try:
        return _warm_then_capture(fn)
    except Exception as exc:  # e.g. an op that synchronises: run that part eagerly instead
        import warnings
        torch.cuda.synchronize()
        GRAPH_ERRORS.append((what, f"{type(exc).__name__}: {exc}"))
        warnings.warn(f"d2c_fast.gpu: CUDA graph capture of {what} failed ({exc}); running it "
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
            self.graph = _capture_or_none(self._body, f"the U-Net call (batch {n})") \
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


class _DDIMLoop:
    """The DDIM loop for ``n`` images and ``S`` steps over static buffers: ``x`` (standardised
    latent, fp32), ``coeffs`` (S, 5), ``bias`` (S, bias_width), ``noise`` (S, n, C, d, d) when
    ``with_noise``; ``out`` receives the raw latents (``x * std + mean``)."""

    def __init__(self, unet: FastUNet, shape, steps: int, with_noise: bool, mean, std,
                 use_graph: bool, predict_v: bool = False):
        n, C, d, _ = shape
        dev = unet.conv_in.weight.device
        self.unet, self.steps, self.with_noise = unet, steps, with_noise
        self.predict_v = predict_v
        self.mean, self.std = mean, std
        cl = unet.channels_last

        def latent_buffer(*lead):
            if cl:  # channels-last strides, so the DDIM kernel walks x, eps and noise linearly
                return torch.zeros(*lead, d, d, C, device=dev).movedim(-1, -3)
            return torch.zeros(*lead, C, d, d, device=dev)

        self.x = latent_buffer(n)
        self.out = torch.empty_like(self.x)
        self.noise = latent_buffer(steps, n) if with_noise else None
        self.coeffs = torch.zeros(steps, 5, device=dev)
        self.coeffs[:, 0] = 1.0   # harmless values for the warm-up runs
        self.bias = torch.zeros(steps, unet.bias_width, device=dev)
        self.loaded_key = None
        self.graph = _capture_or_none(self._body, f"the DDIM loop {shape}x{steps}") \
            if use_graph else None

    def _body(self) -> None:
        for i in range(self.steps):
            eps = self.unet(self.x, step_bias=self.bias[i:i + 1])
            if self.predict_v:   # coeffs[i] = (sqrt(abar_t), sqrt(1 - abar_t), ...)
                eps = torch.addcmul(self.x * self.coeffs[i, 1], eps.float(), self.coeffs[i, 0])
            ddim_step(self.x, eps, self.coeffs[i], self.noise[i] if self.with_noise else None,
                      out=self.x)
        torch.mul(self.x, self.std, out=self.out).add_(self.mean)

    def run(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._body()
        return self.out


class GpuSampler:
    """DDIM sampling (and decoding) on the GPU path.

    Args:
        ckpt, config: as :class:`~d2c_fast.Sampler` (a ``LoadedModel`` works too).
        device: ``"cuda"`` (default when available) or ``"cpu"`` (eager fallback, no graphs).
        dtype: U-Net and decoder compute dtype (default bf16 on CUDA, fp32 on CPU); the DDIM
            arithmetic, standardisation and mixture head stay fp32.
        channels_last: activations in channels-last memory format.
        use_graphs: capture the loops as CUDA graphs (default: on CUDA).
    """

    def __init__(self, ckpt, config=None, *, device=None, dtype: torch.dtype | None = None,
                 channels_last: bool = True, use_graphs: bool | None = None, _base=None):
        from .sampler import Sampler
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.device, self.dtype = device, dtype
        self.use_graphs = device.type == "cuda" if use_graphs is None else bool(use_graphs)
        if self.use_graphs and device.type != "cuda":
            raise ValueError("use_graphs=True needs a CUDA device")
        loaded = ckpt if isinstance(ckpt, LoadedModel) else load_model(ckpt, config)
        # v-prediction U-Nets: eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v inside the loop, from
        # the step's device-resident coefficients (no host read, graph-capturable)
        self.predict_v = loaded.config.unet.prediction == "v"
        self.channels_last = channels_last
        if _base is None:
            # The fast autoencoder, schedule, standardisation and RNG helpers of the CPU engine.
            self.base = Sampler(loaded, impl="fast", device=device, dtype=dtype)
            if channels_last:
                self.base.autoencoder.to(memory_format=torch.channels_last)
        else:
            self.base = _base
        self.unet = build_gpu_unet(loaded.unet, dtype=dtype, device=device,
                                   channels_last=channels_last)
        self.latent_shape = self.base.latent_shape
        self.schedule = self.base.schedule
        self._loops: dict[tuple, _DDIMLoop] = {}
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._decoders: dict[int, tuple] = {}

    def __repr__(self) -> str:
        return (f"GpuSampler(latent={self.latent_shape}, device={str(self.device)!r}, "
                f"dtype={self.dtype}, graphs={self.use_graphs})")

    # ------------------------------------------------------------------ pieces
    @torch.inference_mode()
    def unet_eps(self, z_t: torch.Tensor, t) -> torch.Tensor:
        """Noise prediction (fp32) for standardised latents, like ``Sampler.unet`` (a v model's
        output converted to eps)."""
        x = z_t.to(self.device, torch.float32)
        tt = torch.as_tensor(t, dtype=torch.float32, device=self.device)
        if tt.dim() == 0:
            tt = tt.expand(x.shape[0])
        return self.base._as_eps(self.unet(x, tt).float(), x, tt)

    def _step_tables(self, seq: list[int], eta: float):
        """(coeffs (S, 5), bias (S, width)) on the device for a sequence; cached, so a repeated
        sequence costs no host-to-device copy."""
        key = (tuple(seq), float(eta))
        if key not in self._tables:
            pairs = list(zip(reversed(seq), reversed([-1] + seq[:-1])))
            coeffs = torch.tensor([D.ddim_step_coeffs(self.schedule, t, tn, eta) for t, tn in pairs],
                                  dtype=torch.float32).to(self.device)
            ts = torch.tensor([float(t) for t, _ in pairs], dtype=torch.float32).to(self.device)
            self._tables[key] = (coeffs, self.unet.step_bias(ts))
        return self._tables[key]

    def _loop(self, n: int, steps: int, with_noise: bool) -> _DDIMLoop:
        key = (n, steps, with_noise)
        if key not in self._loops:
            self._loops[key] = _DDIMLoop(self.unet, (n, *self.latent_shape), steps, with_noise,
                                         self.base.mean, self.base.std, self.use_graphs,
                                         self.predict_v)
        return self._loops[key]

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def ddim_latents(self, zT: torch.Tensor, seq: Sequence[int], *, eta: float = 0.0,
                     step_noise: torch.Tensor | None = None,
                     standardised: bool = False) -> torch.Tensor:
        """DDIM from standardised noise ``zT`` ``(n, C, d, d)`` over ``seq`` (ascending, as
        :func:`d2c_fast.diffusion.ddim`); ``step_noise`` ``(S, n, C, d, d)`` when ``eta > 0``.
        Returns raw latents (fp32, a fresh tensor), or the standardised ones (what
        :func:`d2c_fast.diffusion.ddim` returns) when ``standardised``."""
        seq = D.check_sequence(seq, self.schedule.num_timesteps)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        n, S = zT.shape[0], len(seq)
        if tuple(zT.shape[1:]) != self.latent_shape:
            raise ValueError(f"zT must be (n, {', '.join(map(str, self.latent_shape))}), got "
                             f"{tuple(zT.shape)}")
        with_noise = eta > 0
        if with_noise and (step_noise is None or tuple(step_noise.shape) != (S, *zT.shape)):
            raise ValueError(f"eta > 0 needs step_noise of shape {(S, *zT.shape)}")
        loop = self._loop(n, S, with_noise)
        key = (tuple(seq), float(eta))
        if loop.loaded_key != key:
            coeffs, bias = self._step_tables(seq, eta)
            loop.coeffs.copy_(coeffs)
            loop.bias.copy_(bias)
            loop.loaded_key = key
        loop.x.copy_(zT)
        if with_noise:
            loop.noise.copy_(step_noise)
        out = loop.run()
        return (loop.x if standardised else out).clone()

    @torch.inference_mode()
    def run_ddim(self, x: torch.Tensor, seq: Sequence[int], eta: float, step_noise_fn) -> torch.Tensor:
        """Drop-in for ``Sampler._run_ddim``: standardised ``x`` in and out; ``step_noise_fn(i)``
        is called once per step, in step order, before the loop (the draws are the same)."""
        noise = torch.stack([step_noise_fn(i) for i in range(len(seq))]) if eta > 0 else None
        return self.ddim_latents(x, seq, eta=eta, step_noise=noise, standardised=True)

    @torch.inference_mode()
    def sample_latents(self, n: int, *, skip: int | None = None, steps: int | None = None,
                       timesteps: Sequence[int] | None = None, eta: float = 0.0, generator=None,
                       seed: int | None = None, noise: torch.Tensor | None = None,
                       step_noise: torch.Tensor | None = None, eps_scale: float = 1.0,
                       guidance: float | None = None) -> torch.Tensor:
        """As :meth:`Sampler.sample_latents` (same sequence options and draws: start noise,
        then one draw per step when ``eta > 0``). Raw latents ``(n, C, d, d)`` fp32.
        ``eps_scale`` and ``guidance`` as there (``None``: the model's recommended weight);
        when either is not 1 the steps run eagerly through the shared :class:`Sampler` (its
        guided combination, one guide call per step), not the captured loop."""
        from .sampler import _RNG
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        seq = self.base._uncond_seq(skip, steps, timesteps)
        eps_scale, guidance = self._eager_args(eps_scale, guidance, step_noise)
        rng = _RNG(n, self.device, generator, seed)
        return self._latents(n, seq, eta, rng, noise, step_noise, eps_scale, guidance)

    def _eager_args(self, eps_scale, guidance, step_noise):
        """Validated ``(eps_scale, guidance)``; explicit ``step_noise`` only for the captured
        loop (the eager one draws its own, the same way)."""
        eps_scale = self.base._check_eps_scale(eps_scale)
        guidance = self.base._check_guidance(guidance)
        if (eps_scale != 1.0 or guidance != 1.0) and step_noise is not None:
            raise ValueError("step_noise is only taken with eps_scale=1 and guidance=1 (the "
                             "captured loop); guided or scaled sampling draws its step noise "
                             "from seed / generator")
        return eps_scale, guidance

    def _latents(self, n, seq, eta, rng, noise, step_noise, eps_scale, guidance):
        if eps_scale != 1.0 or guidance != 1.0:
            # the same draws and arithmetic as Sampler.sample_latents (one chunk)
            return self.base._sample_latents(n, seq, eta, rng, noise, batch_size=None,
                                             progress=False, eps_scale=eps_scale,
                                             guidance=guidance)
        zT = self.base._noise(noise, n, rng)
        if eta > 0 and step_noise is None:
            step_noise = torch.stack([rng.randn(*self.latent_shape) for _ in seq])
        return self.ddim_latents(zT, seq, eta=eta, step_noise=step_noise)

    # ------------------------------------------------------------------ decoding
    def _decoder(self, n: int):
        if n not in self._decoders:
            ae = self.base.autoencoder
            mf = torch.channels_last if self.channels_last else torch.contiguous_format
            z = torch.zeros(n, *self.latent_shape, device=self.device, dtype=self.dtype)
            z = z.contiguous(memory_format=mf)
            holder = {"z": z, "out": None}

            def body():
                holder["out"] = ae.decode_logits(holder["z"])

            graph = _capture_or_none(body, f"the decoder (batch {n})") if self.use_graphs else None
            self._decoders[n] = (graph, holder, body)
        return self._decoders[n]

    @torch.inference_mode()
    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> decoder output (fp32), the decoder captured per batch size."""
        graph, holder, body = self._decoder(z.shape[0])
        holder["z"].copy_(z)
        if graph is not None:
            graph.replay()
        else:
            body()
        return holder["out"].float()

    @torch.inference_mode()
    def sample(self, n: int, *, mode: str = "sample", generator=None, seed: int | None = None,
               noise: torch.Tensor | None = None, eps_scale: float = 1.0,
               guidance: float | None = None, **kw) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in [0, 1] (W-gen with the default skip=100): latents, decode,
        mixture sample; the draws follow :meth:`Sampler.sample`. ``eps_scale``, ``guidance``:
        as :meth:`sample_latents` (a model with a guide prior is guided by default, as
        ``Sampler`` samples it)."""
        from .sampler import _RNG
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        seq = self.base._uncond_seq(kw.pop("skip", None), kw.pop("steps", None),
                                    kw.pop("timesteps", None))
        eta = kw.pop("eta", 0.0)
        if kw:
            raise TypeError(f"unexpected arguments {sorted(kw)}")
        eps_scale, guidance = self._eager_args(eps_scale, guidance, None)
        rng = _RNG(n, self.device, generator, seed)
        z = self._latents(n, seq, eta, rng, noise, None, eps_scale, guidance)
        return self.base._logits_to_images(self.decode_logits(z), mode, rng)


def attach_gpu_path(sampler, loaded: LoadedModel) -> "GpuSampler":
    """Give a CUDA ``Sampler(impl="fast")`` the GPU path: its ``unet_model`` becomes a
    :class:`FastUNet` built from ``loaded.unet`` (the untouched fp32 reference), and the returned
    :class:`GpuSampler` (sharing the sampler's autoencoder, schedule and RNG helpers) runs its DDIM
    loops as CUDA graphs through :meth:`GpuSampler.run_ddim`. Stored as ``sampler._gpu``."""
    gs = GpuSampler(loaded, device=sampler.device, dtype=sampler.dtype, _base=sampler)
    sampler.unet_model = gs.unet
    sampler._gpu = gs
    return gs
