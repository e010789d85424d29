"""Stages: models made into batch steps with the one contract — take frames (and the faces and tracking state they
need) and return a new :class:`~gpuface.core.types.Faces`, never changing their input. Detection
(:mod:`.detect`), landmarks and tracking (:mod:`.landmarks`, :mod:`.track`), embeddings (:mod:`.embed`), affect
(:mod:`.affect`); the per-video state that jobs drive: temporal gap filling of detections (:mod:`.gapfill`), the
layer stack of a manipulation spec (:mod:`.layers`); per-face table rows and atomic table files (:mod:`.tables`)."""
