"""Facial affect, batched: FACS action units from blendshapes, 7 emotions (fer's mini-Xception) and
valence/arousal derived on Russell's circumplex, for every face of a batch at once; per-video reports.

    affect = gf.AffectAnalyzer(device="cuda")
    faces = affect(batch.frames, landmarker(batch.frames, state))   # aus (N, 22), emotions (N, 7), valence, arousal
    table, result = gf.affect_source("talk.mp4", landmarker, affect)   # the job: gpuface.jobs.affect
"""
from gpuface.stages.affect.analyzer import AffectAnalyzer
from gpuface.stages.affect.aus import AU_DESCRIPTIONS, AU_NAMES, AU_TABLE, AU_THRESHOLD, blendshapes_to_aus
from gpuface.stages.affect.emotions import EMOTIONS, QUADRANTS, circumplex_valence_arousal, emotion_chips
from gpuface.stages.affect.tables import affect_columns, affect_rows, subtract_person_baseline

__all__ = ["AffectAnalyzer", "AU_DESCRIPTIONS", "AU_NAMES", "AU_TABLE", "AU_THRESHOLD", "blendshapes_to_aus",
           "EMOTIONS", "QUADRANTS", "circumplex_valence_arousal", "emotion_chips", "affect_columns", "affect_rows",
           "subtract_person_baseline"]
