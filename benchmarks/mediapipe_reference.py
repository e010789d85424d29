"""Run MediaPipe's own FaceLandmarker (Tasks API, VIDEO mode: what PyFAME 1.x runs) on a video and save its
landmarks (frame pixels), blendshapes and timing to an .npz — the reference for gpuface's FaceMesh port.

Run it with a Python that has ``mediapipe`` (0.10.x) installed, not gpuface's (mediapipe pins its own numpy,
protobuf and OpenCV): ``python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.14 av``, then
``/tmp/mp/bin/python benchmarks/mediapipe_reference.py VIDEO TASK -o ref.npz [--frames N] [--num-faces K]``.
TASK is ``face_landmarker.task`` (``gpuface weights fetch facemesh`` leaves it in ``weights/upstream/``).
"""
import argparse
import time

import av
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("task")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--num-faces", type=int, default=1)
    ap.add_argument("--image", action="store_true", help="IMAGE mode on a still instead of VIDEO mode")
    args = ap.parse_args()

    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    mode = vision.RunningMode.IMAGE if args.image else vision.RunningMode.VIDEO
    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=args.task), running_mode=mode,
                                        num_faces=args.num_faces, output_face_blendshapes=True)
    landmarker = vision.FaceLandmarker.create_from_options(opts)
    frames = []
    if args.image:
        from PIL import Image
        frames.append((np.asarray(Image.open(args.video).convert("RGB")), 0))
    else:
        with av.open(args.video) as c:
            for i, f in enumerate(c.decode(video=0)):
                if args.frames is not None and i >= args.frames:
                    break
                frames.append((f.to_ndarray(format="rgb24"), int(round(f.time * 1000))))
    lms, bss, idx, face = [], [], [], []
    t0 = time.perf_counter()
    for i, (rgb, ms) in enumerate(frames):
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        res = landmarker.detect(image) if args.image else landmarker.detect_for_video(image, ms)
        h, w = rgb.shape[:2]
        for k, pts in enumerate(res.face_landmarks):
            lms.append([[p.x * w, p.y * h, p.z * w] for p in pts])
            bss.append([c.score for c in res.face_blendshapes[k]])
            idx.append(i)
            face.append(k)
    seconds = time.perf_counter() - t0
    np.savez_compressed(args.output, landmarks=np.asarray(lms, np.float32).reshape(-1, 478, 3),
                        blendshapes=np.asarray(bss, np.float32).reshape(-1, 52), frame=np.asarray(idx),
                        face=np.asarray(face), frames=len(frames), seconds=seconds)
    print(f"{len(frames)} frames, {len(idx)} faces, {len(frames) / seconds:.1f} frames/s (MediaPipe, CPU)")


if __name__ == "__main__":
    main()
