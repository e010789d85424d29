"""Per-video affect outputs: the facetorch analyser's JSON, summary CSV, AU timeline CSV and text report, and an
HTML report with pictures (AU heat map over time, stacked emotion probabilities, valence/arousal trajectory and a
thumbnail for each identity).

The JSON follows the layout of the facetorch-based video analyser gpuface replaces: ``analysis_metadata``,
``video_metadata`` (fps, total_frames, width, height, duration_seconds), ``frame_analyses`` (per frame:
``frame_index``, ``timestamp_seconds``, ``faces_detected``, ``faces`` with ``face_id``, ``detection_confidence``,
``bbox``, ``expression``, ``valence_arousal``, ``action_units``) and ``summary_statistics`` (frames with faces,
most common emotion, mean valence/arousal, most active AUs). Every file is written under a temporary name and
renamed when complete; on failure nothing is left.
"""
from __future__ import annotations

import base64
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from gpuface.io.encode import free_path
from gpuface.stages.affect.aus import FACETORCH_AU_NAMES, au_columns, au_description, au_muscle
from gpuface.stages.affect.emotions import EMOTIONS, FACETORCH_EMOTIONS

#: Display bins of AU intensity (FACS letters A–E as a reading aid; the intensities are not FACS-coded).
INTENSITY_BINS = ((0.85, "E"), (0.7, "D"), (0.5, "C"), (0.35, "B"), (0.25, "A"))
#: The facetorch analyser's intensity words (its ``_get_intensity_level``: < 0.3 None, < 0.5 Trace, < 0.7 Slight,
#: < 0.85 Moderate, else Strong), given beside the letters.
INTENSITY_LEVELS = ((0.85, "Strong"), (0.7, "Moderate"), (0.5, "Slight"), (0.3, "Trace"))


def _letter(score: float) -> str:
    return next((letter for edge, letter in INTENSITY_BINS if score >= edge), "")


def _level(score: float) -> str:
    return next((word for edge, word in INTENSITY_LEVELS if score >= edge), "None")


def _facetorch_au(code: str) -> str:
    return FACETORCH_AU_NAMES.get(code, code)


def _identity_column(table: pd.DataFrame) -> str:
    return "label" if "label" in table.columns and table["label"].notna().any() else "track"


