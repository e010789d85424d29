"""mexca-style annotation of a video: every face of every frame with its identity label and confidence.

Per video: FaceMesh landmarks (the landmarker's own ROI tracking ends at shot cuts, found as large
frame-to-frame changes of a 32×32 grey thumbnail), dlib embeddings of every face (one pass per batch), track ids
over the whole video from box IoU, keypoint distance and embedding distance (:func:`gpuface.stages.track.assign_tracks`:
a different person in the same place starts a new track; tracks end at cuts and gaps), one mean embedding per
track, spectral clustering of the tracks (or of single faces) into identities
(:func:`gpuface.ops.cluster.cluster_embeddings`), labels broadcast back to faces, mexca's confidence per face.
"""
from __future__ import annotations

from dataclasses import dataclass

from gpuface.core.errors import InvalidOptionError, UnsupportedInputError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register
from gpuface.jobs.schema import (IdentityOptions, LandmarkerOptions, SelectionOptions, boolean, choice, integer,
                                 number, option)


@register("annotate", "every face of every frame with an identity label", tables={"annotation": "annotation.parquet"})
class AnnotateJob(Job):
    """Landmarks, tracks (ended at shot cuts), embeddings and identities of every face: table ``annotation``
    (see :func:`annotate_source`; identities are clustered over the whole video in :meth:`finish`)."""

    shot_cuts = True

    @dataclass(frozen=True)
    class Options(SelectionOptions, LandmarkerOptions, IdentityOptions):
        num_faces: int | tuple = option("count", "identities per video: K, or MIN-MAX to estimate it from", [1, 9])
        per_face: bool = boolean("cluster single faces instead of tracks")
        too_few: str = choice("fewer tracks than identities: an error, or one label each", ("error", "each"), "error")
        embeddings: bool = boolean("add the embedding columns (128 for dlib, 512 for FaceNet)")
        affect: bool = boolean("add action units, emotion probabilities, valence/arousal")
        landmarks: str = choice("landmark columns (and the JSON's face_landmarks): the 6 detector keypoints, the "
                                "68-point iBUG/dlib view, or all 478 FaceMesh points", ("keypoints", "68", "478"),
                                "keypoints")
        selection_method: str | None = choice("mexca's (facenet-pytorch's) selection: keep one face per frame, the "
                                              "most probable, the largest, the largest above 0.9, or the largest "
                                              "near the centre", ("probability", "largest", "largest_over_threshold",
                                                                  "center_weighted_size"))
        select_largest: bool = boolean("number the faces of a frame from the largest (mexca's default order) "
                                       "instead of the most probable")
        post_process: bool = boolean("FaceNet chips standardised, (x - 127.5) / 128 (mexca's post_process)", True)
        max_cluster_frames: int | None = integer("reduce to this many groups before spectral clustering when there "
                                                 "are more faces (mexca's max_cluster_frames; default 1000)", lo=2)
        mtcnn_min_face_size: int | None = integer("MTCNN: smallest face side looked for, px (mexca's min_face_size, "
                                                  "20)", lo=1, flags=("--mtcnn-min-face-size", "--min-face-size"))
        mtcnn_thresholds: tuple | None = option("thresholds", "MTCNN: P-, R- and O-Net thresholds (mexca's "
                                                "thresholds, 0.6 0.7 0.7)", flags=("--mtcnn-thresholds",
                                                                                    "--thresholds"))
        mtcnn_factor: float | None = number("MTCNN: pyramid scale step (mexca's factor, 0.709)", open_lo=True,
                                            hi=1.0, flags=("--mtcnn-factor", "--factor"))
        post_min_face_size: tuple | None = option("size", "drop faces whose box is narrower than W and lower than H "
                                                  "px before embedding and clustering (mexca's post_min_face_size, "
                                                  "45 45: a face stays when either side is large enough)")

    @classmethod
    def check(cls, pipeline, o) -> None:
        mtcnn = [n for n in ("mtcnn_min_face_size", "mtcnn_thresholds", "mtcnn_factor") if getattr(o, n) is not None]
        if mtcnn and o.detector != "mtcnn":
            raise InvalidOptionError(f"{', '.join(mtcnn)} set MTCNN's parameters: add --detector mtcnn")

    @classmethod
    def load(cls, pipeline, o) -> None:
        pipeline.embedder()
        if o.affect:
            pipeline.affect_analyzer()

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        k = o.num_faces
        return cls(pipeline.embedder(), k if isinstance(k, int) else tuple(k), o.per_face, o.too_few, o.embeddings,
                   pipeline.affect_analyzer() if o.affect else None, o.landmarks, o.selection_method,
                   o.select_largest, o.max_cluster_frames, o.post_min_face_size)

    def __init__(self, embedder, num_faces=(1, 9), per_face: bool = False, too_few: str = "error",
                 embeddings: bool = False, affect=None, landmarks: str = "keypoints",
                 selection_method: str | None = None, select_largest: bool = False,
                 max_cluster_frames: int | None = None, post_min_face_size: tuple | None = None):
        self.embedder, self.num_faces, self.per_face, self.too_few = embedder, num_faces, per_face, too_few
        self.embeddings, self.affect, self.landmarks = embeddings, affect, landmarks
        self.selection_method, self.select_largest = selection_method, select_largest
        self.cluster_kw = {} if max_cluster_frames is None else {"max_spectral_size": max_cluster_frames}
        self.post_min_face_size = post_min_face_size

    def stages(self):
        return [("embedding", self.embedder)] + ([("affect", self.affect)] if self.affect is not None else [])

    def start(self, run) -> None:
        if run.is_image:
            raise UnsupportedInputError(f"{run.path}: annotate needs a video (tracks and identities over time)")
        self.rows, self.embs, self.frames_seen = [], [], []

    def step(self, run, batch, faces) -> None:
        import pandas as pd

        from gpuface.stages.affect.tables import affect_columns
        from gpuface.stages.landmarks import to_ibug68
        from gpuface.stages.tables import faces_rows

        if self.post_min_face_size is not None:   # mexca's _check_face_size: either side large enough
            w, h = self.post_min_face_size
            size = faces.boxes[:, 2:] - faces.boxes[:, :2]
            faces = faces.select((size[:, 0] >= w) | (size[:, 1] >= h))
        if self.selection_method or self.select_largest:
            faces = mexca_selection(faces, batch.frames.shape[-2:], self.selection_method, self.select_largest)
        table = faces_rows(faces, batch, run.path)
        f = faces.to("cpu")
        table.insert(9, "presence", f.presence.numpy())
        table.insert(10, "track", f.track_id.numpy())
        if self.landmarks != "keypoints":
            points = (to_ibug68(f.landmarks) if self.landmarks == "68" else f.landmarks)[..., :2]
            prefix = "ibug" if self.landmarks == "68" else "lm"
            names = [f"{prefix}_{i}_{c}" for i in range(points.shape[1]) for c in "xy"]
            table = pd.concat([table, pd.DataFrame(points.reshape(len(f), len(names)).numpy(), columns=names)], axis=1)
        if self.affect is not None:
            table = pd.concat([table, affect_columns(faces, self.affect.au_threshold, self.affect.au_names)], axis=1)
        self.rows.append(table)
        self.embs.append(f.embedding)
        self.frames_seen.append(pd.DataFrame({"frame": batch.index.numpy(), "time_s": batch.pts.numpy()}))

    def finish(self, run) -> None:
        import numpy as np
        import pandas as pd
        import torch

        from gpuface.ops.cluster import cluster_embeddings, estimate_count, label_confidence
        from gpuface.stages.track import assign_tracks

        table = pd.concat(self.rows, ignore_index=True)
        emb = torch.cat(self.embs).numpy() if self.embs else np.zeros((0, self.embedder.dim))
        if len(table):  # track ids over the whole video: box IoU + keypoint distance + embedding distance, cuts
            host = {"device": "cpu"}   # track linking runs on the host (scipy)
            kp = torch.tensor(table[[c for c in table.columns if c.startswith("kp")]].to_numpy(np.float32), **host)
            table["track"] = assign_tracks(torch.tensor(table["frame"].to_numpy(), **host),
                                           torch.tensor(table[["x1", "y1", "x2", "y2"]].to_numpy(np.float32), **host),
                                           kp.view(len(table), -1, 2), torch.from_numpy(emb), run.cut_frames).numpy()
            track = table["track"].to_numpy()
            if self.per_face:
                labels = cluster_embeddings(emb, self.num_faces, too_few=self.too_few, **self.cluster_kw)
            else:
                ids, inverse = np.unique(track, return_inverse=True)
                means = np.stack([emb[inverse == i].mean(0) for i in range(len(ids))])
                k = self.num_faces
                if not isinstance(k, int):  # the count is estimated on the faces, then the tracks are clustered
                    k = max(min(estimate_count(emb, *k), len(ids)), k[0])
                labels = cluster_embeddings(means, k, too_few=self.too_few, **self.cluster_kw)[inverse]
            table["label"] = labels
            table["confidence"] = label_confidence(emb, labels, getattr(self.embedder, "same_person", 0.6))
        else:
            table["label"], table["confidence"] = pd.Series(dtype="Int64"), pd.Series(dtype=float)
        if self.embeddings and len(table):
            table = pd.concat([table, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])])], axis=1)
        seen = pd.concat(self.frames_seen, ignore_index=True)
        empty = seen[~seen["frame"].isin(table["frame"])].assign(video=run.path)
        table = pd.concat([table, empty], ignore_index=True).sort_values(["frame", "face"], na_position="first",
                                                                         kind="stable").reset_index(drop=True)
        table["label"] = table["label"].astype("Int64")
        run.result.tables["annotation"] = table
        sel, fps = run.selection, float(run.info.fps)
        run.result.tables["video"] = {   # mexca's Multimodal header: frame skipping gives fps_adjusted
            "filename": run.path, "duration": float(run.info.duration), "fps": fps,
            "fps_adjusted": 1 / sel.step_seconds if sel is not None and sel.step_seconds
            else fps / (sel.step if sel is not None else 1)}


