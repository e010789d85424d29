"""Online models: a registry of architectures whose weights come from their official URL or from a local file the
user names (``--weights NAME=PATH``, or the file put in ``<weights dir>/upstream/``): affect models
(:data:`AFFECT_MODELS`), identity embedders (:data:`IDENTITY_MODELS`: FaceNet VGGFace2, the Animesion ViTs of
:mod:`gpuface.models.anime`) and detectors (:data:`DETECTOR_MODELS`: hysts' anime-face Faster R-CNN).

No PyPI package carries these weights, so no sha256 can be pinned ahead of time: the first file used is
recorded (trust on first use) in ``<weights dir>/<name>.json`` with its sha256, and a later file with another
digest is refused unless it is named explicitly again. Offline and without a file, loading fails with one line
that says what to download and where to put it.

- ``opengraphau``: OpenGraphAU MEFARG ResNet-50 stage 2 (:mod:`gpuface.models.opengraphau`), the weights mexca
  publishes on the HuggingFace hub (``model.safetensors`` with mexca's parameter names; a ``.pth``/``.bin`` of the
  same state dict is read too): 41 AU scores in [0, 1] from 224² ImageNet-normalised faces.
- ``hsemotion``: HSEmotion ``enet_b0_8_va_mtl`` (A. V. Savchenko (2022), "Video-based frame-level facial analysis
  of affective behavior on mobile devices using EfficientNets", CVPR Workshops; "HSEmotion: High-speed emotion
  recognition library", Software Impacts 14; code Apache-2.0): EfficientNet-B0 (timm, saved whole with
  ``torch.save``), 224² RGB with ImageNet normalisation, 8 AffectNet emotions (anger, contempt, disgust, fear,
  happiness, neutral, sadness, surprise) + valence and arousal regressed; 61.9 % on AffectNet-8. The file is read
  without running its pickle (:mod:`gpuface.models.convert.torch_pickle`) into torchvision's ``efficientnet_b0``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gpuface.core.errors import ChecksumError, InvalidOptionError, WeightsError


@dataclass(frozen=True)
class OnlineModel:
    """A registry entry: name, upstream file name and URL, licence, citation, what it outputs."""

    name: str
    file: str
    url: str
    license: str
    citation: str
    outputs: str


AFFECT_MODELS: dict[str, OnlineModel] = {
    "hsemotion": OnlineModel(
        name="hsemotion", file="enet_b0_8_va_mtl.pt",
        url="https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/models/affectnet_emotions/"
            "enet_b0_8_va_mtl.pt",
        license="Apache-2.0",
        citation="A. V. Savchenko (2022), Video-based frame-level facial analysis of affective behavior on mobile "
                 "devices using EfficientNets, CVPR Workshops (ABAW); HSEmotion enet_b0_8_va_mtl.",
        outputs="8 emotions + valence/arousal"),
    "opengraphau": OnlineModel(
        name="opengraphau", file="model.safetensors",
        url="https://huggingface.co/mexca/mefarg-open-graph-au-resnet50-stage-2/resolve/main/model.safetensors",
        license="Apache-2.0",
        citation="Luo, Song, Xie, Shen, Gunes (2022), Learning Multi-dimensional Edge Feature-based AU Relation "
                 "Graph for Facial Action Unit Recognition, IJCAI; OpenGraphAU ResNet-50 stage 2 as published by "
                 "mexca (HuggingFace mexca/mefarg-open-graph-au-resnet50-stage-2).",
        outputs="41 AUs (27 + 14 left/right)"),
}


#: Identity models whose weights only their official URL carries (same trust-on-first-use record).
IDENTITY_MODELS: dict[str, OnlineModel] = {
    "facenet-vggface2": OnlineModel(
        name="facenet-vggface2", file="20180402-114759-vggface2.pt",
        url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        license="MIT",
        citation="Schroff, Kalenichenko, Philbin (2015), FaceNet, CVPR; D. Sandberg's facenet model 20180402-114759 "
                 "(trained on VGGFace2, LFW 99.65 %) as ported by facenet-pytorch (T. Esler, MIT).",
        outputs="512-d face embeddings (unit length)"),
    **{name: OnlineModel(
        name=name, file=f"vit_anime_{size}.pt", url=f"https://drive.google.com/uc?export=download&id={drive}",
        license="see github.com/arkel23/animesion (research code; DAF:re images from Danbooru)",
        citation="Rios, Cheng, Lai (2021), DAF:re: A Challenging, Crowd-Sourced, Large-Scale, Long-Tailed Dataset "
                 f"For Anime Character Recognition, arXiv:2101.08674; Animesion ViT-{size.upper()} as "
                 "video-to-faces (nsndp) downloads it.",
        outputs=f"{dim}-d anime character embeddings")
       for name, size, drive, dim in (("animesion-vit-b16", "b16", "1hEtmrzlh7RrXuUoxi5eqMQd5yIirQ-XC", 768),
                                      ("animesion-vit-l16", "l16", "1eZai1_gjos6TNeQZg6IY-cIWxtg0Pxah", 1024))},
}
#: Detectors whose weights only their official URL carries.
DETECTOR_MODELS: dict[str, OnlineModel] = {
    "anime-rcnn": OnlineModel(
        name="anime-rcnn", file="mmdet_anime-face_faster-rcnn.pth",
        url="https://github.com/hysts/anime-face-detector/releases/download/v0.0.1/mmdet_anime-face_faster-rcnn.pth",
        license="MIT (hysts/anime-face-detector)",
        citation="hysts, anime-face-detector (2021): Faster R-CNN R50-FPN (Ren et al. 2015; Lin et al. 2017) trained "
                 "with MMDetection on anime faces; video-to-faces' anime detector.",
        outputs="anime face boxes and scores"),
}
ONLINE_MODELS = {**AFFECT_MODELS, **IDENTITY_MODELS, **DETECTOR_MODELS}


def parse_weights_option(items: list[str] | None) -> dict[str, str]:
    """``["hsemotion=/path/enet_b0_8_va_mtl.pt", …]`` → ``{name: path}``.

    Raises:
        InvalidOptionError: not NAME=PATH, an unknown model, or a missing file.
    """
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or name not in ONLINE_MODELS:
            raise InvalidOptionError(f"--weights takes NAME=PATH with NAME one of {', '.join(ONLINE_MODELS)}; "
                                     f"got {item!r}")
        if not Path(path).is_file():
            raise InvalidOptionError(f"--weights {name}: no such file {path}")
        out[name] = path
    return out


def online_weights_file(name: str, path: str | os.PathLike | None = None, online: bool | None = None) -> Path:
    """The local weights file of an online model (:data:`ONLINE_MODELS`): ``path`` if given, else the cached upstream copy, else a
    download from the official URL (when online). The file's sha256 is recorded on first use and checked after.

    Raises:
        InvalidOptionError: unknown model. WeightsError: not available (the message says what to download and
        where to put it). ChecksumError: the cached file changed since it was first recorded.
    """
    from gpuface.core.fetch import download_url, online_by_default, sha256_file
    from gpuface.models.weights import weights_dir

    if name not in ONLINE_MODELS:
        raise InvalidOptionError(f"unknown online model {name!r}; known: {', '.join(ONLINE_MODELS)}")
    model = ONLINE_MODELS[name]
    root = weights_dir()
    cached, record = root / "upstream" / model.file, root / f"{name}.json"
    if path is None and not cached.exists():
        error = "offline"
        if online if online is not None else online_by_default():
            try:
                download_url(model.url, cached)
            except OSError as e:
                error = f"{e.__class__.__name__}: {e}"
        if not cached.exists():
            raise WeightsError(f"model {name} needs {model.file} ({error}): download {model.url} and pass "
                               f"--weights {name}=PATH (or put it at {cached})")
    file = Path(path) if path is not None else cached
    digest = sha256_file(file)
    known = json.loads(record.read_text()).get("sha256") if record.exists() else None
    if known and known != digest and path is None:
        raise ChecksumError(f"model {name}: {file} has sha256 {digest}, recorded {known}; name the file with "
                            f"--weights {name}=PATH to use it")
    if known != digest:
        root.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.part")
        tmp.write_text(json.dumps({"model": name, "file": str(file), "sha256": digest, "license": model.license,
                                   "citation": model.citation, "url": model.url}, indent=1))
        os.replace(tmp, record)
    return file


#: HSEmotion's 8 classes, in its output order.
HSEMOTION_CLASSES = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


class HSEmotionNet(nn.Module):
    """HSEmotion ``enet_b0_8_va_mtl`` on torchvision's EfficientNet-B0: (N, 3, 224, 224) ImageNet-normalised RGB
    → (emotion probabilities (N, 8) in :data:`HSEMOTION_CLASSES` order, valence (N,), arousal (N,)).

    Valence and arousal are the network's two regression outputs, clamped to [-1, 1] (AffectNet's range).
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import efficientnet_b0

        self.net = efficientnet_b0(num_classes=10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return torch.softmax(out[:, :8], dim=1), out[:, 8].clamp(-1, 1), out[:, 9].clamp(-1, 1)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "HSEmotionNet":
        """Load HSEmotion's pickled timm model without running it (:mod:`gpuface.models.convert.torch_pickle`)."""
        from gpuface.models.convert.torch_pickle import read_pickled_module_state, timm_efficientnet_to_torchvision

        model = cls()
        state = timm_efficientnet_to_torchvision(read_pickled_module_state(path), model.net.state_dict())
        model.net.load_state_dict(state)
        return model.eval()


def load_opengraphau(path: str | os.PathLike):
    """:class:`gpuface.models.opengraphau.OpenGraphAU` in eval mode from mexca's weights file (safetensors, or a
    torch-saved state dict read with ``weights_only=True``).

    Raises:
        WeightsError: the file does not hold that model.
    """
    from gpuface.models.opengraphau import OpenGraphAU, convert_mexca_state

    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        model = OpenGraphAU()
        model.load_state_dict(convert_mexca_state({k.removeprefix("module."): v for k, v in state.items()}))
    except (KeyError, RuntimeError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not OpenGraphAU/MEFARG weights in mexca's layout ({e.__class__.__name__}: "
                           f"{str(e)[:200]})") from None
    return model.eval()


__all__ = ["OnlineModel", "AFFECT_MODELS", "IDENTITY_MODELS", "DETECTOR_MODELS", "ONLINE_MODELS", "parse_weights_option",
           "online_weights_file", "HSEmotionNet",
           "HSEMOTION_CLASSES", "load_opengraphau"]
