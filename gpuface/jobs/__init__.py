"""Jobs: the registry (:mod:`.registry`), the one options → models translation (:func:`build`) and the one
per-input driver (:func:`drive`). Torch-free to import."""
from gpuface.jobs.build import JobSpec, Pipeline, build, load_job_spec, output_path
from gpuface.jobs.driver import drive
from gpuface.jobs.registry import DETECTION_JOBS, JOBS, job_names

__all__ = ["JobSpec", "Pipeline", "build", "load_job_spec", "output_path", "drive", "JOBS",
           "DETECTION_JOBS", "job_names"]