#: facenet-pytorch's ``select_boxes``: the score above which ``largest_over_threshold`` looks, and the weight of
#: the squared distance to the frame's centre in ``center_weighted_size`` (its defaults, as mexca calls it).
SELECT_THRESHOLD, CENTER_WEIGHT = 0.9, 2.0


def mexca_selection(faces, frame_size: tuple[int, int], method: str | None, select_largest: bool):
    """mexca's face choice (facenet-pytorch ``MTCNN.select_boxes`` / ``select_largest``), on the device.

    Args:
        faces: :class:`~gpuface.core.types.Faces` sorted by frame. frame_size: (H, W) px.
        method: None (keep every face), ``probability`` (highest score), ``largest`` (largest box area),
            ``largest_over_threshold`` (largest with a score above 0.9; none when no face is), or
            ``center_weighted_size`` (area − 2 × squared distance of the box centre to the frame centre).
        select_largest: (with no method) number the faces of a frame by box area, largest first; else by score.

    Returns:
        The chosen faces, sorted by frame then by the criterion.
    """
    import torch

    area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    key = area if (select_largest and method is None) or method in ("largest", "largest_over_threshold") \
        else faces.scores.float()
    if method == "center_weighted_size":
        h, w = frame_size
        centre = torch.stack([(faces.boxes[:, 0] + faces.boxes[:, 2]) / 2 - w / 2,
                              (faces.boxes[:, 1] + faces.boxes[:, 3]) / 2 - h / 2], 1)
        key = area - CENTER_WEIGHT * centre.pow(2).sum(1)
    if method == "largest_over_threshold":
        key = torch.where(faces.scores > SELECT_THRESHOLD, key, torch.full_like(key, -torch.inf))
    order = torch.argsort(key, descending=True, stable=True)
    order = order[torch.argsort(faces.row[order], stable=True)]       # by frame, then by the key
    if method is None:
        return faces.select(order)
    row = faces.row[order]
    first = torch.ones_like(row, dtype=torch.bool)
    first[1:] = row[1:] != row[:-1]
    if method == "largest_over_threshold":
        first &= key[order] > -torch.inf
    return faces.select(order[first])


