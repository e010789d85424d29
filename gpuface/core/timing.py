"""Per-stage wall time of a run: where the seconds of a command go (decode, detect or landmarks, embedding,
affect, the job's own work, encode, write).

:func:`gpuface.jobs.runner.run_source` opens a :class:`StageTimer` for each source and makes it current; code
anywhere below marks its part with ``with stage("encode"): …``. Times are exclusive: a stage nested in another
(the encoder inside a job's step) is taken out of its parent's time, so the stages add up to the run's time.

On a GPU, work is queued asynchronously and its time lands in whichever stage next waits for the device. With
``sync=True`` (``--profile``) every stage ends with ``torch.cuda.synchronize()``, so each stage is charged its own
device time (and the run is slightly slower). On a CPU without ``sync``, decoding and face finding run on a
thread of their own one batch ahead of the jobs (:func:`gpuface.jobs.runner.run_source`): their stage
(``detector`` or ``landmarker``) is then the time the jobs waited for them, and ``decode`` is not reported apart;
``--profile`` runs them one after another, so that each stage is charged its own time.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

_current: list["StageTimer"] = []
_profile = [False]


def set_profile(on: bool) -> None:
    """Switch profiling on for this process (the CLI's ``--profile``): every run synchronises CUDA at its stage
    boundaries and the CLI prints each input's stage table."""
    _profile[0] = bool(on)


def profiling() -> bool:
    """Whether :func:`set_profile` switched profiling on."""
    return _profile[0]


class StageTimer:
    """Seconds per stage name (exclusive of nested stages), in first-seen order.

    Attributes:
        seconds: ``{stage: seconds}``. sync: synchronise CUDA at each stage boundary.
    """

    def __init__(self, sync: bool = False):
        self.seconds: dict[str, float] = defaultdict(float)
        self.sync = sync
        self._stack: list[list] = []   # [name, start, seconds of nested stages]

    def _now(self) -> float:
        if self.sync:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time the enclosed code as ``name`` (exclusive of the stages opened inside it)."""
        entry = [name, self._now(), 0.0]
        self._stack.append(entry)
        try:
            yield
        finally:
            self._stack.pop()
            total = self._now() - entry[1]
            self.seconds[name] += total - entry[2]
            if self._stack:
                self._stack[-1][2] += total

    @contextlib.contextmanager
    def current(self):
        """Make this the timer that :func:`stage` reports to, inside the ``with`` block."""
        _current.append(self)
        try:
            yield self
        finally:
            _current.remove(self)


@contextlib.contextmanager
def stage(name: str):
    """Time the enclosed code as stage ``name`` of the current :class:`StageTimer` (nothing when none is)."""
    if not _current:
        yield
        return
    with _current[-1].stage(name):
        yield


def stage_table(source: str, seconds: dict[str, float]) -> str:
    """A per-stage table of one run for ``--profile``: stage, seconds, share."""
    total = sum(seconds.values()) or 1.0
    rows = [f"{source}: {sum(seconds.values()):.2f} s"] + [f"  {k:<12} {v:8.2f} s {100 * v / total:5.1f} %"
                                                           for k, v in seconds.items()]
    return "\n".join(rows)


def format_stages(seconds: dict[str, float]) -> str:
    """``decode 1.2 s (30 %), landmarks 2.0 s (50 %), …`` for a log line."""
    total = sum(seconds.values()) or 1.0
    return ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in seconds.items())


__all__ = ["StageTimer", "stage", "format_stages", "stage_table", "set_profile", "profiling"]
