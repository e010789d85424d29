"""Temporal hole-filling: gap filling, padding and isolated-detection suppression, streaming and batch-size
independent; on a real clip, frames where the detector misses a face are masked."""
import pandas as pd
import pytest
import torch

import gpuface as gf
from gpuface.ops.anonymize import face_masks, scale_boxes
from gpuface.stages.gapfill import DETECTED, FILLED, PADDED, GapFillOptions, TemporalFill
from gpuface.core.types import Faces, FrameBatch


def _stream(dets: dict[int, list[list[float]]], n: int, batch: int, opt: GapFillOptions, distinct_only: bool = False):
    """Push n blank frames with the given per-frame boxes through a filler in batches; returns
    {frame: sorted list of (x1, y1, x2, y2, source)} (``distinct_only``: the boxes marked distinct)."""
    fill = TemporalFill(opt)
    out: dict[int, list] = {i: [] for i in range(n)}

    def take(ready):
        if ready is None:
            return
        b, faces, src, distinct = ready
        for k in range(len(faces)):
            f = int(b.index[faces.row[k]])
            if distinct[k] or not distinct_only:
                out[f].append((*[round(v, 4) for v in faces.boxes[k].tolist()], int(src[k])))

    for start in range(0, n, batch):
        idx = list(range(start, min(start + batch, n)))
        rows = [(i - start, box) for i in idx for box in dets.get(i, [])]
        faces = Faces(row=torch.tensor([r[0] for r in rows], dtype=torch.int64),
                      boxes=torch.tensor([r[1] for r in rows], dtype=torch.float32).view(-1, 4),
                      scores=torch.full((len(rows),), 0.9), keypoints=torch.zeros(len(rows), 5, 2))
        b = FrameBatch(torch.zeros(len(idx), 3, 4, 4, dtype=torch.uint8), torch.tensor(idx),
                       torch.tensor(idx, dtype=torch.float64) / 30)
        take(fill.push(b, faces))
    take(fill.flush())
    return {k: sorted(v) for k, v in out.items()}


def test_gap_is_filled_by_interpolation():
    # a face at frames 0..3 and 7..9 moving right by 5 px per frame, missed at 4, 5, 6
    dets = {t: [[5.0 * t, 0, 5.0 * t + 50, 50]] for t in [0, 1, 2, 3, 7, 8, 9]}
    out = _stream(dets, 10, 4, GapFillOptions(max_gap=3))
    for t in (4, 5, 6):
        assert out[t] == [(5.0 * t, 0.0, 5.0 * t + 50, 50.0, FILLED)]
    assert out[3] == [(15.0, 0.0, 65.0, 50.0, DETECTED)]
    # a gap longer than max_gap is not filled
    assert _stream(dets, 10, 4, GapFillOptions(max_gap=2))[5] == []


def test_no_fill_between_different_faces():
    dets = {0: [[0.0, 0, 50, 50]], 3: [[300.0, 0, 350, 50]]}
    out = _stream(dets, 5, 2, GapFillOptions(max_gap=3))
    assert out[1] == [] and out[2] == []


def test_pad_and_drop_isolated():
    dets = {5: [[0.0, 0, 50, 50]], 12: [[100.0, 0, 150, 50]], 13: [[101.0, 0, 151, 50]]}
    out = _stream(dets, 16, 3, GapFillOptions(pad=2))
    assert [t for t in range(16) if out[t]] == [3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15]
    assert out[4] == [(0.0, 0.0, 50.0, 50.0, PADDED)]
    out = _stream(dets, 16, 3, GapFillOptions(drop_isolated=True))
    assert [t for t in range(16) if out[t]] == [12, 13]  # the one-frame detection at 5 is gone


@pytest.mark.parametrize("batch", [1, 2, 5, 7, 16])
def test_same_result_at_any_batch_size(batch):
    g = torch.Generator().manual_seed(0)
    dets = {}
    for t in range(40):
        if torch.rand(1, generator=g) < 0.6:
            x = 5.0 * t + float(torch.randn(1, generator=g)) * 3
            dets[t] = [[x, 10, x + 60, 70]]
        if torch.rand(1, generator=g) < 0.3:
            dets.setdefault(t, []).append([400.0, 300, 440, 350])
    opt = GapFillOptions(max_gap=3, pad=1, drop_isolated=True)
    assert _stream(dets, 40, batch, opt) == _stream(dets, 40, 40, opt)


def test_options_are_checked():
    with pytest.raises(gf.InvalidOptionError):
        TemporalFill(GapFillOptions(max_gap=-1))
    with pytest.raises(gf.InvalidOptionError):
        TemporalFill(GapFillOptions(iou=0))


