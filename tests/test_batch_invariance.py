"""The README's "outputs are the same at any batch size", held end to end through the CLI: a 4-face 720p mosaic
video (the four PyFAME samples at 640x360, tiled 2x2, x264-encoded as a user's file would be), run at
``--batch-size 8`` and ``32``, must give the same decoded pixels and the same tables, bit for bit.

Why bit for bit: a seeded noise layer turns a landmark that moved by 3e-4 px into a mask-edge pixel carrying
±76 levels of noise, and x264 then spreads that change over every later frame of the group of pictures (issue:
21 of 72 frames differed by up to 32k pixels). Every op is in the spec, each in its own time window (so the
windows cross batch boundaries), with a random temporal shuffle on top."""
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FRAMES = 48
OPS = [("recolour", "face_skin", {"colour": "red", "magnitude": 20}), ("saturation", "face_skin", {}),
       ("brightness", "face_skin", {}), ("mask_background", "face_oval", {}), ("fill", "eyes", {}),
       ("bar", "eyes", {}), ("blur", "face_oval", {}), ("noise", "face_oval", {"method": "gaussian", "std": 0.3}),
       ("bubbles", "face_oval", {}), ("grid_shuffle", "face_oval", {}), ("point_light", "face_oval", {}),
       ("pencil_sketch", "face_oval", {}), ("overlay", "face_oval", {"image": None}), ("relocate", "face_oval", {})]


@pytest.fixture(scope="module")
def mosaic_video(samples, tmp_path_factory):
    import av
    import torch
    import torch.nn.functional as F

    from gpuface.io.decode import VideoReader

    tiles = [next(iter(VideoReader(samples[f"sample_0{i}.mp4"]).batches(FRAMES))).frames for i in range(1, 5)]
    small = [F.interpolate(t.float(), size=(360, 640), mode="bilinear", antialias=True).round().byte() for t in tiles]
    frames = torch.cat([torch.cat(small[:2], dim=3), torch.cat(small[2:], dim=3)], dim=2)
    path = tmp_path_factory.mktemp("mosaic") / "mosaic.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for f in frames.permute(0, 2, 3, 1).numpy():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode())
    return path


def _decoded(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _run(command, video, tmp_path, batch_size, *args):
    from gpuface.cli import main

    out = tmp_path / f"b{batch_size}"
    assert main([command, str(video), "-o", str(out) + "/", "--batch-size", str(batch_size), "--device", "cpu",
                 "--quiet", *args]) == 0
    return out


def test_every_op_gives_the_same_video_at_any_batch_size(mosaic_video, tmp_path):
    from PIL import Image

    rgba = tmp_path / "glasses.png"
    Image.fromarray(np.dstack([np.full((20, 60, 3), 30, np.uint8), np.full((20, 60), 200, np.uint8)])).save(rgba)
    step = FRAMES / 30 / len(OPS)
    layers = []
    for k, (op, region, params) in enumerate(OPS):
        params = {**params, "image": str(rgba)} if "image" in params else params
        layers.append({"op": op, "region": region, "params": params,
                       "timing": {"onset": k * step, "offset": (k + 2) * step, "rise": 0, "fall": 0}})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"seed": 3, "layers": layers,
                                "temporal": {"method": "random", "block_duration": 0.4, "drop_last": False}}))
    runs = [_run("manipulate", mosaic_video, tmp_path, bs, "--layers", str(spec), "--detector", "blazeface-full")
            for bs in (8, 32)]
    videos = [_decoded(r / "mosaic_manipulated.mp4") for r in runs]
    logs = [json.loads((r / "mosaic_manipulated.json").read_text()) for r in runs]
    assert videos[0].shape == (FRAMES, 720, 1280, 3)
    assert logs[0]["temporal_order"] == logs[1]["temporal_order"]
    assert logs[0]["faces"] == logs[1]["faces"] >= 4 * FRAMES - 8
    differ = np.flatnonzero((videos[0] != videos[1]).reshape(FRAMES, -1).any(axis=1))
    assert len(differ) == 0, f"frames {differ.tolist()} differ between --batch-size 8 and 32"
    source = _decoded(mosaic_video)
    changed = (np.abs(videos[0].astype(int) - source[logs[0]["temporal_order"]["frames"]]) > 10).mean(axis=(1, 2, 3))
    assert (changed > 1e-3).mean() > 0.8      # the ops did act: most frames differ from their source frame


def test_anonymize_and_landmark_tables_are_the_same_at_any_batch_size(mosaic_video, tmp_path):
    import pandas as pd
    from gpuface.cli import main

    runs = [_run("anonymize", mosaic_video, tmp_path, bs) for bs in (8, 32)]
    assert np.array_equal(*[_decoded(r / "mosaic_anonymized.mp4") for r in runs])
    boxes = [pd.read_csv(r / "mosaic_anonymized_boxes.csv") for r in runs]
    assert len(boxes[0]) >= 4 * FRAMES - 8
    pd.testing.assert_frame_equal(boxes[0], boxes[1], check_exact=True)
    tables = []
    for bs in (8, 32):
        out = tmp_path / f"landmarks{bs}.parquet"
        assert main(["landmarks", str(mosaic_video), "-o", str(out), "--batch-size", str(bs), "--device", "cpu",
                     "--quiet"]) == 0
        tables.append(pd.read_parquet(out))
    assert len(tables[0]) >= 4 * FRAMES - 8
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
