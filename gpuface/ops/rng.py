"""Counter-based random numbers: the same values on every device and for every batch size.

A value is a pure function of (seed, video key, layer index, frame number, element index), hashed with
Chris Wellons' ``lowbias32`` integer mixer (https://nullprogram.com/blog/2018/07/31/) in int64 torch arithmetic.
Nothing depends on the order frames are processed in, so a manipulation is reproducible whatever the batch
size, device or resumption point.
"""
from __future__ import annotations

import hashlib

import torch

_M32 = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def stream_key(*parts) -> int:
    """A 32-bit key from any values (seed, video path, layer index …), stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def uniform(key: int, frames: torch.Tensor, index: tuple[int, ...] | torch.Tensor) -> torch.Tensor:
    """float32 uniform values in [0, 1) for frame numbers ``frames`` (B,) (int64, on the target device).

    Args:
        index: a shape (elements numbered 0…n−1 in row-major order) or an int64 tensor of element numbers
            (e.g. absolute pixel indices, so that a crop draws the values the whole frame would).

    Returns:
        (B, *shape) or (B, *index.shape).
    """
    if not torch.is_tensor(index):
        n = 1
        for s in index:
            n *= s
        index = torch.arange(n, device=frames.device, dtype=torch.int64).view(*index)
    idx = index.to(frames.device, torch.int64)
    f = frames.to(torch.int64).view(-1, *([1] * idx.dim()))
    x = _mix(_mix(f ^ key) + idx[None] * 0x9E3779B9)
    x = _mix(x ^ (key * 0x85EBCA6B))
    return (x >> 8).float().mul_(1.0 / (1 << 24))


def normal(key: int, frames: torch.Tensor, index: tuple[int, ...] | torch.Tensor) -> torch.Tensor:
    """Standard normal values, shaped as :func:`uniform` (Box–Muller on two uniform streams), float32. The
    logarithm and cosine are taken in float64: float32 ``log``/``cos`` differ in the last bit between ATen's
    vectorised and scalar loops, so a value would depend on how many were drawn with it (the window's size)."""
    u1 = uniform(key, frames, index).clamp_(min=1e-7).double()
    u2 = uniform(key ^ 0x5BD1E995, frames, index).double()
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)).float()


__all__ = ["stream_key", "uniform", "normal"]
