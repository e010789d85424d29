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


def test_farneback_dense_flow_equals_pyfames_own_analysis(pyfame, samples, tmp_path, monkeypatch):
    """``--dense --dense-method farneback`` against PyFAME 1.0.10's ``analyse_optical_flow_dense`` run on the same
    file (its frame_step 1): the same frame pairs, and per pair its "mean magnitude" and "deviation magnitude"
    within 1e-5 (the same grey frames, the same OpenCV call); "mean angle" within 1e-3 (measured 4e-4: OpenCV's
    ``cartToPolar`` approximates atan2 to ~0.3°, we take the exact one) and "deviation angle" within 1e-2
    (measured 3.6e-3: near-horizontal vectors pointing left of 0 fall on either side of the 0/2π wrap)."""
    import numpy as np
    import pandas as pd

    from gpuface.cli import main

    data = tmp_path / "data"
    for sub in ("raw", "processed", "analysis"):
        (data / sub).mkdir(parents=True)
    clip = data / "raw" / "clip.mp4"
    import av
    with av.open(samples["single_face.mp4"]) as i, av.open(str(clip), "w") as o:   # 12 frames, re-encoded
        s = o.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        for n, frame in enumerate(i.decode(video=0)):
            if n == 12:
                break
            o.mux(s.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        o.mux(s.encode())
    monkeypatch.chdir(tmp_path)
    import matplotlib

    # PyFAME 1.0.10 calls matplotlib.cm.get_cmap, removed in Matplotlib 3.9 (it pins an older one): the same function
    monkeypatch.setattr(matplotlib.cm, "get_cmap", matplotlib.colormaps.get_cmap, raising=False)
    from pyfame.analyse.analyse_optical_flow_dense import analyse_optical_flow_dense

    outputs, _ = analyse_optical_flow_dense(pd.DataFrame({"Absolute Path": [str(clip)]}), frame_step=1)
    ref = outputs["clip"]
    assert main(["analyse", str(clip), "-o", str(tmp_path / "ours"), "--dense", "--dense-method", "farneback",
                 "--no-flow", "--quiet", "--device", "cpu"]) == 0
    ours = pd.read_parquet(tmp_path / "ours" / "dense_flow.parquet")
    assert len(ours) == len(ref) == 11 and (ours["frame"].to_numpy() == np.arange(11)).all()
    for a, b, rtol in (("frame_magnitude", "mean magnitude", 1e-5), ("std_magnitude", "deviation magnitude", 1e-5),
                       ("mean_angle", "mean angle", 1e-3), ("std_angle", "deviation angle", 1e-2)):
        np.testing.assert_allclose(ours[a].to_numpy(), ref[b].to_numpy(), rtol=rtol, err_msg=a)


def test_corner_flow_follows_pyfames_opencv_calls(pyfame, samples, tmp_path):
    """``--flow-points corners`` against PyFAME 1.0.10's sparse flow done with OpenCV itself: its parameters read
    from its ``SparseFlowAnalysisParameters`` (ast), ``goodFeaturesToTrack`` in the face oval of the first frame and
    ``calcOpticalFlowPyrLK`` frame after frame, lost points dropped: the same corners, the same points tracked,
    and per pair a mean magnitude within 0.02 px."""
    import ast

    import cv2
    import numpy as np
    import pandas as pd

    from gpuface.cli import main
    from gpuface.io.decode import VideoReader
    from gpuface.ops.regions import region_masks

    src = (pyfame / "pyfame/analyse/analyse_optical_flow_sparse.py").read_text()
    params = {n.target.id: ast.literal_eval(n.value) for c in ast.walk(ast.parse(src))
              if isinstance(c, ast.ClassDef) and c.name == "SparseFlowAnalysisParameters"
              for n in c.body if isinstance(n, ast.AnnAssign) and n.value is not None}
    assert main(["analyse", samples["sample_01.mp4"], "-o", str(tmp_path), "--flow-points", "corners", "--end", "0.5",
                 "--quiet", "--device", "cpu"]) == 0
    ours = pd.read_parquet(tmp_path / "landmark_flow.parquet")
    frames = next(iter(VideoReader(samples["sample_01.mp4"]).batches(15))).frames
    grey = (kornia.color.rgb_to_grayscale(frames.float() / 255) * 255).round().to(torch.uint8)[:, 0].numpy()
    lm = FaceLandmarker("blazeface-short", max_faces=1)
    faces = lm(frames[:1], lm.new_state())
    mask = (region_masks(faces.landmarks, faces.row, "face_oval", 1, grey.shape[1:])[0, 0] > 0.5).numpy()
    points = cv2.goodFeaturesToTrack(grey[0], 20, params["point_quality_threshold"], params["min_point_distance"],
                                     mask=mask.astype(np.uint8) * 255)    # PyFAME: max_points=20 by default
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, params["max_iterations"], 0.03)
    assert ours["points"].iloc[0] == len(points) >= 10
    for i in range(len(ours)):
        new, status, _ = cv2.calcOpticalFlowPyrLK(grey[i], grey[i + 1], points, None,
                                                  winSize=params["search_window_size"],
                                                  maxLevel=params["max_pyramid_level"], criteria=criteria)
        good = status.ravel() == 1
        magnitude = np.linalg.norm((new - points).reshape(-1, 2)[good], axis=1).mean()
        row = ours.iloc[i]
        assert row["points"] == len(points) and row["tracked"] == good.sum(), i
        assert abs(row["mean_magnitude"] - magnitude) < 0.02, (i, row["mean_magnitude"], magnitude)
        points = new[good].reshape(-1, 1, 2)
