"""Batched MTCNN against facenet-pytorch's own MTCNN.detect with the same weights, on real media."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import gpuface as gf
from gpuface.stages.detect import nms_min


def _facenet_detect(frames: torch.Tensor):
    from facenet_pytorch import MTCNN

    m = MTCNN(device="cpu")
    boxes, probs, points = m.detect(list(frames.permute(0, 2, 3, 1).numpy()), landmarks=True)
    return boxes, probs, points


def _assert_parity(frames, faces):
    """Every face facenet-pytorch finds and no other: the same count per frame, matched one to one with box IoU
    ≥ 0.999, boxes and keypoints within 0.01 px and scores within 1e-5 (measured: 1.2e-4 px, scores equal)."""
    faces = faces.to("cpu")   # the reference runs on the host (--device cuda: our faces come from the GPU)
    ref_boxes, ref_probs, ref_points = _facenet_detect(frames.cpu())
    matched = 0
    for i in range(len(frames)):
        ours, ours_kp, ours_s = (t[faces.row == i] for t in (faces.boxes, faces.keypoints, faces.scores))
        if ref_boxes[i] is None:
            assert len(ours) == 0, f"frame {i}: facenet found no face, we found {len(ours)}"
            continue
        ref, probs, points = (torch.tensor(np.asarray(a[i], dtype=np.float32)) for a in (ref_boxes, ref_probs,
                                                                                         ref_points))
        assert len(ours) == len(ref), f"frame {i}: facenet found {len(ref)} faces, we found {len(ours)}"
        best, j = box_iou(ref, ours).max(1)
        assert len(set(j.tolist())) == len(ref) and (best >= 0.999).all(), (i, best)
        assert (ours[j] - ref).abs().max() < 0.01 and (ours_kp[j] - points).abs().max() < 0.01
        assert (ours_s[j] - probs).abs().max() <= 1e-5
        matched += int((probs >= 0.9).sum())
    return matched


def test_parity_on_720p_video(clip, faces_clip):
    assert _assert_parity(clip.frames, faces_clip) == 8


def test_parity_on_five_faces(detector, samples):
    img = gf.read_image(samples["multi_face.jpg"])[None]
    faces = detector(img)
    assert (faces.scores >= 0.9).sum() == 5
    assert _assert_parity(img, faces) == 5


def test_parity_on_small_faces(detector, samples):
    """MGT's dancer (~30 px faces, 8 frames): the same faces, scores and boxes as facenet-pytorch."""
    frames = next(iter(gf.VideoReader(samples["dancer.avi"]).batches(8))).frames
    assert _assert_parity(frames, detector(frames)) >= 1


def test_no_face_video_gives_empty_faces(detector, samples):
    batch = next(iter(gf.VideoReader(samples["no_face.mp4"]).batches(6)))
    faces = detector(batch.frames)
    assert (faces.scores >= 0.9).sum() == 0
    empty = detector(torch.zeros(3, 3, 120, 160, dtype=torch.uint8))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.keypoints.shape == (0, 5, 2)


def test_batch_size_does_not_change_results(detector, clip, faces_clip):
    parts = [detector(clip.frames[i:i + 3]) for i in range(0, 8, 3)]
    merged = gf.Faces.cat(parts, [0, 3, 6])
    assert torch.equal(merged.row, faces_clip.row)
    assert torch.allclose(merged.boxes, faces_clip.boxes, atol=1e-3)


def test_filters_and_box_expansion(faces_clip):
    b = faces_clip.boxes
    assert len(gf.filter_faces(faces_clip, (720, 1280), min_size=1000)) == 0
    assert len(gf.filter_faces(faces_clip, (720, 1280), min_border=150)) == 0  # face top is ~113 px from the edge
    assert len(gf.filter_faces(faces_clip, (720, 1280), min_score=0.99, min_size=200, min_border=50)) == 8
    big = gf.expand_boxes(b, (1.5, 1.5, 2.2, 1.2))
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert torch.allclose(big[:, 2] - big[:, 0], 1.5 * w, atol=1e-3)
    assert torch.allclose(big[:, 3] - big[:, 1], 1.7 * h, atol=1e-3)
    sq = gf.expand_boxes(b, square=True, frame_size=(720, 1280))
    assert torch.allclose(sq[:, 2] - sq[:, 0], sq[:, 3] - sq[:, 1], atol=1e-3)
    with pytest.raises(gf.InvalidOptionError):
        gf.expand_boxes(b, (1, 1, 0, 1))


def test_nms_min_matches_greedy_reference():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 200
    wh = torch.rand(60, 2, generator=g) * 60 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=g)
    groups = torch.randint(0, 3, (60,), generator=g)
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy

    ref = batched_nms_numpy(boxes, scores, groups, 0.7, "Min")
    ours = nms_min(boxes, scores, groups, 0.7)
    assert sorted(ref.tolist()) == sorted(ours.tolist())


def test_bad_frames_are_rejected(detector):
    with pytest.raises(gf.InvalidOptionError):
        detector(torch.zeros(1, 3, 64, 64))
    with pytest.raises(gf.InvalidOptionError):
        gf.FaceDetector("retinaface")


def _random_boxes(seed: int, n: int = 600, groups: int = 5):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 600
    wh = 20 + torch.rand(n, 2, generator=g) * 120
    return (torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g),
            torch.randint(0, groups, (n,), generator=g))


def test_boxes_match_torchvision(tmp_path):
    """gpuface.ops.boxes (torchvision's NMS kernel loaded without importing torchvision, and the IoU formula) keeps
    exactly the boxes torchvision.ops.batched_nms keeps, in the same order, on 600 overlapping boxes in 5 groups
    at three thresholds, with IoUs equal to torchvision.ops.box_iou; in a fresh process it never imports
    torchvision (1.3 s of start-up) and still agrees."""
    import json
    import subprocess
    import sys

    from torchvision.ops import batched_nms as tv_batched_nms

    from gpuface.ops.boxes import batched_nms, box_iou as our_iou

    boxes, scores, groups = _random_boxes(0)
    assert torch.equal(our_iou(boxes, boxes[:50]), box_iou(boxes, boxes[:50]))
    for thr in (0.3, 0.5, 0.7):
        kept = batched_nms(boxes, scores, groups, thr)
        assert 50 < len(kept) < len(boxes)
        assert torch.equal(kept, tv_batched_nms(boxes, scores, groups, thr))
    assert len(batched_nms(boxes[:0], scores[:0], groups[:0], 0.5)) == 0

    boxes, scores, groups = _random_boxes(1)
    code = ("import sys, json, torch; from gpuface.ops.boxes import batched_nms; b, s, g = torch.load(sys.argv[1]); "
            "print(json.dumps([batched_nms(b, s, g, 0.5).tolist(), 'torchvision' in sys.modules]))")
    saved = tmp_path / "boxes.pt"
    torch.save((boxes, scores, groups), saved)
    out = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, check=True)
    kept, imported = json.loads(out.stdout)
    assert not imported
    assert kept == tv_batched_nms(boxes, scores, groups, 0.5).tolist()
