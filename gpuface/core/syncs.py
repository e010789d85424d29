"""Host-sync census: count, by call site, every point where a pipeline needs a tensor's value on the host.

On a GPU each such point stalls the host until the device has finished all queued work (a *host sync*): a
``.item()``, ``bool(t)``, ``int(t)``, ``.tolist()``, ``.cpu()`` / ``.to("cpu")`` / ``.numpy()`` of device data, and
the operators whose output size depends on the data (``nonzero``, ``unique``, ``masked_select``, boolean-mask
indexing, ``repeat_interleave`` without ``output_size``, ``equal``). Pipelines that must bring results to the host
do it at named points: :func:`to_host` (one sync for any number of tensors), counted as one. :class:`SyncCounter`
counts them while any code runs, on the CPU too (where they cost nothing), so that the number a CUDA run would pay
can be held by a test on a machine without a GPU (``tests/test_device_discipline.py``, ``benchmarks/syncs.py``).

Counted on CPU, ``.cpu()``, ``.tolist()`` and ``.item()`` cannot tell device data from host-only tensors (frame
numbers and times, which never leave the host): the census counts both, so it is an upper bound of a CUDA run.
``.numpy()`` is not counted (it only works on host tensors).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
#: Operators whose result needs the device's data on the host (values or output sizes).
SYNC_OPS = {_aten._local_scalar_dense.default, _aten.item.default, _aten.nonzero.default, _aten._unique2.default,
            _aten.unique_consecutive.default, _aten.unique_dim.default, _aten.masked_select.default,
            _aten.equal.default, _aten.is_nonzero.default, _aten.repeat_interleave.Tensor}
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # gpuface/
_HERE = os.path.abspath(__file__)


def _site() -> str:
    """``file:line (function)`` of the innermost gpuface frame outside this module (or the innermost caller)."""
    f = sys._getframe(2)
    fallback = None
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if path.startswith(_PACKAGE) and path != _HERE:
            return f"{os.path.relpath(path, os.path.dirname(_PACKAGE))}:{f.f_lineno} ({f.f_code.co_name})"
        if fallback is None and path != _HERE and "torch" not in path:
            fallback = f"{os.path.basename(path)}:{f.f_lineno} ({f.f_code.co_name})"
        f = f.f_back
    return fallback or "?"


class SyncCounter(TorchDispatchMode):
    """Context manager counting host syncs by call site (see the module docstring).

    Attributes:
        sites: ``Counter`` of ``"gpuface/file.py:line (function)"`` → count.

    ``counter.total`` is the sum. Used as ``with SyncCounter() as c: run(); print(c.total, c.sites)``.
    """

    # Tensor methods that reach the host without a dispatched operator the mode would see (``.item()``, ``bool()``,
    # ``int()`` dispatch ``aten.item`` / ``_local_scalar_dense`` and are counted in ``__torch_dispatch__``)
    _METHODS = ("tolist", "cpu")

    def __init__(self):
        super().__init__()
        self.sites: Counter = Counter()
        self._saved = {}
        self._inside = 0

    @property
    def total(self) -> int:
        return sum(self.sites.values())

    def _count(self) -> None:
        self.sites[_site()] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        sync = func in SYNC_OPS or (func is _aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None))
        if not sync or self._inside:
            return func(*args, **kwargs)
        self._count()
        self._inside += 1          # what the sync runs inside (item → _local_scalar_dense) is the same sync
        try:
            return func(*args, **kwargs)
        finally:
            self._inside -= 1

    def _wrap(self, name: str):
        original = self._saved[name]
        counter = self

        def method(t, *a, **k):
            if counter._inside == 0:
                counter._count()
            counter._inside += 1
            try:
                return original(t, *a, **k)
            finally:
                counter._inside -= 1
        return method

    def _to(self):
        original = self._saved["to"]
        counter = self

        def to(t, *a, **k):
            target = k.get("device", a[0] if a and isinstance(a[0], (str, torch.device)) else None)
            blocking = not k.get("non_blocking", False)
            if counter._inside == 0 and blocking and target is not None and torch.device(target).type == "cpu":
                counter._count()
            return original(t, *a, **k)
        return to

    def __enter__(self):
        for name in (*self._METHODS, "to"):
            self._saved[name] = getattr(torch.Tensor, name)
        for name in self._METHODS:
            setattr(torch.Tensor, name, self._wrap(name))
        torch.Tensor.to = self._to()
        _active.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        _active.remove(self)
        return super().__exit__(*exc)


_active: list["SyncCounter"] = []


def to_host(*tensors: torch.Tensor | None) -> tuple:
    """Every tensor copied to the host with one sync (non-blocking copies, then one wait on the stream), not one
    per tensor: a named sync point (:class:`SyncCounter` counts it once). ``None`` passes through."""
    for c in _active:
        c.sites[_site()] += 1
    out = tuple(None if t is None else t.to("cpu", non_blocking=True) for t in tensors)
    if any(t is not None and t.is_cuda for t in tensors):
        torch.cuda.current_stream().synchronize()
    return out


@contextlib.contextmanager
def host_side():
    """A block that reads only host tensors (data already brought over by :func:`to_host`, frame numbers, times):
    its ``.item()``/``.tolist()``/mask indexing cost nothing on a GPU run, so :class:`SyncCounter` does not count
    them (on a CPU census it cannot tell them from device reads). E.g. the temporal fill's box linking and the ROI
    crops' window planning, each after its one counted :func:`to_host` copy."""
    for c in _active:
        c._inside += 1
    try:
        yield
    finally:
        for c in _active:
            c._inside -= 1


def upload(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A small host tensor (kernel taps, index lists decided on the host) copied to ``device`` without a host sync:
    on CUDA through pinned memory with ``non_blocking`` (a blocking copy from pageable memory waits for the
    stream), elsewhere a plain ``.to``."""
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu" and torch.cuda.is_available():
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def lift(module: torch.nn.Module, mode, device: str = "cuda:0") -> torch.nn.Module:
    """Replace every parameter and buffer of a (real, CPU) module by a fake tensor on ``device`` (in place), so that
    it runs under ``torch._subclasses.fake_tensor.FakeTensorMode`` ``mode`` with its real weights' shapes and dtypes
    on a machine without that device (the fake-CUDA tests and ``benchmarks/forecast.py``)."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                real = p.detach()
                with mode:
                    sub._parameters[name] = torch.nn.Parameter(mode.from_tensor(real).to(device), requires_grad=False)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                with mode:
                    sub._buffers[name] = mode.from_tensor(b).to(device)
    return module


__all__ = ["SyncCounter", "SYNC_OPS", "to_host", "host_side", "upload", "lift"]
