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


#: MMDetection 3.3 and what it imports, as wheels (sha256 pinned), for the Faster R-CNN reference in a subprocess:
#: pure-Python packages, and pycocotools and shapely built for CPython 3.11. mmcv-lite is MMCV without its compiled
#: operators; the reference stands in torchvision's NMS and RoIAlign for the two the detector calls.
MMDET_WHEELS = {
    "mmdet==3.3.0": "2e23e291281ac57e7dccf8678e957da45fbe560ce78a1f5ded6afeccd3730f17",
    "mmengine==0.10.7": "262ac976a925562f78cd5fd14dd1bc9b680ed0aa81f0d85b723ef782f99c54ee",
    "mmcv-lite==2.1.0": "1d9913c35f793de4a3a022b93cecb712e1e7262eb4704eb8cd15e623dd375000",
    "addict==2.4.0": "249bb56bbfd3cdc2a004ea0ff4c2b6ddc84d53bc2194761636eb314d5cfa5dfc",
    "termcolor==3.3.0": "cf642efadaf0a8ebbbf4bc7a31cec2f9b5f21a9f726f4ccbb08192c9c26f43a5",
    "terminaltables==3.1.10": "e4fdc4179c9e4aab5f674d80f09d76fa436b96fdc698a8505e0a36bf0804a874",
    "yapf==0.43.0": "224faffbc39c428cb095818cf6ef5511fdab6f7430a10783fdfb292ccf2852ca",
    "markdown-it-py==4.3.0": "7aa1511a46c39138de78d9eba92ce47e63124d8003fc98b3a351909e04239efa",
    "mdurl==0.1.2": "84008a41e51615a49fc9966191ff91509e3c40b939176e643fd50a5c2196b8f8",
    "platformdirs==4.14.9": "d0d3a23e7ff282cfa94b77f5a22b81030dcb68ba0430f90c74f4bd8d090782ea",
    "pygments==2.21.0": "2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9",
    "rich==15.0.0": "33bd4ef74232fb73fe9279a257718407f169c09b78a87ad3d296f548e27de0bb",
    "pycocotools==2.0.11": "18ba75ff58cedb33a85ce2c18f1452f1fe20c9dd59925eec5300b2bf6205dbe1",
    "shapely==2.2.0": "5d61088e2ef71dafad0dd4fae8a521cc1f20da4a89d3096bab5b3260b39b3052",
}

#: hysts' Faster R-CNN configuration as MMDetection 3 builds it (its model dict, plus the parts MMDetection 3
#: requires), random weights, every stage's output saved.
MMDET_REFERENCE = """
import sys, types, runpy, torch, torchvision
ext = types.ModuleType("mmcv._ext")
def nms(boxes, scores, iou_threshold, offset):
    assert offset == 0
    return torchvision.ops.nms(boxes, scores, iou_threshold)
def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width, spatial_scale,
                      sampling_ratio, pool_mode, aligned):
    assert pool_mode == 1   # average
    output.copy_(torchvision.ops.roi_align(input, rois, (aligned_height, aligned_width), spatial_scale,
                                           sampling_ratio, aligned))
def missing(name):
    if name.startswith("__"):
        raise AttributeError(name)
    def f(*a, **k):
        raise NotImplementedError(name)
    return f
ext.nms, ext.roi_align_forward, ext.__getattr__ = nms, roi_align_forward, missing
sys.modules["mmcv._ext"] = ext
import mmdet.models
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
DefaultScope.get_instance("gpuface-test", scope_name="mmdet")
cfg = runpy.run_path(sys.argv[1])["model"]
cfg.update(data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                                  std=[58.395, 57.12, 57.375], bgr_to_rgb=False, pad_size_divisor=32),
           train_cfg=None)
model = MODELS.build(ConfigDict(cfg)).eval()
torch.manual_seed(0)
with torch.no_grad():
    for p in model.parameters():
        torch.nn.init.normal_(p, std=(2 / p[0].numel()) ** 0.5 if p.ndim > 1 else 0.05)
    for name, b in model.named_buffers():
        if name.endswith("running_var"):
            b.uniform_(0.5, 1.5)
        elif name.endswith("running_mean"):
            b.normal_(0, 0.1)
    x = torch.load(sys.argv[2])
    h, w = x.shape[-2:]
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), pad_shape=(h, w)))
    data = model.data_preprocessor({"inputs": [x], "data_samples": [sample]}, False)
    feats = model.extract_feat(data["inputs"])
    cls, reg = model.rpn_head(feats)
    anchors = model.rpn_head.prior_generator.grid_priors([f.shape[-2:] for f in feats], device="cpu")
    props = model.rpn_head.predict(feats, data["data_samples"], rescale=False)[0]
    dets = model.roi_head.predict_bbox(feats, [sample.metainfo], [props], model.roi_head.test_cfg, rescale=False)[0]
    final = model.predict(data["inputs"], data["data_samples"], rescale=False)[0].pred_instances
torch.save({"meta": {}, "state_dict": model.state_dict()}, sys.argv[3])
torch.save({"feats": list(feats), "rpn": list(cls) + list(reg), "anchors": torch.cat(anchors),
            "proposals": props.bboxes, "proposal_scores": props.scores, "dets": dets.bboxes,
            "det_scores": dets.scores, "final": final.bboxes, "final_scores": final.scores}, sys.argv[4])
"""


