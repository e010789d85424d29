"""Face crops grouped by person (video-to-faces): sample frames, detect and filter faces, drop duplicates,
group by clustering or by classification against reference images, save crops and CSV logs.

Per input: frames every ``step_seconds`` of a fragment (and an optional area), BlazeFace + FaceMesh on those
frames as unrelated stills, filters (score, size in px, distance to the border in px), boxes expanded by
``expand`` (left, right, up, down) factors and optionally squared (:func:`gpuface.stages.detect.expand_boxes`),
embeddings (``embedder``: dlib's of aligned chips, or FaceNet's of box crops). Duplicates (video-to-faces ``dup_*``): a face whose 8×8 average hash differs from a kept
face of the same video by at most ``hash_threshold`` bits and whose embedding is within ``dup_distance`` is a
duplicate. Grouping: ``clustering`` (:func:`cluster_embeddings` over all kept faces, k or a range) or
``classification`` (nearest person of ``ref_dir/<person>/*.jpg`` by mean embedding; ``other`` beyond
``max_distance``). Output: ``out/<group>/<prefix><video>_<frame>_<face>.jpg``, ``out/faces.csv`` (and
``rejects/``, ``dupes/`` folders on request).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register, validate_options
from gpuface.jobs.schema import DETECTORS, IdentityOptions, boolean, choice, integer, number, option
from gpuface.models.registry import DETECTORS as _REGISTRY

#: Default detection score a face needs, per detector (the registry's ``crops`` use): MTCNN's scores of real faces
#: sit above 0.9 (video-to-faces' det_min_score); BlazeFace's are lower (0.82–0.89 on the PyFAME samples), so its
#: default is MediaPipe's own min_detection_confidence, 0.5.
MIN_SCORE = {k: c.threshold("crops") for k, c in _REGISTRY.items()}
LOG_COLUMNS = ["file", "video", "frame", "face", "x1", "y1", "x2", "y2", "score", "status", "reason", "group",
               "distance"]


def average_hash(crops: list):
    """64-bit average hashes (N, 64) bool numpy array of uint8 (3, h, w) torch crops: 8×8 grey thumbnail above its
    mean (the average hash of video-to-faces' ``imagehash.average_hash``)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    if not crops:
        return np.zeros((0, 64), dtype=bool)
    thumbs = torch.stack([F.adaptive_avg_pool2d(c.float().mean(0, keepdim=True), 8).flatten() for c in crops])
    return (thumbs > thumbs.mean(1, keepdim=True)).numpy()


def _reference_embeddings(ref_dir: str, landmarker, embedder) -> dict:
    import numpy as np
    import torch

    from gpuface.io.images import IMAGE_EXTENSIONS, read_image

    refs = {}
    for person in sorted(p for p in Path(ref_dir).iterdir() if p.is_dir()):
        embs = []
        for img in sorted(person.iterdir()):
            if img.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            frame = read_image(img)[None]
            faces = landmarker(frame)
            if len(faces):
                best = int(torch.argmax(faces.scores))
                embs.append(embedder(frame, faces).embedding[best].cpu().numpy())
        if embs:
            refs[person.name] = np.mean(embs, axis=0)
    if not refs:
        raise InvalidOptionError(f"{ref_dir}: no reference faces found (one sub-folder of images per person)")
    return refs


@register("faces", "face crops grouped by person (video-to-faces)", spec=False)
class FaceCropsJob(Job):
    """Face crops of sampled frames (no tracking: the frames are unrelated), each kept, rejected (score, size or
    border, with the ``reason``) or a duplicate of a face kept earlier in the same video (average hash and
    embedding). Collects over every input it runs on (:attr:`rows`, :attr:`kept`); :func:`extract_faces` groups and
    writes them. It groups faces across inputs, so a spec (one input at a time) cannot run it: ``gpuface faces``
    does. Options in video-to-faces' names are accepted as aliases on the command line."""

    track = False

    @dataclass(frozen=True)
    class Options(IdentityOptions):
        detector: str = choice("face detector", DETECTORS, "blazeface-full")
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
        group: str = choice("clustering (unknown people) or classification against ref_dir",
                            ("clustering", "classification"), "clustering")
        clusters: int | tuple | str = option("counts", "people: K, MIN-MAX to estimate, or K1,K2,... (kmeans) to "
                                             "choose from", [1, 9])
        cluster_method: str = choice("grouping: spectral (mexca's), kmeans (video-to-faces': K-means, the count "
                                     "with the best silhouette; logged in log_clustering.csv) or agglomerative "
                                     "(complete linkage cut at the same-person distance)",
                                     ("spectral", "kmeans", "agglomerative"), "spectral")
        clusters_save_all: bool = boolean("kmeans: also keep the crops of every count tried, in G<k>/ folders")
        random_state: int = integer("seed of the clustering (video-to-faces' KMeans random_state)", 0, lo=0)
        ref_dir: str | None = option("path", "classification: one sub-folder of images per person")
        max_distance: float | None = number("classification: embedding distance beyond which a face is 'other' "
                                            "(default: the embedder's same-person distance, dlib 0.6, FaceNet 0.93)")
        hash_threshold: int = integer("duplicates: average-hash bits (of 64) within which two crops may be one face",
                                      5, lo=0)
        dup_distance: float | None = number("duplicates: embedding distance within which two crops are one face "
                                            "(default: half the embedder's same-person distance)")
        prefix: str = option("text", "prefix of every crop's file name", "")
        save_rejects: bool = boolean("also save rejected crops in rejects/")
        save_dupes: bool = boolean("also save duplicate crops in dupes/")

    @classmethod
    def check(cls, pipeline, o) -> None:
        if o.group == "classification" and not (o.ref_dir and Path(o.ref_dir).is_dir()):
            raise InvalidOptionError("classification needs --ref-dir with one sub-folder of images per person")
        if isinstance(o.clusters, str) and o.cluster_method != "kmeans":
            raise InvalidOptionError("a list of cluster counts (K1,K2,...) needs --cluster-method kmeans")
        if o.clusters_save_all and o.cluster_method != "kmeans":
            raise InvalidOptionError("--clusters-save-all keeps every count kmeans tried: use --cluster-method kmeans")

    def __init__(self, opt, embedder, out: Path, min_score: float, overwrite: bool = False):
        self.opt, self.embedder, self.out, self.min_score, self.overwrite = opt, embedder, out, min_score, overwrite
        self.dup_distance = opt.dup_distance if opt.dup_distance is not None else embedder.same_person / 2
        self.kept, self.rows = [], []

    def plan(self, run):
        from gpuface.io.decode import Selection

        opt = self.opt
        area = tuple(opt.area) if opt.area is not None else None
        return Selection(step_seconds=opt.step_seconds, start=opt.start, end=opt.end, area=area) \
            if run.info.num_frames > 1 else None

    def stages(self):
        return [("embedding", self.embedder)]

    def start(self, run) -> None:
        self.hashes, self.embs, self.kept_names = [], [], []
        self.mark = (len(self.rows), len(self.kept))

    def abort(self, run) -> None:
        """Forget this input's faces and remove the crops it saved (rejects, duplicates)."""
        rows, kept = self.mark
        for row in self.rows[rows:]:
            if row["file"]:
                Path(row["file"]).unlink(missing_ok=True)
        del self.rows[rows:], self.kept[kept:]

    def _save(self, path: Path, crop) -> str:
        """Write a crop at ``path``, or at a numbered sibling where a file is there (unless overwrite)."""
        from gpuface.io.encode import free_path, write_image

        return str(write_image(free_path(path, self.overwrite), crop))

    def step(self, run, batch, faces) -> None:
        import numpy as np
        import torch

        from gpuface.stages.detect import expand_boxes

        if len(faces) == 0:
            return
        opt, out, min_score = self.opt, self.out, self.min_score
        video = Path(run.path).stem
        h, w = batch.frames.shape[-2:]
        emb = faces.embedding.cpu().numpy()
        boxes = expand_boxes(faces.boxes, tuple(opt.expand), square=opt.square, frame_size=(h, w)).round().long()
        bw, bh = faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]
        edge = torch.minimum(torch.minimum(faces.boxes[:, 0], faces.boxes[:, 1]),
                             torch.minimum(w - faces.boxes[:, 2], h - faces.boxes[:, 3]))
        for n in range(len(faces)):
            x1, y1, x2, y2 = boxes[n].tolist()
            crop = batch.frames[faces.row[n], :, y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)].cpu()
            frame_no = int(batch.index[faces.row[n].cpu()])
            name = f"{opt.prefix}{video}_{frame_no}_{n}.jpg"
            row = {"file": None, "video": run.path, "frame": frame_no, "face": n, "x1": x1, "y1": y1, "x2": x2,
                   "y2": y2, "score": float(faces.scores[n]), "status": "kept", "reason": None, "group": None,
                   "distance": None}
            size, score = float(min(bw[n], bh[n])), float(faces.scores[n])
            reasons = ([f"score {score:.3f} < {min_score}"] if score < min_score else []) + \
                ([f"size {size:.0f} px < {opt.min_size:g}"] if size < opt.min_size else []) + \
                ([f"border {float(edge[n]):.0f} px < {opt.min_border:g}"] if edge[n] < opt.min_border else [])
            if reasons:
                row["status"], row["reason"] = "rejected", "; ".join(reasons)
                if opt.save_rejects:
                    row["file"] = self._save(out / "rejects" / name, crop)
                self.rows.append(row)
                continue
            hsh = average_hash([crop])[0]
            dup = next((j for j, (h0, e0) in enumerate(zip(self.hashes, self.embs))
                        if (hsh != h0).sum() <= opt.hash_threshold
                        and np.linalg.norm(emb[n] - e0) <= self.dup_distance), None)
            if dup is not None:
                row["status"] = "duplicate"
                row["reason"] = f"same as {self.kept_names[dup]} (average hash and embedding)"
                if opt.save_dupes:
                    row["file"] = self._save(out / "dupes" / name, crop)
                self.rows.append(row)
                continue
            self.hashes.append(hsh)
            self.embs.append(emb[n])
            self.kept_names.append(name)
            self.kept.append((len(self.rows), crop, emb[n], name))
            self.rows.append(row)