def annotate_source(path: str, landmarker, embedder, batch_size: int = 32, selection=None, num_faces=(1, 9),
                    per_face: bool = False, too_few: str = "error", embeddings: bool = False,
                    backend: str = "auto", quiet: bool = True, affect=None):
    """Annotate one video (:class:`AnnotateJob`): returns ``(table, result)``.

    The table has one row per (frame, face): ``video, frame, time_s, face, x1, y1, x2, y2, score, presence,
    track, kp0_x … kp5_y`` (FaceMesh keypoints: eye centres, nose tip, mouth, tragions), ``label`` (identity),
    ``confidence`` and, with ``embeddings``, ``emb_0 …``; frames without a face get one row with nulls
    (mexca's convention).

    Args:
        num_faces: identities: an int, a (min, max) range, as :func:`cluster_embeddings`.
        per_face: cluster single faces instead of tracks.
        too_few: ``error`` or ``each`` when there are fewer tracks/faces than identities.
        affect: a :class:`gpuface.stages.affect.AffectAnalyzer` to add the affect columns
            (:func:`gpuface.stages.affect.tables.affect_columns`: AUs, emotions, valence/arousal) to every face.

    Raises:
        GpufaceError subclasses (NotEnoughFacesError included) for unreadable input or bad options.
    """
    from gpuface.jobs.runner import run_source

    job = AnnotateJob(embedder, num_faces, per_face, too_few, embeddings, affect)
    result = run_source(path, job, landmarker, batch_size, selection, backend, quiet)
    return result.tables["annotation"], result


