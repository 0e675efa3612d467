"""Functions the SLURM test jobs run (see test_cluster.py).

They live in their own small module, not in the test file, because a job
unpickles the function on the node and must be able to *import* it there:
the ``slurm_cluster`` fixture puts this directory on ``PYTHONPATH``, which
sbatch exports to the job.  Keep this module free of test-only imports
(no pytest), so importing it on the node is cheap and cannot fail.
"""

from __future__ import annotations

import os
import socket


def square_with_task(x: int) -> dict:
    """Return x*x plus where it ran, so the test can check the array layout."""
    return {
        "value": x * x,
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "host": socket.gethostname(),
    }


def gpu_env() -> dict:
    """Report what Slurm told the job about its (fake) GPUs."""
    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "SLURM_JOB_PARTITION": os.environ.get("SLURM_JOB_PARTITION"),
        "SLURM_JOB_GPUS": os.environ.get("SLURM_JOB_GPUS"),
    }


def die_without_result(code: int = 3) -> None:
    """Exit at once, skipping submitit's result writing (like an OOM kill)."""
    os._exit(code)
