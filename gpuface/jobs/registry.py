"""The one job registry. A job is one file in this package: its class, decorated with :func:`register`, declares its
name, its frozen ``Options`` dataclass (names, kinds, ranges, defaults, help and command-line spellings: the
schema), the faces it needs (class attributes of :class:`~gpuface.jobs.base.Job`) and the tables and main output it
leaves. Everything else reads it from here:

- ``gpuface run`` / ``gpuface corpus run`` / SLURM: the ``job`` values and the options a spec may give
  (:func:`validate_options`, before any model loads);
- the CLI: each command's job flags (:func:`add_job_options`, read back by :func:`job_options`);
- the README's spec reference (:func:`spec_reference`; a test holds the README to it);
- :func:`gpuface.jobs.build`: the job classes and what they leave.

Job files import no torch at module level (their hooks import what they compute with), so that the CLI can build
its parser from the registry without loading torch. The registry finds them by listing this package: adding a job
is adding its file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.schema import SELECTION, Option, parse_count, schema_of

#: Modules of this package that are not jobs.
_NOT_JOBS = {"base", "build", "catalogue", "driver", "gallery", "registry", "runner", "schema"}


@dataclass(frozen=True)
class JobEntry:
    """One registered job.

    Attributes:
        name: the job-spec ``job`` value.
        cls: its :class:`~gpuface.jobs.base.Job` subclass (with ``Options``).
        summary: one line for ``--help`` and the README.
        tables: the tables it leaves in ``JobResult.tables`` → their file name in a per-input output folder.
        suffix: its main output's file name is ``<input stem><suffix><input's extension>`` ("" when it writes none).
        spec: False for a job a spec cannot run (it needs several inputs at once or a second input; its own command
            runs it).
    """

    name: str
    cls: type
    summary: str
    tables: Mapping[str, str]
    suffix: str
    spec: bool

    @property
    def options(self) -> dict[str, Option]:
        """The job's schema: option name → :class:`~gpuface.jobs.schema.Option`."""
        return schema_of(self.cls.Options)


class _Registry(Mapping):
    """name → :class:`JobEntry`, filled by the job files' :func:`register` when first read (job files are imported
    then, in name order)."""

    def __init__(self):
        self._entries: dict[str, JobEntry] = {}
        self._loaded = False

    def _load(self) -> dict[str, JobEntry]:
        if not self._loaded:
            self._loaded = True
            for m in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
                if m.name not in _NOT_JOBS:
                    importlib.import_module(f"gpuface.jobs.{m.name}")
            self._entries = dict(sorted(self._entries.items()))
        return self._entries

    def add(self, entry: JobEntry) -> None:
        if entry.name in self._entries and self._entries[entry.name].cls is not entry.cls:
            raise ValueError(f"job {entry.name!r} registered twice")
        self._entries[entry.name] = entry

    def __getitem__(self, name: str) -> JobEntry:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


#: Every job by name (see the module docstring).
JOBS: Mapping[str, JobEntry] = _Registry()


