"""Fused per-pixel kernels for the manipulations' hot spots, each with the pure-torch reference it must equal.

* :func:`masked_blend` — ``x + (y − x) · mask · weight``: how every manipulation puts its result into the
  frame (one pass instead of four element-wise kernels and their temporaries).
* :func:`masked_gaussian_blur` — a separable Gaussian blur (reflect-101 border, as ``kornia.filters
  .gaussian_blur2d(border_type="reflect")``) blended in through a mask; blocks of pixels outside the mask skip
  the vertical pass.

Backends: ``torch`` (the reference: torch/Kornia ops, any device) and ``triton`` (``kernels/_triton.py``; CUDA
tensors, or CPU tensors under ``TRITON_INTERPRET=1`` as in the tests). ``backend="auto"`` (the default) uses
Triton on CUDA when it is installed and faster: the first call for an (op, device, size class) times both on
the real arguments and remembers the winner. ``GPUFACE_KERNELS=torch|triton|auto`` overrides the default.
This directory is installed as the ``gpuface.kernels`` package. ``gpuface.kernels.cpu`` holds the C kernels for
the CPU (``crop_rois.c``: the FaceMesh crops), built on first use; ``GPUFACE_KERNELS=torch`` turns them off too.
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import Callable

import torch
from torch._subclasses.fake_tensor import is_fake

from gpuface.core.errors import InvalidOptionError

BACKENDS = ("auto", "torch", "triton")
BLOCK = 1024
_choice: dict[tuple, str] = {}


@functools.cache
def triton_available() -> bool:
    """Triton importable (the CUDA build of torch from PyPI installs it on Linux x86-64)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _can_triton(x: torch.Tensor) -> bool:
    return triton_available() and x.dtype == torch.float32 and (x.is_cuda or (_interpreting() and x.device.type == "cpu"))


def _timed(fn: Callable[[], torch.Tensor], reps: int = 3) -> float:
    fn()  # warm-up (compiles the Triton kernel on first use)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def _pick(name: str, backend: str, x: torch.Tensor, triton_fn, torch_fn) -> torch.Tensor:
    backend = os.environ.get("GPUFACE_KERNELS", backend) if backend == "auto" else backend
    if backend not in BACKENDS:
        raise InvalidOptionError(f"kernel backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "triton":
        if not _can_triton(x):
            raise InvalidOptionError("the triton backend needs Triton and float32 CUDA tensors (or TRITON_INTERPRET=1 "
                                     "with CPU tensors)")
        return triton_fn()
    if backend == "torch" or not x.is_cuda or not _can_triton(x) or is_fake(x):  # fake CUDA: shapes, no launch
        return torch_fn()
    key = (name, str(x.device), x.shape[1], int(math.log2(max(x.numel(), 1))))
    if key not in _choice:
        _choice[key] = "triton" if _timed(triton_fn) < _timed(torch_fn) else "torch"
    return triton_fn() if _choice[key] == "triton" else torch_fn()


def _strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())  # type: ignore[return-value]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 4 or not x.is_floating_point():
        raise InvalidOptionError(f"x must be float (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
    b, _, h, w = x.shape
    try:
        mask = mask.to(x.dtype).expand(b, 1, h, w)
    except RuntimeError as e:
        raise InvalidOptionError(f"mask {tuple(mask.shape)} does not broadcast to ({b}, 1, {h}, {w})") from e
    weight = (torch.ones(b, dtype=x.dtype, device=x.device) if weight is None
              else weight.to(device=x.device, dtype=x.dtype).reshape(-1).expand(b).contiguous())
    return mask, weight


# --- masked blend -----------------------------------------------------------------------------------------------
def masked_blend_reference(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                           weight: torch.Tensor | None = None) -> torch.Tensor:
    """``x + (y − x) · α`` with ``α = mask · weight[b]``, in plain torch (the reference)."""
    mask, weight = _check(x, mask, weight)
    return x + (y - x) * (mask * weight[:, None, None, None])


def masked_blend(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None,
                 backend: str = "auto") -> torch.Tensor:
    """Blend ``y`` into ``x`` through ``mask`` scaled per frame by ``weight``: ``x + (y − x) · mask · weight[b]``.

    Args:
        x: float32 (B, C, H, W), any strides (e.g. a window of larger frames).
        y: float32, broadcastable to ``x`` (e.g. a colour expanded to the frame).
        mask: float (B, 1, H, W) or anything broadcastable to it, values in [0, 1] (α per pixel).
        weight: float (B,) per-frame opacity in [0, 1] (timing weights), or None for 1.
        backend: ``auto`` | ``torch`` | ``triton`` (see the module docstring).

    Returns:
        float32 (B, C, H, W), contiguous; where α = 0 the values of ``x`` bit for bit.

    Raises:
        InvalidOptionError: shapes that do not broadcast, a non-float ``x``, an unknown backend, or
            ``backend="triton"`` where Triton cannot run.
    """
    def run_triton():
        from gpuface.kernels import _triton

        m, wt = _check(x, mask, weight)
        yy = y.to(x.dtype).expand_as(x)
        b, c, h, w = x.shape
        out = torch.empty(b, c, h, w, dtype=x.dtype, device=x.device)
        grid = (b * c, _cdiv(h * w, BLOCK))
        _triton.masked_blend_kernel[grid](x, yy, m, wt, out, c, h, w, *_strides4(x), *_strides4(yy),
                                          m.stride(0), m.stride(2), m.stride(3), BLOCK=BLOCK)
        return out

    return _pick("masked_blend", backend, x, run_triton, lambda: masked_blend_reference(x, y, mask, weight))


# --- masked separable Gaussian blur -----------------------------------------------------------------------------
def gaussian_taps(kernel_size: int, sigma: float, device=None) -> torch.Tensor:
    """float32 (K,) normalised Gaussian taps, as ``kornia.filters.get_gaussian_kernel1d``."""
    import kornia

    from gpuface.core.syncs import host_side, upload

    with host_side():       # built on the host (Kornia's checks read host tensors: no device sync)
        taps = kornia.filters.get_gaussian_kernel1d(kernel_size, sigma, device=torch.device("cpu"))

    return taps.reshape(-1).float() if device is None else upload(taps.reshape(-1).float(), device)


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: float, border_type: str = "reflect") -> torch.Tensor:
    """``kornia.filters.gaussian_blur2d`` with the same taps (σ px, odd ``kernel_size``), built on the host:
    Kornia's own checks ``bool(sigma > 0)`` on the data's device, a host sync per call on a GPU. x: float
    (B, C, H, W); ``border_type`` as Kornia's (reflect, replicate, constant, circular)."""
    import kornia

    taps = gaussian_taps(kernel_size, sigma, x.device)[None]
    return kornia.filters.filter2d_separable(x, taps, taps, border_type=border_type)


