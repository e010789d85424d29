"""The GPU acceptance run gives a verdict: it exits 0 when the device agrees with the CPU, and 1 — naming the
pipeline and what exceeded its tolerance — when an op is perturbed on the device side only (the environment switch
exists for this test). Run on the CPU against itself, so CI proves both outcomes without a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _acceptance(tmp_path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--device", "cpu", "--frames", "8",
           "--pipelines", "manipulate blur", "--no-throughput", "--out", str(tmp_path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("perturb", [None, "blur"])
def test_acceptance_fails_when_the_device_disagrees(samples, tmp_path, perturb):
    run = _acceptance(tmp_path, {"GPUFACE_ACCEPTANCE_PERTURB": perturb} if perturb else {})
    if perturb is None:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "| manipulate blur |" in run.stdout and "| pass |" in run.stdout
    else:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "FAIL: manipulate blur" in run.stderr and "video mean" in run.stdout
