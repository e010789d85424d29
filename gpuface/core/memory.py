"""Host memory policy: reuse freed memory instead of faulting fresh pages in for every batch.

glibc's ``malloc`` serves a block of 32 MiB or more (less, before its threshold has adapted) with its own
``mmap`` and ``munmap``\\ s it on ``free``, and gives the top of its heap back (``brk``) once more than the trim
threshold is free there. A batch engine allocates frame-sized tensors again and again — a batch of 32 720p frames
is 88 MB as uint8, a float copy four times that, a FaceMesh activation of 12 crops 12.6 MB — so every batch paid
the kernel again to fault in fresh zeroed pages, about 5 µs per 4 KiB page: a 78 MB crop window cost 104 ms to
zero-fill where the writing itself takes ~8 ms, and the 1×1 convolutions, PReLUs and residual adds on FaceMesh's
first 128×128 block ran 20× slower than on warm pages (``torch.profiler`` of the landmarker, 2-core x86 VM).

:func:`retain_freed_memory` sets, with ``mallopt(3)``, ``M_MMAP_THRESHOLD`` to its largest value, 32 MiB (no adaptive
threshold), and ``M_TRIM_THRESHOLD`` to 2 GiB (the heap's free top is kept for the next batch); blocks of 32 MiB
or more keep their own mappings, and ``THP_MEM_ALLOC_ENABLE=1`` (a PyTorch setting, read at torch's first
allocation) makes torch align those to 2 MiB and ask for transparent huge pages (``madvise``), so that they fault
in 2 MiB at a time instead of 4 KiB. ``M_MMAP_MAX = 0`` (no mappings at all) was faster still but let the heap
grow without bound when small tensors outlive the frames around them (``posix_memalign`` cannot reuse a hole of
exactly a frame's size): 9.5 GB more peak memory for 1,000 decoded frames than for 100. Measured side by side on
a 2-core x86 VM: minor page faults of ``gpuface anonymize`` on 900 frames of 720p 2.98 M → 0.27 M, 49.9 → 52.9
frames/s; landmarks at batch 32 147.6 → 176.8 frames/s; peak memory flat in video length, +9 %. Outputs are
unchanged (only where memory comes from).

``import gpuface`` calls it, unless ``GPUFACE_RETAIN_MEMORY=0``; ``THP_MEM_ALLOC_ENABLE`` (a default, as the
OpenMP spin settings) takes effect when gpuface is imported before torch allocates, as the ``gpuface`` command
does. Other C libraries (macOS, musl) have no such knobs: there it does nothing.
"""
from __future__ import annotations

import ctypes
import os

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1))


def retain_freed_memory() -> bool:
    """Tune glibc ``malloc`` and PyTorch's host allocator to reuse freed memory (see the module docstring).

    Returns True when every ``mallopt`` setting was accepted (Linux with glibc), False where there is no
    ``mallopt`` (other C libraries, Windows) or ``GPUFACE_RETAIN_MEMORY=0`` is set. Raises nothing.
    """
    if os.environ.get("GPUFACE_RETAIN_MEMORY", "1") == "0":
        return False
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        mallopt = ctypes.CDLL(None).mallopt   # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)


__all__ = ["retain_freed_memory"]
