"""CPU thread policy: use the CPUs this process was given, not all the machine has.

The budget is the smallest of: ``--threads`` / ``GPUFACE_THREADS`` (when set), the process's CPU affinity mask
(``taskset``, SLURM's cgroup/cpuset binding), ``SLURM_CPUS_PER_TASK`` and the cgroup CPU quota
(``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` of v1). :func:`apply` sets torch's
intra-op threads to it and inter-op threads to 1, and the decoders (PyAV/FFmpeg frame threads, decord) and the
x264 encoder read :func:`budget` for theirs, so one gpuface process never runs more busy threads than it was
given. Idle OpenMP threads spin only briefly before they sleep (``GOMP_SPINCOUNT``/``KMP_BLOCKTIME`` defaults set
before torch loads when gpuface is imported first; see :mod:`gpuface`), so two processes sharing CPUs do not burn
each other's time and one process's small operators do not wait for sleeping threads. :func:`serial` runs a
block's operators on the calling thread alone (OpenMP's thread count is per thread), where a second thread does not
pay for itself.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Iterator, TypeVar

from gpuface.core.errors import InvalidOptionError

_budget: int | None = None
T = TypeVar("T")


class _Done:
    """The end of an :func:`ahead` stream, with the producer's exception if it failed."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def _quota_v2(folder: Path) -> float | None:
    text = (folder / "cpu.max").read_text().split()
    return int(text[0]) / int(text[1]) if text and text[0] != "max" else None


def _quota_v1(folder: Path) -> float | None:
    quota, period = (int((folder / f"cpu.cfs_{k}_us").read_text()) for k in ("quota", "period"))
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """CPUs allowed by the cgroup CPU quota of this process (rounded up), or None without a quota.

    The process's own cgroup is read from ``/proc/self/cgroup`` (``0::/path`` for cgroup v2; ``N:cpu,…:/path`` for
    the v1 ``cpu`` controller), and the quota is the smallest on the way from that cgroup up to the hierarchy's root
    (a SLURM job step's cgroup sits below the job's, which holds the limit): cgroup v2's ``cpu.max``
    (``quota period`` or ``max``), v1's ``cpu.cfs_quota_us / cpu.cfs_period_us`` (−1: none). See the Linux kernel's
    Documentation/admin-guide/cgroup-v2.rst and scheduler/sched-bwc.rst.
    """
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        lines = ["0::/"]
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            bases, read = [root], _quota_v2
        elif "cpu" in controllers.split(","):
            bases, read = [root / controllers, root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"], _quota_v1
        else:
            continue
        for base in dict.fromkeys(bases):
            folder = base / path.lstrip("/")
            for level in [folder, *folder.parents]:
                try:
                    q = read(level)
                except (OSError, ValueError, IndexError):
                    q = None
                if q:
                    found.append(q)
                if level == base:
                    break
    return max(1, math.ceil(min(found))) if found else None


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, ``SLURM_CPUS_PER_TASK`` and the cgroup quota, whichever is
    smallest."""
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        limits.append(int(slurm))
    quota = _cgroup_quota()
    if quota:
        limits.append(quota)
    return max(1, min(limits))


def apply(threads: int | None = None) -> int:
    """Set the process's thread budget (``threads``, else ``GPUFACE_THREADS``, else :func:`available_cpus`,
    never more than those) and torch's thread counts to it. Returns the budget.

    Raises:
        InvalidOptionError: ``threads`` < 1.
    """
    import torch

    global _budget
    env = os.environ.get("GPUFACE_THREADS")
    if threads is None and env:
        threads = int(env) if env.isdigit() else None
    if threads is not None and threads < 1:
        raise InvalidOptionError(f"threads must be >= 1, got {threads}")
    n = min(threads, available_cpus()) if threads else available_cpus()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)   # allowed once, before any inter-op work
    except RuntimeError:
        pass
    _budget = n
    return n


def budget() -> int:
    """The thread budget set by :func:`apply` (:func:`available_cpus` before any call)."""
    return _budget or available_cpus()


@functools.cache
def _omp_set_num_threads():
    """OpenMP's ``omp_set_num_threads`` of the runtime torch loaded (found among the loaded libraries' symbols), or
    None where torch's parallel backend is not OpenMP or the symbol is not visible."""
    import torch

    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        fn = ctypes.CDLL(None).omp_set_num_threads
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], None
    return fn


@contextlib.contextmanager
def serial():
    """Run torch's CPU operators inside the block on the calling thread alone, then restore its thread count.

    OpenMP's thread count (``nthreads-var``) is per thread: this sets the calling thread's to 1 with
    ``omp_set_num_threads`` (torch's ``set_num_threads`` would also reset the process-wide default for new threads
    and clear oneDNN's primitive cache), so other threads keep theirs. oneDNN and ATen then run the block's
    operators single-threaded, and pick their kernels for one thread; an operator's result may differ from its
    multi-threaded one in the last float32 bits, so a caller must use it for the same calls every time. Where
    torch's backend is not OpenMP, a no-op.
    """
    import torch

    fn = _omp_set_num_threads()
    before = torch.get_num_threads()      # this thread's (omp_get_max_threads)
    if fn is None or before == 1:
        yield
        return
    fn(1)
    try:
        yield
    finally:
        fn(before)


def ahead(items: Iterator[T], depth: int = 2, name: str = "gpuface-ahead", nice: int = 0) -> Iterator[T]:
    """Run the iterator ``items`` on a background thread, at most ``depth`` items ahead of the consumer, and yield
    its items in order (a pipeline stage: decoding, or finding faces while the previous batch is worked on).

    ``nice`` > 0 lowers the thread's scheduling priority by that much (Linux, where niceness is per thread; threads
    it starts, e.g. FFmpeg's decoding threads, inherit it; elsewhere ignored): a producer that should use the CPU
    time the consumer leaves, not take time slices from the consumer's OpenMP threads (see :mod:`gpuface.io.decode`).

    An exception raised by ``items`` is re-raised in the consumer where its item would have arrived. When the
    consumer stops early (``break``, an exception, garbage collection), the producer stops after its current item
    and ``items.close()`` runs once it has.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def work():
        if nice > 0 and sys.platform.startswith("linux"):
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
            except OSError:
                pass
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer
            q.put(_Done(e))
            return
        q.put(_Done())

    thread = threading.Thread(target=work, daemon=True, name=name)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
        if hasattr(items, "close"):
            items.close()


__all__ = ["available_cpus", "apply", "budget", "ahead", "serial"]
