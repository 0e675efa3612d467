"""End-to-end checks against the real test cluster.

Run with the cluster up (`bash tests/slurm/cluster.sh up`); without it every
test here is skipped (or fails, with AUTOSCI_REQUIRE_SLURM=1).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import List, Sequence

import pytest

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slurm

# Generous: a job starts within a second or two on an idle test node, but CI
# machines can be slow.  Bounded, so a broken cluster fails instead of hanging.
JOB_TIMEOUT_S = 180


@pytest.fixture()
def jobfns(slurm_cluster):
    """The job-function module, imported as top-level `jobfns` (the name the
    node imports it by: the fixture put tests/slurm on PYTHONPATH)."""
    return importlib.import_module("jobfns")


def _describe(job) -> str:
    def tail(text) -> str:
        return "\n".join((text or "").splitlines()[-15:])

    return (
        f"job {job.job_id}: state={job.state}\n"
        f"--- stdout ---\n{tail(job.stdout())}\n--- stderr ---\n{tail(job.stderr())}"
    )


def wait_done(jobs: Sequence, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait until every job has finished (result file written, or sacct says
    it ended), failing the test after timeout_s instead of blocking forever."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [job for job in jobs if not job.done(force_check=True)]
        if not pending:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"{len(pending)} job(s) not done after {timeout_s}s:\n"
                + "\n".join(_describe(job) for job in pending)
            )
        time.sleep(1)


def _executor(tmp_path: Path, partition: str, **params):
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    # timeout_min >= 3: submitit asks for USR2 90 s before the limit, and
    # Slurm may send it up to a minute early.
    executor.update_parameters(slurm_partition=partition, timeout_min=5, **params)
    return executor


def test_submitit_array_returns_results(slurm_cluster, jobfns, tmp_path):
    executor = _executor(tmp_path, slurm_cluster.partition, slurm_array_parallelism=4)
    inputs = [1, 2, 3, 4]
    jobs = executor.map_array(jobfns.square_with_task, inputs)
    assert len(jobs) == 4

    wait_done(jobs)
    results: List[dict] = [job.result() for job in jobs]

    assert [r["value"] for r in results] == [x * x for x in inputs]
    # One Slurm array, tasks 0..3, matching submitit's "<array>_<task>" ids.
    array_ids = {r["array_job_id"] for r in results}
    assert len(array_ids) == 1 and None not in array_ids
    (array_id,) = array_ids
    assert [r["array_task_id"] for r in results] == ["0", "1", "2", "3"]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(4)]


def test_gpu_gres_sets_cuda_visible_devices(slurm_cluster, jobfns, tmp_path):
    executor = _executor(tmp_path, slurm_cluster.gpu_partition, slurm_gres="gpu:h100:1")
    job = executor.submit(jobfns.gpu_env)
    wait_done([job])
    env = job.result()

    assert env["SLURM_JOB_PARTITION"] == slurm_cluster.gpu_partition
    cvd = env["CUDA_VISIBLE_DEVICES"]
    assert cvd is not None and cvd.isdigit(), f"CUDA_VISIBLE_DEVICES={cvd!r}"


def test_impossible_gpu_request_is_rejected_at_submission(slurm_cluster, tmp_path):
    """EnforcePartLimits=ALL: asking for more GPUs than exist fails at once
    (otherwise the job would pend forever and hang a test)."""
    proc = subprocess.run(
        ["sbatch", "--parsable", "-p", slurm_cluster.gpu_partition,
         "--gres=gpu:h100:64", "-o", "/dev/null", "--wrap", "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0, f"sbatch accepted an impossible job: {proc.stdout}"
    assert "not available" in proc.stderr.lower() or "invalid" in proc.stderr.lower(), proc.stderr


def _sacct_rows(job_id: str) -> List[List[str]]:
    out = subprocess.run(
        ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,JobName,State,ExitCode"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return [line.split("|") for line in out.splitlines() if line.strip()]


def require_accounting(cluster) -> None:
    """Skip without slurmdbd, except where the SLURM tests are required (CI): there it is a failure."""
    if cluster.accounting:
        return
    reason = "cluster runs without accounting (no slurmdbd): sacct has no records"
    if os.environ.get("AUTOSCI_REQUIRE_SLURM") == "1":
        pytest.fail(f"AUTOSCI_REQUIRE_SLURM=1 but the {reason}", pytrace=False)
    pytest.skip(reason)


def test_sacct_knows_finished_job(slurm_cluster, tmp_path):
    require_accounting(slurm_cluster)
    name = f"autosci-sacct-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-J", name, "-p", slurm_cluster.partition,
         "-o", str(tmp_path / "out.txt"), "--wrap", "exit 3"],
        capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), f"sbatch output {proc.stdout!r}, stderr {proc.stderr!r}"
    assert proc.returncode == 3  # sbatch --wait exits with the job's exit code

    # Exactly one record, and it is this job: the accounting DB is recreated
    # at every `cluster.sh up`, so rows of an earlier cluster never answer for
    # a reused job id.
    expected = [[job_id, name, "FAILED", "3:0"]]
    # slurmctld sends records to slurmdbd asynchronously, and a row can show
    # up first with placeholder fields (JobName "allocation"): allow a moment.
    deadline = time.monotonic() + 60
    rows = _sacct_rows(job_id)
    while rows != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = _sacct_rows(job_id)
    assert rows == expected


def test_submitit_notices_job_that_died_without_result(slurm_cluster, jobfns, tmp_path):
    """Only sacct can tell submitit that a job ended without writing its
    result; without accounting job.result() would block forever."""
    require_accounting(slurm_cluster)
    job = _executor(tmp_path, slurm_cluster.partition).submit(jobfns.die_without_result, 3)
    wait_done([job])  # done only because sacct reports the job as ended
    assert job.state == "FAILED"
    # submitit then waits _results_timeout_s (15 s) for a slow filesystem to
    # show the result file before giving up; nothing is slow here.
    job._results_timeout_s = 1
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