def masked_gaussian_blur_reference(x: torch.Tensor, mask: torch.Tensor, kernel_size: int, sigma: float,
                                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """``kornia.filters.gaussian_blur2d(x, k, σ, border_type="reflect")`` blended in through ``mask · weight``."""
    return masked_blend_reference(x, gaussian_blur(x, kernel_size, sigma), mask, weight)


def masked_gaussian_blur(x: torch.Tensor, mask: torch.Tensor, kernel_size: int, sigma: float,
                         weight: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Gaussian blur of ``x`` where ``mask · weight`` > 0, blended by it (``x`` untouched where it is 0).

    Separable: a horizontal then a vertical pass of ``kernel_size`` taps (σ = ``sigma`` px), reflect-101
    borders — the same filter as ``kornia.filters.gaussian_blur2d(..., border_type="reflect")``.

    Args:
        x: float32 (B, C, H, W), any strides. mask: float (B, 1, H, W) (or broadcastable) in [0, 1].
        kernel_size: odd K ≥ 1 with K // 2 < min(H, W). sigma: > 0 px.
        weight: float (B,) opacity per frame, or None for 1. backend: ``auto`` | ``torch`` | ``triton``.

    Returns:
        float32 (B, C, H, W), contiguous.

    Raises:
        InvalidOptionError: even or too large kernel, sigma ≤ 0, bad shapes or backend.
    """
    h, w = x.shape[-2:]
    if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size // 2 >= min(h, w) or sigma <= 0:
        raise InvalidOptionError(f"kernel_size must be odd with kernel_size // 2 < min(H, W) = {min(h, w)}, sigma > 0")

    def run_triton():
        from gpuface.kernels import _triton

        m, wt = _check(x, mask, weight)
        b, c = x.shape[:2]
        taps = gaussian_taps(kernel_size, sigma, x.device)
        grid = (b * c, _cdiv(h * w, BLOCK))
        rows = torch.empty(b, c, h, w, dtype=x.dtype, device=x.device)
        _triton.blur_rows_kernel[grid](x, taps, rows, c, h, w, kernel_size, *_strides4(x), BLOCK=BLOCK)
        out = torch.empty_like(rows)
        _triton.blur_cols_blend_kernel[grid](x, rows, taps, m, wt, out, c, h, w, kernel_size, *_strides4(x),
                                             m.stride(0), m.stride(2), m.stride(3), BLOCK=BLOCK)
        return out

    return _pick("masked_gaussian_blur", backend, x, run_triton,
                 lambda: masked_gaussian_blur_reference(x, mask, kernel_size, sigma, weight))


__all__ = ["BACKENDS", "masked_blend", "masked_blend_reference", "masked_gaussian_blur",
           "masked_gaussian_blur_reference", "gaussian_blur", "gaussian_taps", "triton_available"]
