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

from gpuface.core.errors import UnsupportedInputError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register
from gpuface.jobs.schema import IdentityOptions, LandmarkerOptions, SelectionOptions, boolean, choice, option


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

    @classmethod
    def load(cls, pipeline, o) -> None:
        pipeline.embedder()
        if o.affect:
            pipeline.affect_analyzer()

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        k = o.num_faces
        return cls(pipeline.embedder(), k if isinstance(k, int) else tuple(k), o.per_face, o.too_few, o.embeddings,
                   pipeline.affect_analyzer() if o.affect else None)

    def __init__(self, embedder, num_faces=(1, 9), per_face: bool = False, too_few: str = "error",
                 embeddings: bool = False, affect=None):
        self.embedder, self.num_faces, self.per_face, self.too_few = embedder, num_faces, per_face, too_few
        self.embeddings, self.affect = embeddings, affect

    def stages(self):
        return [("embedding", self.embedder)] + ([("affect", self.affect)] if self.affect is not None else [])

    def start(self, run) -> None:
        if run.is_image:
            raise UnsupportedInputError(f"{run.path}: annotate needs a video (tracks and identities over time)")
        self.rows, self.embs, self.frames_seen = [], [], []

    def step(self, run, batch, faces) -> None:
        import pandas as pd

        from gpuface.stages.affect.tables import affect_columns
        from gpuface.stages.tables import faces_rows

        table = faces_rows(faces, batch, run.path)
        f = faces.to("cpu")
        table.insert(9, "presence", f.presence.numpy())
        table.insert(10, "track", f.track_id.numpy())
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
                labels = cluster_embeddings(emb, self.num_faces, too_few=self.too_few)
            else:
                ids, inverse = np.unique(track, return_inverse=True)
                means = np.stack([emb[inverse == i].mean(0) for i in range(len(ids))])
                k = self.num_faces
                if not isinstance(k, int):  # the count is estimated on the faces, then the tracks are clustered
                    k = max(min(estimate_count(emb, *k), len(ids)), k[0])
                labels = cluster_embeddings(means, k, too_few=self.too_few)[inverse]
            table["label"] = labels
            table["confidence"] = label_confidence(emb, labels)
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
    ``face_landmarks`` ([[x, y], …]: the table's keypoints), ``face_aus`` (the AU intensities when the table has
    the affect columns), ``face_label`` (the identity as a string, as mexca's ``FloatToStr``), ``face_confidence``,
    and ``face_average_embeddings`` (identity → mean embedding, when the table has the ``emb_`` columns); None where
    a frame has no face.

    Args:
        table: the ``annotation`` table of one video (:func:`annotate_source`).
    """
    import numpy as np
    import pandas as pd

    from gpuface.stages.affect.aus import au_columns

    kp = [c for c in table.columns if c.startswith("kp") and c.endswith("_x")]
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


__all__ = ["AnnotateJob", "annotate_source", "mexca_video_annotation"]
