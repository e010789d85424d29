"""Identity throughput: faces/s embedded by the dlib ResNet port at several batch sizes, and `gpuface annotate`
end to end on the 720p sample, vs the mexca way (facenet-pytorch MTCNN + InceptionResnetV1, frame by frame)
where facenet-pytorch's pretrained weights can be downloaded (they come from its GitHub releases: online only).

    python benchmarks/identity.py [--frames 96] [--device auto]
"""
from __future__ import annotations

import os
import time

import torch
from common import landmarked_sample, machine, parse_args


def main() -> None:
    args, device = parse_args(__doc__)

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
    try:
        from facenet_pytorch import MTCNN, InceptionResnetV1
        enc = InceptionResnetV1(pretrained="vggface2", device=device).eval()
    except Exception as e:  # offline: the weights come from GitHub
        print(f"| mexca way (facenet MTCNN + InceptionResnetV1, frame by frame) | 1 | unavailable: {type(e).__name__} |")
        return
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
