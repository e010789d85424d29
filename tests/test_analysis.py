"""Optical flow (batched pyramidal Lucas–Kanade, sparse and dense) and its visualisation on real frames."""
import math

import kornia
import pytest
import torch
import torch.nn.functional as F

from gpuface.ops.analysis import landmark_flow, lucas_kanade
from gpuface.core.errors import InvalidOptionError
from gpuface.stages.landmarks import FaceLandmarker


@pytest.fixture(scope="module")
def tracked_clip(clip):
    lm = FaceLandmarker("blazeface-short", max_faces=1)
    return clip, lm(clip.frames, lm.new_state())


@pytest.mark.parametrize("shift", [(2.3, -1.7), (-9.5, 4.0)])
def test_lucas_kanade_recovers_a_known_translation(tracked_clip, shift):
    clip, faces = tracked_clip
    grey = kornia.color.rgb_to_grayscale(clip.frames[:4].float() / 255)
    h, w = grey.shape[-2:]
    dx, dy = shift
    theta = torch.tensor([[1, 0, -2 * dx / w], [0, 1, -2 * dy / h]], dtype=torch.float32)[None].expand(4, 2, 3)
    moved = F.grid_sample(grey, F.affine_grid(theta, list(grey.shape), align_corners=False), align_corners=False,
                          padding_mode="border")
    flow, ok, err = lucas_kanade(grey, moved, faces.landmarks[:4, :, :2] - 0.5)
    assert ok.float().mean() > 0.8
    assert (flow[ok] - torch.tensor([dx, dy])).norm(dim=1).median() < 0.1
    assert err[ok].mean() < 0.01


def test_landmark_flow_table_on_consecutive_frames(tracked_clip):
    clip, faces = tracked_clip
    table = landmark_flow(clip.frames, faces.landmarks, clip.index, clip.pts)
    assert len(table) == 7 and list(table.columns[:5]) == ["frame", "next_frame", "time_s", "points", "tracked"]
    assert (table["tracked"] > 400).all()
    # LK flow of the landmarks agrees with the landmarks' own motion (FaceMesh tracking) within ~1 px
    motion = (faces.landmarks[1:, :, :2] - faces.landmarks[:-1, :, :2]).norm(dim=-1).mean(dim=1)
    assert (torch.tensor(table["mean_magnitude"].to_numpy()) - motion).abs().max() < 1.5
    assert (table["next_frame"] - table["frame"] == 1).all()
    with pytest.raises(InvalidOptionError):
        lucas_kanade(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 2), window=4)


def test_lucas_kanade_equals_opencv(tracked_clip):
    """The reference is OpenCV's pyramidal LK (``cv2.calcOpticalFlowPyrLK``, Bouguet 2001) with the same window,
    pyramid and iterations, on the same grey frames and landmark points: measured median 0.002 px, 95th
    percentile 0.01 px apart on the 7 frame pairs; every point we track OpenCV tracks too."""
    import cv2
    import numpy as np

    clip, faces = tracked_clip
    grey = (kornia.color.rgb_to_grayscale(clip.frames.float() / 255) * 255).round()
    points = faces.landmarks[:-1, :, :2]
    flow, ok, _ = lucas_kanade(grey[:-1] / 255, grey[1:] / 255, points, window=15, levels=3, iterations=10)
    assert ok.float().mean() > 0.85
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.01)
    for i in range(len(points)):
        p = points[i].numpy().astype(np.float32).reshape(-1, 1, 2)
        a, b = (grey[j, 0].to(torch.uint8).numpy() for j in (i, i + 1))
        q, status, _ = cv2.calcOpticalFlowPyrLK(a, b, p, None, winSize=(15, 15), maxLevel=2, criteria=criteria)
        tracked = ok[i].numpy()
        assert status.ravel()[tracked].all()
        apart = np.linalg.norm(flow[i].numpy()[tracked] - (q - p).reshape(-1, 2)[tracked], axis=1)
        assert np.median(apart) < 0.01 and np.percentile(apart, 95) < 0.05, (i, np.median(apart))


