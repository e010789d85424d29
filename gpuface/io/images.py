"""Still images as frame sources: one image is a one-frame source (fps 0, frame 0, pts 0)."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import torch

from gpuface.core.errors import ImageDecodeError, InputNotFoundError
from gpuface.core.types import FrameBatch, VideoInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a still-image extension (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _read(path: str | os.PathLike, mode: str) -> torch.Tensor:
    """Decode an image with PIL, converted to ``mode`` ('RGB' or 'RGBA'), as uint8 (C, H, W)."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageDecodeError(f"{path}: not a readable image ({e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read a still image as uint8 (3, H, W) RGB (alpha dropped, greyscale and palette images expanded).

    Raises:
        InputNotFoundError: the path does not exist.
        ImageDecodeError: empty, truncated or not an image.
    """
    return _read(path, "RGB")


def read_rgba(path: str | os.PathLike) -> torch.Tensor:
    """Read an image with its alpha channel as float32 (4, H, W) in [0, 1] (opaque where it has no alpha).

    Raises:
        InputNotFoundError, ImageDecodeError: as :func:`read_image`.
    """
    return _read(path, "RGBA").float() / 255.0


class ImageReader:
    """A still image as a one-frame source with the same interface as :class:`~gpuface.io.decode.VideoReader`."""

    backend = "pil"

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu"):
        self.path = os.fspath(path)
        self._image = read_image(self.path)
        _, h, w = self._image.shape
        self.info = VideoInfo(self.path, w, h, Fraction(0), 1, 0.0, False, "image")

    def batches(self, batch_size: int = 1, selection=None, device: torch.device | str = "cpu", prefetch_batches: int = 2):
        """Yield one :class:`FrameBatch` holding the image (B = 1), cropped to ``selection.area`` if given."""
        frames = self._image[None]
        if selection is not None:
            selection.validate(self.info)
            frames = selection.crop(frames)
        yield FrameBatch(frames.to(device), torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.float64),
                         self.path, Fraction(0))