def affect_json(table: pd.DataFrame, info, meta: dict) -> dict:
    """The facetorch analyser's JSON layout from an affect table (:func:`gpuface.stages.affect.tables.affect_rows`).

    Args:
        table: the affect table of one video. info: its :class:`~gpuface.core.types.VideoInfo`.
        meta: extra ``analysis_metadata`` (device, step, seconds, models …).
    """
    ident = _identity_column(table)
    names = au_columns(table.columns)
    frames = []
    for (frame, t), rows in table.groupby(["frame", "time_s"], sort=True):
        faces = []
        for _, r in rows[rows["face"].notna()].iterrows():
            active = [_facetorch_au(a) for a in names if bool(r[f"{a}_active"])]
            faces.append({
                "face_id": int(r["face"]), "track_id": int(r["track"]),
                "identity": None if pd.isna(r[ident]) else int(r[ident]),
                "detection_confidence": float(r["score"]),
                "bbox": [float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"])],
                "expression": {"predicted_emotion": r["emotion"], "confidence": float(r[r["emotion"]]),
                               "probabilities": {e: float(r[e]) for e in EMOTIONS}},
                "valence_arousal": {"valence": float(r["valence"]), "arousal": float(r["arousal"]),
                                    "emotional_quadrant": r["quadrant"], "derived_from": "emotion probabilities"},
                "action_units": {"active_action_units": active, "total_active": len(active),
                                 "interpretations": {_facetorch_au(a): {
                                     "description": au_description(_facetorch_au(a)), "muscle": au_muscle(a),
                                     "score": float(r[a]), "active": bool(r[f"{a}_active"]),
                                     "intensity": _letter(float(r[a])), "intensity_level": _level(float(r[a]))}
                                     for a in names}},
            })
        frames.append({"frame_index": int(frame), "timestamp_seconds": float(t), "faces_detected": len(faces),
                       "faces": faces})
    return {
        "analysis_metadata": {"video_path": info.path, **meta},
        "video_metadata": {"fps": float(info.fps), "total_frames": info.num_frames, "width": info.width,
                           "height": info.height, "duration_seconds": info.duration},
        "frame_analyses": frames,
        "summary_statistics": summary_statistics(table),
    }


def summary_statistics(table: pd.DataFrame) -> dict:
    """Frames analysed and with faces, faces, mean faces per frame with faces, the most common emotion, mean
    valence/arousal and the five most often active AUs (``[[AU, count], …]``)."""
    faces = table[table["face"].notna()]
    with_faces = faces["frame"].nunique()
    counts = {a: int(faces[f"{a}_active"].astype(bool).sum()) for a in au_columns(table.columns)}
    top = sorted(((_facetorch_au(a), c) for a, c in counts.items() if c), key=lambda x: -x[1])[:5]
    return {
        "total_frames": int(table["frame"].nunique()), "frames_with_faces": int(with_faces),
        "total_faces_detected": len(faces),
        "average_faces_per_frame": len(faces) / with_faces if with_faces else 0.0,
        "most_common_emotion": faces["emotion"].mode().iloc[0] if len(faces) else None,
        "average_valence": float(faces["valence"].mean()) if len(faces) else None,
        "average_arousal": float(faces["arousal"].mean()) if len(faces) else None,
        "most_active_action_units": [list(x) for x in top],
    }


def summary_csv(table: pd.DataFrame) -> pd.DataFrame:
    """Per frame and face: frame_index, timestamp_seconds, faces_detected, face_id, detection_confidence,
    emotion, emotion_confidence, valence, arousal, emotional_quadrant, active_aus_count, active_aus."""
    names = au_columns(table.columns)
    per_frame = table.groupby("frame")["face"].count()
    faces = table["face"].notna()
    active = table[[f"{a}_active" for a in names]].fillna(False).astype(bool).to_numpy()
    conf = [float(r[r["emotion"]]) if isinstance(r["emotion"], str) else np.nan
            for _, r in table[["emotion", *EMOTIONS]].iterrows()]
    return pd.DataFrame({
        "frame_index": table["frame"], "timestamp_seconds": table["time_s"],
        "faces_detected": table["frame"].map(per_frame), "face_id": table["face"],
        "detection_confidence": table["score"], "emotion": table["emotion"], "emotion_confidence": conf,
        "valence": table["valence"], "arousal": table["arousal"], "emotional_quadrant": table["quadrant"],
        "active_aus_count": np.where(faces, active.sum(1), 0),
        "active_aus": [",".join(a for a, on in zip(names, row) if on) for row in active],
    })


def au_timeline(table: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (frame, face, AU): frame_index, timestamp_seconds, face_id, action_unit (the facetorch
    analyser's name: AU45 for the table's AU43), description, score, active, intensity (display letter),
    intensity_level (the analyser's word) and muscle (FACS muscular basis)."""
    names = au_columns(table.columns)
    faces = table.loc[table["face"].notna(), ["frame", "time_s", "face", *names, *(f"{a}_active" for a in names)]]
    long = faces.melt(id_vars=["frame", "time_s", "face"], value_vars=names, var_name="action_unit",
                      value_name="score")
    flags = faces.melt(id_vars=["frame", "face"], value_vars=[f"{a}_active" for a in names], value_name="active")
    long["active"] = flags["active"].astype(bool).to_numpy()
    long["muscle"] = long["action_unit"].map(au_muscle)
    long["action_unit"] = long["action_unit"].map(_facetorch_au)
    long["description"] = long["action_unit"].map(au_description)
    long["intensity"] = long["score"].map(_letter)
    long["intensity_level"] = long["score"].map(_level)
    long = long.rename(columns={"frame": "frame_index", "time_s": "timestamp_seconds", "face": "face_id"})
    return long.sort_values(["frame_index", "face_id"], kind="stable")[
        ["frame_index", "timestamp_seconds", "face_id", "action_unit", "description", "score", "active",
         "intensity", "intensity_level", "muscle"]].reset_index(drop=True)


def text_report(doc: dict) -> str:
    """A human-readable summary of :func:`affect_json`'s document."""
    v, s, m = doc["video_metadata"], doc["summary_statistics"], doc["analysis_metadata"]
    lines = ["FACIAL AFFECT ANALYSIS REPORT (gpuface)", "=" * 50, "", "VIDEO:",
             f"File: {m['video_path']}", f"Duration: {v['duration_seconds']:.1f} s",
             f"Frames: {v['total_frames']}  FPS: {v['fps']:.2f}  Resolution: {v['width']}x{v['height']}", "",
             "SUMMARY:", f"Frames analysed: {s['total_frames']}", f"Frames with faces: {s['frames_with_faces']}",
             f"Faces: {s['total_faces_detected']}", f"Faces per frame with faces: {s['average_faces_per_frame']:.2f}"]
    if s["most_common_emotion"]:
        lines += [f"Most common emotion: {s['most_common_emotion']}",
                  f"Mean valence: {s['average_valence']:.3f}  Mean arousal: {s['average_arousal']:.3f} "
                  "(derived from the emotion probabilities on Russell's circumplex)"]
    if s["most_active_action_units"]:
        lines += ["", "MOST ACTIVE ACTION UNITS (frames x faces):"]
        lines += [f"{a} ({au_description(a)}): {c}" for a, c in s["most_active_action_units"]]
    lines += ["", "AUs come from MediaPipe blendshapes through a cited mapping table and are not validated against "
              "human FACS coders; AU05, AU06 and AU09 are unreliable (see gpuface.stages.affect.aus).",
              f"Analysis took {m.get('processing_duration_seconds', 0):.1f} s."]
    return "\n".join(lines) + "\n"


def report_figures(table: pd.DataFrame, duration: float, thumbnails: dict | None = None,
                   max_identities: int = 8, emotion_labels: dict | None = None) -> dict:
    """One matplotlib figure per identity (the ``label`` column when identities are known, else ``track``;
    the ``max_identities`` with most faces): thumbnail, AU heat map over time, stacked emotion probabilities
    and the valence/arousal trajectory; every time axis spans [0, ``duration``] s. ``emotion_labels``: names for
    the emotions' legend (e.g. :data:`FACETORCH_EMOTIONS`).

    Returns:
        ``{identity: Figure}`` (matplotlib, Agg backend).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ident = _identity_column(table)
    names = au_columns(table.columns)
    faces = table[table["face"].notna() & table[ident].notna()]
    order = faces[ident].value_counts().index[:max_identities]
    figures = {}
    end = max(duration, float(faces["time_s"].max()) if len(faces) else 0.0, 1e-3)
    for who in order:
        rows = faces[faces[ident] == who].sort_values("time_s").groupby("time_s").first().reset_index()
        t = rows["time_s"].to_numpy()
        fig, ax = plt.subplots(1, 4, figsize=(17, 3.4), gridspec_kw={"width_ratios": [0.7, 2.4, 2.4, 1.3]})
        thumb = (thumbnails or {}).get(int(who)) if ident == "track" else None
        if thumb is not None:
            ax[0].imshow(thumb.permute(1, 2, 0).numpy())
        ax[0].set_axis_off()
        ax[0].set_title(f"{ident} {int(who)}\n{len(rows)} frames")
        # cells span from each analysed time to the next (the last one as long as the median step)
        step = float(np.median(np.diff(t))) if len(t) > 1 else end
        edges = np.append(t, t[-1] + step)
        ax[1].pcolormesh(edges, np.arange(len(names) + 1) - 0.5, rows[names].to_numpy().T, vmin=0,
                         vmax=1, cmap="magma")
        ax[1].invert_yaxis()
        ax[1].set_yticks(range(len(names)), names, fontsize=6 if len(names) < 30 else 4)
        ax[1].set_xlim(0, end)
        ax[1].set_xlabel("time (s)")
        ax[1].set_title("action units (intensity)")
        ax[2].stackplot(t, rows[list(EMOTIONS)].to_numpy().T, step="post",
                        labels=[(emotion_labels or {}).get(e, e) for e in EMOTIONS])
        ax[2].set_xlim(0, end)
        ax[2].set_ylim(0, 1)
        ax[2].set_xlabel("time (s)")
        ax[2].set_title("emotion probabilities")
        ax[2].legend(fontsize=6, loc="upper right", ncol=2)
        ax[3].axhline(0, color="grey", lw=0.5)
        ax[3].axvline(0, color="grey", lw=0.5)
        ax[3].plot(rows["valence"], rows["arousal"], color="lightgrey", lw=0.8)
        ax[3].scatter(rows["valence"], rows["arousal"], c=t, cmap="viridis", s=8, vmin=0, vmax=end)
        ax[3].set_xlim(-1, 1)
        ax[3].set_ylim(-1, 1)
        ax[3].set_xlabel("valence")
        ax[3].set_ylabel("arousal")
        ax[3].set_title("valence/arousal (derived)")
        fig.tight_layout()
        figures[int(who)] = fig
    return figures


def _html(doc: dict, figures: dict) -> str:
    import matplotlib.pyplot as plt

    s = doc["summary_statistics"]
    parts = [f"<html><head><meta charset='utf-8'><title>gpuface affect: {Path(doc['analysis_metadata']['video_path']).name}"
             "</title></head><body style='font-family:sans-serif'>",
             f"<h1>{Path(doc['analysis_metadata']['video_path']).name}</h1>",
             f"<p>{doc['video_metadata']['duration_seconds']:.1f} s, {s['total_frames']} frames analysed, "
             f"{s['frames_with_faces']} with faces; most common emotion: {s['most_common_emotion']}; most active AUs: "
             f"{', '.join(a for a, _ in s['most_active_action_units'])}</p>"]
    for who, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        parts.append(f"<h2>identity {who}</h2><img src='data:image/png;base64,"
                     f"{base64.b64encode(buf.getvalue()).decode()}'/>")
    parts.append("<p>Valence/arousal are derived from the emotion probabilities, not measured. AUs come from "
                 "blendshapes through a cited table, not validated against FACS coders.</p></body></html>")
    return "\n".join(parts)


def facetorch_emotion_names(table: pd.DataFrame, doc: dict) -> tuple[pd.DataFrame, dict]:
    """The table and the JSON document with the facetorch analyser's emotion names (:data:`FACETORCH_EMOTIONS`:
    angry, happy, sad for py-feat's anger, happiness, sadness): the emotion columns, the ``emotion`` values, and in
    the document each face's ``predicted_emotion`` and ``probabilities`` and the ``most_common_emotion``. The table
    is a new one; the document is renamed in place (and returned)."""
    rename = lambda e: FACETORCH_EMOTIONS.get(e, e)  # noqa: E731
    table = table.rename(columns=FACETORCH_EMOTIONS).assign(emotion=table["emotion"].map(rename))
    for frame in doc["frame_analyses"]:
        for face in frame["faces"]:
            x = face["expression"]
            x["predicted_emotion"] = rename(x["predicted_emotion"])
            x["probabilities"] = {rename(k): v for k, v in x["probabilities"].items()}
    s = doc["summary_statistics"]
    s["most_common_emotion"] = rename(s["most_common_emotion"])
    return table, doc


def write_affect_outputs(table: pd.DataFrame, info, out_dir: str | os.PathLike, stem: str, meta: dict,
                         table_ext: str = ".parquet", thumbnails: dict | None = None, report: bool = True,
                         overwrite: bool = False, emotion_names: str = "pyfeat") -> list[str]:
    """Write one video's affect outputs into ``out_dir``: ``<stem>_affect<table_ext>`` (the table),
    ``<stem>_affect.json``, ``<stem>_affect_summary.csv``, ``<stem>_au_timeline.csv``, ``<stem>_affect_report.txt``
    and, with ``report``, ``<stem>_affect_report.html`` (figures embedded as PNG). An existing file gets a
    numbered name unless ``overwrite``. All or nothing: a failure removes what was written. ``emotion_names``:
    ``pyfeat`` (anger, happiness, …) or ``facetorch`` (:func:`facetorch_emotion_names`) in the table, the summary
    CSV and the JSON.

    Returns:
        The paths written.
    """
    from gpuface.stages.tables import write_table, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = affect_json(table, info, {**meta, "analysis_end_time": datetime.now(timezone.utc).isoformat()})
    summary, timeline, figures_from = summary_csv(table), au_timeline(table), table
    names = FACETORCH_EMOTIONS if emotion_names == "facetorch" else None
    if names:
        table, doc = facetorch_emotion_names(table, doc)
        summary["emotion"] = summary["emotion"].map(lambda e: FACETORCH_EMOTIONS.get(e, e))
    written: list[str] = []

    def text(name: str, content: str) -> None:
        written.append(str(write_text(content, free_path(out / name, overwrite))))

    try:
        for name, df in ((f"{stem}_affect{table_ext}", table), (f"{stem}_affect_summary.csv", summary),
                         (f"{stem}_au_timeline.csv", timeline)):
            written.append(str(write_table(df, free_path(out / name, overwrite))))
        text(f"{stem}_affect.json", json.dumps(doc, indent=1))
        text(f"{stem}_affect_report.txt", text_report(doc))
        if report:
            text(f"{stem}_affect_report.html", _html(doc, report_figures(figures_from, info.duration, thumbnails,
                                                                       emotion_labels=names)))
    except BaseException:
        for p in written:
            Path(p).unlink(missing_ok=True)
        raise
    return written


__all__ = ["affect_json", "facetorch_emotion_names", "summary_statistics", "summary_csv", "au_timeline",
           "text_report", "report_figures", "write_affect_outputs"]