def extract_faces(inputs: list[str], out_dir: str | os.PathLike, landmarker, embedder, options=None,
                  batch_size: int = 16, backend: str = "auto", on_error=None, overwrite: bool = False):
    """Run the whole job (:class:`FaceCropsJob` over every input, then grouping); returns the log table (also
    written to ``out_dir/faces.csv``, or ``faces_N.csv`` where one exists; its path in ``table.attrs["log"]``): one
    row per face with ``status`` kept | rejected | duplicate and, for the others, the ``reason`` (which threshold it
    failed, with its value, or the kept face it duplicates).

    Args:
        landmarker: a :class:`~gpuface.stages.landmarks.FaceLandmarker`; embedder: a
            :class:`~gpuface.stages.embed.Embedder`; options: a :class:`FaceCropsJob.Options` (default: its defaults).
        overwrite: replace existing crops and log; otherwise each gets a numbered name (``faces_1.csv``).

    A broken input is reported to ``on_error(input, exception)`` (:func:`gpuface.jobs.runner.run_many`) and leaves
    nothing behind; the others are still grouped.

    Raises:
        InvalidOptionError: bad options. NotEnoughFacesError: fewer faces than clusters requested.
    """
    import numpy as np
    import pandas as pd

    from gpuface.io.encode import free_path
    from gpuface.jobs.runner import run_many, run_source
    from gpuface.jobs.schema import count_values
    from gpuface.ops.cluster import cluster_embeddings, kmeans_silhouette
    from gpuface.stages.tables import write_table

    opt = options or FaceCropsJob.Options()
    validate_options("faces", {k: v for k, v in vars(opt).items() if v is not None})
    FaceCropsJob.check(None, opt)
    min_score = opt.min_score if opt.min_score is not None else MIN_SCORE.get(landmarker.detector.model, 0.5)
    out = Path(out_dir)
    job = FaceCropsJob(opt, embedder, out, min_score, overwrite)
    run_many(inputs, lambda path: run_source(path, job, landmarker, batch_size, backend=backend), on_error)
    kept, rows, clustering_log = job.kept, job.rows, None
    if kept:
        e = np.stack([k[2] for k in kept])
        if opt.group == "clustering":
            if opt.cluster_method == "kmeans":
                best, by_k, clustering_log = kmeans_silhouette(e, count_values(opt.clusters), opt.random_state)
                labels = by_k[best]
                if opt.clusters_save_all:       # every count tried (video-to-faces' G<k> folders)
                    for k in clustering_log["k"][clustering_log["silhouette"].notna()]:
                        for (_, crop, _, name), g in zip(kept, by_k[k]):
                            job._save(out / f"G{k}" / f"person_{g}" / name, crop)
            else:
                k = opt.clusters
                labels = cluster_embeddings(e, k if isinstance(k, int) else tuple(k), method=opt.cluster_method,
                                            too_few="each", seed=opt.random_state,
                                            distance_threshold=embedder.same_person)
            groups = [f"person_{lab}" for lab in labels]
            dists = [None] * len(kept)
        else:
            refs = _reference_embeddings(opt.ref_dir, landmarker, embedder)
            names = list(refs)
            d = np.linalg.norm(e[:, None] - np.stack([refs[n] for n in names])[None], axis=2)
            best = d.argmin(1)
            limit = opt.max_distance if opt.max_distance is not None else embedder.same_person
            groups = [names[b] if d[i, b] <= limit else "other" for i, b in enumerate(best)]
            dists = d[np.arange(len(kept)), best].tolist()
        for (i, crop, _, name), g, dist in zip(kept, groups, dists):
            rows[i]["group"], rows[i]["distance"] = g, dist
            rows[i]["file"] = job._save(out / g / name, crop)
    table = pd.DataFrame(rows, columns=LOG_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    log = write_table(table, free_path(out / "faces.csv", overwrite))
    table.attrs["log"] = str(log)
    if clustering_log is not None:          # kmeans: video-to-faces' log_clustering.csv
        table.attrs["log_clustering"] = str(write_table(clustering_log, free_path(out / "log_clustering.csv",
                                                                                  overwrite)))
    return table


__all__ = ["MIN_SCORE", "FaceCropsJob", "extract_faces", "average_hash"]
