"""CPU kernels in C (``kernels/*.c``), built once per machine with the system's C compiler into one library and
called with ctypes.

:func:`crop_rois_u8` — the FaceMesh, embedding and thumbnail crops of :func:`gpuface.ops.geometry.crop_rois`
sampled straight from uint8 frames. The torch path converts a float32 window of the frame around each ROI and
samples it with ``grid_sample``: for a 720p face that is a 640² window, 4.9 MB written and read again per crop
while the crop itself is 256² (the conversion ran at ~1.9 ms a crop inside the landmarker, cache-cold, beside
~1.2 ms of sampling). The kernel reads the four taps of each output pixel from the frame's bytes and does
grid_sample's float32 arithmetic on them (``kernels/crop_rois.c`` gives the formula); it agrees with the torch
path within a few float32 ulps of 255 (ATen's build may fuse multiply-adds there; the kernel never does) and, as
the torch path, gives each crop's values from that ROI alone (any batch, any number of ROIs or threads).

:func:`copy_spans_u8` — the blur and mosaic of :func:`gpuface.ops.anonymize.anonymize` written into the frames span
by span (``kernels/copy_spans.c``): only the masked pixels are touched, where the torch path selects over the faces'
whole bounding box through a rasterised coverage mask (two uint8 multiplies and an add a byte). Copies only: the
same bytes as the torch path.

The library (both sources) is compiled with ``$CC`` (default ``cc``; ``-O3 -ffp-contract=off``, no machine-specific
flags, so one build serves every x86-64 or arm64 node of a cluster sharing the cache) into the compiled-networks
cache (``<weights>/compiled/``, :func:`gpuface.models.aot.cache_dir`) under a hash of the sources, the machine and the
compiler; about two seconds, on the first call. Without a compiler or a writable cache it warns once and the torch
paths run. ``GPUFACE_KERNELS=torch`` always takes the torch paths. The crops are split across torch's intra-op
thread count with Python threads (a ctypes call releases the GIL).
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

_SOURCES = tuple(Path(__file__).with_name(f"{name}.c") for name in ("crop_rois", "copy_spans"))
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _build(sources: tuple[Path, ...], folder: Path) -> Path:
    """Compile ``sources`` into one shared library in ``folder`` (kept when built already); returns its path."""
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(b"".join(s.read_bytes() for s in sources) + f"|{platform.machine()}|{cc}".encode())
    path = folder / f"gpuface-kernels-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)      # a reader never sees half a library
    os.close(fd)
    try:
        subprocess.run([cc, "-O3", "-fPIC", "-shared", "-ffp-contract=off", "-o", tmp, *map(str, sources)], check=True,
                       capture_output=True, timeout=300)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@functools.cache
def _library() -> ctypes.CDLL | None:
    from gpuface.models.aot import cache_dir

    try:
        lib = ctypes.CDLL(str(_build(_SOURCES, cache_dir())))
    except (OSError, subprocess.SubprocessError) as e:   # no compiler, read-only cache: the torch path
        detail = getattr(e, "stderr", None) or str(e)
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        log.warning("gpuface: cannot build the C kernels (%s); crops and anonymisation masks run in torch",
                    (detail.strip().splitlines() or [type(e).__name__])[0])
        return None
    lib.gpuface_crop_items.restype, lib.gpuface_crop_items.argtypes = _I64, [_I64, _I64]
    lib.gpuface_crop_rois_u8.restype = None
    lib.gpuface_crop_rois_u8.argtypes = [_PTR] + [_I64] * 6 + [_PTR, _PTR, _I64, _PTR, _I64, _I64]
    lib.gpuface_copy_spans_u8.restype = None
    lib.gpuface_copy_spans_u8.argtypes = [_PTR] + [_I64] * 4 + [_PTR] + [_I64] * 5 + [_PTR, _I64]
    return lib


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """The helper threads (per process: a forked child has none of its parent's threads)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="gpuface-crop")


def available() -> bool:
    """Whether the C kernels run here (built or buildable, ``GPUFACE_KERNELS`` not torch)."""
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


def copy_spans_u8(dst: torch.Tensor, src: torch.Tensor, spans: torch.Tensor) -> None:
    """Copy ``src``'s pixels on each span into ``dst``, in place (see the module docstring); only where
    :func:`available`.

    Args:
        dst, src: uint8 (B, C, H, W) on the CPU, the same shape, any strides (channels-last rows are copied whole).
        spans: int64 (N, 4): frame, row y, columns [x0, x1) with 0 <= x0 < x1 <= W, 0 <= y < H, frame < B.

    Raises:
        ValueError: inputs that are not uint8 CPU tensors of one shape, or a span outside them (nothing written).
    """
    if dst.shape != src.shape or any(t.device.type != "cpu" or t.dtype != torch.uint8 for t in (dst, src)):
        raise ValueError(f"copy_spans_u8 needs two uint8 CPU tensors of one shape, got {tuple(dst.shape)} "
                         f"{dst.dtype} {dst.device} and {tuple(src.shape)} {src.dtype} {src.device}")
    spans = spans.long().contiguous()
    b, _, h, w = dst.shape
    f, y, x0, x1 = spans.unbind(1)
    if len(spans) and not bool(((f >= 0) & (f < b) & (y >= 0) & (y < h) & (x0 >= 0) & (x0 < x1) & (x1 <= w)).all()):
        raise ValueError("copy_spans_u8: a span lies outside the images or is empty")
    _library().gpuface_copy_spans_u8(dst.data_ptr(), *dst.stride(), src.data_ptr(), *src.stride(), dst.shape[1],
                                     spans.data_ptr(), len(spans))


__all__ = ["available", "copy_spans_u8", "crop_rois_u8"]
