"""Anonymisation changes pixels inside face masks only; videos keep fps, frame count and audio."""
import av
import pytest
import torch

import gpuface as gf
from gpuface.manipulate.anonymize import face_masks, scale_boxes


@pytest.mark.parametrize("mode", ["blur", "mosaic", "rectangle", "image"])
@pytest.mark.parametrize("ellipse", [True, False])
def test_pixels_change_inside_masks_only(clip, faces_clip, mode, ellipse):
    overlay = torch.zeros(4, 10, 10)
    overlay[0] = 1.0  # opaque red
    overlay[3] = 1.0
    opt = gf.AnonymizeOptions(mode=mode, ellipse=ellipse, mask_scale=1.3, color=(0, 255, 0), overlay=overlay)
    out = gf.anonymize(clip.frames, faces_clip, opt)
    assert out.dtype == torch.uint8 and out.shape == clip.frames.shape
    mask = face_masks(scale_boxes(faces_clip.boxes, 1.3), faces_clip.frame, (8, 720, 1280), ellipse)[:, 0] > 0
    outside = ~mask[:, None].expand_as(out)
    assert torch.equal(out[outside], clip.frames[outside])
    inside = mask[:, None].expand_as(out)
    diff = (out[inside].float() - clip.frames[inside].float()).abs().mean()
    assert diff > 5, f"{mode}: mean change inside the mask only {diff:.2f}"
    if mode == "rectangle":
        assert (out[:, 1][mask] == 255).all() and (out[:, 0][mask] == 0).all()
    if mode == "image":
        assert (out[:, 0][mask] >= 250).float().mean() > 0.98


def test_blur_removes_detail(clip, faces_clip):
    out = gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mode="blur", mask_scale=1.0))
    x1, y1, x2, y2 = faces_clip.boxes[0].int().tolist()
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    roi = lambda t: t[0, :, cy - 60:cy + 60, cx - 60:cx + 60].float()
    hf = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean()
    assert hf(roi(out)) < 0.3 * hf(roi(clip.frames))


def test_frames_without_faces_pass_through(clip, faces_clip):
    keep = faces_clip.frame != 3
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
    import pandas as pd

    boxes = pd.read_csv(tmp_path / "anon_boxes.csv")
    assert list(boxes.columns) == ["frame", "time_ms", "face", "x1", "y1", "x2", "y2", "score"]
    assert len(boxes) == result.faces and (boxes["score"] >= 0.9).all()
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
        gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(mode="image"))
    with pytest.raises(gf.InvalidOptionError):
        gf.anonymize(clip.frames, faces_clip, gf.AnonymizeOptions(color=(0, 0, 300)))
