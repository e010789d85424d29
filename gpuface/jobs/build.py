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
model registry (:mod:`gpuface.models.registry`), the option defaults from the schema (:mod:`gpuface.jobs.schema`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpuface.core.device import resolve_device
from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.schema import SELECTION, defaults, parse_scale, validate_options
from gpuface.models.registry import ANONYMIZE_AUTO, ANONYMIZE_FILL, detector_config
from gpuface.jobs.registry import JOBS, job_names

#: Keys a job spec may have.
SPEC_KEYS = ("job", "options", "batch_size", "device", "backend", "layers", "temporal", "seed")
#: What each job calls its main output: ``<stem><suffix><input's extension>``.
OUTPUT_SUFFIX = {"anonymize": "_anonymized", "manipulate": "_manipulated"}


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
        raise InvalidOptionError(f"a job spec needs job: one of {', '.join(JOBS)}, or a list of them")
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


def output_path(path: str, out_dir: str | os.PathLike | None, suffix: str, ext: str | None = None) -> Path:
    """The one naming rule of per-input outputs: ``<stem><suffix><ext>`` (``ext``: the input's own by default) in
    ``out_dir``, or beside the input when ``out_dir`` is None."""
    src = Path(path)
    name = f"{src.stem}{suffix}{src.suffix if ext is None else ext}"
    return src.with_name(name) if out_dir is None else Path(out_dir) / name


class Pipeline:
    """A job spec made runnable: options checked together, models built once (on first use), jobs made per input.

    ``pipeline.run(path, out_dir)`` runs every job of the spec on one video or image in one decode pass and returns
    its :class:`~gpuface.jobs.runner.JobResult` (tables in ``result.tables``; files written into ``out_dir``, beside
    the input when None, the main output at ``output`` when given). :meth:`run_into` also writes every table into
    the folder (``gpuface run``, corpus shards).

    Raises:
        InvalidOptionError: options that contradict each other (a CenterFace scale for another detector, an image
            overlay without an image, an unknown region), when built; DeviceUnavailableError: no such device.
    """

    def __init__(self, spec: JobSpec):
        self.spec, self.names = spec, job_names(spec.job)
        opts = dict(spec.options)
        validate_options(self.names, opts)
        self.selection_options = {k: opts.pop(k) for k in list(opts) if k in SELECTION}
        self.options = {**defaults(self.names), **opts}
        self.device = resolve_device(spec.device)
        self._cache: dict[str, Any] = {}
        self._check()

    # -- options checked together, before any model ------------------------------------------------------------
    def _check(self) -> None:
        o, names = self.options, self.names
        if names == ["detect"] and "scale" in o and o["detector"] != "centerface":
            raise InvalidOptionError("scale applies to the centerface detector")
        if names == ["anonymize"]:
            if "scale" in o and self.anonymizer_setting()["detector"] != "centerface":
                raise InvalidOptionError("scale applies to the centerface detector (MTCNN: min_face_size)")
            if o["mode"] in ("img", "image") and "image" not in o:
                raise InvalidOptionError("mode img needs an image (--replaceimg)")
        from gpuface.ops.regions import get_region
        for key in ("regions", "draw_regions"):
            for r in o.get(key, ()):
                get_region(r)  # unknown names fail before any work
        if "manipulate" in names:
            self.layer_spec()

    def anonymizer_setting(self) -> dict:
        """The anonymiser's detector, detector arguments, stride and filling: ``detector: auto`` is the measured
        setting (:data:`~gpuface.models.registry.ANONYMIZE_AUTO`); a named detector its registry entry (every
        frame, its own input size); options given explicitly override either."""
        o = self.options
        if o["detector"] == "auto":
            a = ANONYMIZE_AUTO
            name, scale, every, gap, pad = a.detector, a.input_scale, a.detect_every, a.max_gap, a.temporal_pad
        else:
            cfg = detector_config(o["detector"])
            name, scale, every = cfg.name, cfg.input_scale, cfg.detect_every
            gap, pad = ANONYMIZE_FILL["max_gap"], ANONYMIZE_FILL["temporal_pad"]
        kwargs: dict[str, Any] = {}
        if name == "mtcnn":
            kwargs["min_face_size"] = o["min_face_size"]
        if name == "centerface":
            kwargs = parse_scale(o["scale"]) if "scale" in o else {"input_scale": scale}
        threshold = o.get("threshold", detector_config(name).threshold("anonymize"))
        return {"detector": name, "kwargs": kwargs, "detect_every": o.get("detect_every", every),
                "max_gap": o.get("max_gap", gap), "temporal_pad": o.get("temporal_pad", pad), "threshold": threshold}

    # -- models, built once -------------------------------------------------------------------------------------
    def _cached(self, key: str, make: Callable[[], Any]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def model(self):
        """The model feeding the jobs: the anonymiser's or the detect job's detector, or the landmarker."""
        if self.names == ["anonymize"]:
            def make():
                from gpuface.jobs.anonymize import anonymization_detector
                s = self.anonymizer_setting()
                return anonymization_detector(s["detector"], self.device, s["threshold"], **s["kwargs"])
            return self._cached("anonymizer", make)
        if self.names == ["detect"]:
            return self._cached("detector", self._detector)
        return self._cached("landmarker", self._landmarker)

    def _detector(self):
        from gpuface.stages.detect import FaceDetector

        o = self.options
        kwargs = {"min_face_size": o["min_face_size"]} if o["detector"] == "mtcnn" else {}
        if "scale" in o:
            kwargs.update(parse_scale(o["scale"]))
        return FaceDetector(o["detector"], device=self.device, min_score=o["threshold"], **kwargs)

    def _landmarker(self):
        from gpuface.stages.landmarks import FaceLandmarker

        o = self.options
        return FaceLandmarker(o["detector"], device=self.device, max_faces=o.get("max_faces"),
                              min_score=o.get("threshold"), min_presence=o["min_presence"],
                              redetect_every=o.get("redetect_every"), blendshapes=o["blendshapes"])

    def affect_analyzer(self):
        """The :class:`~gpuface.stages.affect.AffectAnalyzer` of the affect options (built once)."""
        def make():
            from gpuface.stages.affect import AffectAnalyzer
            from gpuface.models.online import parse_weights_option
            o = self.options
            return AffectAnalyzer(device=self.device, au_threshold=o.get("au_threshold"),
                                  emotion_model=o.get("emotion_model", "mini-xception"),
                                  weights=parse_weights_option(o.get("weights")),
                                  au_model=o.get("au_model", "blendshapes"))
        return self._cached("affect", make)

    def embedder(self):
        """The identity :class:`~gpuface.stages.embed.Embedder` of annotate (built once)."""
        def make():
            from gpuface.stages.embed import Embedder
            return Embedder("dlib", device=self.device)
        return self._cached("embedder", make)

    def load(self) -> "Pipeline":
        """Build every model the jobs need now, so that missing weights are one error before any input."""
        self.model
        if "annotate" in self.names:
            self.embedder()
        if "affect" in self.names or ("annotate" in self.names and self.options["affect"]):
            self.affect_analyzer()
        return self

    def layer_spec(self):
        """The manipulate job's :class:`~gpuface.stages.layers.LayerSpec` (loaded once)."""
        from gpuface.stages.layers import load_spec
        return self._cached("layers", lambda: load_spec(dict(self.spec.extra)))

    def selection(self):
        """The :class:`~gpuface.io.decode.Selection` of the selection options (None: every frame)."""
        from gpuface.io.decode import Selection

        s = self.selection_options
        return Selection(**{k: tuple(v) if k == "area" else v for k, v in s.items()}) if s else None

    # -- jobs, made per input ------------------------------------------------------------------------------------
    def jobs(self, path: str, out_dir: str | os.PathLike | None, output: str | os.PathLike | None = None,
             overwrite: bool = False) -> list:
        """The spec's jobs for one input, their files named by :func:`output_path` (``output``: the main output)."""
        from gpuface.io.encode import free_path
        from gpuface.io.images import is_image

        o, jobs = self.options, []
        for name in self.names:
            cls = JOBS[name].job_class()
            main = Path(output) if output is not None else output_path(path, out_dir, OUTPUT_SUFFIX.get(name, ""))
            if name == "detect":
                jobs.append(cls())
            elif name == "landmarks":
                draw = output_path(path, out_dir, "_landmarks", ".png" if is_image(path) else ".mp4") \
                    if o["draw"] else None
                jobs.append(cls(draw, tuple(o["draw_regions"]), overwrite))
            elif name == "analyse":
                video = None
                if o["flow_video"] and not is_image(path):
                    video = free_path(output_path(path, out_dir, "_flow", ".mp4"), overwrite)
                    video.parent.mkdir(parents=True, exist_ok=True)
                jobs.append(cls(tuple(o["regions"]), o["space"], o["flow"], o["dense"], video))
            elif name == "annotate":
                k = o["num_faces"]
                jobs.append(cls(self.embedder(), k if isinstance(k, int) else tuple(k), o["per_face"], o["too_few"],
                                o["embeddings"],
                                self.affect_analyzer() if o["affect"] else None))
            elif name == "affect":
                jobs.append(cls(self.affect_analyzer(), o["report"], out_dir if out_dir is not None else
                                Path(path).parent, f".{o['format']}", o["report"], overwrite, o["baseline"]))
            elif name == "anonymize":
                jobs.append(self._anonymize_job(cls, main, overwrite))
            else:  # manipulate
                jobs.append(cls(self.layer_spec(), main, o["crf"], o["preset"], overwrite, o["encoder"]))
        return jobs

    def _anonymize_job(self, cls, output: Path, overwrite: bool):
        from gpuface.io.images import read_rgba
        from gpuface.ops.anonymize import AnonymizeOptions
        from gpuface.stages.gapfill import FillOptions

        o, s = self.options, self.anonymizer_setting()
        overlay = self._cached("overlay", lambda: read_rgba(o["image"])) if "image" in o else None
        options = AnonymizeOptions(mode=o["mode"], ellipse=o["ellipse"], mask_scale=o["mask_scale"],
                                   colour=tuple(o["colour"]), overlay=overlay, mosaic_size=o.get("mosaic_size"))
        fill = FillOptions(max_gap=s["max_gap"], pad=s["temporal_pad"], drop_isolated=o["drop_isolated"])
        return cls(output, options, s["threshold"], None if o["data_format"] == "none" else o["data_format"],
                   o["crf"], o["preset"], overwrite, o["draw_scores"], fill, o.get("x264_options"),
                   o["keep_metadata"], o["heatmap"], s["detect_every"], o["encoder"])

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
