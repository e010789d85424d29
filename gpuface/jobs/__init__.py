"""Jobs: one file per job (``detect``, ``landmarks``, ``anonymize``, ``audit``, ``manipulate``, ``analyse``,
``annotate``, ``affect``, ``faces``), the registry they declare themselves in (:mod:`.registry`), the one
options → models translation (:func:`build`), the one per-input driver (:func:`drive`) and the one batch loop
(:mod:`.runner`). Torch-free to import."""
from gpuface.jobs.build import JobSpec, Pipeline, build, load_job_spec, output_path
from gpuface.jobs.driver import drive
from gpuface.jobs.registry import JOBS, job_names

__all__ = ["JobSpec", "Pipeline", "build", "load_job_spec", "output_path", "drive", "JOBS", "job_names"]
