"""Ahead-of-time compiled networks for the CPU: AOTInductor packages, built once per machine and cached.

On a CPU, FaceMesh run op by op spends half its time outside its convolutions: 69 PReLUs, 34 residual adds and the
channel pads before them, each a pass over a feature map of 8–32 channels at up to 128² that does not stay in cache.
Inductor (``torch.export`` → ``torch._inductor.aoti_compile_and_package``) fuses the element-wise work around the
convolutions into C++ loops; the result is a shared library loaded in ~10 ms, no Python tracing at run time.
Measured on a 2-core x86 VM (AVX-512), torch 2.14.1, FaceMesh at 256²: 15.0 → 6.2 ms for one crop, 6.0 → 3.5 ms a
crop in calls of 12; landmarks and presence equal to the eager module's bit for bit there (the fused operations,
adds, multiplies, maxima and selects, round as the eager ones do; each build checks its outputs against the eager
module's before it is installed, within a tolerance per network, :data:`NETWORKS`). Packages are *frozen*
(Inductor's ``freezing``, which needs autograd off while compiling): the weights are constants, packed for oneDNN,
and each convolution is one oneDNN call with its residual add or activation fused in. On a 2-core AMD EPYC VM
(AVX2), against the same packages unfrozen: FaceMesh on one crop (one thread) 10.8 → 8.5 ms, on two crops 17.3 →
13.0 ms, in calls of 12 (two threads) 3.5 → 3.3 ms a crop (same bits), the blendshapes in calls of 16 11.6 → 8.1 ms;
the landmarks job on the four 720p samples 86.6 → 95.5 frames/s (alternating runs, medians of 6).

CenterFace (the anonymiser's detector, one frame a call) is compiled the same way, frozen: at 384×640 (a 720p
frame at the anonymiser's scale 0.5) 31.5 → 25.8 ms on two threads, 55 → 50 ms on one, outputs equal to ~2e-9.

A package is compiled for one input shape: a row count (the callers run fixed-size chunks anyway, see
:class:`~gpuface.models.graphs.Bucketed`), or for a network whose input size varies with the video (CenterFace) a
row count, height and width; and for the thread count it runs with (its loops' OpenMP teams and its packed weights'
layout are built for it: run with another, oneDNN would re-lay the weights at every call). It is cached as
``<weights>/compiled/<name>-r<rows>[x<height>x<width>]-t<threads>-<key>.pt2``, the key a hash of the torch version,
the machine, torch's CPU capability (AVX2, AVX-512, …), :data:`PACKAGE_FORMAT` and the module's weights; a package
is written under a temporary name and renamed, so a reader never sees half a file.

Calls of at most :data:`SERIAL_ROWS` rows (a key frame's one crop, a refined pair, CenterFace's one frame) are built
and run on one thread (``-t1``: Inductor's loops without OpenMP, run under :func:`gpuface.core.threads.serial`):
FaceMesh on one crop gained nothing from a second thread and burnt twice the CPU (2-core AMD EPYC VM, AVX2,
unfrozen: 10.3 ms on two threads, 20.7 ms of CPU; 10.5 ms on one), CPU time that the landmarker's other half,
running beside it (:meth:`~gpuface.stages.landmarks.FaceLandmarker.start`), needs: the landmarks job on the four
720p samples went from 92.0 to 96.7 frames/s (alternating runs, medians of 4). (CenterFace in the anonymiser, beside
the decoder and the encoder: one thread or two, the same speed.) Such a call always runs on one thread, so its
result does not depend on what runs beside it; it differs from a two-thread call's by up to ~5e-4 crop pixels
(oneDNN picks its kernels by thread count).

Modes (the ``aot`` argument of :class:`AotRunner`, default from ``GPUFACE_AOT``, else ``auto``):

* ``auto``: use the packages already built; build the missing ones in one detached background process
  (``python -m gpuface.models.aot``; a lock file keeps concurrent runs, e.g. a SLURM array, to one build), the
  current run staying eager and switching to a package at the first call after it appears. A build takes ~1 min
  of one core (FaceMesh at three row counts), once per machine and torch version; a failed build is not retried
  (its error is in ``<package>.failed`` and ``<cache>/<name>.log``);
* ``now``: build the missing packages in this process before the first call (``gpuface weights compile``, the
  benchmarks);
* ``off``: always eager.

Only float32 CPU inputs of a built shape use a package; anything else (CUDA, float16, other row counts) runs
the module itself. Building needs a C++ compiler (Inductor's); without one the build logs one warning and the
module stays eager.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Union

import torch
from torch import nn

from gpuface.core import threads
from gpuface.models.graphs import _as_tuple

log = logging.getLogger("gpuface")

MODES = ("auto", "now", "off")
#: Row counts up to this are built and run single-threaded (see the module docstring).
SERIAL_ROWS = 2
#: Bumped when the way packages are built changes (their cache key): 2 = frozen, with single-threaded small calls.
PACKAGE_FORMAT = 2
#: A lock file older than this (seconds) is a crashed build's and is taken over.
STALE_LOCK = 1800
#: What a package is compiled for: a row count, or (rows, height, width) for a network of variable input size.
Shape = Union[int, tuple[int, ...]]


def _facemesh() -> tuple[nn.Module, Callable[[int], torch.Tensor], float]:
    from gpuface.models.facemesh import MESH_INPUT, FaceMesh
    from gpuface.models.weights import load_graph

    def example(rows: int) -> torch.Tensor:   # crops in [0, 1], channels-last as the landmarker passes them
        x = torch.rand(rows, 3, MESH_INPUT, MESH_INPUT, generator=torch.Generator().manual_seed(0))
        return x.contiguous(memory_format=torch.channels_last)

    return FaceMesh(load_graph("facemesh", "cpu")), example, 1e-3      # landmarks in crop pixels


def _blendshapes() -> tuple[nn.Module, Callable[[int], torch.Tensor], float]:
    from gpuface.models.facemesh import BLENDSHAPE_LANDMARKS, Blendshapes
    from gpuface.models.weights import load_graph

    def example(rows: int) -> torch.Tensor:   # landmark x, y in frame pixels
        g = torch.Generator().manual_seed(0)
        return torch.rand(rows, len(BLENDSHAPE_LANDMARKS), 2, generator=g) * 300 + 400

    return Blendshapes(load_graph("blendshapes", "cpu")), example, 1e-5   # coefficients in [0, 1]


def _centerface() -> tuple[nn.Module, Callable[[Shape], torch.Tensor], float]:
    from gpuface.models.centerface import CenterFace
    from gpuface.models.weights import load_state_dict

    def example(shape: Shape) -> torch.Tensor:   # RGB in 0-255, channels-last as the detector passes it
        rows, h, w = shape
        x = torch.rand(rows, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
        return x.contiguous(memory_format=torch.channels_last)

    net = CenterFace()
    net.load_state_dict(load_state_dict("centerface"))
    return net.to(memory_format=torch.channels_last), example, 1e-4   # heat map in [0, 1], regressions ~1-10


#: The networks that can be AOT-compiled: name → () -> (module on the CPU, example input for a :data:`Shape`, the
#: largest absolute difference from the eager module that a build accepts).
NETWORKS: dict[str, Callable[[], tuple[nn.Module, Callable[[Shape], torch.Tensor], float]]] = {
    "facemesh": _facemesh, "blendshapes": _blendshapes, "centerface": _centerface}


def mode_from_env() -> str:
    """``GPUFACE_AOT`` (auto, now or off), default ``auto``. Raises InvalidOptionError for another value."""
    from gpuface.core.errors import InvalidOptionError

    mode = os.environ.get("GPUFACE_AOT", "auto")
    if mode not in MODES:
        raise InvalidOptionError(f"GPUFACE_AOT must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def resolve_mode(aot: str | None) -> str:
    """``aot`` (auto, now or off), or :func:`mode_from_env` when None. Raises InvalidOptionError for another value."""
    from gpuface.core.errors import InvalidOptionError

    if aot is None:
        return mode_from_env()
    if aot not in MODES:
        raise InvalidOptionError(f"aot must be one of {', '.join(MODES)}, got {aot!r}")
    return aot


def cache_dir() -> Path:
    """Where packages are kept: ``compiled/`` in the weights cache (:func:`~gpuface.models.weights.weights_dir`)."""
    from gpuface.models.weights import weights_dir

    return weights_dir() / "compiled"


def package_paths(name: str, module: nn.Module, shapes: Iterable[Shape],
                  cache: Path | None = None) -> dict[Shape, Path]:
    """The cache path of ``module``'s package for each :data:`Shape` in ``shapes`` on this machine and torch version
    (the weights hashed once), at the thread count the call runs with (:func:`_run_threads`: a package's loops and
    its convolutions' weight layout are built for it)."""
    h = hashlib.sha256(f"{torch.__version__}|{platform.machine()}|{torch.backends.cpu.get_cpu_capability()}"
                       f"|{PACKAGE_FORMAT}".encode())
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {s: (cache or cache_dir()) / f"{name}-r{shape_tag(s)}-t{_run_threads(_rows(s))}-{h.hexdigest()[:16]}.pt2"
            for s in shapes}


def _rows(shape: Shape) -> int:
    return shape if isinstance(shape, int) else shape[0]


def shape_tag(shape: Shape) -> str:
    """A :data:`Shape` as written in file names and on the builder's command line: ``12``, ``1x384x640``."""
    return str(shape) if isinstance(shape, int) else "x".join(map(str, shape))


def _parse_shape(text: str) -> Shape:
    parts = tuple(int(p) for p in text.split("x"))
    return parts[0] if len(parts) == 1 else parts


def _run_threads(rows: int) -> int:
    """The thread count a call of ``rows`` rows runs with: 1 (:data:`SERIAL_ROWS` or fewer), else torch's."""
    return 1 if rows <= SERIAL_ROWS else torch.get_num_threads()


def _threads(rows: int) -> contextlib.AbstractContextManager:
    """How a call of ``rows`` rows runs: on the calling thread alone (:func:`gpuface.core.threads.serial`) for
    :data:`SERIAL_ROWS` or fewer, else on torch's threads."""
    return threads.serial() if rows <= SERIAL_ROWS else contextlib.nullcontext()


class _Export(nn.Module):
    # torch.export names the root's attributes after their module paths; a child called ``graph`` (TFLiteGraph's
    # holders) would clash with the exported GraphModule's own ``graph``, so the module goes one level down.
    def __init__(self, module: nn.Module):
        super().__init__()
        self.net = module

    def forward(self, x: torch.Tensor):
        return self.net(x)


def build(name: str, shapes: Iterable[Shape], cache: Path | None = None) -> list[Path]:
    """Compile network ``name`` for each :data:`Shape` in ``shapes`` into the cache (those built already are kept);
    returns the packages' paths, in the order of ``shapes``.

    Raises RuntimeError when a package's outputs differ from the eager module's by more than the network's
    tolerance (:data:`NETWORKS`; nothing is installed then), and Inductor's own errors (e.g. no C++ compiler). A
    failed build leaves ``<package>.failed`` (its error), which ``auto`` mode does not retry; a build in
    ``now`` mode or ``gpuface weights compile`` does, and removes it when it succeeds.
    """
    module, example, tolerance = NETWORKS[name]()
    module = module.eval()
    paths = package_paths(name, module, shapes, cache)
    for r, path in paths.items():
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        failed = path.with_suffix(".failed")
        try:
            worst = _compile(module, example(r), tolerance, path)
        except Exception as e:     # remembered, so that auto mode does not start the same failing build every run
            failed.write_text(f"{type(e).__name__}: {e}\n")
            raise
        failed.unlink(missing_ok=True)
        log.info("gpuface: compiled %s for input %s on this CPU → %s (max difference from eager %.3g)", name,
                 shape_tag(r), path, worst)
    return list(paths.values())


def _compile(module: nn.Module, x: torch.Tensor, tolerance: float, path: Path) -> float:
    # Frozen: the weights become constants and each convolution one oneDNN call with its residual add and
    # activation fused (Inductor freezes only with autograd off), its weights laid out for the thread count it is
    # compiled under (so, the one it runs with: else oneDNN reorders them at every call). One thread: loops without
    # OpenMP. The eager reference, the build and its check all run at that thread count.
    configs = {"freezing": True, "cpp.threads": _run_threads(x.shape[0])}
    with _threads(x.shape[0]):
        with torch.inference_mode():
            eager = _as_tuple(module(x))
        program = torch.export.export(_Export(module), (x,), strict=False)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            with torch.no_grad():
                staged = torch._inductor.aoti_compile_and_package(program, package_path=os.path.join(tmp, path.name),
                                                                  inductor_configs=configs)
            with torch.inference_mode():
                compiled = _as_tuple(_load(Path(staged))(x))      # as a run will load it
            worst = max((a - b).abs().max().item() for a, b in zip(eager, compiled))
            if worst > tolerance:
                raise RuntimeError(f"AOT-compiled {path.name} differs from the eager module by {worst:.3g} "
                                   f"(> {tolerance})")
            os.replace(staged, path)
    return worst


class AotRunner:
    """``module`` that runs its AOT-compiled package where one is built for the input's row count.

    Args:
        name: a key of :data:`NETWORKS`; ``module`` must be that network (its package key hashes its weights).
        module: the eager module (any device; only its CPU float32 calls can use packages).
        rows: the :data:`Shape` s to compile for: row counts (the sizes of the callers' fixed chunks), or
            (rows, height, width) for a network whose input size varies (then a call's shape is matched whole).
        aot: ``auto``, ``now`` or ``off`` (see the module docstring); None: ``GPUFACE_AOT``, else ``auto``.
        cache: the package folder (default :func:`cache_dir`).

    ``runner(x)`` returns what ``module(x)`` returns (within the network's tolerance).
    Raises InvalidOptionError for an unknown mode or name.
    """

    def __init__(self, name: str, module: nn.Module, rows: tuple[Shape, ...], aot: str | None = None,
                 cache: Path | None = None):
        from gpuface.core.errors import InvalidOptionError

        aot = resolve_mode(aot)
        if name not in NETWORKS:
            raise InvalidOptionError(f"name must be one of {', '.join(NETWORKS)}, got {name!r}")
        self.module, self.name, self.aot, self.cache = module, name, aot, cache
        self._by_rows = all(isinstance(r, int) for r in rows)
        self._paths: dict[Shape, Path] = {}
        self._loaded: dict[Shape, Callable] = {}
        if aot == "off" or not _on_cpu(module):
            return
        self._paths = package_paths(name, module, rows, cache)
        missing = [r for r, p in self._paths.items() if not p.exists()]
        if aot == "auto":   # a build that failed on this machine (its .failed file) is not started again
            missing = [r for r in missing if not self._paths[r].with_suffix(".failed").exists()]
        if missing and aot == "now":
            try:
                build(name, missing, cache)
            except Exception as e:   # no compiler, a failed check: eager it is, said once
                log.warning("gpuface: could not AOT-compile %s (%s); it runs eagerly", name, str(e).splitlines()[0])
                self._paths = {}
        elif missing:
            _spawn_build(name, missing, self._paths[missing[0]].parent)

    def __call__(self, x: torch.Tensor):
        shape = x.shape[0] if self._by_rows else (x.shape[0], *x.shape[2:])
        path = self._paths.get(shape) if x.device.type == "cpu" and x.dtype == torch.float32 else None
        if path is None:
            return self.module(x)
        run = self._loaded.get(shape)
        if run is None:
            if not path.exists():       # auto: still being built in the background
                return self.module(x)
            run = self._loaded[shape] = _load(path)
        # the layout the package was traced with (its example): channels-last crops, contiguous points
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.contiguous()
        with _threads(x.shape[0]):
            return run(x)

    @property
    def compiled_rows(self) -> tuple[Shape, ...]:
        """The shapes (row counts) whose package is built (on disk) for this module."""
        return tuple(r for r, p in self._paths.items() if p.exists())


def _load(path: Path) -> Callable:
    """A package's model as a callable: through its C interface (:class:`_Package`), else torch's loader."""
    try:
        return _Package(path)
    except (OSError, AttributeError, RuntimeError, zipfile.BadZipFile) as e:
        log.debug("gpuface: %s through torch's loader (%s)", path.name, e)
        return torch._inductor.aoti_load_package(str(path))


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype, _capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class _Package:
    """A package's model run through AOTInductor's C interface (``AOTInductorModelContainerRun``, the functions
    torch's own loader calls; ``torch/csrc/inductor/aoti_runtime/interface.h``), called through ctypes, which lets go
    of the GIL for the call: torch's Python binding of the loader keeps it, so a network running on the landmarker's
    thread would stop the decoding and encoding threads' Python for ~50 ms a call. Returns one tensor for a
    one-output network, else a tuple (the structure of every network in :data:`NETWORKS`)."""

    def __init__(self, path: Path):
        with tempfile.TemporaryDirectory() as tmp:     # the library stays mapped once loaded
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
            libs = list(Path(tmp).rglob("*.so"))
            if len(libs) != 1:
                raise RuntimeError(f"{path.name}: {len(libs)} shared libraries")
            lib = ctypes.CDLL(str(libs[0]))
        self._run = lib.AOTInductorModelContainerRun
        self._run.restype = ctypes.c_int32
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_void_p, ctypes.c_void_p]
        self._delete = lib.AOTInductorModelContainerDelete
        handle, outputs = ctypes.c_void_p(), ctypes.c_size_t()
        if lib.AOTInductorModelContainerCreateWithDevice(ctypes.byref(handle), ctypes.c_size_t(1), b"cpu", None):
            raise RuntimeError(f"{path.name}: cannot create its model")
        self._handle = handle
        if lib.AOTInductorModelContainerGetNumOutputs(handle, ctypes.byref(outputs)):
            raise RuntimeError(f"{path.name}: cannot count its outputs")
        self._outputs = outputs.value

    def __call__(self, x: torch.Tensor):
        # the input handle is a new reference to x, which the call takes over (and frees); the outputs' handles
        # are new tensors, taken over here
        inputs = (ctypes.c_void_p * 1)(*(_capsule_pointer(c, None)
                                         for c in torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors([x])))
        outputs = (ctypes.c_void_p * self._outputs)()
        if self._run(self._handle, inputs, 1, outputs, self._outputs, None, None):
            raise RuntimeError("AOTInductor model run failed")
        out = torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs([_capsule(p, None, None) for p in outputs])
        return out[0] if len(out) == 1 else tuple(out)

    def __del__(self):
        if getattr(self, "_handle", None):
            self._delete(self._handle)


