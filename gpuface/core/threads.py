"""CPU thread policy: use the CPUs this process was given, not all the machine has.

The budget is the smallest of: ``--threads`` / ``GPUFACE_THREADS`` (when set), the process's CPU affinity mask
(``taskset``, SLURM's cgroup/cpuset binding), ``SLURM_CPUS_PER_TASK`` and the cgroup CPU quota
(``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` of v1). :func:`apply` sets torch's
intra-op threads to it and inter-op threads to 1, and the decoders (PyAV/FFmpeg frame threads, decord) and the
x264 encoder read :func:`budget` for theirs, so one gpuface process never runs more busy threads than it was
given. Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set as a default before torch
loads when gpuface is imported first), so two processes sharing CPUs do not burn each other's time.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from gpuface.core.errors import InvalidOptionError

_budget: int | None = None


def _cgroup_quota() -> int | None:
    """CPUs allowed by the cgroup quota (rounded up), or None without a quota."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return max(1, math.ceil(int(text[0]) / int(text[1])))
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


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


__all__ = ["available_cpus", "apply", "budget"]
