"""Box IoU and batched NMS — torchvision's, without importing torchvision's Python package.

``import torchvision`` takes ~1.3 s (its ``ops.roi_align`` imports ``torch._dynamo``): 40 % of ``gpuface
anonymize``'s start-up on a 2-core VM, for two functions. :func:`batched_nms` calls torchvision's own compiled NMS
kernel (``torch.ops.torchvision.nms``, the one ``torchvision.ops.nms`` calls), loading torchvision's extension
library directly (``torch.ops.load_library``), and :func:`box_iou` is the IoU formula as torchvision writes it.
Where torchvision is already imported, or its library cannot be found under a known name, or the boxes are fake
tensors (``FakeTensorMode`` needs torchvision's meta registrations), torchvision itself is imported and used. The
tests hold both equal to ``torchvision.ops``.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import torch

_nms = None


def _load_nms():
    """``torch.ops.torchvision.nms``, from torchvision's extension library (``_C_stable`` in torchvision ≥ 0.25,
    ``_C`` before), or ``torchvision.ops.nms`` where that is not possible."""
    spec = importlib.util.find_spec("torchvision")
    if "torchvision" not in sys.modules and spec is not None and spec.submodule_search_locations:
        folder = spec.submodule_search_locations[0]
        for name in ("_C_stable", "_C"):
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, name + suffix)
                if os.path.isfile(path):
                    try:
                        torch.ops.load_library(path)
                        return torch.ops.torchvision.nms
                    except (OSError, RuntimeError, AttributeError):
                        break
    from torchvision.ops import nms

    return nms


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), both xyxy in the same units: float (N, M) in
    [0, 1], intersection area over union area (0 where both boxes are empty). Same arithmetic as
    ``torchvision.ops.box_iou``."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b - inter)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression within each group: ``torchvision.ops.batched_nms``.

    Args:
        boxes: float (N, 4) xyxy. scores: float (N,). idxs: int64 (N,) group of each box (e.g. its frame); boxes of
            different groups never suppress each other. iou_threshold: a box is dropped when its IoU with a
            higher-scored kept box of its group is above this.

    Returns:
        int64 (K,) indices of the kept boxes, by decreasing score. Groups are separated by offsetting each group's
        boxes by ``group × (largest coordinate + 1)`` (torchvision's "coordinate trick"), then one NMS.
    """
    global _nms
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    fake = sys.modules.get("torch._subclasses.fake_tensor")   # no fake tensors exist before it is imported
    if fake is not None and fake.is_fake(boxes):
        from torchvision.ops import batched_nms as tv_batched_nms

        with torch.device(boxes.device):
            return tv_batched_nms(boxes, scores, idxs, iou_threshold)
    if _nms is None:
        _nms = _load_nms()
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


__all__ = ["box_iou", "batched_nms"]
