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
    faces = faces.to("cpu")   # the reference runs on the host (--device cuda: our faces come from the GPU)
    ref_boxes, ref_probs, ref_points = _facenet_detect(frames.cpu())
    matched = 0
    for i in range(len(frames)):
        ours = faces.boxes[faces.row == i]
        ours_kp = faces.keypoints[faces.row == i]
        if ref_boxes[i] is None:
            assert (faces.scores[faces.row == i] < 0.9).all()
            continue
        ref = torch.tensor(np.asarray(ref_boxes[i], dtype=np.float32))
        probs = np.asarray(ref_probs[i], dtype=np.float32)
        assert len(ours) > 0, f"frame {i}: facenet found {len(ref)} faces, we found none"
        iou = box_iou(ref, ours)
        best, j = iou.max(1)
        for k in range(len(ref)):
            if probs[k] >= 0.9:
                assert best[k] >= 0.95, f"frame {i}: face {k} (score {probs[k]:.3f}) best IoU {best[k]:.3f}"
                kp_err = (ours_kp[j[k]] - torch.tensor(np.asarray(ref_points[i][k], dtype=np.float32))).norm(dim=1)
                assert kp_err.max() < 2.0
                matched += 1
    return matched


def test_parity_on_720p_video(clip, faces_clip):
    assert _assert_parity(clip.frames, faces_clip) == 8


def test_parity_on_five_faces(detector, samples):
    img = gf.read_image(samples["multi_face.jpg"])[None]
    faces = detector(img)
    assert (faces.scores >= 0.9).sum() == 5
    assert _assert_parity(img, faces) == 5


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
