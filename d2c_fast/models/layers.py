"""Building blocks of the D2C autoencoder (NVAE cell types as D2C uses them).

Module and parameter names follow the official release so that its state dicts load key for
key. Everything here is the reference: eval-mode semantics identical to the official code,
weight normalisation recomputed on every call (its cost model), BatchNorm unfolded. The fast
inference plan (``d2c_fast.models.plan``) is derived from these modules.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import parse_mconv

BN_EPS = 1e-5
BN_MOMENTUM = 0.05


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def weight_norm(weight: torch.Tensor, log_weight_norm: torch.Tensor) -> torch.Tensor:
    """Official weight normalisation: ``exp(g) * w / (||w||_2 + 1e-5)`` per output channel."""
    wn = torch.sqrt(torch.sum(weight * weight, dim=[1, 2, 3]))
    return torch.exp(log_weight_norm) * weight / (wn.view(-1, 1, 1, 1) + 1e-5)


class Conv2D(nn.Conv2d):
    """``nn.Conv2d`` with the official weight normalisation (``log_weight_norm``).

    Without weight normalisation the official class re-registers ``weight`` as
    ``weight_normalized`` (the same parameter under two names); we keep that alias so state
    dicts have identical keys. ``data_init`` marks layers that the official trainer
    initialises from data; it has no effect at inference.
    """

    def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, data_init=False, weight_norm=True):
        super().__init__(C_in, C_out, kernel_size, stride, padding, dilation, groups, bias)
        self.data_init = data_init
        self.log_weight_norm = None
        if weight_norm:
            init = torch.sqrt(torch.sum(self.weight.detach() ** 2, dim=[1, 2, 3])).view(-1, 1, 1, 1)
            self.log_weight_norm = nn.Parameter(torch.log(init + 1e-2))
        else:
            self.weight_normalized = self.weight  # alias, registered as a parameter

    def normalized_weight(self) -> torch.Tensor:
        if self.log_weight_norm is None:
            return self.weight
        return weight_norm(self.weight, self.log_weight_norm)

    def forward(self, x):
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class BatchNormWrap(nn.Module):
    """The official ``SyncBatchNorm`` wrapper (keys ``<name>.bn.*``); plain BN at eval."""

    def __init__(self, C, eps=BN_EPS, momentum=BN_MOMENTUM):
        super().__init__()
        self.bn = nn.BatchNorm2d(C, eps=eps, momentum=momentum)

    def forward(self, x):
        return self.bn(x)


class BNSwish(nn.BatchNorm2d):
    """BatchNorm followed by Swish in one module (the official ``SyncBatchNormSwish``)."""

    def forward(self, x):
        return swish(super().forward(x))


class ELUConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.upsample = stride == -1
        self.conv_0 = Conv2D(C_in, C_out, kernel_size, stride=abs(stride), padding=padding,
                             bias=True, dilation=dilation, data_init=True)

    def forward(self, x):
        out = F.elu(x)
        if self.upsample:
            out = F.interpolate(out, scale_factor=2, mode="nearest")
        return self.conv_0(out)


class BNELUConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.upsample = stride == -1
        self.bn = BatchNormWrap(C_in)
        self.conv_0 = Conv2D(C_in, C_out, kernel_size, stride=abs(stride), padding=padding,
                             bias=True, dilation=dilation)

    def forward(self, x):
        out = F.elu(self.bn(x))
        if self.upsample:
            out = F.interpolate(out, scale_factor=2, mode="nearest")
        return self.conv_0(out)


class BNSwishConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.upsample = stride == -1
        self.bn_act = BNSwish(C_in, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv_0 = Conv2D(C_in, C_out, kernel_size, stride=abs(stride), padding=padding,
                             bias=True, dilation=dilation)

    def forward(self, x):
        out = self.bn_act(x)
        if self.upsample:
            out = F.interpolate(out, scale_factor=2, mode="nearest")
        return self.conv_0(out)


class ConvBNSwish(nn.Module):
    """Conv (no weight norm, no bias) + BN + Swish, inside the MBConv cell."""

    def __init__(self, Cin, Cout, k=3, stride=1, groups=1, dilation=1):
        super().__init__()
        padding = dilation * (k - 1) // 2
        self.conv = nn.Sequential(
            Conv2D(Cin, Cout, k, stride, padding, groups=groups, bias=False, dilation=dilation,
                   weight_norm=False),
            BNSwish(Cout, eps=BN_EPS, momentum=BN_MOMENTUM),
        )

    def forward(self, x):
        return self.conv(x)


class InvertedResidual(nn.Module):
    """MBConv: [nearest x2] BN, 1x1 expand + BN + Swish, kxk grouped + BN + Swish,
    1x1 project, BN."""

    def __init__(self, Cin, Cout, stride, ex, dil, k, g):
        super().__init__()
        if stride not in (1, 2, -1):
            raise ValueError(f"stride must be 1, 2 or -1, got {stride}")
        hidden = int(round(Cin * ex))
        groups = hidden if g == 0 else g
        self.hidden_dim = hidden
        self.upsample = stride == -1
        layers = [nn.UpsamplingNearest2d(scale_factor=2)] if self.upsample else []
        layers += [
            BatchNormWrap(Cin),
            ConvBNSwish(Cin, hidden, k=1),
            ConvBNSwish(hidden, hidden, stride=abs(stride), groups=groups, k=k, dilation=dil),
            Conv2D(hidden, Cout, 1, 1, 0, bias=False, weight_norm=False),
            BatchNormWrap(Cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return self.conv(x)


class FactorizedReduce(nn.Module):
    """Stride-2 skip: Swish, then four 1x1 stride-2 convs on the four pixel phases."""

    def __init__(self, C_in, C_out):
        super().__init__()
        if C_out % 2:
            raise ValueError("FactorizedReduce needs an even number of output channels")
        q = C_out // 4
        self.conv_1 = Conv2D(C_in, q, 1, stride=2, padding=0, bias=True)
        self.conv_2 = Conv2D(C_in, q, 1, stride=2, padding=0, bias=True)
        self.conv_3 = Conv2D(C_in, q, 1, stride=2, padding=0, bias=True)
        self.conv_4 = Conv2D(C_in, C_out - 3 * q, 1, stride=2, padding=0, bias=True)

    def forward(self, x):
        out = swish(x)
        return torch.cat([self.conv_1(out), self.conv_2(out[:, :, 1:, 1:]),
                          self.conv_3(out[:, :, :, 1:]), self.conv_4(out[:, :, 1:, :])], dim=1)


class UpSample(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Identity(nn.Module):
    def forward(self, x):
        return x


class SE(nn.Module):
    """Squeeze-excitation: mean over H,W, Linear, ReLU, Linear, Sigmoid, channel scale."""

    def __init__(self, Cin, Cout):
        super().__init__()
        hidden = max(Cout // 16, 4)
        self.se = nn.Sequential(nn.Linear(Cin, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, Cout), nn.Sigmoid())

    def forward(self, x):
        s = self.se(torch.mean(x, dim=[2, 3]))
        return x * s.view(s.size(0), -1, 1, 1)


def make_op(name: str, Cin: int, Cout: int, stride: int) -> nn.Module:
    """One entry of the official operation table."""
    if name == "res_elu":
        return ELUConv(Cin, Cout, 3, stride, 1)
    if name == "res_bnelu":
        return BNELUConv(Cin, Cout, 3, stride, 1)
    if name == "res_bnswish":
        return BNSwishConv(Cin, Cout, 3, stride, 1)
    if name == "res_bnswish5":  # 3x3 dilated by 2 (a 5x5 receptive field)
        return BNSwishConv(Cin, Cout, 3, stride, 2, 2)
    parsed = parse_mconv(name)
    if parsed is None:
        raise ValueError(f"unknown cell op {name!r}")
    ex, k, g = parsed
    return InvertedResidual(Cin, Cout, stride, ex=ex, dil=1, k=k, g=g)


def stride_for_cell_type(cell_type: str) -> int:
    if cell_type.startswith("normal") or cell_type.startswith("combiner"):
        return 1
    if cell_type.startswith("down"):
        return 2
    if cell_type.startswith("up"):
        return -1
    raise ValueError(cell_type)


CHANNEL_MULT = 2


def skip_connection(C: int, stride: int) -> nn.Module:
    if stride == 1:
        return Identity()
    if stride == 2:
        return FactorizedReduce(C, int(CHANNEL_MULT * C))
    return nn.Sequential(UpSample(), Conv2D(C, int(C / CHANNEL_MULT), kernel_size=1))


class Cell(nn.Module):
    """Residual cell: ``skip(s) + 0.1 * SE(ops(s))``."""

    def __init__(self, Cin, Cout, cell_type, arch, use_se):
        super().__init__()
        self.cell_type = cell_type
        stride = stride_for_cell_type(cell_type)
        self.skip = skip_connection(Cin, stride)
        self.use_se = use_se
        self._ops = nn.ModuleList(
            make_op(op, Cin if i == 0 else Cout, Cout, stride if i == 0 else 1)
            for i, op in enumerate(arch))
        if use_se:
            self.se = SE(Cout, Cout)

    def forward(self, s):
        skip = self.skip(s)
        for op in self._ops:
            s = op(s)
        if self.use_se:
            s = self.se(s)
        return skip + 0.1 * s
