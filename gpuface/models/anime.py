"""Anime faces: a detector and identity embedders for drawn characters (video-to-faces' ``--style anime``).

- ``animeface`` (offline, CPU): nagadomi's AnimeFace 2009 (nvxs 1.0.2; NYSL licence) as compiled, model inside,
  in PyPI's ``animeface==2.0.3`` (S. Takahashi's wrapper, Apache-2.0). Its extension reads a Pillow-4.2 image
  struct directly (``_nvxs.c``: ``mode``, ``xsize``, ``ysize``, ``image32`` row pointers), a layout Pillow 10.4
  still has and Pillow 13 no longer has — with it ``animeface.detect`` silently finds nothing.
  :class:`AnimeFaceDetector` hands the extension that struct built with ``ctypes`` over the frame's own pixels
  (no Pillow at all); a test holds it against ``animeface.detect`` run with Pillow 10.4 in a subprocess. Boxes, a
  likelihood in [0, 1] and five points: both eye centres (as seen in the image: left first), nose, mouth centre,
  chin. One frame at a time on the CPU (about 20 ms a 720p frame here).
- ``animesion-vit-b16`` / ``animesion-vit-l16`` (online only): the Animesion ViT-B/16 and ViT-L/16 character
  encoders (E. A. Rios, W.-H. Cheng, B.-C. Lai (2021), "DAF:re: A Challenging, Crowd-Sourced, Large-Scale,
  Long-Tailed Dataset For Anime Character Recognition", arXiv:2101.08674; github.com/arkel23/animesion), which
  video-to-faces uses as its anime embedders: 128² RGB in [−1, 1], the class token after the final LayerNorm
  (768 / 1024-d). The checkpoint's layout is lukemelas' ``pytorch_pretrained_vit`` (``model.transformer.blocks.i.
  attn.proj_q`` …); :func:`convert_animesion_state` maps it onto torchvision's ``VisionTransformer``, held in a
  test against ``pytorch_pretrained_vit`` itself on random weights. The weights are the Google-Drive files
  video-to-faces downloads (no PyPI package carries them).
- ``anime-rcnn`` (online only): video-to-faces' anime detector, hysts' anime-face-detector Faster R-CNN
  (ResNet-50 FPN trained with MMDetection 2 on anime faces; ``mmdet_anime-face_faster-rcnn.pth``, its GitHub
  release; configuration ``anime_face_detector/configs/mmdet/faster-rcnn.py`` of the PyPI package
  ``anime-face-detector==0.0.9``) on torchvision's ``FasterRCNN`` (:func:`anime_faster_rcnn`), where MMDetection
  differs from torchvision's defaults set as MMDetection does: anchors not rounded and on the configured strides,
  RoIAlign ``aligned`` with adaptive sampling, background as the last class. :func:`convert_mmdet_state` maps
  the checkpoint; a test holds the port against MMDetection 3.3's own ``FasterRCNN`` built from that
  configuration on random weights (MMCV's two compiled operators it needs, NMS and RoIAlign, stood in by
  torchvision's).
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _setup_scales

from gpuface.core.errors import WeightsError
from gpuface.core.types import Faces


class _PillowImaging(ctypes.Structure):
    """Pillow 4.2.1's ``ImagingMemoryInstance`` (``libImaging/Imaging.h``), the fields animeface's extension reads."""

    _fields_ = [("mode", ctypes.c_char * 7), ("type", ctypes.c_int), ("depth", ctypes.c_int),
                ("bands", ctypes.c_int), ("xsize", ctypes.c_int), ("ysize", ctypes.c_int),
                ("palette", ctypes.c_void_p), ("image8", ctypes.c_void_p), ("image32", ctypes.c_void_p),
                ("image", ctypes.c_void_p), ("block", ctypes.c_void_p), ("pixelsize", ctypes.c_int),
                ("linesize", ctypes.c_int), ("destroy", ctypes.c_void_p)]


def animeface_detect(rgb: np.ndarray) -> list[dict]:
    """animeface's raw results (``likelihood``, ``face_box`` (x, y, w, h), ``left_eye_box``, ``right_eye_box``,
    ``mouth_box``, ``nose_point``, ``chin_point``, colours) for one uint8 (H, W, 3) RGB image.

    The extension takes a Python object whose first field after the object header points to the image struct;
    a ctypes instance is exactly that (its buffer pointer), so the struct is passed as itself.

    Raises:
        WeightsError: animeface is not installed (``pip install animeface``).
    """
    try:
        from animeface import _nvxs
    except ImportError as e:
        raise WeightsError(f"the animeface detector needs the animeface package (pip install animeface==2.0.3): "
                           f"{e}") from None
    h, w, _ = rgb.shape
    pixels = np.zeros((h, w, 4), np.uint8)          # Pillow's RGB: 4 bytes a pixel
    pixels[..., :3] = rgb
    rows = (ctypes.c_void_p * h)(*(pixels.ctypes.data + y * w * 4 for y in range(h)))
    im = _PillowImaging(b"RGB", 0, 0, 3, w, h, None, None, ctypes.addressof(rows), ctypes.addressof(rows),
                        pixels.ctypes.data, 4, w * 4, None)
    return _nvxs.detect(im)


def _centre(box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


class AnimeFaceDetector(nn.Module):
    """AnimeFace 2009 (module docstring) behind the detectors' API: uint8 (B, 3, H, W) RGB frames →
    :class:`~gpuface.core.types.Faces` (boxes xyxy px, scores = likelihood in [0, 1], keypoints (N, 5, 2): left and
    right eye centre as seen in the image, nose, mouth centre, chin), on the frames' device. CPU compute, one frame
    at a time (the library's own loop); no weights to load (the model is compiled into the library)."""

    def forward(self, frames: torch.Tensor) -> Faces:
        host = frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        rows, boxes, scores, points = [], [], [], []
        for i, rgb in enumerate(host):
            for f in animeface_detect(rgb):
                x, y, w, h = f["face_box"]
                eyes = sorted([_centre(f["left_eye_box"]), _centre(f["right_eye_box"])])
                rows.append(i)
                boxes.append([x, y, x + w, y + h])
                scores.append(f["likelihood"])
                points.append([*eyes, f["nose_point"], _centre(f["mouth_box"]), f["chin_point"]])
        dev = frames.device
        if not rows:
            return Faces.empty(device=dev)
        return Faces(row=torch.tensor(rows, dtype=torch.int64, device=dev),
                     boxes=torch.tensor(boxes, dtype=torch.float32, device=dev),
                     scores=torch.tensor(scores, dtype=torch.float32, device=dev),
                     keypoints=torch.tensor(points, dtype=torch.float32, device=dev))


#: Animesion ViT sizes: (layers, heads, hidden, MLP), 128² input, 16² patches.
ANIMESION_VIT = {"animesion-vit-b16": (12, 12, 768, 3072), "animesion-vit-l16": (24, 16, 1024, 4096)}


def animesion_vit(name: str) -> nn.Module:
    """torchvision's ``VisionTransformer`` shaped as an Animesion encoder (:data:`ANIMESION_VIT`), LayerNorm eps
    1e-6 as ``pytorch_pretrained_vit``, no classifier: (N, 3, 128, 128) in [−1, 1] → (N, D) class-token features."""
    from functools import partial

    from torchvision.models.vision_transformer import VisionTransformer

    layers, heads, hidden, mlp = ANIMESION_VIT[name]
    net = VisionTransformer(image_size=128, patch_size=16, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                            mlp_dim=mlp, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    net.heads = nn.Identity()
    return net


def convert_animesion_state(state: dict) -> dict:
    """An Animesion checkpoint's state dict (``pytorch_pretrained_vit`` names, under ``model.``; its classifier and
    text/MLM heads dropped) → :func:`animesion_vit`'s names: q, k, v projections packed into ``in_proj``.

    Raises:
        KeyError: a tensor the encoder needs is missing.
    """
    s = {k.removeprefix("model."): v for k, v in state.items()}
    out = {"class_token": s["class_token"], "conv_proj.weight": s["patch_embedding.weight"],
           "conv_proj.bias": s["patch_embedding.bias"],
           "encoder.pos_embedding": s["positional_embedding.pos_embedding"],
           "encoder.ln.weight": s["norm.weight"], "encoder.ln.bias": s["norm.bias"]}
    i = 0
    while f"transformer.blocks.{i}.norm1.weight" in s:
        b, o = f"transformer.blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        for p in ("weight", "bias"):
            out[o + f"self_attention.in_proj_{p}"] = torch.cat([s[b + f"attn.proj_{c}.{p}"] for c in "qkv"])
            out[o + f"self_attention.out_proj.{p}"] = s[b + f"proj.{p}"]
            out[o + f"ln_1.{p}"], out[o + f"ln_2.{p}"] = s[b + f"norm1.{p}"], s[b + f"norm2.{p}"]
            out[o + f"mlp.0.{p}"], out[o + f"mlp.3.{p}"] = s[b + f"pwff.fc1.{p}"], s[b + f"pwff.fc2.{p}"]
        i += 1
    return out


def load_animesion_vit(name: str, path: str | os.PathLike) -> nn.Module:
    """:func:`animesion_vit` in eval mode with an Animesion checkpoint (a torch-saved state dict, read with
    ``weights_only=True``; ``state_dict`` / ``model_state_dict`` wrappers unwrapped).

    Raises:
        WeightsError: the file does not hold that encoder.
    """
    net = animesion_vit(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        net.load_state_dict(convert_animesion_state(state))
    except (KeyError, RuntimeError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not an Animesion {name} checkpoint ({e.__class__.__name__}: "
                           f"{str(e)[:200]})") from None
    return net.eval()


class _MMDetAnchors(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` with MMDetection's anchors: base anchors not rounded to whole pixels, and
    the levels' configured strides (torchvision divides the image size by the feature size: 800 // 13 = 61 for the
    stride-64 level of an 800-px image)."""

    STRIDES = (4, 8, 16, 32, 64)

    def forward(self, image_list, feature_maps):
        dev = feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=dev)] * 2 for s in self.STRIDES]
        self.set_cell_anchors(feature_maps[0].dtype, dev)
        anchors = torch.cat(self.grid_anchors([f.shape[-2:] for f in feature_maps], strides))
        return [anchors for _ in image_list.image_sizes]

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device=torch.device("cpu")):
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        h = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=dtype, device=device))
        ws, hs = ((1 / h)[:, None] * scales[None, :]).view(-1), (h[:, None] * scales[None, :]).view(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


class _AlignedRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (its level mapping is MMDetection's ``SingleRoIExtractor``'s: finest
    scale 56) with MMDetection's RoIAlign: ``aligned=True`` (half-pixel offset), ``sampling_ratio=0`` (adaptive)."""

    def forward(self, x, boxes, image_shapes):
        feats = [x[k] for k in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        levels = self.map_levels(boxes)
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], *self.output_size))
        for level, (f, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            out[idx] = roi_align(f, rois[idx], self.output_size, scale, 0, aligned=True).to(out.dtype)
        return out


def anime_faster_rcnn() -> nn.Module:
    """hysts' anime-face Faster R-CNN (module docstring) as a torchvision ``FasterRCNN`` in eval mode, random
    weights: uint8-range RGB in [0, 1] floats, resized so the short side is 800 (the long at most 1333), ImageNet
    normalisation; RPN 1000 proposals per level and per image, NMS 0.7; detections above 0.05, NMS 0.5, at most 100
    per image; classes background and face."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=0)
    return FasterRCNN(backbone, num_classes=2, min_size=800, max_size=1333,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      rpn_anchor_generator=_MMDetAnchors(tuple((s,) for s in (32, 64, 128, 256, 512)),
                                                         ((0.5, 1.0, 2.0),) * 5),
                      box_roi_pool=_AlignedRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=0),
                      rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_nms_thresh=0.7,
                      box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100).eval()


def convert_mmdet_state(state: dict) -> dict:
    """An MMDetection Faster R-CNN R50-FPN state dict (``state_dict`` of its checkpoint; one class) →
    :func:`anime_faster_rcnn`'s names: ``backbone.*`` → ``backbone.body.*``, the FPN's lateral and output convs,
    the RPN head, the shared FCs; the classifier's rows reordered (MMDetection: face, background; torchvision:
    background, face) and class-specific box deltas zero for the background.

    Raises:
        KeyError: a tensor the detector needs is missing.
    """
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.startswith("backbone."):
            out["backbone.body." + k[len("backbone."):]] = v
        elif k.startswith("neck.lateral_convs."):
            i, p = k.split(".")[2], k.split(".")[-1]
            out[f"backbone.fpn.inner_blocks.{i}.0.{p}"] = v
        elif k.startswith("neck.fpn_convs."):
            i, p = k.split(".")[2], k.split(".")[-1]
            out[f"backbone.fpn.layer_blocks.{i}.0.{p}"] = v
    p = "rpn_head."
    for ours, theirs in (("rpn.head.conv.0.0", "rpn_conv"), ("rpn.head.cls_logits", "rpn_cls"),
                         ("rpn.head.bbox_pred", "rpn_reg")):
        for t in ("weight", "bias"):
            out[f"{ours}.{t}"] = state[f"{p}{theirs}.{t}"]
    h = "roi_head.bbox_head."
    for t in ("weight", "bias"):
        out[f"roi_heads.box_head.fc6.{t}"] = state[f"{h}shared_fcs.0.{t}"]
        out[f"roi_heads.box_head.fc7.{t}"] = state[f"{h}shared_fcs.1.{t}"]
        out[f"roi_heads.box_predictor.cls_score.{t}"] = state[f"{h}fc_cls.{t}"][[1, 0]]
        reg = state[f"{h}fc_reg.{t}"]
        out[f"roi_heads.box_predictor.bbox_pred.{t}"] = torch.cat([torch.zeros_like(reg), reg])
    return out


def load_anime_faster_rcnn(path: str | os.PathLike) -> nn.Module:
    """:func:`anime_faster_rcnn` with hysts' checkpoint (an MMDetection ``.pth``: ``{"meta", "state_dict"}``, read
    with ``weights_only=True``).

    Raises:
        WeightsError: the file does not hold that detector.
    """
    net = anime_faster_rcnn()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(convert_mmdet_state(state.get("state_dict", state)))
    except (KeyError, RuntimeError, OSError, ValueError, AttributeError) as e:
        raise WeightsError(f"{path}: not the anime-face Faster R-CNN checkpoint ({e.__class__.__name__}: "
                           f"{str(e)[:200]})") from None
    return net.eval()


class AnimeRCNNDetector(nn.Module):
    """hysts' anime-face Faster R-CNN behind the detectors' API: uint8 (B, 3, H, W) RGB → :class:`Faces` (boxes
    xyxy px, scores in [0, 1], no keypoints: (N, 0, 2)). Weights online only (``anime-rcnn`` in
    :data:`gpuface.models.online.DETECTOR_MODELS`)."""

    def __init__(self, weights_file: str | os.PathLike | None = None):
        super().__init__()
        from gpuface.models.online import online_weights_file

        self.net = load_anime_faster_rcnn(online_weights_file("anime-rcnn", weights_file))

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor) -> Faces:
        out = self.net(list(frames.float() / 255))
        rows = torch.cat([torch.full((len(o["boxes"]),), i, dtype=torch.int64, device=frames.device)
                          for i, o in enumerate(out)])
        boxes = torch.cat([o["boxes"] for o in out])
        return Faces(row=rows, boxes=boxes, scores=torch.cat([o["scores"] for o in out]),
                     keypoints=boxes.new_zeros(len(boxes), 0, 2))


__all__ = ["AnimeFaceDetector", "AnimeRCNNDetector", "anime_faster_rcnn", "convert_mmdet_state",
           "load_anime_faster_rcnn", "animeface_detect", "ANIMESION_VIT", "animesion_vit", "convert_animesion_state",
           "load_animesion_vit"]
