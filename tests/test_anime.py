"""Anime style (``gpuface faces --style anime``): animeface's detector held against animeface itself run with the
Pillow it was built for, the Animesion ViT port against ``pytorch_pretrained_vit`` (its architecture) on random
weights, and the whole job on a real anime frame."""
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpuface.io.images import read_image

#: Pillow 10.4.0, the last line whose image struct animeface 2.0.3's extension reads (CPython 3.11 manylinux wheel).
PILLOW_10 = ("pillow==10.4.0", "pillow-10.4.0-cp311-cp311-manylinux_2_28_x86_64.whl",
             "76a911dfe51a36041f2e756b00f96ed84677cdeb75d25c767f296c1c1eda1319")

REFERENCE = """
import json, sys, PIL, animeface
from PIL import Image
assert PIL.__version__ == "10.4.0", PIL.__version__
faces = animeface.detect(Image.open(sys.argv[1]).convert("RGB"))
print(json.dumps([[f.likelihood, f.face.pos.x, f.face.pos.y, f.face.pos.width, f.face.pos.height,
                   f.nose.pos.x, f.nose.pos.y, f.chin.pos.x, f.chin.pos.y] for f in faces]))
"""


@pytest.fixture(scope="module")
def old_pillow(tmp_path_factory):
    """A Python path holding Pillow 10.4 (the PyPI wheel, sha256 pinned) ahead of the installed one."""
    root = tmp_path_factory.mktemp("pillow10")
    req, name, sha = PILLOW_10
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                    "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                    "-d", str(root), req], check=True, timeout=600)
    wheel = root / name
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == sha
    zipfile.ZipFile(wheel).extractall(root / "site")
    return root / "site"


def _tiles(img: torch.Tensor) -> torch.Tensor:
    """The frame twice side by side over itself flipped: four characters, two of them mirrored."""
    row = torch.cat([img, img.flip(-1)], -1)
    return torch.cat([row, row], -2)


def test_animeface_detector_equals_animeface_with_its_pillow(samples, old_pillow, tmp_path):
    """Boxes, likelihoods and points of :class:`AnimeFaceDetector` (ctypes struct, today's Pillow untouched) are
    animeface's own results with Pillow 10.4, on the anime frame and on four copies of it in one image; a batch of
    both gives each frame's faces as alone."""
    from gpuface.io.encode import write_image
    from gpuface.models.anime import AnimeFaceDetector

    det = AnimeFaceDetector()
    frame = read_image(samples["anime_frame.png"])
    tiled = _tiles(frame)
    write_image(tmp_path / "tiled.png", tiled)
    for img, path, n in ((frame, samples["anime_frame.png"], 1), (tiled, str(tmp_path / "tiled.png"), 4)):
        r = subprocess.run([sys.executable, "-c", REFERENCE, path], env={"PYTHONPATH": str(old_pillow),
                           "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        ref = sorted(json.loads(r.stdout))
        faces = det(img[None])
        ours = sorted([[s, x1, y1, x2 - x1, y2 - y1, *kp[2], *kp[4]] for s, (x1, y1, x2, y2), kp in
                       zip(faces.scores.tolist(), faces.boxes.tolist(), faces.keypoints.tolist())])
        assert len(ref) == len(ours) == n
        np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-6)
    both = det(torch.stack([frame, tiled[:, :frame.shape[1], :frame.shape[2]]]))
    alone = det(frame[None])
    assert both.row.tolist().count(0) == 1 and torch.equal(both.boxes[both.row == 0], alone.boxes)
    x1, y1, x2, y2 = alone.boxes[0].tolist()
    left, right, nose, mouth, chin = alone.keypoints[0].tolist()
    assert left[0] < right[0] and all(x1 <= p[0] <= x2 and y1 <= p[1] <= y2 for p in (left, right, nose, mouth))
    assert max(left[1], right[1]) < nose[1] < mouth[1] < chin[1]          # eyes, nose, mouth, chin top to bottom


def test_animesion_vit_port_equals_pytorch_pretrained_vit(tmp_path):
    """On random weights in the Animesion checkpoint layout (``model.`` + lukemelas' ``pytorch_pretrained_vit``
    names, plus the classifier and text heads Animesion saves), torchvision's ViT loaded by
    :func:`load_animesion_vit` gives ``pytorch_pretrained_vit``'s class-token features within 1e-5; ViT-L/16's
    names and shapes convert too. A file without the encoder is one named error."""
    from pytorch_pretrained_vit import ViT

    from gpuface.core.errors import WeightsError
    from gpuface.models.anime import animesion_vit, convert_animesion_state, load_animesion_vit

    torch.manual_seed(0)
    ref = ViT("B_16", pretrained=False, image_size=128, num_classes=3263).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.05)
    state = {f"model.{k}": v for k, v in ref.state_dict().items()}
    state["class_head.1.weight"] = torch.zeros(10, 768)
    torch.save({"model_state_dict": state}, tmp_path / "vit_b16.pt")
    ours = load_animesion_vit("animesion-vit-b16", tmp_path / "vit_b16.pt")
    ref.fc = torch.nn.Identity()
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() < 1e-5
    large = ViT("L_16", pretrained=False, image_size=128)
    target = animesion_vit("animesion-vit-l16").state_dict()
    converted = convert_animesion_state({f"model.{k}": v for k, v in large.state_dict().items()})
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in target.items()}
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an Animesion"):
        load_animesion_vit("animesion-vit-b16", tmp_path / "other.pt")


