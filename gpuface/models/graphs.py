"""Launch overhead: networks run on batches padded to a few bucket sizes, each bucket a captured CUDA graph.

A FaceMesh forward is 228 operators (106 convolutions, 69 PReLUs, …): on a GPU each is a kernel launch of a few
µs, so at the batch sizes a tracker produces (a few crops per key frame) the GPU waits on Python and the driver,
not on arithmetic. A CUDA graph (``torch.cuda.CUDAGraph``, see the PyTorch "CUDA Graphs" notes) records the
launches once for fixed shapes and replays them with one launch. Shapes are made fixed by padding each batch up to
the next bucket (:data:`BUCKETS`; larger batches run in chunks of the largest): rows of a network's batch are
independent, so the padding rows change nothing and are cut off.

Modes of :class:`Bucketed`:

* ``eager``: the module, unchanged (the default off CUDA: the CPU has no launch overhead to save);
* ``graphs``: CUDA graphs (the default on CUDA; ``GPUFACE_CUDA_GRAPHS=0`` turns them off). A capture that fails
  (an op that cannot be captured) logs one warning and falls back to eager for that module;
* ``pad``: padding to the buckets, run eagerly (``torch.compile(dynamic=False)`` then compiles one graph per
  bucket, not one per batch size);
* ``emulate``: the graph's static buffers on any device, replayed by re-running the module into them: the tests'
  check, on a CPU, that outputs are copied out before the next replay overwrites them.

``cpu_chunk=C``: off CUDA, ``auto`` runs every call in chunks of exactly C rows (the last one zero-padded) instead
of eagerly. That is how a network keeps a row's output independent of the batch size: CPU kernels (oneDNN
convolutions, GEMMs) choose their algorithm by the number of rows — FaceMesh computes a row one way in a call of 1
crop, another in 2–31 and a third in 32 or more, each differing in the last bits — so a row gets the same
arithmetic whatever came with it only when the call's shape is fixed. It can also be faster: CenterFace at 720p
runs 1.7× faster per frame one frame at a time than eight at a time on a 2-core x86 VM (its feature maps then
stay in cache).
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch

log = logging.getLogger("gpuface")

#: Bucket batch sizes: powers of two, so that padding at most doubles a batch's arithmetic.
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MODES = ("auto", "eager", "graphs", "pad", "emulate")


class _Replay:
    """One bucket: a static input, the static outputs and how to refill them from the input."""

    def __init__(self, fn: Callable, static_in: torch.Tensor, graphs: bool, pool=None):
        self.fn, self.static_in, self.graph = fn, static_in, None
        if graphs:
            side = torch.cuda.Stream(static_in.device)
            side.wait_stream(torch.cuda.current_stream(static_in.device))
            with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN autotuning, lazy inits)
                for _ in range(2):
                    fn(static_in)
            torch.cuda.current_stream(static_in.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.static_out = _as_tuple(fn(static_in))
        else:
            self.static_out = _as_tuple(fn(static_in))

    def replay(self) -> tuple[torch.Tensor, ...]:
        if self.graph is not None:
            self.graph.replay()
        else:  # emulate: the same buffers overwritten, as a replay does
            for buf, new in zip(self.static_out, _as_tuple(self.fn(self.static_in))):
                buf.copy_(new)
        return self.static_out


def _zeros_like_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Zeros of ``rows`` rows shaped like ``x``'s, in its memory format (channels-last stays channels-last)."""
    z = x.new_zeros((rows, *x.shape[1:]))
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        z = z.contiguous(memory_format=torch.channels_last)
    return z


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


class Bucketed:
    """Run ``fn`` (a module or a compiled module) on batches padded up to :data:`BUCKETS`, as CUDA graphs on CUDA.

    Args:
        fn: a callable taking one tensor (N, …) whose rows are independent and returning a tensor or a tuple of
            tensors with N rows each (every gpuface network: FaceMesh, blendshapes, BlazeFace, MTCNN's nets).
        mode: see the module docstring; ``auto`` is ``graphs`` for CUDA inputs (unless ``GPUFACE_CUDA_GRAPHS=0``),
            otherwise ``eager``, or chunks of ``cpu_chunk`` rows when given.
        buckets: batch sizes to pad to, increasing.
        cpu_chunk: rows per call off CUDA in ``auto`` mode (see the module docstring); None: eager.

    ``__call__(x)`` returns a tuple of tensors with ``len(x)`` rows, the module's outputs for ``x`` (fresh tensors,
    never the graph's buffers). Raises :class:`ValueError` for an unknown mode.
    """

    def __init__(self, fn: Callable, mode: str = "auto", buckets: tuple[int, ...] = BUCKETS,
                 cpu_chunk: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.fn, self.mode, self.buckets, self.cpu_chunk = fn, mode, tuple(buckets), cpu_chunk
        self._replays: dict[tuple, _Replay] = {}
        self._pool = None
        self.replays = 0   # graph launches (for the launch census)

    def _mode(self, x: torch.Tensor) -> str:
        if self.mode != "auto":
            return self.mode
        if not x.is_cuda:
            return "eager" if self.cpu_chunk is None else "pad"
        return "graphs" if os.environ.get("GPUFACE_CUDA_GRAPHS", "1") != "0" else "eager"

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mode = self._mode(x)
        if mode == "eager" or len(x) == 0:
            return _as_tuple(self.fn(x))
        buckets = (self.cpu_chunk,) if self.mode == "auto" and mode == "pad" else self.buckets
        top = buckets[-1]
        parts = [self._run(x[i:i + top], mode, buckets) for i in range(0, len(x), top)]
        return parts[0] if len(parts) == 1 else tuple(torch.cat(p) for p in zip(*parts))

    def _run(self, x: torch.Tensor, mode: str, buckets: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        n = len(x)
        bucket = next(b for b in buckets if b >= n)
        if mode == "pad":
            padded = torch.cat([x, _zeros_like_rows(x, bucket - n)]) if bucket > n else x
            return tuple(o[:n] for o in _as_tuple(self.fn(padded)))
        key = (bucket, tuple(x.shape[1:]), x.dtype, x.device)
        replay = self._replays.get(key)
        if replay is None:
            static_in = _zeros_like_rows(x, bucket)
            try:
                if mode == "graphs" and self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()  # one pool for a module's buckets (never concurrent)
                replay = _Replay(self.fn, static_in, mode == "graphs", self._pool)
            except RuntimeError as e:  # an uncapturable op: run eagerly from now on, say so once
                log.warning("CUDA graph capture failed (%s); running %s eagerly", str(e).splitlines()[0],
                            type(self.fn).__name__)
                self.mode = "eager"
                return _as_tuple(self.fn(x))
            self._replays[key] = replay
        replay.static_in[:n].copy_(x)
        if bucket > n:
            replay.static_in[n:].zero_()
        self.replays += 1
        return tuple(o[:n].clone() for o in replay.replay())


__all__ = ["BUCKETS", "MODES", "Bucketed"]