def test_analyse_cli(samples, tmp_path):
    import pandas as pd

    from gpuface.cli import main

    assert main(["analyse", samples["sample_01.mp4"], samples["no_face.mp4"], "-o", str(tmp_path), "--end", "1.5",
                 "--batch-size", "16", "--space", "lab", "--regions", "face_skin", "chin", "--dense", "--flow-video", "--quiet"]) == 0
    colours = pd.read_parquet(tmp_path / "colour_means.parquet")
    assert {"face_skin_L", "face_skin_a", "chin_b"} <= set(colours.columns)
    assert (colours["video"] == samples["sample_01.mp4"]).all() and len(colours) == 45
    flow = pd.read_parquet(tmp_path / "landmark_flow.parquet")
    assert len(flow) == 44 and (flow["next_frame"] - flow["frame"] == 1).all()   # pairs across batch borders
    dense = pd.read_parquet(tmp_path / "dense_flow.parquet")
    s1 = dense[dense["video"] == samples["sample_01.mp4"]]
    assert len(s1) == 44 and (s1["face_magnitude"] < 5).all() and s1["frame"].is_monotonic_increasing
    from gpuface.io.decode import probe

    for stem in ("sample_01", "no_face"):                      # one visualisation per video, every frame
        info, source = probe(str(tmp_path / f"{stem}_flow.mp4")), probe(samples[f"{stem}.mp4"])
        assert info.fps == source.fps and info.num_frames == math.ceil(1.5 * source.fps)    # frames before 1.5 s


def test_draw_flow_codes_direction_and_draws_vectors(tracked_clip):
    from gpuface.ops.analysis import draw_flow, flow_to_rgb

    clip, faces = tracked_clip
    frames = clip.frames[:2]
    plain = draw_flow(frames)
    assert torch.equal(plain, (frames.float() * 0.5).round().byte())             # half brightness, nothing else
    right = torch.zeros(2, 2, *frames.shape[-2:])
    right[:, 0] = 8.0                                                            # 8 px to the right: pure red
    assert torch.equal(draw_flow(frames, right)[:, :, 0, 0], torch.tensor([[255, 0, 0]] * 2, dtype=torch.uint8))
    down = torch.zeros(1, 2, 1, 1)
    down[:, 1] = 4.0                                                             # 90 deg (down), half length
    hsv = kornia.color.rgb_to_hsv(flow_to_rgb(down).float() / 255)
    assert abs(float(hsv[0, 0]) - torch.pi / 2) < 0.02 and abs(float(hsv[0, 2]) - 0.5) < 0.01
    points = faces.landmarks[0, :50, :2]
    vectors = torch.tensor([[5.0, 0.0]]).expand(50, 2)
    out = draw_flow(frames, points=points, vectors=vectors, row=torch.zeros(50, dtype=torch.long), scale=2.0)
    px = points.floor().long()
    assert (out[0, :, px[:, 1], px[:, 0]] == 255).all()                           # white dots on the points
    tip = (points + torch.tensor([8.0, 0.0])).floor().long()                     # on the red segment, not a dot
    red = out[0, :, tip[:, 1], tip[:, 0]]
    assert ((red[0] == 255) & (red[1] == 40)).float().mean() > 0.5
    assert torch.equal(out[1], plain[1])                                          # frame 1 has no points
    with pytest.raises(InvalidOptionError):
        flow_to_rgb(right, max_magnitude=0)


def test_dense_flow_recovers_a_known_translation(tracked_clip):
    from gpuface.ops.analysis import dense_flow, dense_flow_summary
    from gpuface.ops.regions import region_masks

    clip, faces = tracked_clip
    grey = kornia.color.rgb_to_grayscale(clip.frames[:2].float() / 255)
    h, w = grey.shape[-2:]
    dx, dy = 3.4, -2.1
    theta = torch.tensor([[1, 0, -2 * dx / w], [0, 1, -2 * dy / h]], dtype=torch.float32)[None].expand(2, 2, 3)
    moved = F.grid_sample(grey, F.affine_grid(theta, list(grey.shape), align_corners=False), align_corners=False,
                          padding_mode="border")
    flow = dense_flow(grey, moved)
    assert flow.shape == (2, 2, h, w)
    mask = region_masks(faces.landmarks[:2], torch.arange(2), "face_oval", 2, (h, w))
    table = dense_flow_summary(flow, mask, clip.index[:2], clip.pts[:2])
    assert (table["face_dx"] - dx).abs().max() < 0.15 and (table["face_dy"] - dy).abs().max() < 0.15
    assert (table["face_magnitude"] - (dx ** 2 + dy ** 2) ** 0.5).abs().max() < 0.3
    # real motion between consecutive frames: the eigenvalue test silences untextured background (wall, blur)
    # and leaves the face's flow as it was
    real = {e: dense_flow(grey[:1], kornia.color.rgb_to_grayscale(clip.frames[1:2].float() / 255),
                          min_eigenvalue=e).norm(dim=1, keepdim=True) for e in (0.0, 1e-4)}
    face, background = mask[:1] > 0, mask[:1] == 0
    assert float(real[1e-4][background].mean()) < 0.5 * float(real[0.0][background].mean())
    assert abs(float(real[1e-4][face].mean()) / float(real[0.0][face].mean()) - 1) < 0.05
