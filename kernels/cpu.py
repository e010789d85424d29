"""CPU kernels in C (``kernels/*.c``), built once per machine with the system's C compiler and called with ctypes.

:func:`crop_rois_u8` — the FaceMesh, embedding and thumbnail crops of :func:`gpuface.ops.geometry.crop_rois`
sampled straight from uint8 frames. The torch path converts a float32 window of the frame around each ROI and
samples it with ``grid_sample``: for a 720p face that is a 640² window, 4.9 MB written and read again per crop
while the crop itself is 256² (the conversion ran at ~1.9 ms a crop inside the landmarker, cache-cold, beside
~1.2 ms of sampling). The kernel reads the four taps of each output pixel from the frame's bytes and does
grid_sample's float32 arithmetic on them (``kernels/crop_rois.c`` gives the formula); it agrees with the torch
path within a few float32 ulps of 255 (ATen's build may fuse multiply-adds there; the kernel never does) and, as
the torch path, gives each crop's values from that ROI alone (any batch, any number of ROIs or threads).

The library is compiled with ``$CC`` (default ``cc``; ``-O3 -ffp-contract=off``, no machine-specific flags, so
one build serves every x86-64 or arm64 node of a cluster sharing the cache) into the compiled-networks cache
(``<weights>/compiled/``, :func:`gpuface.models.aot.cache_dir`) under a hash of the source, the machine and the
compiler; about a second, on the first call. Without a compiler or a writable cache it warns once and the torch
path runs. ``GPUFACE_KERNELS=torch`` always takes the torch path. Work is split across torch's intra-op thread
count with Python threads (a ctypes call releases the GIL).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger("gpuface")

_SOURCE = Path(__file__).with_name("crop_rois.c")
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _build(source: Path, folder: Path) -> Path:
    """Compile ``source`` into a shared library in ``folder`` (kept when built already); returns its path."""
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(source.read_bytes() + f"|{platform.machine()}|{cc}".encode()).hexdigest()[:16]
    path = folder / f"{source.stem}-{key}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)      # a reader never sees half a library
    os.close(fd)
    try:
        subprocess.run([cc, "-O3", "-fPIC", "-shared", "-ffp-contract=off", "-o", tmp, str(source)], check=True,
                       capture_output=True, timeout=300)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@functools.cache
def _library() -> ctypes.CDLL | None:
    from gpuface.models.aot import cache_dir

    try:
        lib = ctypes.CDLL(str(_build(_SOURCE, cache_dir())))
    except (OSError, subprocess.SubprocessError) as e:   # no compiler, read-only cache: the torch path
        detail = getattr(e, "stderr", None) or str(e)
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        log.warning("gpuface: cannot build the C crop kernel (%s); crops are sampled with torch's grid_sample",
                    (detail.strip().splitlines() or [type(e).__name__])[0])
        return None
    lib.gpuface_crop_items.restype, lib.gpuface_crop_items.argtypes = _I64, [_I64, _I64]
    lib.gpuface_crop_rois_u8.restype = None
    lib.gpuface_crop_rois_u8.argtypes = [_PTR] + [_I64] * 6 + [_PTR, _PTR, _I64, _PTR, _I64, _I64]
    return lib


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """The helper threads (per process: a forked child has none of its parent's threads)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="gpuface-crop")


def available() -> bool:
    """Whether :func:`crop_rois_u8` runs the C kernel here (built or buildable, ``GPUFACE_KERNELS`` not torch)."""
    return os.environ.get("GPUFACE_KERNELS", "auto") != "torch" and _library() is not None


def crop_rois_u8(frames: torch.Tensor, grid: torch.Tensor, plan: torch.Tensor) -> torch.Tensor | None:
    """Bilinear crops from uint8 frames through windows that are never materialised (see the module docstring).

    Args:
        frames: uint8 (B, 3, H, W) on the CPU, any strides.
        grid: float32 (N, S, S, 2) sampling positions normalised to each ROI's window (``grid_sample``'s
            convention, ``align_corners=False``).
        plan: int64 (N, 4): the ROI's frame row in the batch, its window's corner x, y (px; may lie outside the
            frame) and side (px).

    Returns:
        float32 (N, 3, S, S) crops in [0, 1], channels-last in memory, 0 where a tap falls outside the window or
        the frame; None when the kernel is unavailable (:func:`available`), for the caller's torch path.
    """
    if not available() or not all(t.device.type == "cpu" for t in (frames, grid, plan)):
        return None
    lib = _library()
    n, size = grid.shape[0], grid.shape[1]
    grid, plan = grid.float().contiguous(), plan.long().contiguous()
    out = torch.empty((n, size, size, 3), dtype=torch.float32, device=frames.device)   # never the default device
    args = (frames.data_ptr(), *frames.stride(), *frames.shape[-2:], grid.data_ptr(), plan.data_ptr(), size,
            out.data_ptr())
    items = lib.gpuface_crop_items(n, size)
    workers = max(1, min(torch.get_num_threads(), items))
    bounds = [items * k // workers for k in range(workers + 1)]
    others = [_pool(workers - 1, os.getpid()).submit(lib.gpuface_crop_rois_u8, *args, bounds[k], bounds[k + 1])
              for k in range(1, workers)] if workers > 1 else []
    lib.gpuface_crop_rois_u8(*args, bounds[0], bounds[1])
    for f in others:
        f.result()
    return out.permute(0, 3, 1, 2)


__all__ = ["available", "crop_rois_u8"]
