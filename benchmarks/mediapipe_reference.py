"""Run MediaPipe's own FaceLandmarker (Tasks API, VIDEO mode: what PyFAME 1.x runs) on a video and save its
landmarks (frame pixels), blendshapes and timing to an .npz — the reference for gpuface's FaceMesh port.

Run it with a Python that has ``mediapipe`` (0.10.x) installed, not gpuface's (mediapipe pins its own numpy,
protobuf and OpenCV): ``python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.35 av``, then
``/tmp/mp/bin/python benchmarks/mediapipe_reference.py VIDEO TASK -o ref.npz [--frames N] [--num-faces K]
[--end-to-end VIDEO...]``.
TASK is ``face_landmarker.task`` (``gpuface weights fetch facemesh`` leaves it in ``weights/upstream/``).

``tests/data/mediapipe_reference.npz`` is remade by one command (it stores the MediaPipe version and the sha256 of
every input beside the arrays)::

    /tmp/mp/bin/python benchmarks/mediapipe_reference.py --test-reference SAMPLES_DIR TASK \\
        -o tests/data/mediapipe_reference.npz

with SAMPLES_DIR the sample cache (``python -c "import gpuface.io.samples as s; print(s.fetch_samples())"``): the first
24 frames of ``sample_01.mp4`` (VIDEO mode, one face) and ``multi_face.jpg`` (IMAGE mode, up to 5 faces).
"""
import argparse
import hashlib
import os
import time

import av
import numpy as np


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def landmark(path: str, task: str, image: bool = False, frames: int | None = None, num_faces: int = 1) -> dict:
    """MediaPipe FaceLandmarker on a video (VIDEO mode) or a still (IMAGE mode): landmarks (N, 478, 3) px,
    blendshapes (N, 52), frame (N,), face (N,), frames, seconds (landmarking only), decode_seconds (PyAV
    decoding to RGB, beforehand)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    mode = vision.RunningMode.IMAGE if image else vision.RunningMode.VIDEO
    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=task), running_mode=mode,
                                        num_faces=num_faces, output_face_blendshapes=True)
    landmarker = vision.FaceLandmarker.create_from_options(opts)
    decoded, t_decode = [], time.perf_counter()
    if image:
        from PIL import Image
        decoded.append((np.asarray(Image.open(path).convert("RGB")), 0))
    else:
        with av.open(path) as c:
            c.streams.video[0].thread_type = "AUTO"   # FFmpeg's frame threads: PyAV's fastest decoding
            for i, f in enumerate(c.decode(video=0)):
                if frames is not None and i >= frames:
                    break
                decoded.append((f.to_ndarray(format="rgb24"), int(round(f.time * 1000))))
    decode_seconds = time.perf_counter() - t_decode
    lms, bss, idx, face = [], [], [], []
    t0 = time.perf_counter()
    for i, (rgb, ms) in enumerate(decoded):
        img = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        res = landmarker.detect(img) if image else landmarker.detect_for_video(img, ms)
        h, w = rgb.shape[:2]
        for k, pts in enumerate(res.face_landmarks):
            lms.append([[p.x * w, p.y * h, p.z * w] for p in pts])
            bss.append([c.score for c in res.face_blendshapes[k]])
            idx.append(i)
            face.append(k)
    return {"landmarks": np.asarray(lms, np.float32).reshape(-1, 478, 3),
            "blendshapes": np.asarray(bss, np.float32).reshape(-1, 52), "frame": np.asarray(idx, np.int64),
            "face": np.asarray(face, np.int64), "frames": len(decoded), "seconds": time.perf_counter() - t0,
            "decode_seconds": decode_seconds}


def end_to_end(paths: list[str], task: str) -> tuple[int, float]:
    """MediaPipe FaceLandmarker (VIDEO mode, one face, blendshapes) on whole videos one after the other, each frame
    decoded by PyAV (FFmpeg's frame threads) and landmarked as it comes, as a PyFAME-style loop runs it: (frames,
    seconds). A landmarker per video, made before the clock starts."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=task),
                                        running_mode=vision.RunningMode.VIDEO, num_faces=1,
                                        output_face_blendshapes=True)
    landmarkers = [vision.FaceLandmarker.create_from_options(opts) for _ in paths]
    frames, t0 = 0, time.perf_counter()
    for path, landmarker in zip(paths, landmarkers):
        with av.open(path) as c:
            c.streams.video[0].thread_type = "AUTO"
            for f in c.decode(video=0):
                rgb = np.ascontiguousarray(f.to_ndarray(format="rgb24"))
                landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb),
                                            int(round(f.time * 1000)))
                frames += 1
    return frames, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", help="a video or image; with --test-reference, the sample folder")
    ap.add_argument("task")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--num-faces", type=int, default=1)
    ap.add_argument("--image", action="store_true", help="IMAGE mode on a still instead of VIDEO mode")
    ap.add_argument("--test-reference", action="store_true", help="remake tests/data/mediapipe_reference.npz")
    ap.add_argument("--end-to-end", nargs="+", metavar="VIDEO", help="also time decoding + landmarking of these "
                    "videos, one after the other (best of two); saved as e2e_frames, e2e_seconds")
    args = ap.parse_args()
    if args.test_reference:
        import mediapipe as mp

        video, photo = os.path.join(args.video, "sample_01.mp4"), os.path.join(args.video, "multi_face.jpg")
        v = landmark(video, args.task, frames=24, num_faces=1)
        s = landmark(photo, args.task, image=True, num_faces=5)
        np.savez_compressed(args.output, video_landmarks=v["landmarks"], video_blendshapes=v["blendshapes"],
                            video_frame=v["frame"], image_landmarks=s["landmarks"], image_blendshapes=s["blendshapes"],
                            mediapipe_version=mp.__version__, video_sha256=_sha256(video), image_sha256=_sha256(photo),
                            task_sha256=_sha256(args.task))
        print(f"{args.output}: {len(v['frame'])} video faces, {len(s['frame'])} image faces, "
              f"mediapipe {mp.__version__}")
        return
    r = landmark(args.video, args.task, args.image, args.frames, args.num_faces)
    if args.end_to_end:
        runs = [end_to_end(args.end_to_end, args.task) for _ in range(2)]
        r["e2e_frames"], r["e2e_seconds"] = runs[0][0], min(t for _, t in runs)
        print(f"end to end: {r['e2e_frames']} frames in {r['e2e_seconds']:.2f} s")
    np.savez_compressed(args.output, **r)
    print(f"{r['frames']} frames, {len(r['frame'])} faces, {r['frames'] / r['seconds']:.1f} frames/s (MediaPipe, CPU)")


if __name__ == "__main__":
    main()