@pytest.fixture(scope="module")
def mmdet_site(tmp_path_factory):
    """A Python path with MMDetection 3.3 (:data:`MMDET_WHEELS`) and hysts' configuration file (PyPI
    anime-face-detector 0.0.9, sha256 pinned)."""
    from gpuface.core.fetch import PyPIMember, fetch_file

    root = tmp_path_factory.mktemp("mmdet")
    args = ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", *args,
                    "-d", str(root / "wheels"), *MMDET_WHEELS], check=True, timeout=900)
    for req, sha in MMDET_WHEELS.items():
        name, version = req.split("==")
        wheel = next((root / "wheels").glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == sha, wheel
        zipfile.ZipFile(wheel).extractall(root / "site")
    member = "anime_face_detector/configs/mmdet/faster-rcnn.py"
    config = fetch_file([PyPIMember("anime-face-detector", "0.0.9", member)],
                        "a18f0e2ac6ec30f9fe4aa42892d0b2ef60b2bfe97206cea338e72d1a7743c77c", root / "faster-rcnn.py")
    return root / "site", config


@pytest.fixture(scope="module")
def mmdet_reference(mmdet_site, samples, tmp_path_factory):
    """MMDetection's run (:data:`MMDET_REFERENCE`) on the anime frame at 1120 x 800 with noise of ±4 levels:
    (input, every stage's output, the checkpoint MMDetection saved)."""
    import torch.nn.functional as F

    site, config = mmdet_site
    tmp = tmp_path_factory.mktemp("rcnn")
    frame = read_image(samples["anime_frame.png"])[None].float()
    torch.manual_seed(1)
    x = (F.interpolate(frame, size=(800, 1120), mode="bilinear")[0] + torch.rand(3, 800, 1120) * 8 - 4).clamp(0, 255)
    torch.save(x, tmp / "x.pt")
    r = subprocess.run([sys.executable, "-c", MMDET_REFERENCE, str(config), str(tmp / "x.pt"), str(tmp / "ckpt.pth"),
                        str(tmp / "ref.pt")], env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp)},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return x, torch.load(tmp / "ref.pt"), tmp / "ckpt.pth"


