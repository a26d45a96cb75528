"""The inference plan: modules derived once, at load time, from the reference modules.

What it changes (each exact in real arithmetic, so fast == ref to float rounding):
- weight normalisation is evaluated once and stored as a plain convolution weight;
- BatchNorm after a convolution (inside MBConv) is folded into that convolution's weight/bias;
- the MBConv input BatchNorm is folded into the following 1x1 convolution;
- BatchNorm + Swish before a padded convolution (``res_bnswish`` cells) becomes one fused op,
  ``d2c_fast::bn_swish`` (C++ on CPU when built, reference elsewhere), except between two
  ``res_bnswish`` ops of a cell: there the BatchNorm folds into the first op's convolution and
  the Swish becomes that convolution's oneDNN post-op (one pass over the activation fewer);
- MBConv up cells expand at the low resolution, then up-sample the hidden tensor (nearest
  up-sampling commutes with per-pixel ops) inside the depthwise conv op
  (``up2_dwconv_bias_swish``: the up-sampled tensor is never written); the up-sampling skip applies its 1x1 conv before
  the bilinear up-sampling (exact: bilinear weights sum to one);
- stride-1 MBConv bodies (expand, depthwise, project) run as one row-streamed C++ op
  (``d2c_fast::mbconv``, float32 on CPU) that keeps the 6x hidden tensor in cache;
- activations are channels-last on CPU, and 1x1/depthwise conv + Swish run as one oneDNN
  primitive (bf16 and the cells the fused op does not cover);
- U-Net attention uses ``scaled_dot_product_attention``.
The reference modules are left untouched (the plan works on a deep copy).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import (bn_swish, dwconv_bias_swish, has_compiled_kernel, mbconv, se_residual,
                   up2_dwconv_bias_swish)
from .layers import (BatchNormWrap, BNSwish, BNSwishConv, Cell, Conv2D, ConvBNSwish,
                     InvertedResidual, UpSample)


def _bn_scale_shift(bn: nn.BatchNorm2d):
    scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    shift = bn.bias.detach() - bn.running_mean.detach() * scale
    return scale.float(), shift.float()


_MKLDNN_CONV = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def _onednn_dtypes() -> tuple:
    """Dtypes the oneDNN primitive takes on this CPU: bf16 needs AVX512-BW/VL/DQ or
    AVX-NE-CONVERT (oneDNN refuses it elsewhere; PyTorch's own conv2d still runs bf16 there)."""
    is_bf16 = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    bf16 = bool(is_bf16()) if is_bf16 is not None else False
    return (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)


_ONEDNN_DTYPES = _onednn_dtypes()


class OneDNNConv(nn.Conv2d):
    """A convolution that always runs as a oneDNN primitive on CPU (eager PyTorch falls back to
    its slow im2col path for some fp32 shapes, e.g. with one thread)."""

    def forward(self, x):
        if _MKLDNN_CONV is not None and x.device.type == "cpu" and x.dtype == self.weight.dtype \
                and x.dtype in _ONEDNN_DTYPES and isinstance(self.padding, tuple):
            return _MKLDNN_CONV(x, self.weight, self.bias, list(self.padding), list(self.stride),
                                list(self.dilation), self.groups, "none", [], "")
        return super().forward(x)


def _plain_conv(conv: Conv2D, weight=None, bias=None) -> nn.Conv2d:
    out = OneDNNConv(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, bias=True)
    w = conv.normalized_weight().detach() if weight is None else weight
    if bias is None:
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    out.weight.data.copy_(w)
    out.bias.data.copy_(bias)
    return out


class _Fp32Consts(nn.Module):
    """Holds float32 constants (named in ``_FP32``) that follow device moves but never dtype
    casts: the fused ops take float32 weights whatever the activation dtype."""

    _FP32: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        for name in self._FP32:
            t = getattr(self, name)
            probe = fn(torch.zeros(1, device=t.device))
            setattr(self, name, t.to(probe.device))
        return super()._apply(fn, recurse)


class FusedBNSwish(_Fp32Consts):
    """Eval BatchNorm folded to ``scale, shift`` + Swish, through the ``bn_swish`` op."""

    _FP32 = ("scale", "shift")

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.scale, self.shift = _bn_scale_shift(bn)

    def forward(self, x):
        return bn_swish(x, self.scale, self.shift)


class ConvSwish(nn.Module):
    """Convolution + bias + Swish. On CPU it is one oneDNN primitive with a Swish post-op
    (no extra pass over the, often 6x expanded, output); elsewhere conv then SiLU."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        c = conv
        self._args = (list(c.padding), list(c.stride), list(c.dilation), c.groups)

    def forward(self, x):
        c = self.conv
        if _MKLDNN_CONV is not None and x.device.type == "cpu" \
                and x.dtype == c.weight.dtype and x.dtype in _ONEDNN_DTYPES:
            pad, stride, dil, groups = self._args
            return _MKLDNN_CONV(x, c.weight, c.bias, pad, stride, dil, groups, "swish",
                                      [], "")
        return F.silu(c(x), inplace=True)


class DWConvSwish(_Fp32Consts):
    """Depthwise conv + bias + Swish: the ``dwconv_bias_swish`` op on CPU (one pass, weights
    in registers), oneDNN/cuDNN conv + SiLU elsewhere. ``up2``: a nearest x2 up-sampling in
    front (MBConv up cells; "same" padding, odd k), fused on CPU (``up2_dwconv_bias_swish``,
    the up-sampled tensor is never materialised)."""

    _FP32 = ("weight", "bias")

    def __init__(self, conv: nn.Conv2d, up2: bool = False):
        super().__init__()
        assert conv.groups == conv.in_channels == conv.out_channels
        self.weight = conv.weight.detach().float().clone()
        self.bias = conv.bias.detach().float().clone()
        self.stride, self.padding, self.dilation = conv.stride[0], conv.padding[0], conv.dilation[0]
        self.up2 = up2
        if up2:
            k = conv.kernel_size[0]
            assert k % 2 == 1 and self.stride == 1 and self.dilation == 1 \
                and self.padding == (k - 1) // 2

    def forward(self, x):
        if self.up2:
            if x.device.type == "cpu" or has_compiled_kernel("up2_dwconv_bias_swish", x.device):
                return up2_dwconv_bias_swish(x, self.weight, self.bias, True)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if x.device.type == "cpu" or has_compiled_kernel("dwconv_bias_swish", x.device):
            return dwconv_bias_swish(x, self.weight, self.bias, self.stride, self.padding,
                                     self.dilation, True)
        y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride,
                     self.padding, self.dilation, x.shape[1])
        return F.silu(y, inplace=True)


class FastCell(_Fp32Consts):
    """A planned residual cell: ``skip(s) + 0.1 * SE(ops(s))`` with the squeeze-excitation,
    the scaling and the residual add in one op (``se_residual``)."""

    def __init__(self, cell):
        super().__init__()
        self.cell_type = cell.cell_type
        self.skip = cell.skip
        self._ops = cell._ops
        self.use_se = cell.use_se
        if self.use_se:
            fc1, fc2 = cell.se.se[0], cell.se.se[2]
            self.w1, self.b1 = fc1.weight.detach().float(), fc1.bias.detach().float()
            self.w2, self.b2 = fc2.weight.detach().float(), fc2.bias.detach().float()
            self._FP32 = ("w1", "b1", "w2", "b2")

    def forward(self, s):
        skip = self.skip(s)
        for op in self._ops:
            s = op(s)
        if not self.use_se:
            return skip + 0.1 * s
        return se_residual(s, skip, self.w1, self.b1, self.w2, self.b2, 0.1)


class FusedMBConv(_Fp32Consts):
    """A stride-1 MBConv body (expand 1x1 + Swish, depthwise + Swish, project 1x1), BN folded.
    On CPU with the compiled kernel: one ``d2c_fast::mbconv`` call (row-streamed, the hidden
    tensor stays in cache) in float32, and in bf16 where that pays (see ``BF16_MIN_PIXELS``).
    Otherwise (other devices, no library) the unfused sequence ``seq`` (oneDNN / cuDNN convs
    and ``dwconv_bias_swish``)."""

    _FP32 = ("we", "be", "wp", "bp")   # the depthwise constants live in seq's DWConvSwish

    def __init__(self, e: nn.Conv2d, d: nn.Conv2d, p: nn.Conv2d):
        super().__init__()
        # The 1x1 weights in conv shapes (E, C, 1, 1) / (C2, E, 1, 1) but with (C, E) / (E, C2)
        # row-major memory, the layout the kernel's GEMMs read: its reshape + transpose +
        # contiguous() is then free at every call.
        self.we = _transposed_1x1(e.weight)
        self.wp = _transposed_1x1(p.weight)
        self.be = e.bias.detach().float().clone()
        self.bp = p.bias.detach().float().clone()
        self.seq = nn.Sequential(ConvSwish(e), DWConvSwish(d), p)

    @property
    def wd(self) -> torch.Tensor:
        return self.seq[1].weight   # fp32 (C, 1, k, k), kept fp32 by DWConvSwish

    @property
    def bd(self) -> torch.Tensor:
        return self.seq[1].bias

    # bf16: the fused op multiplies on AMX (PyTorch's brgemm) but its depthwise part is plain
    # fp32 FMA; measured on this project's CPU (1 thread, benchmarks/bench_op_mbconv.py) it beats
    # the unfused bf16 ops (oneDNN AMX convs + dwconv) by 1.3x at 128x128, ties at 64x64 and
    # loses at 32x32, so bf16 uses it from 128x128 up (and only where the AMX path applies).
    BF16_MIN_PIXELS = 128 * 128

    def _bf16_ok(self, x) -> bool:
        C, E, C2 = self.we.shape[1], self.we.shape[0], self.wp.shape[0]
        return x.shape[2] * x.shape[3] >= self.BF16_MIN_PIXELS and C % 2 == 0 \
            and E % 16 == 0 and C2 % 16 == 0 and _amx_bf16()

    def forward(self, x):
        if x.device.type == "cpu" and has_compiled_kernel("mbconv", "cpu") and \
                (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and self._bf16_ok(x))):
            return mbconv(x, self.we, self.be, self.wd, self.bd, self.wp, self.bp)
        return self.seq(x)


def _transposed_1x1(w: torch.Tensor) -> torch.Tensor:
    """A (O, I, 1, 1) float32 weight whose memory is the (I, O) row-major matrix (strides
    (1, O, 1, 1)); same values and shape as ``w``."""
    O, I = w.shape[0], w.shape[1]
    return w.detach().float().reshape(O, I).t().contiguous().t().view(O, I, 1, 1)


_AMX: bool | None = None


def _amx_bf16() -> bool:
    """Whether the CPU has usable AMX tiles (where PyTorch's brgemm packs bf16 weights):
    ``torch._C._cpu._init_amx()`` (cpuinfo's amx_tile check + the Linux permission request)."""
    global _AMX
    if _AMX is None:
        f = getattr(getattr(torch._C, "_cpu", None), "_init_amx", None)
        try:
            _AMX = bool(f()) if f is not None else False
        except RuntimeError:
            _AMX = False
    return _AMX


def _fold_conv_bn(conv: Conv2D, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``BN(conv(x))`` -> one convolution."""
    scale, shift = _bn_scale_shift(bn)
    w = conv.normalized_weight().detach() * scale.view(-1, 1, 1, 1)
    b = shift + (conv.bias.detach() * scale if conv.bias is not None else 0)
    return _plain_conv(conv, w, b)


def _fold_bn_into_1x1(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(BN(x))`` for a 1x1, ungrouped, unpadded conv -> one convolution."""
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.detach()
    new_w = w * scale.view(1, -1, 1, 1)
    new_b = conv.bias.detach() + (w[:, :, 0, 0] @ shift)
    out = OneDNNConv(conv.in_channels, conv.out_channels, 1, conv.stride, 0, 1, 1, bias=True)
    out.weight.data.copy_(new_w)
    out.bias.data.copy_(new_b)
    return out


def _plan_mbconv(m: InvertedResidual) -> nn.Sequential:
    layers = list(m.conv)
    up = []
    if isinstance(layers[0], nn.UpsamplingNearest2d):
        up = [layers.pop(0)]
    bn_in, expand, dw, project, bn_out = layers
    assert isinstance(bn_in, BatchNormWrap) and isinstance(expand, ConvBNSwish)
    e = _fold_conv_bn(expand.conv[0], expand.conv[1])
    e = _fold_bn_into_1x1(bn_in.bn, e)
    d = _fold_conv_bn(dw.conv[0], dw.conv[1])
    p = _fold_conv_bn(project, bn_out.bn)
    # Nearest up-sampling commutes with the per-pixel BN + 1x1 expand + Swish: expanding at
    # the low resolution does a quarter of the work, then the hidden tensor is up-sampled.
    if d.groups == d.in_channels == d.out_channels:
        k, pad = d.kernel_size[0], d.padding[0]
        same = k % 2 == 1 and d.stride[0] == 1 and d.dilation[0] == 1 and pad == (k - 1) // 2
        if up and same:
            return nn.Sequential(ConvSwish(e), DWConvSwish(d, up2=True), p)
        pointwise = all(c.kernel_size == (1, 1) and c.stride == (1, 1) and c.groups == 1
                        and c.padding == (0, 0) for c in (e, p))
        if not up and same and pointwise:
            return FusedMBConv(e, d, p)
        dws = DWConvSwish(d)
    else:
        dws = ConvSwish(d)
    return nn.Sequential(ConvSwish(e), *up, dws, p)


def _plan_up_skip(seq: nn.Sequential) -> nn.Sequential:
    """``conv1x1(bilinear_x2(x))`` -> ``bilinear_x2(conv1x1(x))``: exact (bilinear weights sum
    to one), with a quarter of the convolution work and half the up-sampled channels."""
    up, conv = seq[0], seq[1]
    return nn.Sequential(_plain_conv(conv), up)


def _fold_bn_swish_pairs(cell: Cell) -> None:
    """``conv_0`` of a ``res_bnswish`` op feeding the BatchNorm + Swish of the next one:
    ``swish(BN(conv(x)))`` -> one convolution with folded BN and a Swish post-op."""
    ops = list(cell._ops)
    for a, b in zip(ops, ops[1:]):
        if isinstance(a, BNSwishConv) and isinstance(b, BNSwishConv) \
                and isinstance(a.conv_0, Conv2D) and isinstance(b.bn_act, BNSwish):
            a.conv_0 = ConvSwish(_fold_conv_bn(a.conv_0, b.bn_act))
            b.bn_act = nn.Identity()


def _replace(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential) and len(child) == 2 and isinstance(child[0], UpSample) \
                and isinstance(child[1], Conv2D) and child[1].kernel_size == (1, 1):
            setattr(module, name, _plan_up_skip(child))
        elif isinstance(child, Cell):
            _fold_bn_swish_pairs(child)
            _replace(child)
            setattr(module, name, FastCell(child))
        elif isinstance(child, InvertedResidual):
            setattr(module, name, _plan_mbconv(child))
        elif isinstance(child, BNSwishConv):
            if isinstance(child.bn_act, BNSwish):
                child.bn_act = FusedBNSwish(child.bn_act)
            if isinstance(child.conv_0, Conv2D):
                child.conv_0 = _plain_conv(child.conv_0)
        elif isinstance(child, ConvBNSwish):
            setattr(module, name, ConvSwish(_fold_conv_bn(child.conv[0], child.conv[1])))
        elif isinstance(child, Conv2D):
            setattr(module, name, _plain_conv(child))
        elif isinstance(child, BNSwish):
            setattr(module, name, FusedBNSwish(child))
        else:
            _replace(child)


class FastAutoEncoder(nn.Module):
    """The planned autoencoder: channels-last activations on CPU (oneDNN's fast layout), the
    same ``encode`` / ``decode_logits`` interface as the reference."""

    def __init__(self, ae: nn.Module, channels_last: bool = True):
        super().__init__()
        self.ae = ae
        self.channels_last = channels_last
        self.bernoulli = ae.bernoulli
        if channels_last:
            self.ae.to(memory_format=torch.channels_last)

    def _layout(self, x):
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def encode(self, x):
        return self.ae.encode(self._layout(x)).contiguous()

    def decode_logits(self, z):
        # channels-last logits: the mixture head reads them through views (no transpose pass)
        return self.ae.decode_logits(self._layout(z))


def build_fast_autoencoder(ae: nn.Module, channels_last: bool = True) -> nn.Module:
    """A deep copy of the reference autoencoder with the inference plan applied."""
    fast = copy.deepcopy(ae)
    with torch.no_grad():
        _replace(fast)
    fast = FastAutoEncoder(fast, channels_last)
    fast.eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


class ChannelsLastUNet(nn.Module):
    """A U-Net whose weights and activations are channels-last (the CPU fast plan): the
    input is converted on entry, the output returned in the default layout. On the CPU this
    sends the small convolutions of a batch-1 call to oneDNN instead of PyTorch's
    im2col fallback (``_slow_conv2d_forward``) that contiguous batch-1 inputs get: the
    built-in model's batch-1 edit 1.18x faster unguided, 1.12x guided; neutral on the
    ARCH-256 U-Net (benchmarks/RESULTS.md). The same values to float32 rounding
    (tests/test_plan.py)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet.to(memory_format=torch.channels_last)

    def forward(self, x, t):
        return self.unet(x.contiguous(memory_format=torch.channels_last), t).contiguous()


def build_fast_unet(unet: nn.Module, channels_last: bool = False) -> nn.Module:
    """A deep copy of the reference U-Net for inference: fused attention (SDPA), eval mode;
    ``channels_last`` (the Sampler's choice on the CPU): wrapped in :class:`ChannelsLastUNet`."""
    fast = copy.deepcopy(unet)
    fast.set_attention(True)
    fast.eval()
    return ChannelsLastUNet(fast) if channels_last else fast
