"""gpuface: a PyTorch batch engine for facial analysis and manipulation of video corpora.

Public API (re-exports only)::

    import gpuface as gf
    reader = gf.VideoReader("clip.mp4")
    detector = gf.FaceDetector("mtcnn", device="cuda")
    for batch in reader.batches(32, device="cuda"):
        faces = detector(batch.frames)            # Faces: frame, boxes (N,4) xyxy, scores, keypoints (N,5,2)
        out = gf.anonymize(batch.frames, faces)   # uint8 (B,3,H,W), faces blurred
    lm = gf.FaceLandmarker(device="cuda")         # BlazeFace + FaceMesh 478 + blendshapes, tracked

Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` as a default, effective when gpuface
is imported before torch, as the ``gpuface`` command does): two processes sharing CPUs then run at least as fast
together as one after the other (``benchmarks/two_processes.py``: anonymize 0.35× → 1.35×).
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import analysis
from .affect import AffectAnalyzer, affect_source
from .detect import FaceDetector, expand_boxes, filter_faces
from .errors import (ChecksumError, DeviceUnavailableError, EmptyVideoError, GpufaceError, ImageDecodeError, InputNotFoundError,
                     InvalidOptionError, OutputExistsError, UnsupportedInputError, VideoDecodeError,
                     VideoEncodeError, WeightsError)
from .io.decode import Selection, VideoReader, probe
from .io.encode import VideoWriter
from .io.images import ImageReader, read_image
from .io.sources import expand_inputs, open_source
from .landmarks import FaceLandmarker, to_ibug68
from .manipulate.anonymize import AnonymizeOptions, anonymize
from .pipeline import anonymize_source, detect_source, landmarks_source
from .regions import REGIONS, Region, get_region, region_masks
from .types import Faces, FrameBatch, VideoInfo

__version__ = "0.1.0"

__all__ = [
    "FaceDetector", "expand_boxes", "filter_faces", "ChecksumError", "DeviceUnavailableError", "EmptyVideoError", "GpufaceError",
    "ImageDecodeError", "InputNotFoundError", "InvalidOptionError", "OutputExistsError", "UnsupportedInputError",
    "VideoDecodeError", "VideoEncodeError", "WeightsError", "Selection", "VideoReader", "probe", "VideoWriter",
    "ImageReader", "read_image", "expand_inputs", "open_source", "AnonymizeOptions", "anonymize",
    "analysis", "FaceLandmarker", "to_ibug68", "landmarks_source", "REGIONS", "Region", "get_region", "region_masks",
    "anonymize_source", "detect_source", "AffectAnalyzer", "affect_source", "Faces", "FrameBatch", "VideoInfo", "__version__",
]