@pytest.fixture(scope="module")
def anime_clip(samples, tmp_path_factory):
    """The anime frame as a 3-s clip: 1 s alone, 1 s mirrored, 1 s with four characters (scaled to fit)."""
    import torch.nn.functional as F

    from gpuface.io.encode import VideoWriter

    frame = read_image(samples["anime_frame.png"])[:, :360, :502]
    four = F.interpolate(_tiles(frame)[None].float(), size=frame.shape[1:], mode="area")[0].round().byte()
    path = tmp_path_factory.mktemp("anime") / "anime.mp4"
    with VideoWriter(path, 10, 502, 360) as w:
        for img in (frame, frame.flip(-1), four):
            w.write(img[None].expand(10, -1, -1, -1))
    return path


def test_faces_style_anime_crops_the_characters(anime_clip, tmp_path, capsys, monkeypatch):
    """``faces --style anime --mode detection`` on the clip: one crop a second for the first two seconds and up to
    four in the third, each the animeface box of its frame (pixel-equal to that part of the decoded frame); the
    style's embedder offline is one error line naming the file to fetch; a real-face detector with the anime style
    is refused; with an Animesion checkpoint in the weights folder (random weights) the full job groups the crops
    and writes the log and gallery."""
    from pytorch_pretrained_vit import ViT

    from gpuface.cli import main
    from gpuface.io.decode import Selection, VideoReader

    out = tmp_path / "det"
    args = [str(anime_clip), "--style", "anime", "--hash-thr", "-1", "--quiet"]
    assert main(["faces", *args, "--mode", "detection", "-o", str(out)]) == 0
    log = pd.read_csv(out / "faces.csv")
    kept = log[log["status"] == "kept"]
    assert kept.groupby("frame").size().tolist()[:2] == [1, 1] and 1 <= kept.groupby("frame").size().iloc[-1] <= 4
    wanted = tuple(int(f) for f in kept["frame"].unique())
    frames = {int(i): f for b in VideoReader(str(anime_clip)).batches(8, Selection(frames=wanted))
              for i, f in zip(b.index.tolist(), b.frames)}
    for r in kept.itertuples():
        crop = read_image(r.file)
        assert crop.shape[1:] == (r.y2 - r.y1, r.x2 - r.x1)
        ref = frames[r.frame][:, r.y1:r.y2, r.x1:r.x2].float()
        assert (crop.float() - ref).abs().mean() < 3                      # JPEG of the same pixels
    monkeypatch.setenv("GPUFACE_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("GPUFACE_OFFLINE", "1")
    capsys.readouterr()
    assert main(["faces", *args, "-o", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vit_anime_b16.pt" in err[0] and not (tmp_path / "full" / "faces.csv").exists()
    assert main(["faces", *args, "--detector", "blazeface-full", "-o", str(tmp_path / "x")]) == 2
    assert "--style anime" in capsys.readouterr().err
    net = ViT("B_16", pretrained=False, image_size=128, num_classes=10)
    (tmp_path / "w" / "upstream").mkdir(parents=True)
    torch.save({f"model.{k}": v for k, v in net.state_dict().items()}, tmp_path / "w" / "upstream" / "vit_anime_b16.pt")
    assert main(["faces", *args, "--clusters", "2", "--enc-dup-thr", "-1", "-o", str(tmp_path / "full")]) == 0
    log = pd.read_csv(tmp_path / "full" / "faces.csv")
    kept = log[log["status"] == "kept"]
    assert set(kept["group"].astype(int)) == {0, 1}
    for r in kept.itertuples():
        assert Path(r.file).exists() and Path(r.file).parent == tmp_path / "full" / "faces" / str(int(r.group))
    assert (tmp_path / "full" / "faces" / "index.html").exists()