def register(name: str, summary: str, tables: Mapping[str, str] | None = None, suffix: str = "",
             spec: bool = True) -> Callable[[type], type]:
    """Class decorator: register a :class:`~gpuface.jobs.base.Job` subclass under ``name`` (see :class:`JobEntry`).

    Raises:
        TypeError: the class has no frozen ``Options`` dataclass.
    """
    def wrap(cls: type) -> type:
        params = getattr(getattr(cls, "Options", None), "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"job {name}: {cls.__name__}.Options must be a frozen dataclass")
        cls.name = name
        JOBS.add(JobEntry(name, cls, summary, MappingProxyType(dict(tables or {})), suffix, spec))
        return cls
    return wrap


#: Each spec job's options (name → option → :class:`Option`), read from the registry.
class _Options(Mapping):
    def __getitem__(self, name: str) -> dict[str, Option]:
        return JOBS[name].options

    def __iter__(self) -> Iterator[str]:
        return (n for n, e in JOBS.items() if e.spec)

    def __len__(self) -> int:
        return sum(1 for _ in self)


JOB_OPTIONS: Mapping[str, dict[str, Option]] = _Options()


def spec_jobs() -> list[str]:
    """The jobs a spec may name."""
    return list(JOB_OPTIONS)


def detection_jobs() -> list[str]:
    """Spec jobs that find faces with a detector alone; they run alone (every other job uses the landmarker and
    may compose)."""
    return [n for n in spec_jobs() if JOBS[n].cls.faces == "detections"]


def job_names(job: str | list) -> list[str]:
    """The job names of a spec's ``job`` (one name, or a list composed into one decode pass), checked.

    Raises:
        InvalidOptionError: an unknown or repeated name, or a detection job (detect, anonymize) composed with others.
    """
    names = [job] if isinstance(job, str) else list(job) if isinstance(job, (list, tuple)) else []
    allowed = spec_jobs()
    bad = [n for n in names if n not in allowed]
    if not names or bad or len(set(names)) < len(names):
        raise InvalidOptionError(f"job spec: job must be one of {', '.join(allowed)} or a list of distinct ones, "
                                 f"got {job!r}")
    alone = detection_jobs()
    if len(names) > 1 and any(n in alone for n in names):
        raise InvalidOptionError(f"job spec: {', '.join(alone)} run alone; only landmark jobs "
                                 f"({', '.join(n for n in allowed if n not in alone)}) compose")
    return names


def validate_options(job: str | list[str], options: dict, cli: bool = False) -> None:
    """Check a job's options against its schema (for composed jobs, each option against the jobs that take it): an
    unknown key names itself and the allowed ones, a bad value says what it may be (``cli``: named as the command
    line spells it, ``--max-faces``).

    Raises:
        InvalidOptionError: the first problem found.
    """
    names = [job] if isinstance(job, str) else list(job)
    schemas = {name: JOBS[name].options for name in names}
    allowed = {k for s in schemas.values() for k in s}
    label = "+".join(names)
    for key, value in options.items():
        if key not in allowed:
            raise InvalidOptionError(f"job spec: {label} has no option {key!r}; allowed: {', '.join(sorted(allowed))}")
        for name, schema in schemas.items():
            problem = schema[key].problem(value) if key in schema else None
            if problem and cli:
                raise InvalidOptionError(f"{_flags(key, schema[key])[0]} must be {problem}, got {value!r}")
            if problem:
                raise InvalidOptionError(f"job spec: {name} option {key} must be {problem}, got {value!r}")


def spec_reference() -> str:
    """The job-spec reference as a Markdown table (the README's copy is checked against it by the tests)."""
    lines = ["| job | option | value | default | meaning |", "|---|---|---|---|---|"]
    for job, options in JOB_OPTIONS.items():
        for key, o in sorted(options.items()):
            default = "" if o.default is None else f"`{o.default}`"
            lines.append(f"| {job} | `{key}` | {o.describe()} | {default} | {o.help} |")
    return "\n".join(lines)


def _flags(key: str, o: Option) -> tuple[str, ...]:
    flag = key.replace("_", "-")
    return o.flags or ((f"--no-{flag}",) if o.kind == "bool" and o.default else (f"--{flag}",))


def _json_object(text: str) -> dict:
    import json

    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return v


_KINDS: dict[str, dict[str, Any]] = {
    "int": {"type": int}, "float": {"type": float}, "list": {"nargs": "+"},
    "count": {"type": parse_count, "metavar": "K|MIN-MAX"},
    "counts": {"type": parse_count, "metavar": "K|MIN-MAX|K1,K2,..."},
    "rgb": {"type": int, "nargs": 3, "metavar": ("R", "G", "B")},
    "box": {"type": int, "nargs": 4, "metavar": ("X1", "Y1", "X2", "Y2")},
    "factors": {"type": float, "nargs": 4, "metavar": ("L", "R", "U", "D")}, "text": {},
    "fraction_box": {"type": float, "nargs": 4, "metavar": ("X1", "Y1", "X2", "Y2")},
    "thresholds": {"type": float, "nargs": 3, "metavar": ("P", "R", "O")},
    "size": {"type": float, "nargs": 2, "metavar": ("W", "H")},
    "scale": {"metavar": "WxH|FACTOR"}, "mapping": {"type": _json_object, "metavar": "JSON"}, "path": {},
}


def add_job_options(parser: argparse.ArgumentParser, job: str) -> None:
    """Add a flag for every option of a job's schema, spelt as the option's ``flags``. Unset flags stay absent from
    the namespace, so the schema's default applies; booleans that default to true are ``--no-<option>`` (or their
    given spelling, which then turns them off); choices are checked by :func:`job_options` (one error line)."""
    for key, o in JOBS[job].options.items():
        shown = "" if o.default is None or o.kind == "bool" else f" (default {o.default})"
        kw: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS,
                              "help": (o.help + shown).replace("%", "%%")}   # argparse formats help with %
        if o.kind == "bool":
            kw["action"] = "store_false" if o.default else "store_true"
        elif o.kind == "choice":   # checked by validate_options (one error line), listed in the help
            kw["metavar"] = "{" + ",".join(map(str, o.choices)) + "}"
        else:
            kw.update(_KINDS[o.kind])
        parser.add_argument(*_flags(key, o), **kw)


def job_options(args: argparse.Namespace, job: str) -> dict[str, Any]:
    """The job options given on a command line (flags from :func:`add_job_options`), checked by
    :func:`validate_options`; absent ones are left to the defaults."""
    opts = {k: getattr(args, k) for k in JOBS[job].options if getattr(args, k, None) is not None}
    validate_options(job, opts, cli=True)
    if getattr(args, "config", None):         # a model configuration file: its options under the flags given
        from gpuface.io.sources import read_spec_file

        config = read_spec_file(args.config, "model configuration")
        if not isinstance(config, dict):
            raise InvalidOptionError(f"{args.config}: a configuration is a mapping of option: value")
        try:
            validate_options(job, config)
        except InvalidOptionError as e:
            raise InvalidOptionError(f"{args.config}: {e}") from None
        opts = {**config, **opts}
    return opts


__all__ = ["JobEntry", "JOBS", "JOB_OPTIONS", "register", "spec_jobs", "detection_jobs", "job_names",
           "validate_options", "spec_reference", "add_job_options", "job_options", "SELECTION"]
