"""The bottom layer: the data contracts (:mod:`.types`: ``FrameBatch``, ``Faces``, ``VideoInfo``), the named errors
(:mod:`.errors`), device choice (:mod:`.device`), the host-sync discipline (:mod:`.syncs`), the CPU thread budget
(:mod:`.threads`) and verified downloads (:mod:`.fetch`). Imports nothing else of gpuface."""