SEL = gf.Selection(start=3.82, end=5.42)  # dancer.avi (25 fps) frames 96-135


@pytest.fixture(scope="module")
def dancer_misses(samples):
    """40 frames of the dancer clip and the frame numbers where CenterFace at a quarter of the input size misses the
    (~30 px) face that it finds within two frames on both sides — real detector misses (frames 113, 116, 117)."""
    batches = list(gf.VideoReader(samples["dancer.avi"]).batches(32, SEL))
    frames, index = torch.cat([b.frames for b in batches]), torch.cat([b.index for b in batches])
    det = gf.anonymization_detector("centerface", input_scale=0.25)
    faces = det(frames)
    faces = faces.select(faces.scores >= 0.2)
    hit = torch.zeros(len(frames), dtype=torch.bool)
    hit[faces.row] = True
    misses = [int(index[t]) for t in range(2, len(frames) - 2)
              if not hit[t] and hit[t - 2:t].any() and hit[t + 1:t + 3].any()]
    return frames, index, det, misses


def test_missed_frames_are_masked_on_a_real_clip(samples, dancer_misses, tmp_path):
    frames, index, det, misses = dancer_misses
    assert misses, "the detector missed no frame of the clip: pick a harder setting"
    fill = GapFillOptions(max_gap=2)
    src = samples["dancer.avi"]
    runs = {}
    for bs in (8, 32):
        out = tmp_path / f"anon_{bs}.mp4"
        r = gf.anonymize_source(src, det, out, gf.AnonymizeOptions(mode="solid", colour=(255, 0, 255)), fill=fill,
                                batch_size=bs, selection=SEL, crf=0, preset="ultrafast")
        runs[bs] = r.tables["boxes"]
    pd.testing.assert_frame_equal(runs[8], runs[32])  # the same masks at any batch size
    boxes = runs[8]
    filled = set(boxes.loc[boxes["source"] == "filled", "frame"])
    assert set(misses) <= filled, f"missed frames {misses}, filled {sorted(filled)}"
    # the filled frames are masked: magenta pixels at the interpolated box centre of the encoded output
    out = torch.cat([b.frames for b in gf.VideoReader(str(tmp_path / "anon_8.mp4")).batches(32)])
    first = int(index[0])
    for t in misses:
        row = boxes[(boxes["frame"] == t) & (boxes["source"] == "filled")].iloc[0]
        cx, cy = int((row.x1 + row.x2) / 2), int((row.y1 + row.y2) / 2)
        px = out[t - first, :, cy, cx].int()
        assert px[0] > 200 and px[1] < 60 and px[2] > 200, f"frame {t}: {px.tolist()} at the filled box"
    # no mask where no track passes: outside every (grown) box of its frame, each frame is the source
    for k in range(0, len(out), 8):
        rows = boxes[boxes["frame"] == first + k]
        b = scale_boxes(torch.tensor(rows[["x1", "y1", "x2", "y2"]].to_numpy(), dtype=torch.float32), 1.6)
        b = b + torch.tensor([-4.0, -4.0, 4.0, 4.0])
        m = face_masks(b, torch.zeros(len(b), dtype=torch.int64), (1, *out.shape[-2:]), ellipse=False)[0, 0] > 0
        diff = (out[k].float() - frames[k].float()).abs().mean(0)
        assert diff[~m].mean() < 2, f"frame {first + k} changed outside its boxes"


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_distinct_boxes_are_one_per_face_and_frame(batch):
    """Padding copies each detection into its neighbours, so a frame holds several boxes of one face; the distinct
    ones (the boxes table's rows) are one per face: the detection where there is one, else the first padded copy —
    for two faces far apart, two per frame, at any batch size."""
    a = [[100.0, 100, 150, 150]]
    b = [[400.0, 100, 450, 150]]
    dets = {t: a + (b if t >= 5 else []) for t in range(3, 9)}
    everything = _stream(dets, 12, batch, GapFillOptions(pad=2))
    out = _stream(dets, 12, batch, GapFillOptions(pad=2), distinct_only=True)
    assert len(everything[5]) == 8     # a: itself + 4 padded copies, b: itself + 2 (from 6, 7): the mask is the union
    for t in range(12):
        faces = {box[:4] for box in out[t]}
        expected = ({tuple(a[0])} if 1 <= t <= 10 else set()) | ({tuple(b[0])} if 3 <= t <= 10 else set())
        assert faces == expected and len(out[t]) == len(expected), t
        if t in dets:                                   # a detected frame's row is its detection, not a copy
            assert all(box[4] == DETECTED for box in out[t] if box[:4] in map(tuple, dets[t]))
