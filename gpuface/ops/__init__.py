"""Stateless tensor functions over whole batches: face regions and their masks (:mod:`.regions`), ROI geometry
(:mod:`.geometry`), drawing (:mod:`.draw`), the manipulation ops (:mod:`.registry`: ``OPS``, ``REACH``; families in
:mod:`.colour`, :mod:`.occlusion`, :mod:`.spatial`, :mod:`.stylise`, shared parts in :mod:`.base`), the anonymisation
masks (:mod:`.anonymize`), timing curves and temporal shuffles (:mod:`.timing`, :mod:`.temporal`), counter-based
randomness (:mod:`.rng`), measurements (:mod:`.analysis`: colour means, optical flow, shot cuts) and identity
clustering (:mod:`.cluster`). Imports only :mod:`gpuface.core` and :mod:`gpuface.io`; never a model."""
