"""Named exceptions of gpuface.

Every error that bad input can cause is one of these, carries the offending path (where there is one) and
says what to do. The CLI prints ``str(error)`` on one line and exits with a non-zero status.
"""
from __future__ import annotations


class GpufaceError(Exception):
    """Base class of every gpuface error."""


class InputNotFoundError(GpufaceError, FileNotFoundError):
    """An input path does not exist."""


class UnsupportedInputError(GpufaceError, ValueError):
    """An input exists but is not a video, an image or a list of paths gpuface can read."""


class VideoDecodeError(GpufaceError):
    """A video file could not be opened or decoded (zero bytes, truncated, corrupt, no video stream)."""


class EmptyVideoError(VideoDecodeError):
    """A video (or the requested start/end fragment of it) holds no frames."""


class ImageDecodeError(GpufaceError):
    """A still image could not be read."""


class NoFaceError(GpufaceError):
    """A command that needs a face found none (``gpuface regions draw`` on a picture without one)."""


class VideoEncodeError(GpufaceError):
    """A video could not be written."""


class OutputExistsError(GpufaceError, FileExistsError):
    """An output exists and overwriting it was not allowed."""


class WeightsError(GpufaceError):
    """Model weights could not be fetched, verified or converted."""


class ChecksumError(WeightsError):
    """A fetched file does not have the pinned sha256; it is not used."""


class InvalidOptionError(GpufaceError, ValueError):
    """An option has a value outside its domain."""


class DeviceUnavailableError(InvalidOptionError):
    """A torch device was asked for that this machine does not have (CUDA without a driver, cuda:3 of two GPUs)."""