def mexca_video_annotation(table) -> dict:
    """An annotation table as mexca's ``VideoAnnotation`` (mexca 1.0.4 ``mexca/data.py``), the dictionary its
    ``write_json`` writes: one list per field with one entry per row (a face, or a frame without one):
    ``frame``, ``time`` (s), ``face_box`` ([x1, y1, x2, y2] px), ``face_prob`` (detection score),
    ``face_landmarks`` ([[x, y], …]: the table's 478 or 68 landmarks, else its keypoints), ``face_aus`` (the AU intensities when the table has
    the affect columns), ``face_label`` (the identity as a string, as mexca's ``FloatToStr``), ``face_confidence``,
    and ``face_average_embeddings`` (identity → mean embedding, when the table has the ``emb_`` columns); None where
    a frame has no face.

    Args:
        table: the ``annotation`` table of one video (:func:`annotate_source`).
    """
    import numpy as np
    import pandas as pd

    from gpuface.stages.affect.aus import au_columns

    points = [p for p in ("lm_", "ibug_", "kp") if any(c.startswith(p) and c.endswith("_x") for c in table.columns)]
    kp = [c for c in table.columns if c.startswith(points[0]) and c.endswith("_x")] if points else []
    aus, embs = au_columns(table.columns), [c for c in table.columns if c.startswith("emb_")]
    out = {k: [] for k in ("frame", "time", "face_box", "face_prob", "face_landmarks", "face_aus", "face_label",
                           "face_confidence")}
    for r in table.to_dict("records"):
        face = not pd.isna(r.get("face"))
        out["frame"].append(int(r["frame"]))
        out["time"].append(float(r["time_s"]))
        out["face_box"].append([float(r[c]) for c in ("x1", "y1", "x2", "y2")] if face else None)
        out["face_prob"].append(float(r["score"]) if face else None)
        out["face_landmarks"].append([[float(r[c]), float(r[c[:-1] + "y"])] for c in kp] if face else None)
        out["face_aus"].append([float(r[a]) for a in aus] if face and aus else None)
        out["face_label"].append(str(int(r["label"])) if face and not pd.isna(r["label"]) else None)
        out["face_confidence"].append(float(r["confidence"]) if face and not pd.isna(r["confidence"]) else None)
    faces = table[table["face"].notna()] if len(table) else table
    out["face_average_embeddings"] = {str(int(k)): np.asarray(g[embs], float).mean(0).tolist()
                                      for k, g in faces.groupby("label")} if embs and len(faces) else {}
    return out


def mexca_multimodal(table, video: dict) -> dict:
    """An annotation as mexca's ``Multimodal`` (mexca 1.0.4 ``mexca/data.py``) without its audio and text parts:
    ``filename``, ``duration`` (s, the whole video), ``fps``, ``fps_adjusted`` (frames per second of the frames
    read: ``fps / step``, or ``1 / step_seconds``), ``video_annotation`` (:func:`mexca_video_annotation`) and
    ``audio_annotation``, ``voice_features``, ``transcription``, ``sentiment`` as None (gpuface reads no sound).

    Args:
        table: the ``annotation`` table of one video; video: its ``video`` extra (``result.tables["video"]``).
    """
    return {**video, "video_annotation": mexca_video_annotation(table), "audio_annotation": None,
            "voice_features": None, "transcription": None, "sentiment": None}


__all__ = ["AnnotateJob", "annotate_source", "mexca_video_annotation", "mexca_multimodal", "mexca_selection"]
