"""Moviefy: a folder of stills → one video, each image held for ``repeat`` seconds with blended transitions
(PyFAME ``moviefy_images``), image sizes equalised by centre crop (to the smallest) or pad (to the largest).

Streaming: at most two images are in memory; frames are written as they are made (x264, exact fps).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import torch

from gpuface.core.errors import InvalidOptionError
from gpuface.io.encode import VideoWriter, free_path
from gpuface.io.images import IMAGE_EXTENSIONS, read_image


def _fit(img: torch.Tensor, h: int, w: int, pad_colour) -> torch.Tensor:
    """Centre-crop or centre-pad a uint8 (3, H, W) image to (3, h, w)."""
    _, ih, iw = img.shape
    out = torch.tensor(pad_colour, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).clone()
    sy, sx = max((ih - h) // 2, 0), max((iw - w) // 2, 0)      # crop offsets in the image
    dy, dx = max((h - ih) // 2, 0), max((w - iw) // 2, 0)      # pad offsets in the output
    ch, cw = min(h, ih), min(w, iw)
    out[:, dy:dy + ch, dx:dx + cw] = img[:, sy:sy + ch, sx:sx + cw]
    return out


def moviefy(images: list[str | os.PathLike], output: str | os.PathLike, fps: float = 30.0, repeat: float = 1.0,
            blend: float = 0.2, size: str = "crop", pad_colour=(255, 255, 255), crf: int = 18,
            preset: str = "medium", overwrite: bool = False) -> Path:
    """Write a video showing each image for ``repeat`` seconds; the last ``blend`` fraction of each image's time
    cross-fades linearly into the next image.

    Args:
        images: image files in display order (≥ 1). fps: frames per second (0 < fps ≤ 120).
        repeat: seconds per image (≥ 0.1). blend: fraction of each image's time spent blending (0 ≤ blend < 1).
        size: ``crop`` (every image centre-cropped to the smallest width and height) or ``pad`` (centre-padded
            with ``pad_colour`` to the largest).
        overwrite: replace an existing ``output``; otherwise the video gets a numbered name (``clip_1.mp4``).

    Returns:
        The written path.

    Raises:
        InvalidOptionError: bad options or no images. ImageDecodeError: an unreadable image (nothing written).
    """
    if not images:
        raise InvalidOptionError("moviefy: no images")
    if not 0 < fps <= 120 or repeat < 0.1 or not 0 <= blend < 1 or size not in ("crop", "pad"):
        raise InvalidOptionError("moviefy: 0 < fps <= 120, repeat >= 0.1 s, 0 <= blend < 1, size crop|pad")
    from PIL import Image

    dims = []
    for p in images:
        try:
            with Image.open(p) as im:
                dims.append(im.size)
        except OSError as e:
            from gpuface.core.errors import ImageDecodeError
            raise ImageDecodeError(f"{p}: not a readable image ({e})") from e
    pick = min if size == "crop" else max
    w, h = pick(d[0] for d in dims), pick(d[1] for d in dims)
    per_image = max(int(round(repeat * fps)), 1)
    fade = int(round(blend * per_image))
    rate = Fraction(fps).limit_denominator(1001)
    output = free_path(output, overwrite)
    with VideoWriter(output, rate, w, h, crf=crf, preset=preset, overwrite=overwrite) as writer:
        current = _fit(read_image(images[0]), h, w, pad_colour)
        for i in range(len(images)):
            nxt = _fit(read_image(images[i + 1]), h, w, pad_colour) if i + 1 < len(images) else None
            hold = per_image - (fade if nxt is not None else 0)
            writer.write(current[None].expand(hold, -1, -1, -1))
            if nxt is not None and fade:
                a = (torch.arange(1, fade + 1, dtype=torch.float32) / (fade + 1)).view(-1, 1, 1, 1)
                mix = current[None].float() * (1 - a) + nxt[None].float() * a
                writer.write(mix.round().to(torch.uint8))
            current = nxt
    return output


def images_in(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder, sorted by name."""
    return sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


__all__ = ["moviefy", "images_in"]