def test_anime_rcnn_port_equals_mmdetection(mmdet_reference):
    """hysts' anime-face Faster R-CNN on torchvision (:func:`load_anime_faster_rcnn`) against MMDetection 3.3's own
    FasterRCNN built from hysts' configuration, on the same random weights (saved by MMDetection as a checkpoint
    and loaded by ours) and the anime frame at 1120 x 800 (no resize; noise of ±4 levels so that no flat region
    ties the random network's scores): FPN features and RPN outputs within 1e-5, anchors equal, the 1000 proposals
    (the first 500 identical; any other that differs shares its score, within the RPN outputs' 1e-5, with another
    proposal: a near-tie the two NMS broke in another order; on a 2-core AVX2 VM one of 1000 was 1.1e-6 from its
    nearest neighbour), the detections from MMDetection's
    proposals (identical but for at most 5 near-ties that NMS swapped: each detection of MMDetection's that is
    not ours has one of ours not MMDetection's within 1e-4 of its score, 3 on the AVX2 VM; scores within 1e-5) and
    the whole detector's top 10 scores (at least 8 of MMDetection's 10 among ours within 1e-4, the random network's
    near-ties; on the AVX2 VM a proposal swapped in a near-tie replaced one detection), each of those with a score
    of its own identical."""
    import torch.nn.functional as F
    from torchvision.ops import box_iou

    from gpuface.models.anime import load_anime_faster_rcnn

    from torchvision.ops import box_iou

    from gpuface.models.anime import load_anime_faster_rcnn

    x, ref, ckpt = mmdet_reference
    net = load_anime_faster_rcnn(ckpt)
    with torch.no_grad():
        images, _ = net.transform([x / 255])
        feats = net.backbone(images.tensors)
        for a, b in zip(ref["feats"], feats.values()):
            assert (a - b).abs().max() < 1e-5
        cls, reg = net.rpn.head(list(feats.values()))
        assert max((a - b).abs().max() for a, b in zip(ref["rpn"], cls + reg)) < 1e-5
        assert torch.equal(net.rpn.anchor_generator(images, list(feats.values()))[0], ref["anchors"])
        proposals = net.rpn(images, feats)[0][0]
        assert len(proposals) == len(ref["proposals"]) == 1000
        same = box_iou(ref["proposals"], proposals).max(1).values > 0.9999
        scores = ref["proposal_scores"]
        assert same[:500].all() and all(((scores - v).abs() < 1e-5).sum() > 1 for v in scores[~same])
        dets = net.roi_heads(feats, [ref["proposals"]], images.image_sizes)[0][0]
        best, j = box_iou(ref["dets"], dets["boxes"]).max(1)
        assert len(dets["boxes"]) == len(ref["dets"]) == 100
        ours = set(j[best > 0.9999].tolist())
        missing, extra = ref["det_scores"][best <= 0.9999], dets["scores"][[k for k in range(100) if k not in ours]]
        assert len(missing) <= 5 and all((extra - v).abs().min() < 1e-4 for v in missing)
        assert (ref["det_scores"] - dets["scores"][j])[best > 0.9999].abs().max() < 1e-5
        final = net([x / 255])[0]
        top, mine = ref["final_scores"][:10], final["scores"][:10]
        found = torch.tensor([bool((mine - v).abs().min() < 1e-4) for v in top])
        assert found.sum() >= 8
        untied = torch.tensor([((ref["final_scores"] - v).abs() < 1e-4).sum() == 1 for v in top]) & found
        assert untied.sum() >= 3
        assert (box_iou(ref["final"][:10][untied], final["boxes"][:10]).max(1).values > 0.9999).all()


def test_anime_rcnn_detector_and_its_weights(mmdet_reference, tmp_path, monkeypatch, capsys):
    """``FaceDetector("anime-rcnn")`` gives the network's own detections as :class:`Faces` (rows, boxes, scores, no
    keypoints) for a batch of two frames; offline without the file, ``faces --detector anime-rcnn`` fails in one line
    naming the file; a file that is not the detector is a named error."""
    from gpuface.cli import main
    from gpuface.core.errors import WeightsError
    from gpuface.models.anime import load_anime_faster_rcnn
    from gpuface.stages.detect import FaceDetector

    x, ref, ckpt = mmdet_reference
    frames = x.round().to(torch.uint8)
    det = FaceDetector("anime-rcnn", weights_file=ckpt)
    faces = det(torch.stack([frames, frames.flip(-1)]))
    with torch.no_grad():
        own = load_anime_faster_rcnn(ckpt)([frames.float() / 255])[0]
    assert faces.keypoints.shape == (len(faces), 0, 2) and (faces.row == 0).sum() == len(own["boxes"])
    assert torch.allclose(faces.boxes[faces.row == 0], own["boxes"], atol=1e-3)
    assert torch.allclose(faces.scores[faces.row == 0], own["scores"], atol=1e-5)
    monkeypatch.setenv("GPUFACE_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("GPUFACE_OFFLINE", "1")
    capsys.readouterr()
    assert main(["faces", str(tmp_path), "--style", "anime", "--detector", "anime-rcnn", "-m", "detection",
                 "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mmdet_anime-face_faster-rcnn.pth" in err[0]
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not the anime-face Faster R-CNN"):
        FaceDetector("anime-rcnn", weights_file=tmp_path / "other.pth")


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
