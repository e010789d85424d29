"""The one place options become models and jobs: :func:`build` turns a :class:`JobSpec` into a :class:`Pipeline`.

A job spec (YAML/JSON, or a dict) names a job and its options, e.g.::

    job: landmarks            # detect | landmarks | anonymize | manipulate | analyse | annotate | affect
    batch_size: 16
    device: auto              # auto | cpu | cuda | cuda:1
    backend: auto             # decoder: auto | pyav | decord | torchcodec
    options: {detector: blazeface-full, max_faces: 2, end: 10.0}
    # manipulate also takes: layers: [...], temporal: {...}, seed: 7

Landmark jobs compose into one decode pass (the faces of each batch found once), e.g.
``job: [landmarks, manipulate, analyse]``; the options then apply to every job that takes them.

Every way in goes through here: the CLI commands turn their flags into a spec, and ``gpuface run``, ``gpuface
corpus run``, SLURM shards and ``gpuface demo`` load one, so a flag and a spec option cannot mean two things.
Per-model defaults (thresholds per use, CenterFace's input scale, the anonymiser's detection stride) come from the
model registry (:mod:`gpuface.models.registry`), each job's options and how they become its models from the job's
own file (:mod:`gpuface.jobs.registry`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from gpuface.core.device import resolve_device
from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import output_path
from gpuface.jobs.registry import JOBS, job_names, spec_jobs, validate_options
from gpuface.jobs.schema import SELECTION

#: Keys a job spec may have.
SPEC_KEYS = ("job", "options", "batch_size", "device", "backend", "layers", "temporal", "seed")


@dataclass
class JobSpec:
    """A job (or several composed into one decode pass) and its options (see the module docstring)."""

    job: str | list[str]
    options: dict = field(default_factory=dict)
    batch_size: int = 16
    device: str = "auto"
    backend: str = "auto"
    extra: dict = field(default_factory=dict)   # manipulate: layers, temporal, seed


def load_job_spec(source: str | os.PathLike | dict) -> JobSpec:
    """A :class:`JobSpec` from a YAML/JSON file or a dict, checked against the schema before any model loads.

    Raises:
        InvalidOptionError: an unknown job, key or option, a value out of its range, a manipulate job without layers.
    """
    from gpuface.io.sources import read_spec_file

    data: Any = source if isinstance(source, dict) else read_spec_file(source, "job spec")
    if not isinstance(data, dict) or "job" not in data:
        raise InvalidOptionError(f"a job spec needs job: one of {', '.join(spec_jobs())}, or a list of them")
    names = job_names(data["job"])
    unknown = set(data) - set(SPEC_KEYS)
    if unknown:
        raise InvalidOptionError(f"job spec: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    if not isinstance(data.get("options") or {}, dict):
        raise InvalidOptionError("job spec: options must be a mapping of option: value")
    options = dict(data.get("options") or {})
    if "color" in options:   # the API spells colour; color is accepted
        options["colour"] = options.pop("color")
    validate_options(names, options)
    extra = {k: data[k] for k in ("layers", "temporal", "seed") if k in data}
    if "manipulate" in names:
        if not extra.get("layers") and not extra.get("temporal"):
            raise InvalidOptionError("a manipulate job needs layers (and/or temporal)")
        from gpuface.stages.layers import load_spec
        load_spec(extra)   # layer names and parameters, checked now
    batch = data.get("batch_size", 16)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidOptionError(f"job spec: batch_size must be an integer >= 1, got {batch!r}")
    return JobSpec(job=data["job"] if isinstance(data["job"], str) else names, options=options, batch_size=batch,
                   device=str(data.get("device", "auto")), backend=str(data.get("backend", "auto")), extra=extra)


class Pipeline:
    """A job spec made runnable: options checked together, models built once (on first use), jobs made per input.

    ``pipeline.run(path, out_dir)`` runs every job of the spec on one video or image in one decode pass and returns
    its :class:`~gpuface.jobs.base.JobResult` (tables in ``result.tables``; files written into ``out_dir``, beside
    the input when None, the main output at ``output`` when given). :meth:`run_into` also writes every table into
    the folder (``gpuface run``, corpus shards).

    Each job's part lives in its own file (:mod:`gpuface.jobs.registry`): its ``Options`` (``job_options[name]``,
    made from the spec's options and the defaults), ``check``, ``load``, ``detector`` and ``create``. The pipeline
    holds what jobs share: the device, the landmarker, the embedder, the affect analyser and the layer spec, each
    built once.

    Raises:
        InvalidOptionError: options that contradict each other (a CenterFace scale for another detector, an image
            overlay without an image, an unknown region), when built; DeviceUnavailableError: no such device.
    """

    def __init__(self, spec: JobSpec):
        self.spec, self.names = spec, job_names(spec.job)
        opts = dict(spec.options)
        validate_options(self.names, opts)
        self.selection_options = {k: opts[k] for k in opts if k in SELECTION}
        self.job_options = {}
        for name in self.names:
            cls = JOBS[name].cls
            taken = {f.name for f in fields(cls.Options)}
            self.job_options[name] = cls.Options(**{k: v for k, v in opts.items() if k in taken})
        self.device = resolve_device(spec.device)
        self._cache: dict[Any, Any] = {}
        for name in self.names:   # options checked together, before any model
            JOBS[name].cls.check(self, self.job_options[name])

    def cached(self, key, make: Callable[[], Any]):
        """``make()`` the first time ``key`` is asked for, the same object after."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def model(self):
        """The model feeding the jobs: a detection job's detector (its ``detector``), or the landmarker."""
        name = self.names[0]
        cls = JOBS[name].cls
        if cls.faces == "detections":
            return self.cached("detector", lambda: cls.detector(self, self.job_options[name]))
        return self.landmarker()

    def landmarker(self):
        """The :class:`~gpuface.stages.landmarks.FaceLandmarker` of the landmarker options (built once)."""
        def make():   # every landmark job's Options holds the landmarker's (the same values: one spec)
            from gpuface.stages.landmarks import FaceLandmarker
            o = self.job_options[self.names[0]]
            mtcnn = {k: v for k in ("min_face_size", "thresholds", "factor")
                     if (v := getattr(o, f"mtcnn_{k}", None)) is not None}
            return FaceLandmarker(o.detector, device=self.device, max_faces=o.max_faces, min_score=o.threshold,
                                  min_presence=o.min_presence, redetect_every=o.redetect_every,
                                  blendshapes=o.blendshapes, detector_options=mtcnn)
        return self.cached("landmarker", make)

    def affect_analyzer(self):
        """The :class:`~gpuface.stages.affect.AffectAnalyzer` of the affect job's options (its defaults when only
        ``annotate(affect: true)`` asks for it; built once)."""
        def make():
            from gpuface.models.online import parse_weights_option
            from gpuface.stages.affect import AffectAnalyzer
            o = self.job_options.get("affect") or JOBS["affect"].cls.Options()
            return AffectAnalyzer(device=self.device, au_threshold=o.au_threshold, emotion_model=o.emotion_model,
                                  weights=parse_weights_option(o.weights), au_model=o.au_model)
        return self.cached("affect", make)

    def embedder(self):
        """The identity :class:`~gpuface.stages.embed.Embedder` (built once)."""
        def make():
            from gpuface.stages.embed import Embedder
            o = next(self.job_options[n] for n in self.names if hasattr(self.job_options[n], "embedder"))
            return Embedder(o.embedder, device=self.device, post_process=getattr(o, "post_process", True))
        return self.cached("embedder", make)

    def layer_spec(self):
        """The manipulate job's :class:`~gpuface.stages.layers.LayerSpec` (loaded once)."""
        from gpuface.stages.layers import load_spec
        return self.cached("layers", lambda: load_spec(dict(self.spec.extra)))

    def load(self) -> "Pipeline":
        """Build every model the jobs need now, so that missing weights are one error before any input."""
        self.model
        for name in self.names:
            JOBS[name].cls.load(self, self.job_options[name])
        return self

    def selection(self):
        """The :class:`~gpuface.io.decode.Selection` of the selection options (None: every frame)."""
        from gpuface.io.decode import Selection

        s = self.selection_options
        return Selection(**{k: tuple(v) if k == "area" else v for k, v in s.items()}) if s else None

    def jobs(self, path: str, out_dir: str | os.PathLike | None, output: str | os.PathLike | None = None,
             overwrite: bool = False) -> list:
        """The spec's jobs for one input, their files named by :func:`output_path` (``output``: the main output)."""
        jobs = []
        for name in self.names:
            entry = JOBS[name]
            main = Path(output) if output is not None else output_path(path, out_dir, entry.suffix)
            jobs.append(entry.cls.create(self, self.job_options[name], path, out_dir, main, overwrite))
        return jobs

    def run(self, path: str, out_dir: str | os.PathLike | None = None, output: str | os.PathLike | None = None,
            overwrite: bool = False, quiet: bool = True):
        """Run the spec on one input (one decode pass); see the class docstring."""
        from gpuface.jobs.runner import run_source

        jobs = self.jobs(path, out_dir, output, overwrite)
        return run_source(path, jobs, self.model, self.spec.batch_size, self.selection(), self.spec.backend, quiet)

    def run_into(self, path: str, folder: str | os.PathLike, quiet: bool = True):
        """:meth:`run` with every file written into ``folder`` and every table the jobs leave written there too,
        under its registered name (``faces.parquet``, ``landmarks.parquet``, …)."""
        from gpuface.stages.tables import write_table

        folder = Path(folder)
        result = self.run(path, folder, overwrite=True, quiet=quiet)
        for name in self.names:
            for table, file in JOBS[name].tables.items():
                if result.tables.get(table) is not None:
                    result.table_files[table] = str(write_table(result.tables[table], folder / file))
                    result.outputs.append(result.table_files[table])
        return result


def build(spec: JobSpec | str | os.PathLike | dict) -> Pipeline:
    """The :class:`Pipeline` of a job spec (a :class:`JobSpec`, or its file or dict, loaded by :func:`load_job_spec`).

    Raises:
        InvalidOptionError: an invalid spec (nothing is loaded or written).
    """
    return Pipeline(spec if isinstance(spec, JobSpec) else load_job_spec(spec))


__all__ = ["JobSpec", "load_job_spec", "Pipeline", "build", "output_path", "SPEC_KEYS"]