def _on_cpu(module: nn.Module) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in module.state_dict().values())


def _spawn_build(name: str, rows: list[Shape], folder: Path) -> None:
    """Start one detached ``python -m gpuface.models.aot`` for the missing packages, unless another holds the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"{name}.lock"
    try:
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK:
            lock.unlink(missing_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    except OSError as e:
        log.warning("gpuface: cannot write %s (%s); %s runs eagerly", folder, e, name)
        return
    os.close(fd)
    cmd = [sys.executable, "-m", "gpuface.models.aot", name, "--rows", *map(shape_tag, rows), "--cache", str(folder),
           "--lock", str(lock), "--threads", str(torch.get_num_threads())]
    with open(folder / f"{name}.log", "ab") as out:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    log.info("gpuface: compiling %s for this CPU in the background (once, about a minute of one core); this run "
             "uses the eager network until it is ready", name)


def main(argv: list[str] | None = None) -> int:
    """The background builder: ``python -m gpuface.models.aot NAME --rows R... [--cache DIR] [--lock FILE]
    [--threads N]``, each R a :func:`shape_tag` (``12``, ``1x384x640``)."""
    ap = argparse.ArgumentParser(description="AOT-compile a gpuface network for this CPU")
    ap.add_argument("name", choices=sorted(NETWORKS))
    ap.add_argument("--rows", type=_parse_shape, nargs="+", required=True, help="row counts or RxHxW shapes")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--lock", type=Path, default=None, help="a lock file to remove when done")
    ap.add_argument("--threads", type=int, default=None, help="the thread count the packages will run with")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        build(args.name, args.rows, args.cache)
    finally:
        if args.lock is not None:
            args.lock.unlink(missing_ok=True)
    return 0


__all__ = ["MODES", "NETWORKS", "SERIAL_ROWS", "Shape", "AotRunner", "build", "cache_dir", "mode_from_env",
           "package_paths", "resolve_mode", "shape_tag"]


if __name__ == "__main__":
    sys.exit(main())

