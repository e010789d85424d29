"""dlib's face recognition ResNet (128-d embeddings, 150×150 aligned chips) as a batched torch module.

Model: Davis King, dlib 19.x ``dlib_face_recognition_resnet_model_v1`` (CC0-1.0; LFW accuracy 99.38 %), the
ResNet-34-like network of ``dnn_face_recognition_ex.cpp``: 7×7/2 conv (32) → affine → ReLU → 3×3/2 max-pool →
residual blocks 3×32, 4×64 (first strided), 3×128 (first strided), 3×256 (first strided), 1×256 (strided) →
global average pool → 128-d fully connected (no bias). Each block is conv3×3 (stride) → affine → ReLU → conv3×3
→ affine, plus a skip (the input, or its 2×2/2 average pool when strided); dlib's ``add_prev`` zero-pads the
smaller operand at the bottom/right, in channels and space, before adding. Batch norm is folded into the
affine layers. Input: RGB minus (122.782, 117.001, 104.298), divided by 256. Embeddings closer than 0.6
(Euclidean) are the same person in dlib's calibration.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MEAN_RGB = (122.782, 117.001, 104.298)
#: (channels, stride of the first block, blocks) per stage, input to output.
STAGES = ((32, 1, 3), (64, 2, 4), (128, 2, 3), (256, 2, 3), (256, 2, 1))


class _Affine(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: zero-pad both to the larger channels/height/width (bottom/right), then add."""
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))
    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return pad(a) + pad(b)


class DlibResNet(nn.Module):
    """``forward(x)``: x float (N, 3, 150, 150) RGB in 0–255 (an aligned chip, see
    :func:`gpuface.stages.embed.face_chips`). Returns float (N, 128) embeddings (not normalised)."""

    def __init__(self):
        super().__init__()
        convs, affines = [nn.Conv2d(3, 32, 7, 2)], [_Affine(32)]
        self.blocks: list[tuple[int, int]] = []   # (stride, out channels) per residual block
        cin = 32
        for cout, stride, n in STAGES:
            for i in range(n):
                s = stride if i == 0 else 1
                convs += [nn.Conv2d(cin, cout, 3, s, 1 if s == 1 else 0), nn.Conv2d(cout, cout, 3, 1, 1)]
                affines += [_Affine(cout), _Affine(cout)]
                self.blocks.append((s, cout))
                cin = cout
        for i, (c, a) in enumerate(zip(convs, affines)):
            self.add_module(f"conv{i}", c)
            self.add_module(f"affine{i}", a)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / 256.0
        x = F.max_pool2d(F.relu(self.affine0(self.conv0(x))), 3, 2)
        for i, (stride, _) in enumerate(self.blocks):
            j = 1 + 2 * i
            y = F.relu(getattr(self, f"affine{j}")(getattr(self, f"conv{j}")(x)))
            y = getattr(self, f"affine{j + 1}")(getattr(self, f"conv{j + 1}")(y))
            skip = F.avg_pool2d(x, 2, 2) if stride == 2 else x
            x = F.relu(_add_prev(y, skip))
        return self.fc(x.mean(dim=(2, 3)))


__all__ = ["DlibResNet", "MEAN_RGB", "STAGES"]
