"""Which source of action units agrees better with the FACS prototypes: the blendshape table, or py-feat's
AU→mesh linear model inverted on the 478-point mesh?

The alternative: py-feat 2.1.5 ships ``feat/resources/au_to_mesh_pls_v4.npz``, a linear map from 20 AUs + head
pose (pitch, yaw, roll) to the 1,434 coordinates of a Procrustes-aligned, frontalised MediaPipe mesh. Inverting
it: align each face's FaceMesh (y and z flipped to the model's axes) to the model's mean mesh with a 3-D
similarity (Umeyama) on the rigid upper face (forehead, nose bridge, eye corners), then solve
``min ||[au, pose] @ coef + intercept − mesh||`` by bounded least squares (AUs in [0, 1], pose free;
``scipy.optimize.lsq_linear``).

Prototypes (EMFACS, as in the issue): happiness 6+12, surprise 1+2+5+26, anger 4+5+7+23, disgust 9+10, on
py-feat's four posed-expression photographs. Per source and expression it prints the prototype AUs found active
and the number of other AUs active (false activations), at each source's threshold (0.25 blendshape scale; 0.5
for the mesh model's AU probabilities), then recall, false-activation rate and balanced accuracy over the four
faces. Four photographs are thin evidence: this decides between two sources, it does not tune either.

    python benchmarks/affect_au_sources.py
"""
from __future__ import annotations

import numpy as np
import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch

from gpuface.stages.affect import AU_NAMES, AffectAnalyzer
from gpuface.core.fetch import PyPIMember, fetch_file
from gpuface.io.images import read_image
from gpuface.stages.landmarks import FaceLandmarker
from gpuface.io.samples import fetch_samples, samples_dir

PROTOTYPES = {"happiness": {"AU06", "AU12"}, "surprise": {"AU01", "AU02", "AU05", "AU26"},
              "anger": {"AU04", "AU05", "AU07", "AU23"}, "disgust": {"AU09", "AU10"}}
RIGID = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 33, 133, 263, 362, 127, 356, 234, 454, 21, 251, 109, 338]


def _similarity3(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    d[-1] = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag(d) @ vt
    s = (sig * d).sum() / (a ** 2).sum(1).mean()
    return s, r, mu_d - s * r @ mu_s


def mesh_aus(landmarks: np.ndarray, model) -> dict[str, float]:
    from scipy.optimize import lsq_linear

    coef, intercept, mean = model["coef"], model["intercept"], model["mean_aligned_mesh"]
    pts = landmarks * np.array([1.0, -1.0, -1.0])                      # image axes → the model's (y up, z out)
    s, r, t = _similarity3(pts[RIGID], mean[RIGID])
    aligned = (s * pts @ r.T + t).T.reshape(-1)                        # axis-major [x.. | y.. | z..]
    n_au = len(model["au_columns"])
    lower = np.r_[np.zeros(n_au), np.full(coef.shape[0] - n_au, -np.inf)]
    upper = np.r_[np.ones(n_au), np.full(coef.shape[0] - n_au, np.inf)]
    sol = lsq_linear(coef.T.astype(np.float64), (aligned - intercept).astype(np.float64), bounds=(lower, upper))
    return dict(zip([str(c) for c in model["au_columns"]], sol.x[:n_au]))


def main() -> None:
    npz = fetch_file([PyPIMember("py-feat", "2.1.5", "feat/resources/au_to_mesh_pls_v4.npz")],
                     "b5ca40b880530212bccc48d955f32e49309fa7bcdac761b5ed05b6340dfd1f6b",
                     samples_dir() / "au_to_mesh_pls_v4.npz")
    model = dict(np.load(npz))
    paths = fetch_samples([f"expression_{e}.jpg" for e in PROTOTYPES])
    lm, affect = FaceLandmarker("mtcnn", max_faces=1), AffectAnalyzer()
    totals = {"blendshapes": [0, 0, 0, 0], "mesh (PLS inverse)": [0, 0, 0, 0]}
    print(f"{'expression':<11} {'source':<19} {'prototype AUs active':<28} other AUs active")
    for e, proto in PROTOTYPES.items():
        img = read_image(str(paths[f"expression_{e}.jpg"]))[None]
        faces = affect(img, lm(img))
        blend = dict(zip(AU_NAMES, faces.aus[0].tolist()))
        mesh = mesh_aus(faces.landmarks[0].double().numpy(), model)
        for name, aus, thr in (("blendshapes", blend, 0.25), ("mesh (PLS inverse)", mesh, 0.5)):
            on = {a for a, v in aus.items() if v >= thr}
            hit = sorted(proto & on)
            reachable = proto & set(aus)
            totals[name][0] += len(hit)
            totals[name][1] += len(reachable)
            totals[name][2] += len(on - proto)
            totals[name][3] += len(set(aus) - proto)                    # negatives: AUs outside the prototype
            print(f"{e:<11} {name:<19} {','.join(hit) or '-':<18} {len(hit)}/{len(reachable):<7} {len(on - proto)}")
    print()
    for name, (hit, total, other, negatives) in totals.items():
        tpr, fpr = hit / total, other / negatives
        print(f"{name:<19} prototype recall {hit}/{total} = {tpr:.2f}; false activations {other}/{negatives} = "
              f"{fpr:.2f}; balanced accuracy {(tpr + 1 - fpr) / 2:.2f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
