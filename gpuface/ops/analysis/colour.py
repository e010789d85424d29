"""Per-frame mean colour of face regions (PyFAME ``analyse_facial_colour_means``, any region, any batch).

PyFAME reports the mean over the full face (tight oval minus eyes and lips), both cheeks, nose and chin, in
BGR, HSV or grey, per frame, and its v0.7 code forgot to subtract the right eye. Here any region or region
expression is measured for every face of every frame of a batch in one masked reduction, in RGB (0–255),
HSV (H in degrees, S and V in 0–1), CIELAB (L 0–100, a*, b*) or grey (ITU-R BT.601 luma, 0–255), via
``kornia.color``.
"""
from __future__ import annotations

import kornia
import pandas as pd
import torch

from gpuface.core.errors import InvalidOptionError
from gpuface.ops.regions import region_masks
from gpuface.core.types import Faces, FrameBatch

COLOUR_SPACES = {"rgb": ("R", "G", "B"), "hsv": ("H", "S", "V"), "lab": ("L", "a", "b"), "grey": ("Y",)}
DEFAULT_REGIONS = ("face_skin", "cheeks", "nose", "chin")


def _convert(x: torch.Tensor, space: str) -> torch.Tensor:
    if space == "rgb":
        return x * 255
    if space == "hsv":
        hsv = kornia.color.rgb_to_hsv(x)
        return torch.cat([hsv[:, :1] * (180 / torch.pi), hsv[:, 1:]], dim=1)
    if space == "lab":
        return kornia.color.rgb_to_lab(x)
    return kornia.color.rgb_to_grayscale(x) * 255


def region_colour_means(batch: FrameBatch, faces: Faces, regions=DEFAULT_REGIONS, space: str = "rgb",
                        video: str = "") -> pd.DataFrame:
    """One row per face and frame: ``video, frame, time_s, face, <region>_<channel>…`` (NaN for a region with
    no pixels in the frame).

    Args:
        batch: the frames (uint8 (B, 3, H, W)) with their frame numbers and times.
        faces: the batch's faces with ``landmarks``.
        regions: region names or expressions (:func:`gpuface.ops.regions.get_region`).
        space: one of :data:`COLOUR_SPACES`.

    Raises:
        InvalidOptionError: unknown colour space or region.
    """
    if space not in COLOUR_SPACES:
        raise InvalidOptionError(f"colour space {space!r}: choose one of {', '.join(COLOUR_SPACES)}")
    from gpuface.core.types import rank_in_frame

    b, _, h, w = batch.frames.shape
    n = len(faces)
    values = _convert(batch.frames.float() / 255, space)                       # (B, C, H, W)
    cols = {"video": [video] * n, "frame": batch.index[faces.row.cpu()].numpy(),
            "time_s": batch.pts[faces.row.cpu()].numpy(), "face": rank_in_frame(faces.row.cpu()).numpy()}
    one = torch.arange(n, device=faces.row.device)
    for region in regions:
        # one mask per face (each face is its own "frame" of the rasteriser), then a masked mean per face
        masks = region_masks(faces.landmarks, one, region, n, (h, w))          # (N, 1, H, W)
        area = masks.sum(dim=(1, 2, 3))
        sums = (values[faces.row] * masks).sum(dim=(2, 3))                  # (N, C)
        means = (sums / area[:, None]).where(area[:, None] > 0, torch.nan)
        for c, name in enumerate(COLOUR_SPACES[space]):
            cols[f"{region}_{name}"] = means[:, c].cpu().numpy()
    return pd.DataFrame(cols)


__all__ = ["region_colour_means", "COLOUR_SPACES", "DEFAULT_REGIONS"]
