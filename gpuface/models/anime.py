"""Anime faces: a detector and identity embedders for drawn characters (video-to-faces' ``--style anime``).

- ``animeface`` (offline, CPU): nagadomi's AnimeFace 2009 (nvxs 1.0.2; NYSL licence) as compiled, model inside,
  in PyPI's ``animeface==2.0.3`` (S. Takahashi's wrapper, Apache-2.0). Its extension reads a Pillow-4.2 image
  struct directly (``_nvxs.c``: ``mode``, ``xsize``, ``ysize``, ``image32`` row pointers), a layout Pillow ≥ 11
  no longer has — with today's Pillow ``animeface.detect`` silently finds nothing. :class:`AnimeFaceDetector`
  hands the extension that struct built with ``ctypes`` over the frame's own pixels (no Pillow at all); a test
  holds it against ``animeface.detect`` run with Pillow 10.4 in a subprocess. Boxes, a likelihood in [0, 1] and
  five points: both eye centres (as seen in the image: left first), nose, mouth centre, chin. One frame at a time
  on the CPU (about 50 ms at 720p here).
- ``animesion-vit-b16`` / ``animesion-vit-l16`` (online only): the Animesion ViT-B/16 and ViT-L/16 character
  encoders (E. A. Rios, W.-H. Cheng, B.-C. Lai (2021), "DAF:re: A Challenging, Crowd-Sourced, Large-Scale,
  Long-Tailed Dataset For Anime Character Recognition", arXiv:2101.08674; github.com/arkel23/animesion), which
  video-to-faces uses as its anime embedders: 128² RGB in [−1, 1], the class token after the final LayerNorm
  (768 / 1024-d). The checkpoint's layout is lukemelas' ``pytorch_pretrained_vit`` (``model.transformer.blocks.i.
  attn.proj_q`` …); :func:`convert_animesion_state` maps it onto torchvision's ``VisionTransformer``, held in a
  test against ``pytorch_pretrained_vit`` itself on random weights. The weights are the Google-Drive files
  video-to-faces downloads (no PyPI package carries them).

Not here: video-to-faces' default anime detector, hysts' MMDetection Faster R-CNN (``mmdet_anime-face_faster-rcnn.
pth``, GitHub release): its reference implementation needs MMCV's compiled operators, which no wheel for this
Python carries, so a port could not be held against it.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import torch
from torch import nn

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


__all__ = ["AnimeFaceDetector", "animeface_detect", "ANIMESION_VIT", "animesion_vit", "convert_animesion_state",
           "load_animesion_vit"]
