"""gpuface: a PyTorch batch engine for facial analysis and manipulation of video corpora.

Public API (re-exports only)::

    import gpuface as gf
    reader = gf.VideoReader("clip.mp4")
    detector = gf.FaceDetector("mtcnn", device="cuda")
    for batch in reader.batches(32, device="cuda"):
        faces = detector(batch.frames)            # Faces: frame, boxes (N,4) xyxy, scores, keypoints (N,5,2)
        out = gf.anonymize(batch.frames, faces)   # uint8 (B,3,H,W), faces blurred
    lm = gf.FaceLandmarker(device="cuda")         # BlazeFace + FaceMesh 478 + blendshapes, tracked

Idle OpenMP threads spin only briefly before they sleep (``GOMP_SPINCOUNT=3000`` for GNU OpenMP, the PyTorch
wheels' runtime, and ``KMP_BLOCKTIME=1`` ms for Intel/LLVM OpenMP, as defaults unless ``OMP_WAIT_POLICY`` is set;
effective when gpuface is imported before torch, as the ``gpuface`` command does). Sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``, the default until 2026-12) made every small operator wait for its second thread to
wake: FaceMesh on one crop took 15.8 ms instead of 5.9 and landmarks at batch 16 ran 107 instead of 163 frames/s
on a 2-core VM. Spinning long (``ACTIVE``; unset, libgomp spins 300,000 times) starves a second
process on the same CPUs (``benchmarks/two_processes.py``: anonymize 0.35× of serial); the short spin keeps two
processes at once faster than one after the other (landmarks 1.14×, anonymize 1.23×). Freed host memory is
reused for the next batch (:func:`gpuface.core.memory.retain_freed_memory`; ``GPUFACE_RETAIN_MEMORY=0`` turns it
off): frame-sized tensors no longer fault in fresh pages every batch (minor faults of anonymize 2.98 M → 0.27 M,
landmarks +20 %).
"""
import os as _os
import sys as _sys

if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "3000")
    _os.environ.setdefault("KMP_BLOCKTIME", "1")


class _CheckoutKernels:
    """``kernels/`` sits at the repository's top level (the required layout) and is installed as
    ``gpuface.kernels``; in a plain checkout (not installed) this finder maps ``gpuface.kernels`` to it."""

    root = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "gpuface.kernels" or not _os.path.isfile(_os.path.join(cls.root, "_triton.py")):
            return None
        from importlib.util import spec_from_file_location
        return spec_from_file_location(name, _os.path.join(cls.root, "__init__.py"),
                                       submodule_search_locations=[cls.root])


from gpuface.core.memory import retain_freed_memory as _retain  # noqa: E402

_retain()

if not any(isinstance(f, type) and f.__name__ == "_CheckoutKernels" for f in _sys.meta_path):
    _sys.meta_path.insert(0, _CheckoutKernels)

from gpuface.core.errors import (ChecksumError, DeviceUnavailableError, EmptyVideoError, GpufaceError,  # noqa: E402
                                 ImageDecodeError, InputNotFoundError, InvalidOptionError, NoFaceError,
                                 OutputExistsError, UnsupportedInputError, VideoDecodeError, VideoEncodeError,
                                 WeightsError)

__version__ = "0.1.0"

# Everything else loads on first use (PEP 562), so that `import gpuface` and `gpuface --help` do not import torch.
_LAZY = {
    "analysis": (".ops.analysis", None),
    "AffectAnalyzer": (".stages.affect", "AffectAnalyzer"), "affect_source": (".jobs.affect", "affect_source"),
    "FaceDetector": (".stages.detect", "FaceDetector"), "expand_boxes": (".stages.detect", "expand_boxes"),
    "filter_faces": (".stages.detect", "filter_faces"),
    "Selection": (".io.decode", "Selection"), "VideoReader": (".io.decode", "VideoReader"),
    "probe": (".io.decode", "probe"), "VideoWriter": (".io.encode", "VideoWriter"),
    "ImageReader": (".io.images", "ImageReader"), "read_image": (".io.images", "read_image"),
    "expand_inputs": (".io.sources", "expand_inputs"), "open_source": (".io.sources", "open_source"),
    "FaceLandmarker": (".stages.landmarks", "FaceLandmarker"), "to_ibug68": (".stages.landmarks", "to_ibug68"),
    "AnonymizeOptions": (".ops.anonymize", "AnonymizeOptions"),
    "anonymize": (".ops.anonymize", "anonymize"),
    "anonymize_source": (".jobs.anonymize", "anonymize_source"), "audit_source": (".jobs.audit", "audit_source"),
    "anonymization_detector": (".jobs.anonymize", "anonymization_detector"),
    "default_anonymizer": (".jobs.anonymize", "default_anonymizer"),
    "GapFillOptions": (".stages.gapfill", "GapFillOptions"), "detect_source": (".jobs.detect", "detect_source"),
    "landmarks_source": (".jobs.landmarks", "landmarks_source"),
    "REGIONS": (".ops.regions", "REGIONS"), "Region": (".ops.regions", "Region"),
    "get_region": (".ops.regions", "get_region"),
    "region_masks": (".ops.regions", "region_masks"),
    "Faces": (".core.types", "Faces"), "FrameBatch": (".core.types", "FrameBatch"),
    "VideoInfo": (".core.types", "VideoInfo"),
    "describe": (".jobs.catalogue", "describe"), "draw_regions": (".jobs.catalogue", "draw_regions"),
    "setup_logging": (".core.log", "setup_logging"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'gpuface' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ChecksumError", "DeviceUnavailableError", "EmptyVideoError", "GpufaceError", "ImageDecodeError",
           "InputNotFoundError", "InvalidOptionError", "NoFaceError", "OutputExistsError", "UnsupportedInputError",
           "VideoDecodeError", "VideoEncodeError", "WeightsError", "__version__", *_LAZY]
